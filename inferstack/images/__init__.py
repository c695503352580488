"""The platform's preset images (预置镜像): each maps to a runnable local command and its default probes.

Kept free of imports beyond ``sys``: ``python -m inferstack.images.echo`` imports this package first, on its
start-up budget.
"""

import sys

PRESET_IMAGES: dict[str, dict] = {
    "inferstack/echo": {
        "argv": (sys.executable, "-m", "inferstack.images.echo"),
        "listen_port_env": "PORT",
        "readiness_path": "/healthz",
        "liveness_path": "/livez",
        "description": "Deterministic toy model server: /v1/predict, OpenAI-style /v1/completions (streaming), "
                       "/v1/prefill for multi-role; knobs ECHO_* (see inferstack/images/echo.py).",
    },
}
