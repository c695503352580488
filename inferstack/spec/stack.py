"""The stack file: `inventory:` + `services:` in YAML (or the same shape as Pulumi structured config)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

from .findings import Finding, Report, Severity
from .inventory import Inventory
from .kubernetes import KubernetesOptions, kubernetes_findings, route_claims, route_path_findings
from .service import Service
from .types import Model
from .validate import inventory_findings, parse, parse_services, service_findings


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
    """The file cannot be read as YAML at all (exit code 2 in the CLI)."""

    def __init__(self, source: str, message: str, line: int | None = None, column: int | None = None):
        self.source, self.line, self.column = source, line, column
        where = f"{source}" + (f":{line}:{column}" if line else "")
        super().__init__(f"{where}: {message}")


class _Loader(yaml.SafeLoader):
    """Safe YAML that rejects duplicate keys (a repeated key would silently override the first)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"found duplicate key '{key}'", key_node.start_mark)
        seen[key] = True
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass
class LoadedStack:
    """A parsed stack file: the model (None when it has field errors) and every finding."""

    source: str
    stack: StackFile | None
    report: Report
    data: Any


def load_text(text: str, source: str = "<string>", base_inventory: Inventory | None = None) -> LoadedStack:
    """Parse YAML text into a stack and validate it; findings carry line numbers where they can."""
    try:
        data = yaml.load(text, Loader=_Loader)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise StackFileError(source, f"{exc.problem or exc}", mark.line + 1 if mark else None,
                             mark.column + 1 if mark else None) from exc
    except yaml.YAMLError as exc:
        raise StackFileError(source, str(exc)) from exc
    loaded = validate_stack(data if data is not None else {}, source, base_inventory)
    loaded.report.findings = [_with_line(f, root) for f in loaded.report.findings]
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


def validate_stack(data: Any, source: str = "<data>", base_inventory: Inventory | None = None) -> LoadedStack:
    """Validate stack data (a dict of the stack file's shape). All findings at once.

    `base_inventory`: objects the target already has (e.g. the platform's default inventory); the file's own
    inventory objects are added to it or replace those of the same kind and name."""
    report = Report()
    if not isinstance(data, dict):
        from .validate import _finding

        report.findings.append(_finding("field.type", "", type(data).__name__,
                                        "a stack file is a mapping with `inventory:` and `services:`"))
        return LoadedStack(source, None, report, data)
    stack, found = parse(StackFile, data, "")
    if stack is not None:
        inventory = base_inventory.merged(stack.inventory) if base_inventory else stack.inventory
        report.extend(inventory_findings(stack.inventory, context=inventory))
        paths = [f"services[{i}]" for i in range(len(stack.services))]
        report.extend(service_findings(stack.services, paths, inventory))
        if stack.target == "kubernetes":  # rules of the kubernetes target (see spec/kubernetes.py)
            report.extend(kubernetes_findings(stack.services, paths, stack.kubernetes))
        return LoadedStack(source, stack, report, data)
    # Field errors somewhere: report them, and still run the rules on every part that parses.
    report.extend(found)
    inv, _ = parse(Inventory, data.get("inventory") or {}, "inventory")
    if inv is not None:
        report.extend(inventory_findings(inv, context=base_inventory.merged(inv) if base_inventory else None))
    raw = data.get("services") or []
    services, paths, indexes, found = parse_services(raw if isinstance(raw, list) else [])
    report.extend(f for f in found if f.severity is Severity.DEFERRED)  # the field errors are reported already
    if inv is not None and base_inventory is not None:
        inv = base_inventory.merged(inv)
    report.extend(service_findings(services, paths, inv or base_inventory or Inventory(), partial=inv is None,
                                   deployment_indexes=indexes))
    if data.get("target") == "kubernetes":
        options, _ = parse(KubernetesOptions, data.get("kubernetes") or {}, "kubernetes")
        report.extend(kubernetes_findings(services, paths, options))
    return LoadedStack(source, None, report, data)


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
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "inferstack stack file"
    return schema


def dump_yaml(stack: StackFile, reveal_secrets: bool = False) -> str:
    data = stack.to_data() if reveal_secrets else stack.to_public()
    return yaml.safe_dump(json.loads(json.dumps(data)), sort_keys=False, allow_unicode=True)
