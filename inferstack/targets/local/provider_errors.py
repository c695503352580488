"""What the local target's Pulumi providers say when something fails: one clear message, for a person.

- The platform cannot be reached: one line with the URL and how to start it (`inferstack platform serve --detach`) or
  where to point the providers (`inferstack:platformUrl`).
- A create meets an object that already exists: it names the object and the two ways to bring it under the stack —
  adopt it (`inferstack:adopt`) or delete it first. (Pulumi's `import` resource option cannot work with dynamic
  providers: the engine's import reads the object without `__provider`, pulumi/pulumi#16175.)
- The platform refuses a write (422): every finding with its rule id, at the user's own object — named by its keys
  (`deployment 'chat/canary' subnet: ...`), not by the platform's single-object paths (a deployment write is validated
  as `services[0].deployments[0]` whichever deployment of the service it is).

The SDK's dynamic-provider servicer (`python -m pulumi.dynamic`, the process the engine starts) reports every exception
as its full Python traceback. `install_plain_errors` makes it report a `PlatformApplyError` as its message alone: it
stands in for the `traceback` module that servicer module looks up when an exception escapes — only in that process,
only for our own errors; anything else still comes with its traceback (it is a bug, and the traceback helps)."""

from __future__ import annotations

import re
import sys
import traceback
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

START_HINT = "start it with `inferstack platform serve --detach`, or set `inferstack:platformUrl` to where it runs"


class PlatformApplyError(RuntimeError):
    """A provider operation failed for a reason a person can act on; the message says what and how."""


@dataclass(frozen=True)
class PlatformObject:
    """One platform object as a person and the API name it."""

    label: str
    """`deployment 'chat/canary'`, `service 'chat'`, `traffic of service 'chat'`, `queue 'q-lab'`."""
    path: str
    """Its API path below `/v1/` (also what `inferstack:adopt` lists): `services/chat/deployments/canary`."""
    places: Mapping[str, str] = field(default_factory=dict)
    """The platform's finding paths for this write → the object they are about (see `paths_for_write`)."""

    def where(self, path: str) -> str:
        """A finding's path said about the user's own object: the longest known prefix replaced by its label."""
        best = max((p for p in self.places if path == p or path.startswith((p + ".", p + "["))), key=len,
                   default=None)
        if best is None:
            return path or self.label
        rest = path[len(best):].lstrip(".")
        return f"{self.places[best]} {rest}".rstrip()


def paths_for_write(service: str | None, written: str | None, deployments: Sequence[str],
                    services: Sequence[str] = ()) -> dict[str, str]:
    """How the platform names the objects of a single-object write in its findings (`platform/control.py`): the
    written object's service is `services[0]`, its deployments follow the written one (`written`, when a deployment
    is written) in the platform's order, then the other `services`; an inventory write's object is index 0."""
    places: dict[str, str] = {}
    for i, key in enumerate(services):
        places[f"services[{i + (1 if service else 0)}]"] = f"service '{key}'"
    if service:
        order = ([written] if written else []) + [k for k in deployments if k != written]
        places["services[0]"] = f"service '{service}'"
        places["services[0].traffic"] = f"traffic of service '{service}'"
        for j, key in enumerate(order):
            places[f"services[0].deployments[{j}]"] = f"deployment '{service}/{key}'"
    return places


def refusal(action: str, obj: PlatformObject, exc: Any) -> str:
    """The message for a refused or failed platform call (a `PlatformError`)."""
    status = getattr(exc, "status_code", None)
    if status == 0 and getattr(exc, "error", "") == "unreachable":
        return unreachable(action, obj, exc)
    findings = list(getattr(exc, "findings", None) or [])
    if status == 412:
        return exists(action, obj, exc)
    if not findings:
        return f"{action} {obj.label}: the platform refused it (HTTP {status}): {_message(exc)}"
    lines = [f"{action} {obj.label}: the platform refused it (HTTP {status}), nothing was written:"]
    for f in findings:
        lines.append(f"  - {f.get('severity', 'error')}: {obj.where(str(f.get('path') or ''))}: {f.get('message')} "
                     f"[{f.get('rule')}]")
    return "\n".join(lines)


def unreachable(action: str, obj: PlatformObject, exc: Any) -> str:
    """One line: what could not be done, where the platform was looked for, and how to start it."""
    return f"{action} {obj.label}: {unreachable_text(exc)}"


def unreachable_text(exc: Any) -> str:
    """Where the platform was looked for and why it did not answer, then how to start it (one line)."""
    text = " ".join(_message(exc).split()).rstrip(".")
    if "inferstack platform serve" in text:
        return f"{text}; or set `inferstack:platformUrl` to where it runs"
    return f"{text}; {START_HINT}"


def exists(action: str, obj: PlatformObject, exc: Any) -> str:
    """A create that met an object it did not make: name it, and how to bring it under the stack."""
    body = getattr(exc, "body", None) or {}
    uid = f" (uid {body['uid']})" if isinstance(body, Mapping) and body.get("uid") else ""
    return (f"{action} {obj.label}: it already exists on the platform{uid}, and a create never takes over an object "
            f"it did not make. To manage it from this stack, adopt it — `pulumi config set --path "
            f"'inferstack:adopt[0]' {obj.path}`, then `pulumi up` updates it to this stack's spec (and `pulumi destroy` "
            f"would delete it); or delete it first (DELETE /v1/{obj.path}). Pulumi's `import` option does not work "
            f"with dynamic providers (pulumi/pulumi#16175).")


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        return str(body.get("message") or body.get("detail") or body.get("error") or body)
    return str(body if body is not None else exc)


# --- the SDK servicer's tracebacks --------------------------------------------------------------------------------

class _PlainErrors(types.ModuleType):
    """The `traceback` module as the servicer sees it: `format_exc()` of a `PlatformApplyError` is its message."""

    def __init__(self, real: types.ModuleType) -> None:
        super().__init__(real.__name__, real.__doc__)
        self._real = real

    def format_exc(self, limit: int | None = None, chain: bool = True) -> str:
        exc = sys.exc_info()[1]
        if isinstance(exc, PlatformApplyError):
            return str(exc)
        return self._real.format_exc(limit, chain)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def install_plain_errors(module: types.ModuleType | None = None) -> bool:
    """In the SDK's dynamic-provider servicer module (`__main__` of `python -m pulumi.dynamic`, or `module`), report
    our own errors without a traceback. Returns whether it is in place; anywhere else it does nothing."""
    main = module if module is not None else sys.modules.get("__main__")
    if main is None or not hasattr(main, "DynamicResourceProviderServicer") or \
            not hasattr(main, "_abort_with_traceback"):
        return False
    current = getattr(main, "traceback", None)
    if isinstance(current, _PlainErrors):
        return True
    if current is not traceback:
        return False  # the SDK changed how it reports errors: leave it alone
    main.traceback = _PlainErrors(traceback)
    return True


def adopted_paths(value: Any) -> frozenset[str]:
    """`inferstack:adopt` as API paths: a JSON list (what `pulumi config set --path 'inferstack:adopt[0]' ...`
    gives) or a comma- or space-separated string; a leading `/v1/` or `/` is ignored."""
    import json

    if value in (None, ""):
        return frozenset()
    items: Any = value
    if isinstance(value, str):
        try:
            items = json.loads(value)
        except ValueError:
            items = re.split(r"[,\s]+", value)
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, (list, tuple)):
        return frozenset()
    return frozenset(str(i).strip().removeprefix("/v1/").strip("/") for i in items if str(i).strip())

