"""The platform's preset images (预置镜像): each maps to a runnable local command and its default probes.

In a cluster (the kubernetes target) a preset is the container image ``<registry>/<name>:<release>`` — pinned to the
release it was published with, never ``:latest`` — with the same default probes (readiness ``readiness_path``,
liveness ``liveness_path``, on the listen port).

Kept free of imports beyond ``sys``: ``python -m inferstack.images.echo`` imports this package first, on its
start-up budget.
"""

import sys

UPSTREAM_TOKEN_HEADER = "X-Inferstack-Upstream-Token"
UPSTREAM_TOKEN_ENV = "INFERSTACK_UPSTREAM_TOKEN"
"""Instances are reachable only through the gateway: the platform gives every instance of a service its service's
token in env ``INFERSTACK_UPSTREAM_TOKEN``; the gateway (and the platform's HTTP probes) send it in this header on
every request; an instance answers nothing else. The echo preset checks it; a command of your own should too (it is
what keeps other local users from calling the instance's loopback port directly, past the gateway's key and
security-group checks)."""

PRESET_IMAGES: dict[str, dict] = {
    "inferstack/echo": {
        "argv": (sys.executable, "-m", "inferstack.images.echo"),
        "listen_port_env": "PORT",
        "readiness_path": "/healthz",
        "liveness_path": "/livez",
        "release": "0.1.0",
        "description": "Deterministic toy model server: /v1/predict and the OpenAI API (/v1/models, /v1/completions, "
                       "/v1/chat/completions, streaming), "
                       "/v1/prefill for multi-role; knobs ECHO_* (see inferstack/images/echo.py).",
    },
}
