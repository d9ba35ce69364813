"""/health, /ready and /metrics as probes and scrapers see them, over real TCP."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter

from svcdns.http import HealthServer


class Flags:
    ready = False
    healthy = True


@pytest.fixture
async def server():
    flags = Flags()
    registry = CollectorRegistry()
    Counter("svcdns_test_things", "Things.", registry=registry).inc(3)
    srv = HealthServer("127.0.0.1", 0, ready=lambda: flags.ready, registry=registry, healthy=lambda: flags.healthy, request_timeout=0.5)
    await srv.start()
    srv.flags = flags
    yield srv
    await srv.close()


async def exchange(srv: HealthServer, raw: bytes) -> bytes:
    """Send raw bytes, return everything the server sends until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(raw)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()


CASES = [
    # name, (ready, healthy), request, status line, body
    ("ready-before-sync", (False, True), get("/ready"), b"HTTP/1.1 503 Service Unavailable", b"not ready\n"),
    ("ready-after-sync", (True, True), get("/ready"), b"HTTP/1.1 200 OK", b"OK\n"),
    ("health", (False, True), get("/health"), b"HTTP/1.1 200 OK", b"OK\n"),
    ("unhealthy", (True, False), get("/health"), b"HTTP/1.1 503 Service Unavailable", b"unhealthy\n"),
    ("query-string-ignored", (True, True), get("/ready?verbose=1"), b"HTTP/1.1 200 OK", b"OK\n"),
    ("unknown-path", (True, True), get("/"), b"HTTP/1.1 404 Not Found", b"not found\n"),
    ("head-has-no-body", (True, True), get("/ready", "HEAD"), b"HTTP/1.1 200 OK", b""),
    ("post-not-allowed", (True, True), get("/ready", "POST"), b"HTTP/1.1 405 Method Not Allowed", b"method not allowed\n"),
    ("garbage", (True, True), b"hello\r\n\r\n", b"HTTP/1.1 400 Bad Request", b"bad request\n"),
    ("http-1.0", (True, True), b"GET /ready HTTP/1.0\r\n\r\n", b"HTTP/1.1 200 OK", b"OK\n"),
]


@pytest.mark.parametrize("flags, request_bytes, status, body", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_answers(server, flags, request_bytes, status, body):
    server.flags.ready, server.flags.healthy = flags
    reply = await exchange(server, request_bytes)
    head, _, got = reply.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == status
    assert got == body
    if request_bytes.startswith(b"HEAD"):
        assert b"Content-Length: 3" in head, "HEAD says how long the GET body is"


async def test_metrics_in_prometheus_text_format(server):
    head, _, body = (await exchange(server, get("/metrics"))).partition(b"\r\n\r\n")
    assert f"Content-Type: {CONTENT_TYPE_LATEST}".encode() in head.split(b"\r\n")
    assert b"svcdns_test_things_total 3.0" in body


async def test_keep_alive_serves_several_requests_on_one_connection(server):
    server.flags.ready = True
    one = b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(one + one)  # pipelined
        for _ in range(2):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 OK") and b"Connection: keep-alive" in head
            assert await reader.readexactly(3) == b"OK\n"
        writer.write(b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 5)).endswith(b"\r\n\r\nOK\n"), "answered, then closed"
    finally:
        writer.close()


async def test_oversized_headers_are_refused(server):
    reply = await exchange(server, b"GET /ready HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 431 ")


async def test_a_client_that_never_finishes_its_request_is_dropped(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /ready HTTP/1.1\r\n")  # and nothing more
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b"", "closed after the request timeout, without an answer"
    finally:
        writer.close()


async def test_a_failing_callback_is_a_500_and_the_server_keeps_answering(server):
    server.ready = lambda: 1 / 0
    assert (await exchange(server, get("/ready"))).startswith(b"HTTP/1.1 500 ")
    assert (await exchange(server, get("/health"))).startswith(b"HTTP/1.1 200 ")


async def test_close_ends_idle_keep_alive_connections(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /health HTTP/1.1\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"OK\n"), 5)
    await asyncio.wait_for(server.close(), 5)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
