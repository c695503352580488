"""The role endpoints file of a multi-role deployment: every instance learns the other roles' current endpoints
from it (env ``INFERSTACK_ROLE_ENDPOINTS_FILE``) without a restart; env ``INFERSTACK_ROLE_<ROLE>_ENDPOINTS`` gives
the value at start."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path


def role_endpoints_env(endpoints: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """``{"prefill": ["127.0.0.1:4001"]}`` → ``{"INFERSTACK_ROLE_PREFILL_ENDPOINTS": "127.0.0.1:4001"}``."""
    return {f"INFERSTACK_ROLE_{role.upper().replace('-', '_')}_ENDPOINTS": ",".join(hosts)
            for role, hosts in endpoints.items()}


def write_role_endpoints(path: str | Path, endpoints: Mapping[str, Sequence[str]]) -> None:
    """Replace the file atomically (write aside, then rename): a reader sees the old list or the new one, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staged = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({role: list(hosts) for role, hosts in endpoints.items()}, f)
        os.replace(staged, path)
    except BaseException:
        os.unlink(staged)
        raise
