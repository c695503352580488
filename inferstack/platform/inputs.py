"""What the API takes as input, before any rule of the spec looks at it: the request body and the query string.

Invariants (each refusal is a 4xx with a message naming what was wrong, and happens before anything is stored):
- A body is JSON in UTF-8 with `Content-Type: application/json` (415 otherwise), at most `MAX_BODY_BYTES` (413,
  checked on Content-Length and again while reading, so a chunked body cannot grow past it), nested at most
  `MAX_DEPTH` levels, with no duplicate keys and no lone surrogates (`"\\ud800"`) — 400 for each, with the JSON path.
  A string with a lone surrogate cannot be stored or echoed as UTF-8; a deeply nested body would exhaust the stack
  of every recursive walk after it.
- NaN, Infinity and literals that overflow (`1e400`) parse as the floats they say; the spec refuses them with a 422
  naming the field (`number.finite`), as for a YAML file.
- Query parameters of a write are `dry_run` only (a misspelt `dry_rn=true` must not turn a dry run into a write);
  numbers in query strings are bounded integers (400 otherwise)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from starlette.requests import Request

from inferstack.spec.findings import has_lone_surrogate

from .control import ApiError

MAX_BODY_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_QUERY_INT = 2**63 - 1  # SQLite's INTEGER
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")
JSON_TYPES = ("application/json",)


async def read_json(request: Request) -> Any:
    """The request's JSON body, or ApiError (400 / 413 / 415)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise ApiError(400, "bad_request", "Content-Length is not a number") from None
        if length > MAX_BODY_BYTES:
            raise _too_large(length)
    content_type = request.headers.get("content-type")
    if content_type is not None and not _is_json(content_type):
        raise _unsupported(content_type)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large(size)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ApiError(400, "bad_request", "this write needs a JSON body")
    if content_type is None:
        raise _unsupported("none")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "bad_json", f"the body is not UTF-8: invalid byte at offset {exc.start}") from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except RecursionError:
        raise ApiError(400, "bad_json", f"the body is nested too deeply (at most {MAX_DEPTH} levels)") from None
    except ValueError as exc:  # JSONDecodeError, a duplicate key, an integer of more than 4300 digits
        raise ApiError(400, "bad_json", f"the body is not JSON: {_reason(exc)}") from None
    check_structure(data)
    return data


def _is_json(content_type: str) -> bool:
    media_type, _, params = content_type.partition(";")
    charset = params.strip().lower().removeprefix("charset=").strip('"') if params.strip() else "utf-8"
    return media_type.strip().lower() in JSON_TYPES and charset in ("utf-8", "utf8")


def _unsupported(given: str) -> ApiError:
    return ApiError(415, "unsupported_media_type", f"the body must be JSON sent as Content-Type: application/json "
                                                   f"(UTF-8); got {given[:100]!r}")


def check_structure(data: Any) -> None:
    """Depth and strings of parsed JSON: ApiError 400 naming the first offending path. Iterative: a body nested
    thousands of levels deep must not raise RecursionError here either."""
    stack: list[tuple[Any, str, int]] = [(data, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value, path or "(the body)")
            continue
        if not isinstance(value, (dict, list)):
            continue
        if depth > MAX_DEPTH:
            raise ApiError(400, "bad_json", f"the body is nested too deeply at {path}: at most {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                where = f"{path}.{key}" if path else key
                _check_text(key, f"the key {where!r}" if not has_lone_surrogate(key) else "a key")
                stack.append((item, where, depth + 1))
        else:
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))


def _check_text(text: str, where: str) -> None:
    if has_lone_surrogate(text):
        raise ApiError(400, "bad_json", f"{where}: a string holds a lone surrogate (an escape such as \\ud800 that is "
                                        f"no character): strings must be valid Unicode")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        shown = dup if not has_lone_surrogate(dup) else "(a key with a lone surrogate)"
        raise ValueError(f"duplicate key {shown[:100]!r} (the second one would silently win)")
    return data


def _reason(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    return str(exc)[:200]


def _too_large(size: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"the body is {size} bytes or more; at most {MAX_BODY_BYTES} bytes "
                                              f"(1 MiB) are accepted: split a large stack file into several applies")


# --- the query string ----------------------------------------------------------------------------------------------

def only_params(request: Request, allowed: Iterable[str]) -> None:
    """400 when the query string holds a parameter not in `allowed` (or one twice)."""
    allowed = tuple(allowed)
    keys = [k for k, _ in request.query_params.multi_items()]
    unknown = sorted({k for k in keys if k not in allowed})
    if unknown:
        accepted = ", ".join(allowed) or "none"
        raise ApiError(400, "bad_request", f"unknown query parameter(s) {', '.join(repr(k[:50]) for k in unknown)} "
                                           f"(accepted here: {accepted})")
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ApiError(400, "bad_request", f"query parameter {twice[0]!r} is given more than once")


def bool_param(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw.lower() in _FALSE:
        return False
    if raw.lower() in _TRUE:
        return True
    raise ApiError(400, "bad_request", f"{name} is true or false, not {raw[:50]!r}")


def int_param(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    """A whole number from `low` to `high`, or ApiError 400 naming the parameter and the range."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    text = raw.strip()
    if not text or len(text) > 20 or not text.lstrip("-").isdigit() or not text.isascii():
        raise ApiError(400, "bad_request", f"{name} is a whole number from {low} to {high}, not {raw[:50]!r}")
    value = int(text)
    if not low <= value <= high:
        raise ApiError(400, "bad_request", f"{name} is a whole number from {low} to {high}, not {value}")
    return value
