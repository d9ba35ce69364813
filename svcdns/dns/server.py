"""asyncio UDP and TCP transports for the DNS handler.

Callback-style protocols (no per-query coroutine on the hot path): a datagram is handled
and answered inside ``datagram_received``. Only answers that must wait (forwarding)
become tasks.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import time
from bisect import bisect_left

from . import mmsg
from .handler import DnsHandler

log = logging.getLogger(__name__)

TCP_IDLE_TIMEOUT = 10.0  # seconds a TCP connection may sit idle (RFC 7766 suggests seconds)
LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Latency:
    """A lock-free latency histogram read by the metrics collector at scrape time;
    prometheus_client's Histogram.observe takes a lock and costs more than a query."""

    def __init__(self, buckets=LATENCY_BUCKETS):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.buckets, seconds)] += 1
        self.sum += seconds


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, handler: DnsHandler, latency: Latency):
        self.handler = handler
        self.latency = latency
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        started = time.perf_counter()
        reply = self.handler.handle(data, addr[0], False)
        if type(reply) is bytes:
            self.transport.sendto(reply, addr)
            self.latency.observe(time.perf_counter() - started)
        elif reply is not None:
            asyncio.ensure_future(self._later(reply, addr, started))

    async def _later(self, pending, addr, started: float) -> None:
        try:
            reply = await pending
        except Exception:
            log.exception("deferred answer to %s failed", addr[0])
            return
        if reply is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)
            self.latency.observe(time.perf_counter() - started)

    def error_received(self, exc) -> None:  # ICMP errors for earlier replies: nothing to do
        pass


class TcpProtocol(asyncio.Protocol):
    """Length-prefixed messages; pipelined queries are answered in order."""

    def __init__(self, handler: DnsHandler, latency: Latency, connections: set):
        self.handler = handler
        self.latency = latency
        self.connections = connections
        self.buffer = bytearray()
        self.transport = None
        self.peer = ""
        self._idle: asyncio.TimerHandle | None = None
        self._queue: asyncio.Queue | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        self.connections.add(self)
        self._arm()

    def connection_lost(self, exc) -> None:
        self.connections.discard(self)
        if self._idle:
            self._idle.cancel()

    def _arm(self) -> None:
        if self._idle:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(TCP_IDLE_TIMEOUT, self.transport.close)

    def data_received(self, data: bytes) -> None:
        self._arm()
        self.buffer += data
        while len(self.buffer) >= 2:
            size = self.buffer[0] << 8 | self.buffer[1]
            if size == 0:
                self.transport.close()
                return
            if len(self.buffer) < 2 + size:
                return
            message = bytes(self.buffer[2 : 2 + size])
            del self.buffer[: 2 + size]
            started = time.perf_counter()
            reply = self.handler.handle(message, self.peer, True)
            if type(reply) is bytes:
                self.transport.write(len(reply).to_bytes(2, "big") + reply)
                self.latency.observe(time.perf_counter() - started)
            elif type(reply) is list:  # a zone transfer: several messages, in order
                self.transport.writelines([len(m).to_bytes(2, "big") + m for m in reply])
            elif reply is not None:
                asyncio.ensure_future(self._later(reply, started))

    async def _later(self, pending, started: float) -> None:
        try:
            reply = await pending
        except Exception:
            log.exception("deferred answer to %s failed", self.peer)
            return
        if reply is not None and not self.transport.is_closing():
            self.transport.write(len(reply).to_bytes(2, "big") + reply)
            self.latency.observe(time.perf_counter() - started)


class DnsServer:
    """Binds UDP and TCP on one address; ``port`` is the bound port (useful with port 0)."""

    def __init__(self, handler: DnsHandler, host: str, port: int, udp_io: str = "mmsg"):
        self.handler = handler
        self.udp_io = udp_io  # "mmsg": batched recvmmsg/sendmmsg (Linux); "asyncio": a transport
        self._mmsg = None
        self._udp_sock: socket.socket | None = None
        self.host = host
        self.port = port
        self.latency = Latency()
        self.connections: set[TcpProtocol] = set()
        self._udp = None
        self._tcp = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # Bind TCP first so port 0 picks one port both protocols then share.
        self._tcp = await loop.create_server(
            lambda: TcpProtocol(self.handler, self.latency, self.connections), self.host, self.port, family=family, reuse_address=True
        )
        self.port = self._tcp.sockets[0].getsockname()[1]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            self._tcp.close()
            raise
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        if self.udp_io == "mmsg" and mmsg.available():
            self._mmsg = mmsg.MmsgReader(sock, self.handler, self.latency)
            self._udp_sock = sock
            loop.add_reader(sock.fileno(), self._mmsg.on_readable)
        else:
            self._udp, _ = await loop.create_datagram_endpoint(lambda: UdpProtocol(self.handler, self.latency), sock=sock)

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._udp_sock is not None:
            asyncio.get_running_loop().remove_reader(self._udp_sock.fileno())
            self._udp_sock.close()
            self._udp_sock = None
        if self._tcp is not None:
            self._tcp.close()
            for conn in list(self.connections):
                conn.transport.close()
            await self._tcp.wait_closed()


def is_awaitable(value) -> bool:
    return inspect.isawaitable(value)
