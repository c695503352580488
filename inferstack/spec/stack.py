"""The stack file: `inventory:` + `services:` in YAML (or the same shape as Pulumi structured config)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

from . import yaml_text
from .findings import Finding, Report, Severity
from .inventory import Inventory
from .kubernetes import KubernetesOptions, kubernetes_findings, route_claims, route_path_findings
from .progressive import advice_findings
from .service import Service
from .types import Model, exact_mapping_keys
from .validate import _finding, count_findings, inventory_findings, parse, parse_services, service_findings


class StackFile(Model):
    """A whole stack: the inventory it declares and its services."""

    target: Literal["local", "kubernetes"] = Field("local", description="Where the stack converges.")
    inventory: Inventory = Field(default_factory=Inventory, description="Inventory objects the stack declares.")
    services: list[Service] = Field(default_factory=list, description="Inference services.")
    kubernetes: KubernetesOptions | None = Field(None, description="Options of the kubernetes target.")

    @property
    def kubernetes_options(self) -> KubernetesOptions:
        """The `kubernetes:` block, or its defaults."""
        return self.kubernetes or KubernetesOptions()


class StackFileError(Exception):
    """The file cannot be read as YAML at all (exit code 2 in the CLI).

    `str()` is what a person needs to fix it: `source:line:column: problem`, then (for YAML errors) the offending
    line with a caret under the column and, for the common mistakes (tabs, indentation, a missing colon, an unclosed
    quote or bracket, a repeated key), a hint."""

    def __init__(self, source: str, message: str, line: int | None = None, column: int | None = None,
                 snippet: str = "", hint: str = ""):
        self.source, self.line, self.column = source, line, column
        self.problem, self.snippet, self.hint = message, snippet, hint
        where = f"{source}" + (f":{line}:{column}" if line else "")
        text = f"{where}: {message}"
        if snippet:
            text += "\n" + snippet
        if hint:
            text += f"\nhint: {hint}"
        super().__init__(text)


# Hints for PyYAML's problems, by a phrase of the problem (first match wins).
_YAML_HINTS = (
    ("'\\t'", "YAML indents with spaces only: replace the tab (shown as →) with spaces"),
    ("could not find expected ':'", ("a key needs a colon and a space after it (`key: value`); a plain value that "
                                     "runs onto the next line must be quoted")),
    ("mapping values are not allowed here", ("a `key: value` appears where only a value may: the line above may lack "
                                             "its colon or the space after it (`key: value`, not `key:value`), or "
                                             "this line is indented deeper than the keys it belongs with")),
    ("expected <block end>", ("indentation: this line does not line up with the keys (or `- ` items) it belongs "
                              "with; items of one mapping or list start in the same column")),
    ("did not find expected key", ("indentation: this line does not line up with the keys it belongs with; keys of "
                                   "one mapping start in the same column")),
    ("did not find expected '-' indicator", "indentation: items of one list start with `- ` in the same column"),
    ("duplicate key", "a key may appear once per mapping: remove or rename the repeated one"),
    ("while scanning a quoted scalar", "a quoted value is not closed: add the closing quote"),
    ("while parsing a flow", "a `[` list or `{` mapping is not closed, or its items lack a comma"),
)


def _yaml_error(source: str, text: str, exc: yaml.YAMLError) -> StackFileError:
    """A PyYAML error as a StackFileError: the line to show with a caret, and a hint when the mistake is common."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return StackFileError(source, str(exc))
    problem = exc.problem or str(exc)
    described = f"{exc.context or ''} {problem}"
    lines = text.splitlines()
    mark = exc.problem_mark or exc.context_mark
    context = exc.context_mark
    if context is not None and ("could not find expected ':'" in problem or mark is None or mark.line >= len(lines)):
        mark = context  # the key that lacks its colon, or the quote still open at the end: not where the scan ended
    hint = next((h for phrase, h in _YAML_HINTS if phrase in described), "")
    if mark is None:
        return StackFileError(source, problem, hint=hint)
    line, column = mark.line, mark.column
    if line >= len(lines) and lines:  # the end of the file: point just past its last line
        line, column = len(lines) - 1, len(lines[-1])
    snippet = ""
    if line < len(lines):
        gutter = f"{line + 1:>5} | "
        snippet = f"{gutter}{lines[line].replace(chr(9), '→')}\n{' ' * (len(gutter) - 2)}| {' ' * column}^"
    return StackFileError(source, problem, line + 1, column + 1, snippet, hint)


@dataclass
class LoadedStack:
    """A parsed stack file: the model (None when it has field errors), every finding, and the YAML tree it came from
    (`root`, for line numbers; None when loaded from data)."""

    source: str
    stack: StackFile | None
    report: Report
    data: Any
    root: yaml.Node | None = None


def parse_yaml(text: str, source: str = "<string>") -> tuple[Any, yaml.Node | None]:
    """The document's data and its node tree, from one parse (line numbers come from the same tree; libyaml's C
    parser when available — see `yaml_text`)."""
    try:
        return yaml_text.parse(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(source, text, exc) from exc


def load_text(text: str, source: str = "<string>", base_inventory: Inventory | None = None) -> LoadedStack:
    """Parse YAML text into a stack and validate it; findings carry line numbers where they can.

    The garbage collector is paused meanwhile: the tree, the data and the models are acyclic, and collections that
    rescan the parsed tree over and over made validating a large file several times slower than the work itself."""
    with yaml_text.paused_gc():
        data, root = parse_yaml(text, source)
        loaded = validate_stack(data, source, base_inventory)
    loaded.report.findings = [_with_line(f, root) for f in loaded.report.findings]
    loaded.root = root
    return loaded


def load_file(path: str | Path, base_inventory: Inventory | None = None) -> LoadedStack:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise StackFileError(str(p), f"cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise StackFileError(str(p), f"not UTF-8 text: {exc}") from exc
    return load_text(text, str(p), base_inventory)


def validate_stack(data: Any, source: str = "<data>", base_inventory: Inventory | None = None, *,
                   advice: bool = False) -> LoadedStack:
    """Validate stack data (a dict of the stack file's shape). All findings at once.

    `base_inventory`: objects the target already has (e.g. the platform's default inventory); the file's own
    inventory objects are added to it or replace those of the same kind and name. `advice`: also the policy pack's
    advice (`progressive.advised`)."""
    report = Report()
    if data is None:
        report.findings.append(_finding("stack.declares_nothing", "", None, "the file declares nothing (it is empty "
                                        "or only comments): add `services:` and, if needed, `inventory:` objects — "
                                        "see examples/quickstart.yaml"))
        return LoadedStack(source, None, report, data)
    if not isinstance(data, dict):
        report.findings.append(_finding("field.type", "", type(data).__name__,
                                        "a stack file is a mapping with `inventory:` and `services:`"))
        return LoadedStack(source, None, report, data)
    whole = data
    if isinstance(data.get("services"), list):
        services, counted = count_findings(data["services"])
        report.extend(counted)
        if len(services) < len(data["services"]):
            data = {**data, "services": list(services)}  # the rest is not looked at: see count_findings
    stack, found = parse(StackFile, data, "")
    if stack is not None and not stack.services and not any(getattr(stack.inventory, k) for k in Inventory.KINDS):
        report.findings.append(_finding("stack.declares_nothing", "", None, "the file declares no services and no "
                                        "inventory objects: add `services:` (and, if needed, `inventory:` objects)"))
        return LoadedStack(source, None, report, whole)
    if stack is not None:
        inventory = base_inventory.merged(stack.inventory) if base_inventory else stack.inventory
        report.extend(inventory_findings(stack.inventory, context=inventory))
        paths = [f"services[{i}]" for i in range(len(stack.services))]
        report.extend(service_findings(stack.services, paths, inventory))
        if stack.target == "kubernetes":  # rules of the kubernetes target (see spec/kubernetes.py)
            report.extend(kubernetes_findings(stack.services, paths, stack.kubernetes))
        if advice:
            report.extend(advice_findings(stack.services, paths))
        return LoadedStack(source, stack if data is whole else None, report, whole)
    # Field errors somewhere: report them, and still run the rules on every part that parses.
    report.extend(found)
    inv, _ = parse(Inventory, data.get("inventory") or {}, "inventory")
    if inv is not None:
        report.extend(inventory_findings(inv, context=base_inventory.merged(inv) if base_inventory else None))
    raw = data.get("services") or []
    services, paths, repairs, found = parse_services(raw if isinstance(raw, list) else [])
    report.extend(f for f in found if f.severity is Severity.DEFERRED)  # the field errors are reported already
    if inv is not None and base_inventory is not None:
        inv = base_inventory.merged(inv)
    report.extend(service_findings(services, paths, inv or base_inventory or Inventory(), partial=inv is None,
                                   deployment_indexes=repairs))
    if data.get("target") == "kubernetes":
        options, _ = parse(KubernetesOptions, data.get("kubernetes") or {}, "kubernetes")
        report.extend(kubernetes_findings(services, paths, options))
    return LoadedStack(source, None, report, whole)


def check_across_stacks(stacks: list[LoadedStack]) -> None:
    """Rules that need several stacks at once, added to each stack's report: kubernetes stacks that share a Gateway
    must not claim one route path (`kubernetes.route_path_unique`; one stack cannot see another's namespace)."""
    claims = [route_claims(loaded.stack.services, [f"services[{i}]" for i in range(len(loaded.stack.services))],
                           loaded.stack.kubernetes, loaded.source)
              if loaded.stack is not None and loaded.stack.target == "kubernetes" else [] for loaded in stacks]
    for loaded, found in zip(stacks, route_path_findings(claims)):
        loaded.report.extend(found)


def _with_line(finding: Finding, root: yaml.Node | None) -> Finding:
    line = locate(root, finding.path)
    if line is None:
        return finding
    return Finding(finding.rule, finding.path, finding.value, finding.message, finding.severity, line)


def locate(root: yaml.Node | None, path: str) -> int | None:
    """1-based line of `path` (`services[0].deployments[1].env`) in a composed YAML tree; nearest known parent."""
    node, line = root, (root.start_mark.line + 1 if root is not None else None)
    for part in _split(path):
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            nxt = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
            if nxt is None:
                break
            line, node = nxt[0].start_mark.line + 1, nxt[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _split(path: str) -> list[Any]:
    parts: list[Any] = []
    for piece in path.replace("[", ".[").split("."):
        if not piece:
            continue
        parts.append(int(piece[1:-1]) if piece.startswith("[") else piece)
    return parts


def json_schema() -> dict[str, Any]:
    """JSON Schema of the stack file (for editors)."""
    schema = StackFile.model_json_schema()
    defs = schema["$defs"]
    # Stack-file sugar the models expand before validation: `weight:` on a deployment, and the flat legacy form
    # (deployment fields inline on a service).
    defs["Deployment"]["properties"]["weight"] = {
        "type": "number", "minimum": 0, "description": "Stack-file sugar for traffic.weights[<this key>]."}
    service_props = defs["Service"]["properties"]
    for name, prop in defs["Deployment"]["properties"].items():
        if name not in service_props and name not in ("name", "key"):
            service_props[name] = {**prop, "description": "Legacy flat form: " + prop.get("description", name)}
    exact_mapping_keys(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "inferstack stack file"
    return schema


def dump_yaml(stack: StackFile, reveal_secrets: bool = False) -> str:
    data = stack.to_data() if reveal_secrets else stack.to_public()
    return yaml_text.dump(json.loads(json.dumps(data)))
