"""Quantities, durations and roundings of rendered objects: whole numbers where Kubernetes wants them, rounded the
way the domain says (surge and seconds up, unavailable down), with float noise ignored (25.000000001 stays 25)."""

from __future__ import annotations

import math

_EPS = 1e-9


def whole(value: float) -> int | None:
    """`value` as an int when it is a whole number (within float noise), else None."""
    return round(value) if abs(value - round(value)) < _EPS else None


def cpu(value: float) -> str:
    """A Kubernetes quantity: whole numbers plain, else thousandths (`500m`)."""
    w = whole(value)
    return str(w) if w is not None else f"{max(1, round(value * 1000))}m"


def memory(gib: float) -> str:
    w = whole(gib)
    return f"{w}Gi" if w is not None else f"{max(1, round(gib * 1024))}Mi"


def round_up(value: float) -> int:
    """Whole seconds, surge percent: up, ignoring float noise."""
    return math.ceil(value - _EPS)


def round_down(value: float) -> int:
    """Unavailable percent: down, ignoring float noise."""
    return math.floor(value + _EPS)


def duration(seconds: float) -> str:
    """Gateway API duration (`1h2m3s4ms`, each number at most 5 digits); at least 1ms, since 0s means no timeout."""
    ms = max(1, math.ceil(min(seconds, 99999 * 3600) * 1000 - _EPS))
    out = ""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            out += f"{n}{unit}"
    return out


def decimal(value: float) -> str:
    """A plain decimal (no exponent): KEDA reads thresholds as strings."""
    w = whole(value)
    return str(w) if w is not None else f"{value:.6f}".rstrip("0").rstrip(".")
