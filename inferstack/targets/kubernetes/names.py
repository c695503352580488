"""Kubernetes names and label values derived from keys: always valid, stable, hashed down to 63 characters.

Keys match `^[a-z][a-z0-9-]{0,39}$`, so `<service-key>-<deployment-key>-<role>` can reach 102 characters and a key may
end with `-` — neither is a valid DNS label. A joined name that is a valid DNS-1035 label (what Service names need:
lowercase letter first, `[a-z0-9-]`, alphanumeric last, at most 63) is used as is; any other keeps a readable prefix
and ends in 8 hex characters of the SHA-256 of the full joined name, so two different inputs never share a name by
truncation and the same input always gets the same name."""

from __future__ import annotations

import hashlib
import re

MAX_LENGTH = 63
HASH_LENGTH = 8
DNS_LABEL_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_INVALID = re.compile(r"[^a-z0-9-]")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_LENGTH]


def object_name(*parts: str) -> str:
    """`parts` joined by `-` as a DNS-1035 label; hashed (prefix + `-` + 8 hex) when too long or not valid."""
    joined = "-".join(parts)
    if len(joined) <= MAX_LENGTH and DNS_LABEL_RE.match(joined):
        return joined
    prefix = _INVALID.sub("-", joined.lower())[: MAX_LENGTH - HASH_LENGTH - 1].rstrip("-")
    if not prefix or not prefix[0].isalpha():
        prefix = "x" + prefix[: MAX_LENGTH - HASH_LENGTH - 2]
    return f"{prefix}-{_digest(joined)}"


def workload_name(service_key: str, deployment_key: str, role: str | None = None) -> str:
    """`<service-key>-<deployment-key>[-<role>]`: a Deployment (per role), its PDB, HPA or ScaledObject."""
    return object_name(service_key, deployment_key, *([role] if role else []))


def label_value(value: str) -> str:
    """`value` when it is a valid label value, else its hashed form (a key ending in `-` is not a valid value)."""
    if len(value) <= MAX_LENGTH and LABEL_VALUE_RE.match(value):
        return value
    return object_name(value)


def env_role_suffix(role: str) -> str:
    """`prefill` → `PREFILL`, `pre-fill` → `PRE_FILL`: the `<ROLE>` of `INFERSTACK_ROLE_<ROLE>_ENDPOINTS`."""
    return role.upper().replace("-", "_")
