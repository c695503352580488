"""The platform under test: a real server on 127.0.0.1 over a temp data dir, as a subprocess (so crash tests can
SIGKILL it), and valid objects of the default inventory. A uniquely named module: test dirs share `sys.path`."""

from __future__ import annotations

from typing import Any

from inferstack.testing import ROOT, PlatformProcess

__all__ = ["ROOT", "PlatformProcess", "deployment", "service"]


def deployment(name: str = "stable", **extra: Any) -> dict[str, Any]:
    """A valid deployment on the default inventory."""
    return {"name": name, "image": {"preset": "inferstack/echo"}, "queue": "q-postpaid-a",
            "compute_spec": "cpu-small", "replicas": 1, "rolling_update": {"max_unavailable": 25, "max_surge": 25},
            "subnet": "subnet-a", "security_group": "sg-default", **extra}


def service(name: str, **extra: Any) -> dict[str, Any]:
    """A service's own fields on the default inventory."""
    return {"name": name, "resource_group": "rg-default", "vpc": "vpc-default", "ports": [8000], **extra}
