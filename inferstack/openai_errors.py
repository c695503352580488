"""OpenAI-shaped error bodies: ``{"error": {"message", "type", "param", "code"}}``.

Official OpenAI clients read ``error.message`` into the exception they raise, so an error in this shape reaches the
user as words rather than as a bare status code. The echo preset answers its errors so, and the gateway answers its
own (401, 403, 404, 502, 503, 504) the same way; answers of instances are relayed untouched.

Standard library only: the echo preset imports this on its start-up budget, the gateway on its error path.
"""

from __future__ import annotations

from typing import Any

# HTTP status -> the `type` OpenAI's API gives errors of that status.
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
                429: "rate_limit_error"}


def error_type(status: int) -> str:
    """OpenAI's error `type` for an HTTP status (5xx: `server_error`)."""
    return _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """An OpenAI-shaped error: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}
