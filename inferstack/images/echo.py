"""The ``inferstack/echo`` preset image: a deterministic toy model server on stdlib asyncio.

Run as ``python -m inferstack.images.echo [--port N] [--host H]`` (env ``PORT`` / ``HOST`` otherwise).
Imports stay minimal on purpose: start-up (spawn → first 200 from ``/healthz``) is budgeted at 200 ms.

Endpoints: ``GET /healthz`` (readiness: 503 while warming up or draining), ``GET /livez``, ``POST /v1/predict``,
``POST /v1/prefill``, and the OpenAI API as its official clients use it (see ``echo_openai``): ``GET /v1/models``,
``POST /v1/completions`` and ``POST /v1/chat/completions`` (``stream: true`` → server-sent events, one per token).
Every error body is OpenAI-shaped (``{"error": {"message", "type", "param", "code"}}``). Every answer names service,
deployment, role, instance and version (JSON fields and ``X-Echo-*`` headers).

Knobs (env): ``ECHO_LATENCY_MS``, ``ECHO_STARTUP_DELAY_S`` (sleep before listening), ``ECHO_WARMUP_S`` (listen at once
but answer 503 on /healthz for that long), ``ECHO_FAILURE_RATE`` (0–1, a deterministic sequence of 500s),
``ECHO_TOKEN_DELAY_MS``, ``ECHO_FAIL_LIVENESS_AFTER_S``, ``ECHO_EXIT_AT_START=1`` (a broken image: exits 1 at once).

Only the gateway: with env ``INFERSTACK_UPSTREAM_TOKEN`` set (the platform always sets it), every request must carry
that token in ``X-Inferstack-Upstream-Token`` (the gateway and the platform's probes add it); any other gets 403
and the connection is closed. So nobody on the machine reaches the instance's loopback port past the gateway.

Multi-role: a non-prefill instance with prefill endpoints (env ``INFERSTACK_ROLE_PREFILL_ENDPOINTS``, kept current
through the JSON file named by ``INFERSTACK_ROLE_ENDPOINTS_FILE``) calls ``/v1/prefill`` round-robin before completing.
"""

import asyncio
import hmac
import json
import os
import signal
import sys
import time
from hashlib import sha256

from inferstack.images import UPSTREAM_TOKEN_ENV, UPSTREAM_TOKEN_HEADER
from inferstack.images import echo_openai as oai
from inferstack.openai_errors import error_body

_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable"}
_POST_ROUTES = ("/v1/predict", "/v1/completions", "/v1/chat/completions", "/v1/prefill")
_MAX_BODY = 16 * 1024 * 1024
_TOKEN_KEY = UPSTREAM_TOKEN_HEADER.lower()


def _log(event: str) -> None:
    # Lifecycle events only; never an env value (the env may hold secrets).
    print(f"echo[{os.getpid()}] {event}", file=sys.stderr, flush=True)


def _float_env(env: dict, name: str, default: float = 0.0) -> float:
    raw = env.get(name, "")
    try:
        return float(raw) if raw else default
    except ValueError:
        _log(f"ignoring {name}: not a number")
        return default


def _parse_args(argv: list[str], env: dict) -> tuple[str, int]:
    host, port = env.get("HOST", "127.0.0.1"), env.get("PORT", "8080")
    args = iter(argv)
    for arg in args:
        name, _, value = arg.partition("=")
        if name in ("--port", "--host"):
            value = value or next(args, "")
            if name == "--port":
                port = value
            else:
                host = value
    return host, int(port)


def reverse_upper(text: str) -> str:
    """The toy model: the text reversed and upper-cased."""
    return text[::-1].upper()


def completion_tokens(prompt: str, max_tokens: int) -> list[str]:
    """The toy language model: the prompt's words, last first, upper-cased, repeated up to ``max_tokens``."""
    words = [w.upper() for w in reversed(prompt.split())] or ["ECHO"]
    return [(" " if i else "") + words[i % len(words)] for i in range(max(0, max_tokens))]


class FailureSequence:
    """Deterministic failures: over any n requests, floor(n × rate) of them fail, evenly spread."""

    def __init__(self, rate: float) -> None:
        self._ppm = round(min(max(rate, 0.0), 1.0) * 1_000_000)  # integer arithmetic: exact, no float drift
        self._n = 0

    def next_fails(self) -> bool:
        n, self._n = self._n, self._n + 1
        return (n + 1) * self._ppm // 1_000_000 > n * self._ppm // 1_000_000


class PrefillEndpoints:
    """The prefill role's endpoints: from env at start, then from the endpoints file whenever it changes."""

    def __init__(self, initial: str, path: str) -> None:
        self._endpoints = [e.strip() for e in initial.split(",") if e.strip()]
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._next = 0

    def _refresh(self) -> None:
        if not self._path:
            return
        try:
            st = os.stat(self._path)
        except OSError:
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            with open(self._path, "rb") as f:
                data = json.loads(f.read())
            endpoints = [str(e) for e in data.get("prefill", [])]
        except (OSError, ValueError, AttributeError, TypeError):
            return  # a half-written file: keep the previous list and look again next time
        self._stamp = stamp
        self._endpoints = endpoints

    def rotation(self) -> list[str]:
        """All current endpoints, starting at the next one in round-robin order."""
        self._refresh()
        if not self._endpoints:
            return []
        start = self._next % len(self._endpoints)
        self._next += 1
        return self._endpoints[start:] + self._endpoints[:start]


async def _post_json(endpoint: str, path: str, payload: dict, timeout: float, token: str = "") -> dict:
    host, _, port = endpoint.rpartition(":")
    body = json.dumps(payload).encode()
    proof = f"{UPSTREAM_TOKEN_HEADER}: {token}\r\n" if token else ""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host or "127.0.0.1", int(port))
        try:
            writer.write(f"POST {path} HTTP/1.1\r\nHost: {endpoint}\r\nContent-Type: application/json\r\n{proof}"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
    head, _, content = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status != 200:
        raise ConnectionError(f"{endpoint} answered {status}")
    return json.loads(content)


class EchoServer:
    """One echo instance: HTTP/1.1 keep-alive over asyncio streams, with graceful draining."""

    def __init__(self, env: dict) -> None:
        self.identity = {
            "service": env.get("INFERSTACK_SERVICE", ""),
            "deployment": env.get("INFERSTACK_DEPLOYMENT", ""),
            "role": env.get("INFERSTACK_ROLE", ""),
            "instance": env.get("INFERSTACK_INSTANCE", ""),
            "version": env.get("INFERSTACK_VERSION") or env.get("INFERSTACK_REVISION") or "v1",
        }
        self._identity_headers = "".join(f"X-Echo-{k.capitalize()}: {v}\r\n" for k, v in self.identity.items())
        self.model = oai.model_id(env)
        self.created = int(time.time())
        self.latency_s = _float_env(env, "ECHO_LATENCY_MS") / 1000
        self.token_delay_s = _float_env(env, "ECHO_TOKEN_DELAY_MS", 10.0) / 1000
        self.warmup_s = _float_env(env, "ECHO_WARMUP_S")
        self.fail_liveness_after_s = _float_env(env, "ECHO_FAIL_LIVENESS_AFTER_S", -1.0)
        self.failures = FailureSequence(_float_env(env, "ECHO_FAILURE_RATE"))
        self.prefill = PrefillEndpoints(env.get("INFERSTACK_ROLE_PREFILL_ENDPOINTS", ""),
                                        env.get("INFERSTACK_ROLE_ENDPOINTS_FILE", ""))
        # The roles of one deployment share their service's token: a decode instance sends it to prefill instances.
        self.upstream_token = env.get(UPSTREAM_TOKEN_ENV, "").encode()
        self.started = time.monotonic()
        self.draining = False
        self.in_flight = 0
        self._quiet = asyncio.Event()  # set whenever nothing is in flight
        self._quiet.set()
        self._idle: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task] = set()
        self._served = 0

    # ---- connection handling -------------------------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._handlers.add(task)
        try:
            while True:
                self._idle.add(writer)
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                finally:
                    self._idle.discard(writer)
                self.in_flight += 1
                self._quiet.clear()
                try:
                    keep_alive = await self._serve_one(head, reader, writer)
                except ConnectionError:
                    return
                finally:
                    self.in_flight -= 1
                    if not self.in_flight:
                        self._quiet.set()
                if not keep_alive:
                    return
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _serve_one(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        try:
            request_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
            method, target, version = request_line.split(" ", 2)
            headers = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if self.upstream_token and not hmac.compare_digest(
                    headers.get(_TOKEN_KEY, "").encode("latin-1"), self.upstream_token):
                await self._send_error(writer, 403, "this instance answers only the gateway (missing or wrong "
                                                    "upstream token)", "forbidden", keep_alive=False)
                return False
            body = await self._read_body(headers, reader)
        except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            await self._send_error(writer, 400, "malformed HTTP request", "malformed_request", keep_alive=False)
            return False
        keep_alive = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
        path = target.split("?", 1)[0]
        keep_alive = await self._route(method, path, body, writer, keep_alive)
        return keep_alive and not self.draining

    async def _read_body(self, headers: dict, reader: asyncio.StreamReader) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    return b"".join(chunks)
                chunks.append(await reader.readexactly(size + 2))
                chunks[-1] = chunks[-1][:-2]
        length = int(headers.get("content-length", "0") or 0)
        if length < 0 or length > _MAX_BODY:
            raise ValueError("bad content-length")
        return await reader.readexactly(length) if length else b""

    # ---- responses -----------------------------------------------------------------------------------------------

    def _head(self, status: int, content_type: str, keep_alive: bool, framing: str) -> bytes:
        connection = "keep-alive" if keep_alive and not self.draining else "close"
        return (f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\nContent-Type: {content_type}\r\n{framing}\r\n"
                f"Connection: {connection}\r\n{self._identity_headers}\r\n").encode()

    async def _send_json(self, writer: asyncio.StreamWriter, status: int, payload: dict, keep_alive: bool) -> bool:
        body = json.dumps({**payload, **self.identity}).encode()
        writer.write(self._head(status, "application/json", keep_alive, f"Content-Length: {len(body)}") + body)
        await writer.drain()
        return keep_alive

    async def _send_error(self, writer: asyncio.StreamWriter, status: int, message: str, code: str | None,
                          keep_alive: bool, param: str | None = None) -> bool:
        return await self._send_json(writer, status, error_body(status, message, code, param), keep_alive)

    async def _route(self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter, keep_alive: bool) -> bool:
        if path == "/healthz":
            if self.draining:
                return await self._send_json(writer, 503, {"status": "draining"}, keep_alive)
            if time.monotonic() - self.started < self.warmup_s:
                return await self._send_json(writer, 503, {"status": "starting"}, keep_alive)
            return await self._send_json(writer, 200, {"status": "ready"}, keep_alive)
        if path == "/livez":
            alive_for = time.monotonic() - self.started
            if 0 <= self.fail_liveness_after_s <= alive_for:
                return await self._send_json(writer, 500, {"status": "unhealthy"}, keep_alive)
            return await self._send_json(writer, 200, {"status": "alive"}, keep_alive)
        if path == "/v1/models" or path.startswith("/v1/models/"):
            if method != "GET":
                return await self._send_error(writer, 405, f"use GET on {path}", "method_not_allowed", keep_alive)
            return await self._models(path, writer, keep_alive)
        if path not in _POST_ROUTES:
            return await self._send_error(writer, 404, f"Unknown request URL: {method} {path}", "unknown_url",
                                          keep_alive)
        if method != "POST":
            return await self._send_error(writer, 405, f"use POST on {path}", "method_not_allowed", keep_alive)
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = None
        if not isinstance(request, dict):
            return await self._send_error(writer, 400, "the body must be a JSON object", "invalid_json", keep_alive)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if path != "/v1/prefill" and self.failures.next_fails():
            return await self._send_error(writer, 500, "injected failure (ECHO_FAILURE_RATE)", "injected_failure",
                                          keep_alive)
        self._served += 1
        if path == "/v1/predict":
            return await self._predict(request, writer, keep_alive)
        if path == "/v1/prefill":
            return await self._prefill(request, writer, keep_alive)
        return await self._completions(request, writer, keep_alive, chat=path == "/v1/chat/completions")

    async def _models(self, path: str, writer: asyncio.StreamWriter, keep_alive: bool) -> bool:
        if path in ("/v1/models", "/v1/models/"):
            return await self._send_json(writer, 200, oai.model_list(self.model, self.created), keep_alive)
        wanted = path[len("/v1/models/"):]
        if wanted != self.model:
            return await self._send_error(writer, 404, f"The model '{wanted}' does not exist (this deployment "
                                                       f"serves '{self.model}')", "model_not_found", keep_alive, "model")
        return await self._send_json(writer, 200, oai.model_object(self.model, self.created), keep_alive)

    async def _predict(self, request: dict, writer: asyncio.StreamWriter, keep_alive: bool) -> bool:
        value = request.get("input")
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
        digest = sha256(f"{self.identity['version']}\0{text}".encode()).hexdigest()[:16]
        return await self._send_json(writer, 200, {"output": reverse_upper(text), "digest": digest}, keep_alive)

    async def _prefill(self, request: dict, writer: asyncio.StreamWriter, keep_alive: bool) -> bool:
        prompt = str(request.get("prompt", ""))
        result = {"prompt_tokens": len(prompt.split()), "kv_digest": sha256(prompt.encode()).hexdigest()[:16]}
        return await self._send_json(writer, 200, result, keep_alive)

    async def _call_prefill(self, prompt: str) -> dict | None:
        """Ask a prefill instance first, when this is a decode-side instance of a multi-role deployment."""
        if self.identity["role"] == "prefill":
            return None
        endpoints = self.prefill.rotation()
        if not endpoints:
            return None
        errors = []
        for endpoint in endpoints:
            try:
                return await _post_json(endpoint, "/v1/prefill", {"prompt": prompt}, timeout=5.0,
                                        token=self.upstream_token.decode())
            except (OSError, ValueError, IndexError, TimeoutError) as exc:
                errors.append(f"{endpoint}: {exc or type(exc).__name__}")
        raise ConnectionError("no prefill endpoint answered (" + "; ".join(errors) + ")")

    async def _completions(self, request: dict, writer: asyncio.StreamWriter, keep_alive: bool, chat: bool) -> bool:
        """``/v1/completions`` or ``/v1/chat/completions``, whole or streamed (one event per token)."""
        try:
            gen = oai.chat_request(request) if chat else oai.completion_request(request)
        except oai.RequestError as exc:
            return await self._send_json(writer, 400, exc.body(), keep_alive)
        try:
            prefill = await self._call_prefill(gen.prompt)
        except ConnectionError as exc:
            return await self._send_error(writer, 502, str(exc), "prefill_unavailable", keep_alive)
        tokens = completion_tokens(gen.prompt, gen.max_tokens)
        digest = sha256(f"{self.identity['instance']}\0{self._served}".encode()).hexdigest()[:12]
        cid, created = ("chatcmpl-" if chat else "cmpl-") + digest, int(time.time())
        extra = {"prefill": prefill} if prefill is not None else {}
        if not gen.stream:
            build = oai.chat_completion if chat else oai.completion
            payload = build(cid, created, self.model, gen, "".join(tokens), len(tokens))
            return await self._send_json(writer, 200, {**payload, **extra}, keep_alive)
        writer.write(self._head(200, "text/event-stream", keep_alive, "Transfer-Encoding: chunked\r\nCache-Control: no-cache"))
        first = True

        async def send(event: dict) -> None:
            nonlocal first
            event = {**event, **self.identity, **(extra if first else {})}
            first = False
            _write_chunk(writer, b"data: " + json.dumps(event).encode() + b"\n\n")
            await writer.drain()

        if chat:
            for index in range(gen.n):
                await send(oai.chat_chunk(cid, created, self.model, index, {"role": "assistant", "content": ""}, None))
        reason = oai.finish_reason(len(tokens), gen.max_tokens)
        for i, token in enumerate(tokens or [""]):
            if i:
                await asyncio.sleep(self.token_delay_s)
            last = reason if i >= len(tokens) - 1 else None
            for index in range(gen.n):
                if chat:
                    await send(oai.chat_chunk(cid, created, self.model, index, {"content": token}, last))
                else:
                    await send(oai.completion_chunk(cid, created, self.model, index, token, last))
        if gen.include_usage:
            await send(oai.usage_chunk(cid, created, self.model, chat, gen, len(tokens)))
        _write_chunk(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return keep_alive

    # ---- lifecycle -----------------------------------------------------------------------------------------------

    async def drain(self, server: asyncio.Server) -> None:
        """Stop accepting and fail readiness; let in-flight requests (streams too) finish, then close the rest.

        Until nothing is in flight, a request on an open keep-alive connection is still answered (with
        ``Connection: close``; /healthz says 503), so a caller racing the shutdown gets an answer, not a reset.
        """
        self.draining = True
        server.close()
        _log(f"draining: stopped accepting, {self.in_flight} request(s) in flight")
        while self.in_flight:
            await self._quiet.wait()
        for writer in list(self._idle):
            writer.close()
        while self._handlers:
            await asyncio.wait(set(self._handlers))


def _write_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))


async def serve(host: str, port: int, env: dict) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    delay = _float_env(env, "ECHO_STARTUP_DELAY_S")
    if delay > 0:
        _log(f"starting: waiting {delay}s before listening")
        try:
            async with asyncio.timeout(delay):
                await stop.wait()
            _log("stopped before listening, exiting 0")
            return 0
        except TimeoutError:
            pass
    echo = EchoServer(env)
    server = await asyncio.start_server(echo.handle, host, port, reuse_address=True)
    _log(f"listening on {host}:{port}")
    await stop.wait()
    await echo.drain(server)
    _log("drained, exiting 0")
    return 0


def main(argv: list[str] | None = None) -> int:
    env = dict(os.environ)
    if env.get("ECHO_EXIT_AT_START") == "1":
        _log("ECHO_EXIT_AT_START=1: exiting 1 (a broken image, on purpose)")
        return 1
    host, port = _parse_args(sys.argv[1:] if argv is None else argv, env)
    return asyncio.run(serve(host, port, env))


if __name__ == "__main__":
    sys.exit(main())
