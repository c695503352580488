"""Findings and the report `validate` returns: every violation at once, each with a stable rule id."""

from __future__ import annotations

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


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
