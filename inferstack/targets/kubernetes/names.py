"""Kubernetes names and label values derived from keys: always valid, stable, hashed down to 63 characters.

The derivation lives in `inferstack.spec.kubernetes` (validate needs it to report name clashes before anything is
rendered); this module is the target's view of it."""

from __future__ import annotations

from ...spec.kubernetes import (
    DNS_LABEL_RE,
    HASH_LENGTH,
    LABEL_VALUE_RE,
    MAX_NAME_LENGTH,
    label_value,
    object_name,
    workload_name,
)

MAX_LENGTH = MAX_NAME_LENGTH


def env_role_suffix(role: str) -> str:
    """`prefill` → `PREFILL`, `pre-fill` → `PRE_FILL`: the `<ROLE>` of `INFERSTACK_ROLE_<ROLE>_ENDPOINTS`."""
    return role.upper().replace("-", "_")


__all__ = ["DNS_LABEL_RE", "HASH_LENGTH", "LABEL_VALUE_RE", "MAX_LENGTH", "env_role_suffix", "label_value",
           "object_name", "workload_name"]
