"""HTTP behaviour of the proxy: streaming, timeouts, retries, framing, headers, odd clients."""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import httpx
import pytest

from inferstack.platform.gateway.routing import FAILED_INSTANCE_PAUSE_S

from .conftest import BackendHost, GatewayUnderTest, service, wait_for


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send `data` on a fresh connection and read until the gateway closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    received = b""
    while marker not in received:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


@pytest.fixture
def chat(gateway: GatewayUnderTest, backends: BackendHost) -> str:
    """Service `chat` with one deployment on one fresh backend; returns the backend's name."""
    gateway.push(service("chat", {"main": [backends.start("proxy-main")]}, weights={"main": 100}))
    return "proxy-main"


# ------------------------------------------------------------------------------------------ streaming


def test_streamed_response_reaches_the_client_before_the_backend_produced_the_last_chunk(
    gateway: GatewayUnderTest, backends: BackendHost
) -> None:
    backend = backends.start("streamer")
    gateway.push(service("chat", {"main": [backend]}, weights={"main": 100}))

    with httpx.stream("GET", gateway.url("chat", "/stream?n=3"), timeout=3) as response:
        parts = response.iter_raw()
        first = next(parts)
        last_part_was_sent = backend.last_part_sent.is_set()
        backend.stream_gate.set()  # only now may the backend produce the rest
        rest = b"".join(parts)

    assert first.startswith(b"data: part-0\n\n")
    assert not last_part_was_sent
    assert not backend.stream_gate_timed_out
    assert first + rest == b"data: part-0\n\ndata: part-1\n\ndata: part-2\n\n"
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["x-inferstack-instance"] == "streamer"


def test_stream_that_keeps_moving_outlives_the_timeout(gateway: GatewayUnderTest, backends: BackendHost) -> None:
    gateway.push(service("chat", {"main": [backends.start("dripper")]}, weights={"main": 100}, timeout_s=0.3))

    response = httpx.get(gateway.url("chat", "/drip?n=8&gap=0.1"), timeout=5)

    assert response.status_code == 200
    assert response.content == b"".join(b"%02d" % n for n in range(8))


def test_stream_that_stalls_longer_than_the_timeout_is_cut(gateway: GatewayUnderTest, backends: BackendHost) -> None:
    backend = backends.start("staller")
    gateway.push(service("chat", {"main": [backend]}, weights={"main": 100}, timeout_s=0.3))

    started = time.monotonic()
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream(
        "GET", gateway.url("chat", "/stream?n=2"), timeout=5
    ) as response:
        for _ in response.iter_raw():
            pass
    backend.stream_gate.set()

    assert 0.25 < time.monotonic() - started < 2


# ------------------------------------------------------------------------------------------ failures


def test_slow_upstream_gets_504_after_the_timeout(gateway: GatewayUnderTest, backends: BackendHost) -> None:
    gateway.push(service("chat", {"main": [backends.start("slowpoke")]}, weights={"main": 100}, timeout_s=0.3))

    started = time.monotonic()
    response = httpx.get(gateway.url("chat", "/delay?s=2"), timeout=5)
    elapsed = time.monotonic() - started

    assert response.status_code == 504
    assert response.json() == {"error": {"message": "instance slowpoke did not answer within the timeout "
                                               "(0.3 s)", "type": "server_error", "param": None, "code": "upstream_timeout"}, "service": "chat", "deployment": "main", "instance": "slowpoke"}
    assert 0.28 < elapsed < 1.5


def test_connection_refused_is_retried_on_another_instance(
    gateway: GatewayUnderTest, backends: BackendHost, refused_port: int
) -> None:
    refused = {"id": "refusing", "host": "127.0.0.1", "port": refused_port}
    gateway.push(service("chat", {"main": [refused, backends.start("healthy")]}, weights={"main": 100}, retries=1))

    with httpx.Client() as client:
        responses = [client.get(gateway.url("chat")) for _ in range(6)]

    assert [(r.status_code, r.text) for r in responses] == [(200, "healthy")] * 6
    errors = {(labels["instance"], labels["kind"]): value
              for labels, value in gateway.metric_samples("inferstack_gateway_errors_total")}
    assert errors[("refusing", "connect")] >= 1


def test_retry_on_a_pooled_connection_sends_the_whole_request(
    gateway: GatewayUnderTest, backends: BackendHost, refused_port: int
) -> None:
    refused = {"id": "refusing-again", "host": "127.0.0.1", "port": refused_port}
    gateway.push(service("chat", {"main": [refused, backends.start("pooled")]}, weights={"main": 100}, timeout_s=3))

    with httpx.Client() as client:
        first = client.post(gateway.url("chat", "/echo"), content=b"one")
        time.sleep(FAILED_INSTANCE_PAUSE_S + 0.1)  # the refusing instance is tried again: the retry finds a pooled
        second = client.post(gateway.url("chat", "/echo"), content=b"two")  # connection to the healthy one

    assert [(r.status_code, r.json()["body"]) for r in (first, second)] == [(200, "one"), (200, "two")]
    errors = {(labels["instance"], labels["kind"]): value
              for labels, value in gateway.metric_samples("inferstack_gateway_errors_total")}
    assert errors[("refusing-again", "connect")] == 2


def test_connection_refused_everywhere_is_502(
    gateway: GatewayUnderTest, refused_port: int
) -> None:
    refused = {"id": "refusing-only", "host": "127.0.0.1", "port": refused_port}
    gateway.push(service("chat", {"main": [refused]}, weights={"main": 100}))

    response = httpx.get(gateway.url("chat"))

    assert response.status_code == 502
    assert response.json()["error"] == {"message": "cannot connect to instance refusing-only", "type": "server_error",
                                        "param": None, "code": "upstream_connection_failed"}
    assert response.headers["x-inferstack-instance"] == "refusing-only"


def test_nothing_ready_is_503_naming_service_and_deployment(gateway: GatewayUnderTest) -> None:
    gateway.push(service("chat", {"stable": [], "canary": []}, weights={"stable": 90, "canary": 10}))

    split = httpx.get(gateway.url("chat"))
    direct = httpx.get(gateway.url("chat"), headers={"X-Inferstack-Deployment": "canary"})

    assert split.status_code == direct.status_code == 503
    assert split.json() == {"error": {"message": "no ready instance of service 'chat'; retry later", "type": "server_error", "param": None, "code": "no_ready_instance"}, "service": "chat", "deployment": None}
    assert direct.json() == {"error": {"message": "no ready instance of deployment 'canary' of service "
                                             "'chat'; retry later", "type": "server_error", "param": None, "code": "no_ready_instance"}, "service": "chat", "deployment": "canary"}
    assert direct.headers["x-inferstack-deployment"] == "canary"


def test_client_that_hangs_up_mid_request_leaves_nothing_in_flight(gateway: GatewayUnderTest, chat: str) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port("chat"))) as sock:
        sock.sendall(b"GET /delay?s=0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)

    def settled() -> bool:
        samples = gateway.metric_samples("inferstack_gateway_in_flight")
        return sum(v for labels, v in samples if labels["instance"] == chat) == 0

    wait_for(settled)
    errors = {(labels["instance"], labels["kind"]): v
              for labels, v in gateway.metric_samples("inferstack_gateway_errors_total")}
    assert errors[(chat, "client_abort")] == 1


# ------------------------------------------------------------------------------------------ headers and bodies


def test_every_response_names_deployment_and_instance_and_hop_headers_are_not_forwarded(
    gateway: GatewayUnderTest, chat: str
) -> None:
    response = httpx.get(gateway.url("chat", "/echo"), headers={"X-Forwarded-For": "10.1.2.3", "TE": "trailers"})
    seen = {name.lower(): value for name, value in response.json()["headers"]}

    assert response.headers["x-inferstack-deployment"] == "main"
    assert response.headers["x-inferstack-instance"] == chat
    assert seen["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
    assert "te" not in seen and "connection" not in seen
    assert seen["host"] == f"127.0.0.1:{gateway.port('chat')}"


def test_request_bodies_with_length_and_chunked_pass_through(gateway: GatewayUnderTest, chat: str) -> None:
    payload = b"0123456789" * 200_000  # 2 MB

    with httpx.Client(timeout=10) as client:
        sized = client.post(gateway.url("chat", "/echo"), content=payload).json()
        chunked = client.post(gateway.url("chat", "/echo"), content=iter([b"hello ", b"chunked ", b"world"])).json()

    assert len(sized["body"]) == len(payload) and sized["body"].encode() == payload
    assert chunked["body"] == "hello chunked world"
    assert ("Transfer-Encoding", "chunked") in [tuple(h) for h in chunked["headers"]]


def test_large_response_arrives_whole(gateway: GatewayUnderTest, chat: str) -> None:
    size = 8 * 1024 * 1024 + 17
    response = httpx.get(gateway.url("chat", f"/bytes?n={size}"), timeout=10)
    assert response.status_code == 200
    assert response.content == bytes(range(256)) * (size // 256) + b"x" * (size % 256)


def test_slow_client_makes_the_gateway_stop_reading_from_the_upstream(
    gateway: GatewayUnderTest, backends: BackendHost
) -> None:
    backend = backends.start("flooder")
    gateway.push(service("chat", {"main": [backend]}, weights={"main": 100}))
    size = 64 << 20

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # no autotuning: the client reads slowly
        sock.settimeout(5)
        sock.connect(("127.0.0.1", gateway.port("chat")))
        sock.sendall(b"GET /flood?mb=64 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)
        held_by_backend = backend.unsent_bytes()
        received = 0
        head = read_until(sock, b"\r\n\r\n")
        received = len(head.split(b"\r\n\r\n", 1)[1])
        while received < size:
            received += len(sock.recv(1 << 20))

    # Without flow control the gateway would have read it all (and held it in memory); it left most with the backend.
    assert held_by_backend > 32 << 20
    assert received == size


def test_head_has_headers_without_body_and_the_connection_stays_usable(gateway: GatewayUnderTest, chat: str) -> None:
    with httpx.Client() as client:
        head = client.head(gateway.url("chat"))
        get = client.get(gateway.url("chat"))
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(chat))
    assert get.text == chat


def test_no_content_response_has_no_body_and_keeps_the_connection(gateway: GatewayUnderTest, chat: str) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port("chat")), timeout=5) as sock:
        sock.sendall(b"GET /status?code=204 HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        received = read_until(sock, b"\r\n\r\n" + chat.encode())
    first, _, second = received.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 204 ")
    assert second.startswith(b"HTTP/1.1 200 ")


def test_upstream_body_delimited_by_close_is_rechunked_for_http11(gateway: GatewayUnderTest, chat: str) -> None:
    response = httpx.get(gateway.url("chat", "/close"))
    assert response.text == f"read-until-close:{chat}"
    assert response.headers["transfer-encoding"] == "chunked"


def test_http10_client_gets_a_complete_answer_and_a_closed_connection(gateway: GatewayUnderTest, chat: str) -> None:
    plain = raw_exchange(gateway.port("chat"), b"GET / HTTP/1.0\r\n\r\n")
    until_close = raw_exchange(gateway.port("chat"), b"GET /close HTTP/1.0\r\n\r\n")

    assert plain.startswith(b"HTTP/1.1 200 ") and plain.endswith(b"\r\n\r\n" + chat.encode())
    assert b"connection: close" in plain.lower()
    assert until_close.endswith(b"\r\n\r\nread-until-close:" + chat.encode())
    assert b"transfer-encoding" not in until_close.lower()


def test_http10_keep_alive_client_keeps_its_connection(gateway: GatewayUnderTest, chat: str) -> None:
    request = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    with socket.create_connection(("127.0.0.1", gateway.port("chat")), timeout=5) as sock:
        sock.sendall(request)
        first = read_until(sock, b"\r\n\r\n" + chat.encode())
        sock.sendall(request)
        second = read_until(sock, b"\r\n\r\n" + chat.encode())
    assert b"connection: keep-alive" in first.lower()
    assert second.startswith(b"HTTP/1.1 200 ")


def test_client_connection_close_is_honoured(gateway: GatewayUnderTest, chat: str) -> None:
    answer = raw_exchange(gateway.port("chat"), b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in answer.lower()


def test_expect_100_continue_gets_a_continue_before_the_body_is_sent(gateway: GatewayUnderTest, chat: str) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port("chat")), timeout=5) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = read_until(sock, b"\r\n\r\n")
        sock.sendall(b"hello")
        final = read_until(sock, b"}")
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    body = json.loads(final.split(b"\r\n\r\n", 1)[1])
    assert body["body"] == "hello"
    assert "expect" not in {name.lower() for name, _ in body["headers"]}


def test_pipelined_requests_are_answered_in_order(gateway: GatewayUnderTest, chat: str) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port("chat")), timeout=5) as sock:
        sock.sendall(
            b"GET /delay?s=0.2 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nping"
            b"GET /status?code=201 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        received = b""
        while received.count(b"HTTP/1.1 ") < 3 or not received.endswith(b"\r\n\r\n" + chat.encode()):
            received += sock.recv(65536)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", received) == [b"200", b"200", b"201"]
    assert b'"body": "ping"' in received


def test_malformed_request_is_400_and_closed(gateway: GatewayUnderTest, chat: str) -> None:
    answer = raw_exchange(gateway.port("chat"), b"NOT HTTP AT ALL\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"] == {"message": "malformed HTTP request", "type": "invalid_request_error", "param": None,
                             "code": "bad_request"}


def test_concurrent_slow_requests_are_spread_to_the_least_busy_instance(
    gateway: GatewayUnderTest, backends: BackendHost
) -> None:
    a, b = backends.start("busy-a"), backends.start("busy-b")
    gateway.push(service("chat", {"main": [a, b]}, weights={"main": 100}))
    responses: list[str] = []
    threads = [threading.Thread(target=lambda: responses.append(httpx.get(gateway.url("chat", "/delay?s=0.3")).text))
               for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(responses) == ["busy-a"] * 3 + ["busy-b"] * 3


# ------------------------------------------------------------------------------------------ hostile heads


def test_a_head_over_64_kib_is_a_431_and_never_reaches_the_backend(gateway: GatewayUnderTest,
                                                                   backends: BackendHost) -> None:
    backend = backends.start("big-head")
    gateway.push(service("chat", {"main": [backend]}, weights={"main": 100}))
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (200 * 1024) + b"\r\n\r\n"
    answer = raw_exchange(gateway.port("chat"), big)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"request_header_fields_too_large" in answer and b"Connection: close" in answer
    many = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: y\r\n" % i for i in range(200)) + b"\r\n"
    answer = raw_exchange(gateway.port("chat"), many)
    assert answer.startswith(b"HTTP/1.1 431 ") and b"201 headers (at most 128)" in answer, answer[:300]
    assert backend.requests == 0
    # A head sent slowly in small pieces is counted as it comes: the gateway never buffers past the limit.
    with socket.create_connection(("127.0.0.1", gateway.port("chat")), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(100):
                sock.sendall(b"a" * 1024)
        except OSError:
            pass  # closed on us once over the limit
        assert read_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 431 ")
    # Just under the limits, the same request is served.
    fine = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " + b"a" * (60 * 1024) + b"\r\n\r\n"
    assert raw_exchange(gateway.port("chat"), fine).startswith(b"HTTP/1.1 200 ")


def test_a_head_trickled_past_the_head_timeout_is_a_408_and_the_connection_closes(backends: BackendHost) -> None:
    import os

    from inferstack.platform.gateway import GatewayProcess

    process = GatewayProcess(env={**os.environ, "INFERSTACK_GATEWAY_HEAD_TIMEOUT_S": "0.5"}).start()
    try:
        gateway = GatewayUnderTest(process)
        gateway.push(service("chat", {"main": [backends.start("slow-head")]}, weights={"main": 100}))
        with socket.create_connection(("127.0.0.1", gateway.port("chat")), timeout=10) as sock:
            started = time.monotonic()
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            for _ in range(10):  # a slowloris: a byte now and then, never the end of the head
                time.sleep(0.25)
                try:
                    sock.sendall(b"X")
                except OSError:
                    break
            answer = read_until(sock, b"\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 408 ") and b"within 0.5 s" in answer, answer[:300]
            assert time.monotonic() - started < 5
        assert raw_exchange(gateway.port("chat"), b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") \
            .startswith(b"HTTP/1.1 200 ")  # a prompt client is served as ever
    finally:
        process.stop()


def test_a_bad_head_timeout_setting_stops_the_gateway_with_a_clear_message() -> None:
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "inferstack.platform.gateway"], capture_output=True, text=True,
                          env={**os.environ, "INFERSTACK_GATEWAY_ADMIN_TOKEN": "t",
                               "INFERSTACK_GATEWAY_HEAD_TIMEOUT_S": "inf"}, timeout=20, check=False)
    assert done.returncode == 2 and "INFERSTACK_GATEWAY_HEAD_TIMEOUT_S='inf': seconds from 0.1 to 3600" in done.stderr
