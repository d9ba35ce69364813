"""asyncio UDP and TCP transports for the DNS handler.

Callback-style protocols (no per-query coroutine on the hot path): a datagram is handled
and answered inside ``datagram_received``. Only answers that must wait (forwarding)
become tasks.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from bisect import bisect_left

from . import mmsg
from .deferred import send_when_ready
from .handler import DnsHandler
from .tcp import TcpConnections, TcpLimits, TcpProtocol

log = logging.getLogger(__name__)

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
            asyncio.ensure_future(send_when_ready(reply, lambda r: self._send(r, addr), self.latency, started, addr[0]))

    def _send(self, reply: bytes, addr) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)

    def error_received(self, exc) -> None:  # ICMP errors for earlier replies: nothing to do
        pass


class DnsServer:
    """Binds UDP and TCP on one address; ``port`` is the bound port (useful with port 0).

    ``reuse_port`` lets a second process bind the same address (SO_REUSEPORT), so a
    replacement can start before the old one stops: a rolling restart on one address.
    """

    def __init__(
        self,
        handler: DnsHandler,
        host: str,
        port: int,
        udp_io: str = "mmsg",
        *,
        tcp_limits: TcpLimits = TcpLimits(),
        reuse_port: bool = False,
    ):
        self.handler = handler
        self.udp_io = udp_io  # "mmsg": batched recvmmsg/sendmmsg (Linux); "asyncio": a transport
        self.reuse_port = reuse_port
        self._mmsg: mmsg.MmsgReader | None = None
        self._udp_sock: socket.socket | None = None
        self.host = host
        self.port = port
        self.latency = Latency()
        self.tcp = TcpConnections(tcp_limits)
        self._udp = None
        self._tcp = None

    @property
    def connections(self) -> set[TcpProtocol]:
        return self.tcp.open

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # Bind TCP first so port 0 picks one port both protocols then share.
        self._tcp = await loop.create_server(
            lambda: TcpProtocol(self.handler, self.latency, self.tcp),
            self.host, self.port, family=family, reuse_address=True, reuse_port=self.reuse_port or None,
        )
        self.port = self._tcp.sockets[0].getsockname()[1]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if self.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
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

    async def close(self, grace: float = 0.0) -> None:
        """Stop listening, answer what already arrived, and wait up to ``grace`` seconds
        for answers still pending (forwarded queries, pipelined TCP) before cutting them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self._tcp is not None:
            self._tcp.close()  # no new connections; open ones finish their pending answers
            for conn in list(self.connections):
                conn.drain()
        if self._udp is not None:
            self._udp.close()
        if self._udp_sock is not None:
            await self._close_udp(deadline)
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.transport.abort()
        if self._tcp is not None:
            await self._tcp.wait_closed()

    async def _close_udp(self, deadline: float) -> None:
        """Hand the address over without losing a datagram. With SO_REUSEPORT and a
        specific address, connecting the socket to a port nobody sends from makes the
        kernel deliver new datagrams to the other sockets of the group, while those
        already queued here stay readable: answer them, then close. (On a wildcard
        address connect() would pin the replies' source address, so there the socket is
        drained and closed; a datagram arriving in between is lost.)"""
        loop = asyncio.get_running_loop()
        sock, reader = self._udp_sock, self._mmsg
        loop.remove_reader(sock.fileno())
        if self.reuse_port and self.host not in ("0.0.0.0", "::"):
            try:
                sock.connect((self.host, 9))  # discard port: nothing sends from it
            except OSError as e:
                log.warning("could not detach the UDP socket for a clean handover: %s", e)
            await asyncio.sleep(0.05)  # let datagrams in flight through the stack land
        reader.drain()
        while reader.pending and loop.time() < deadline:
            await asyncio.sleep(0.01)
        reader.drain()
        for task in list(reader.pending):
            task.cancel()
        sock.close()
        self._udp_sock = None
