"""HTTP/1.1 wire pieces both sides of the proxy share: status lines, body framing, the parser-error rule.

Head pieces are kept in one convention so they join without copies of their own: a status line has no line end, and
every header piece *starts* with its CRLF (`b"\\r\\nName: value"`); the piece that ends a head adds the final
`\\r\\n\\r\\n`.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from httptools import HttpParserCallbackError, HttpParserError

log = logging.getLogger("inferstack.gateway")

# Reason phrases are the canonical ones: they carry no meaning (RFC 9112 4), and the upstream's are not read.
STATUS_LINES = {s.value: b"HTTP/1.1 %d %s" % (s.value, s.phrase.encode()) for s in HTTPStatus}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"
HEAD_END = b"\r\n\r\n"

# How a response body is framed towards the client.
NO_BODY, RAW, CHUNKED = range(3)


def status_line(status: int) -> bytes:
    return STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown" % status


def log_if_ours(exc: HttpParserError) -> None:
    """A callback of ours failed inside the parser: a bug, not bad input; keep serving but say so."""
    if isinstance(exc, HttpParserCallbackError):
        log.error("proxy callback failed", exc_info=exc.__context__ or exc)
