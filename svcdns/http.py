"""/health, /ready and /metrics: a small HTTP/1.1 server on asyncio streams.

Kubelet probes and Prometheus ask three fixed paths with GET. aiohttp's server answered
them before, but importing aiohttp costs ~0.13 s of CPU and ~20 MB of memory at start
(its client, connector and SSL set-up come with it): a twentieth of the time to ready
at 10,000 services, spent before the first answer. The exchange needs little: a request
line, headers to skip, one response; keep-alive for scrapers; bounded and timed reads so
a slow or hostile client holds nothing for long.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

MAX_HEAD = 8192  # request line and headers; more is refused (431)
TEXT = "text/plain; charset=utf-8"
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 503: "Service Unavailable"}


class HealthServer:
    """``ready`` decides /ready (200 only after the first full sync, 503 when draining);
    ``healthy`` decides /health (None: alive means healthy)."""

    def __init__(self, host: str, port: int, ready: Callable[[], bool], registry: CollectorRegistry, healthy: Callable[[], bool] | None = None,
                 *, request_timeout: float = 10.0):
        self.host, self.port = host, port
        self.ready = ready
        self.healthy = healthy
        self.registry = registry
        self.request_timeout = request_timeout  # for each request's line and headers
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, self.host, self.port, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._clients):  # idle keep-alive connections
            writer.close()
        await self._server.wait_closed()

    def respond(self, method: str, path: str) -> tuple[int, str, bytes, tuple[tuple[str, str], ...]]:
        """(status, content type, body, extra headers) for one request."""
        if path not in ("/health", "/ready", "/metrics"):
            return 404, TEXT, b"not found\n", ()
        if method not in ("GET", "HEAD"):
            return 405, TEXT, b"method not allowed\n", (("Allow", "GET, HEAD"),)
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry), ()
        if path == "/ready":
            return (200, TEXT, b"OK\n", ()) if self.ready() else (503, TEXT, b"not ready\n", ())
        if self.healthy is None or self.healthy():
            return 200, TEXT, b"OK\n", ()
        return 503, TEXT, b"unhealthy\n", ()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            while await self._exchange(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client went away or took too long: nothing to answer
        finally:
            self._clients.discard(writer)
            writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """One request and its response; True to keep the connection for another."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.request_timeout)
        except asyncio.LimitOverrunError:
            await _send(writer, 431, TEXT, b"request header too large\n", (), "GET", keep=False)
            return False
        except asyncio.IncompleteReadError as e:
            if e.partial.strip():
                raise
            return False  # closed between requests
        line, _, headers = head.partition(b"\r\n")
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await _send(writer, 400, TEXT, b"bad request\n", (), "GET", keep=False)
            return False
        method, target, version = parts
        lowered = headers.lower()
        # A request body is not read: a request announcing one ends the connection.
        keep = version == "HTTP/1.1" and b"connection: close" not in lowered and b"content-length:" not in lowered and b"transfer-encoding:" not in lowered
        try:
            status, ctype, body, extra = self.respond(method, target.partition("?")[0])
        except Exception:  # a failing callback is a 500, not a dead listener
            log.exception("answering %s %s failed", method, target)
            status, ctype, body, extra = 500, TEXT, b"internal error\n", ()
        await _send(writer, status, ctype, body, extra, method, keep)
        return keep


async def _send(writer: asyncio.StreamWriter, status: int, ctype: str, body: bytes, extra, method: str, keep: bool) -> None:
    lines = [f"HTTP/1.1 {status} {REASONS[status]}", f"Content-Type: {ctype}", f"Content-Length: {len(body)}",
             *(f"{k}: {v}" for k, v in extra), "Connection: keep-alive" if keep else "Connection: close"]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if method == "HEAD" else body))
    await writer.drain()
