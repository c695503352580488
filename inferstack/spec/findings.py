"""Findings and the report `validate` returns: every violation at once, each with a stable rule id."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

SECRET_MASK = "[secret]"


class Severity(str, Enum):
    """How a finding affects an apply: errors block it, warnings inform, deferred rules run later."""

    ERROR = "error"
    WARNING = "warning"
    DEFERRED = "deferred"


@dataclass(frozen=True)
class Finding:
    """One rule outcome about one place in the input."""

    rule: str
    path: str
    value: Any
    message: str
    severity: Severity = Severity.ERROR
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {
            "rule": self.rule,
            "path": self.path,
            "value": _jsonable(self.value),
            "message": self.message,
            "severity": self.severity.value,
        }
        if self.line is not None:
            data["line"] = self.line
        return data

    def __str__(self) -> str:
        where = f"{self.path}" + (f" (line {self.line})" if self.line else "")
        shown = "" if self.value is None else f" [value: {_short(self.value)}]"
        return f"{self.severity.value}: {where}: {self.message}{shown} ({self.rule})"


@dataclass
class Report:
    """All findings of one validation run."""

    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.WARNING]

    @property
    def deferred(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.DEFERRED]

    @property
    def ok(self) -> bool:
        """True when nothing blocks: warnings and deferred rules do not."""
        return not self.errors

    def extend(self, findings: Iterable[Finding]) -> None:
        self.findings.extend(findings)

    def rules(self) -> set[str]:
        return {f.rule for f in self.findings}

    def to_list(self) -> list[dict[str, Any]]:
        return [f.to_dict() for f in self.findings]

    def __str__(self) -> str:
        return "\n".join(str(f) for f in self.findings) or "valid"


class SpecError(ValueError):
    """Raised where a caller needs a valid spec and got findings that block."""

    def __init__(self, report: Report):
        self.report = report
        super().__init__(str(Report(report.errors)))


_MAX_SHOWN = 200  # characters of a string value shown in a finding


def _jsonable(value: Any, depth: int = 0) -> Any:
    """The value as strict JSON can carry it: NaN and infinities as strings, lone surrogates replaced, long strings
    cut (a finding names a value, it does not echo a 10 MB input back), deep structures elided."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, str):
        if len(value) > _MAX_SHOWN:
            value = f"{value[:_MAX_SHOWN]}... ({len(value)} characters)"
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace") if has_lone_surrogate(value) else value
    if depth > 8:
        return "..."
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in value[:20]] + (["..."] if len(value) > 20 else [])
    if isinstance(value, dict):
        return {_jsonable(str(k)): _jsonable(v, depth + 1) for k, v in list(value.items())[:20]}
    return _jsonable(str(value))


def has_lone_surrogate(text: str) -> bool:
    """Whether `text` holds a lone surrogate (JSON `"\\ud800"` parses to one): it cannot be encoded as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
