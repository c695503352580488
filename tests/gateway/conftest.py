"""Real backends, a real gateway process and a fast keep-alive load generator, all on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httptools
import pytest
import uvloop
from prometheus_client.parser import text_string_to_metric_families

from inferstack.platform.gateway import GatewayProcess

OPEN_TO_LOOPBACK = [{"cidr": "127.0.0.0/8", "from_port": 1, "to_port": 65535}]


# --------------------------------------------------------------------------------------------------- backends


class _BackendProtocol(asyncio.Protocol):
    """A tiny HTTP/1.1 server: answers with its backend's name; /echo, /delay, /stream, /close, /status."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.queue: asyncio.Queue[tuple] | None = None
        self.task: asyncio.Task | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.backend.connections.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.backend.connections.discard(self.transport)
        if self.task is not None:
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.body = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode(), value.decode()))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        backend = self.backend
        backend.requests += 1
        backend.in_flight += 1
        request = (
            self.parser.get_method().decode(),
            self.url.decode(),
            self.headers,
            self.body,
            self.parser.get_http_version(),
            self.parser.should_keep_alive(),
        )
        path = urlsplit(request[1]).path
        if path in ("/", "/hello") and backend.delay == 0 and self.queue is None:
            self._respond_now(request)  # the fast path: no task
            return
        if self.queue is None:
            self.queue = asyncio.Queue()
            self.task = asyncio.get_running_loop().create_task(self._serve_queue())
        self.queue.put_nowait(request)

    def _respond_now(self, request: tuple) -> None:
        method, _, _, _, _, keep_alive = request
        body = self.backend.name.encode()
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s"
            % (len(body), b"" if keep_alive else b"Connection: close\r\n", b"" if method == "HEAD" else body)
        )
        self.backend.in_flight -= 1
        if not keep_alive:
            self.transport.close()

    async def _serve_queue(self) -> None:
        assert self.queue is not None
        while True:
            request = await self.queue.get()
            try:
                await self._serve(request)
            finally:
                self.backend.in_flight -= 1

    def _write_response(self, status: int, body: bytes, keep_alive: bool, method: str, extra: bytes = b"") -> None:
        no_body = method == "HEAD" or status in (204, 304)
        self.transport.write(
            b"HTTP/1.1 %d X\r\n%s%s%s\r\n%s"
            % (status, b"" if status in (204, 304) else b"Content-Length: %d\r\n" % len(body), extra,
               b"" if keep_alive else b"Connection: close\r\n", b"" if no_body else body)
        )
        if not keep_alive:
            self.transport.close()

    async def _serve(self, request: tuple) -> None:
        method, url, headers, body, version, keep_alive = request
        backend = self.backend
        split = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(split.query).items()}
        delay = float(query.get("s", backend.delay if split.path in ("/", "/hello", "/delay") else 0))
        if delay:
            await asyncio.sleep(delay)
        if split.path == "/echo":
            backend.bodies.append(body)
            payload = {
                "backend": backend.name,
                "method": method,
                "path": url,
                "headers": headers,
                "body": body.decode(errors="replace"),
                "http_version": version,
            }
            self._write_response(200, json.dumps(payload).encode(), keep_alive, method,
                                 b"Content-Type: application/json\r\n")
        elif split.path == "/stream":
            await self._stream(int(query.get("n", "3")), keep_alive)
        elif split.path == "/flood":
            # Everything at once into the transport: what the peer does not read stays in our write buffer.
            size = int(query.get("mb", "1")) << 20
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            chunk = b"z" * 65536
            for _ in range(size // len(chunk)):
                self.transport.write(chunk)
            backend.flood_transport = self.transport
        elif split.path == "/drip":
            # Chunked parts at a steady pace: a long response that never stalls.
            self.transport.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for n in range(int(query.get("n", "5"))):
                await asyncio.sleep(float(query.get("gap", "0.05")))
                self.transport.write(b"2\r\n%02d\r\n" % n)
            self.transport.write(b"0\r\n\r\n")
        elif split.path == "/close":
            # No length, no chunking: the body ends when the connection does.
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
            for part in (b"read-", b"until-", b"close:", backend.name.encode()):
                self.transport.write(part)
                await asyncio.sleep(0.01)
            self.transport.close()
        elif split.path == "/bytes":
            size = int(query.get("n", "0"))
            self._write_response(200, bytes(range(256)) * (size // 256) + b"x" * (size % 256), keep_alive, method)
        elif split.path == "/status":
            self._write_response(int(query.get("code", "200")), backend.name.encode(), keep_alive, method)
        else:
            self._write_response(200, backend.name.encode(), keep_alive, method)

    async def _stream(self, parts: int, keep_alive: bool) -> None:
        """Chunked: the first part at once, the others only after the test released `stream_gate`."""
        backend = self.backend
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for n in range(parts):
            if n == 1:
                released = await asyncio.get_running_loop().run_in_executor(None, backend.stream_gate.wait, 10)
                if not released:
                    backend.stream_gate_timed_out = True
            data = b"data: part-%d\n\n" % n
            self.transport.write(b"%x\r\n%s\r\n" % (len(data), data))
        backend.last_part_sent.set()
        self.transport.write(b"0\r\n\r\n")
        if not keep_alive:
            self.transport.close()


@dataclass
class Backend:
    """A backend server living in the BackendHost's loop thread."""

    name: str
    host: BackendHost
    delay: float = 0.0
    port: int = 0
    requests: int = 0
    in_flight: int = 0
    server: Any = None
    connections: set = field(default_factory=set)
    stream_gate: threading.Event = field(default_factory=threading.Event)
    last_part_sent: threading.Event = field(default_factory=threading.Event)
    stream_gate_timed_out: bool = False
    flood_transport: Any = None
    bodies: list = field(default_factory=list)  # request bodies seen by /echo

    def instance(self, id: str | None = None) -> dict[str, Any]:
        return {"id": id or self.name, "host": "127.0.0.1", "port": self.port}

    def unsent_bytes(self) -> int:
        """What the last /flood response still holds in its write buffer (its reader is not keeping up)."""

        async def size() -> int:
            return self.flood_transport.get_write_buffer_size() if self.flood_transport else -1

        return self.host.run(size())

    def stop(self) -> None:
        """Stop listening and close every connection (like a process that exits)."""
        self.host.run(self._stop())

    async def _stop(self) -> None:
        self.server.close()
        for transport in list(self.connections):
            transport.close()
        await self.server.wait_closed()


class BackendHost:
    """One event loop thread hosting any number of backends."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="backends", daemon=True)
        self.thread.start()
        self.backends: list[Backend] = []

    def run(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, name: str, delay: float = 0.0) -> Backend:
        backend = Backend(name=name, host=self, delay=delay)

        async def listen() -> None:
            backend.server = await asyncio.get_running_loop().create_server(
                lambda: _BackendProtocol(backend), "127.0.0.1", 0, backlog=1024
            )
            backend.port = backend.server.sockets[0].getsockname()[1]

        self.run(listen())
        self.backends.append(backend)
        return backend

    def close(self) -> None:
        for backend in self.backends:
            if backend.server is not None and backend.server.is_serving():
                backend.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="session")
def backends() -> Iterator[BackendHost]:
    host = BackendHost()
    yield host
    host.close()


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port where connections are refused: bound, never listening (so nobody else can take it meanwhile)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


# --------------------------------------------------------------------------------------------------- snapshots


def service(
    key: str,
    deployments: dict[str, list[Backend | dict[str, Any]]],
    weights: dict[str, float] | None = None,
    strategy: str = "weighted",
    network_type: str = "private_gateway",
    allowed_sources: list[dict[str, Any]] | None = None,
    key_hashes: list[str] | None = None,
    header_rules: list[dict[str, str]] | None = None,
    mirror: dict[str, Any] | None = None,
    consistent_hash: str | None = None,
    timeout_s: float = 10,
    retries: int = 1,
    port: int = 8000,
    accept_traffic: dict[str, bool] | None = None,
) -> dict[str, Any]:
    """A snapshot service; by default private and open to all of 127.0.0.0/8."""
    return {
        "key": key,
        "network_type": network_type,
        "listeners": [{"port": port, "bind_port": 0}],
        "invocation_key_hashes": key_hashes or [],
        "allowed_sources": OPEN_TO_LOOPBACK if allowed_sources is None else allowed_sources,
        "traffic": {
            "strategy": strategy,
            "weights": weights or {},
            "header_rules": header_rules or [],
            "mirror": mirror,
            "consistent_hash": {"header": consistent_hash} if consistent_hash else None,
            "timeout_s": timeout_s,
            "retries": retries,
        },
        "deployments": [
            {
                "key": dep,
                "accept_traffic": (accept_traffic or {}).get(dep, True),
                "instances": [b.instance() if isinstance(b, Backend) else b for b in instances],
            }
            for dep, instances in deployments.items()
        ],
    }


class GatewayUnderTest:
    """The gateway process plus a version counter, so that each push is newer than the last."""

    def __init__(self, process: GatewayProcess) -> None:
        self.process = process
        self._versions = itertools.count(1)
        self.listeners: dict[str, int] = {}

    def snapshot(self, *services: dict[str, Any]) -> dict[str, Any]:
        return {"version": next(self._versions), "services": list(services)}

    def push(self, *services: dict[str, Any]) -> dict[str, Any]:
        result = self.process.push(self.snapshot(*services))
        self.listeners = result["listeners"]
        return result

    async def apush(self, *services: dict[str, Any]) -> dict[str, Any]:
        result = await self.process.apush(self.snapshot(*services))
        self.listeners = result["listeners"]
        return result

    def port(self, service_key: str, logical_port: int = 8000) -> int:
        return self.listeners[f"{service_key}/{logical_port}"]

    def url(self, service_key: str, path: str = "/", logical_port: int = 8000) -> str:
        return f"http://127.0.0.1:{self.port(service_key, logical_port)}{path}"

    def metric_samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        return parse_samples(self.process.metrics(), name)

    async def ametric_samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        return parse_samples(await self.process.ametrics(), name)


def parse_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayUnderTest]:
    process = GatewayProcess().start()
    try:
        yield GatewayUnderTest(process)
    finally:
        process.stop()


# --------------------------------------------------------------------------------------------------- load


@dataclass
class Result:
    started: float
    status: int
    deployment: str
    instance: str
    body: bytes


@dataclass
class Load:
    """What a load run observed."""

    results: list[Result] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def shares(self, results: list[Result] | None = None) -> dict[str, float]:
        chosen = self.results if results is None else results
        counts = Counter(r.deployment for r in chosen)
        return {k: 100.0 * v / len(chosen) for k, v in counts.items()}

    def ok(self) -> list[Result]:
        return [r for r in self.results if r.status == 200]

    def bad(self) -> list[str]:
        return self.failures + [f"status {r.status}: {r.body[:200]!r}" for r in self.results if r.status != 200]


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get(b"content-length", b"0"))
    body = await reader.readexactly(length) if length else b""
    return status, headers, body


async def generate_load(
    port: int,
    requests: int | None = None,
    concurrency: int = 8,
    headers: dict[str, str] | None = None,
    path: str = "/",
    until: Callable[[], bool] | None = None,
    load: Load | None = None,
) -> Load:
    """Keep-alive clients on raw sockets, one request at a time each (no pipelining).

    Stops after `requests` requests in total, or when `until()` turns true.
    """
    load = load or Load()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    request = f"GET {path} HTTP/1.1\r\nHost: gateway\r\n{extra}\r\n".encode()
    remaining = itertools.count()
    loop = asyncio.get_running_loop()

    def more() -> bool:
        if until is not None:
            return not until()
        return next(remaining) < requests  # type: ignore[operator]

    async def client() -> None:
        reader = writer = None
        while more():
            started = loop.time()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                status, response_headers, body = await _read_response(reader)  # type: ignore[arg-type]
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                load.failures.append(f"{type(exc).__name__}: {exc}")
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            load.results.append(
                Result(
                    started,
                    status,
                    response_headers.get(b"x-inferstack-deployment", b"").decode(),
                    response_headers.get(b"x-inferstack-instance", b"").decode(),
                    body,
                )
            )
            if response_headers.get(b"connection", b"").lower() == b"close":
                writer.close()  # type: ignore[union-attr]
                reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return load


def run(coro: Any) -> Any:
    """Run a coroutine on uvloop from a synchronous test."""
    return uvloop.run(coro)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
