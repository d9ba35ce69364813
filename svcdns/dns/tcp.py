"""DNS over TCP (RFC 7766): length-prefixed messages, pipelining, and the limits that
keep a few bad clients from exhausting the server.

The limits, and what each one stops:

- ``idle_timeout``: a connection must complete a message within this many seconds of
  its last complete message (or of connecting). Partial data does not reset the clock,
  so a slowloris client that dribbles one byte at a time is cut off like an idle one.
- ``max_connections``: at the cap, a new connection evicts the connection that has been
  quiet longest (no answer pending), as Knot and Unbound do; if every connection has an
  answer pending, the new one is closed. Holding connections open buys an attacker
  nothing that evicting cannot take back.
- ``max_queries``: a connection is closed after answering this many queries (0: no
  limit), spreading long-lived clients across replicas.
- Flow control: a client that sends queries but does not read its answers stops being
  read once the socket's write buffer passes the transport's high-water mark; its
  unparsed input stays bounded by one read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TcpLimits:
    idle_timeout: float = 10.0  # RFC 7766 suggests seconds; CoreDNS uses 10 s
    max_connections: int = 1000
    max_queries: int = 0  # per connection; 0 = unlimited


class TcpConnections:
    """The open connections and the counters /metrics shows."""

    def __init__(self, limits: TcpLimits):
        self.limits = limits
        self.open: set["TcpProtocol"] = set()
        self.evicted = 0  # closed to make room for a new connection
        self.refused = 0  # new connections closed at the cap (nothing could be evicted)
        self.timed_out = 0  # idle or too slow to send a whole message
        self.accepted = 0

    def admit(self, conn: "TcpProtocol") -> bool:
        """Make room for ``conn`` if needed; False when there is none."""
        self.accepted += 1
        if len(self.open) >= self.limits.max_connections:
            quiet = [c for c in self.open if not c.pending]
            if not quiet:
                self.refused += 1
                return False
            victim = min(quiet, key=lambda c: c.last_active)
            self.evicted += 1
            victim.transport.close()
            self.open.discard(victim)
        self.open.add(conn)
        return True


class TcpProtocol(asyncio.Protocol):
    """One client connection. Pipelined queries are answered as they complete (cluster
    names at once, forwarded ones when the upstream answers: RFC 7766 allows reordering)."""

    def __init__(self, handler, latency, connections: TcpConnections):
        self.handler = handler
        self.latency = latency
        self.connections = connections
        self.limits = connections.limits
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.pending = 0  # answers still waiting on an upstream
        self.answered = 0
        self.last_active = time.monotonic()
        self.draining = False  # stop reading; close when nothing is pending
        self._timer: asyncio.TimerHandle | None = None
        self._write_paused = False

    # --- lifecycle ----------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        if not self.connections.admit(self):
            transport.abort()
            return
        self._arm()

    def connection_lost(self, exc) -> None:
        self.connections.open.discard(self)
        if self._timer:
            self._timer.cancel()

    def _arm(self) -> None:
        """Start the idle clock: called on connect and after each complete message."""
        self.last_active = time.monotonic()
        if self._timer:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self.limits.idle_timeout, self._timeout)

    def _timeout(self) -> None:
        if self.pending:  # waiting on an upstream is not idling: look again later
            self._timer = asyncio.get_running_loop().call_later(self.limits.idle_timeout, self._timeout)
            return
        self.connections.timed_out += 1
        self.transport.close()

    def drain(self) -> None:
        """Shutdown: read no more queries; close once pending answers are written."""
        self.draining = True
        if not self.transport.is_closing():
            self.transport.pause_reading()
        if not self.pending:
            self.transport.close()

    # --- flow control -------------------------------------------------------------------

    def pause_writing(self) -> None:
        self._write_paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if not self.draining and not self.transport.is_closing():
            self.transport.resume_reading()
            self._process()

    # --- messages -----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._process()

    def _process(self) -> None:
        buffer = self.buffer
        while len(buffer) >= 2 and not self._write_paused and not self.draining:
            size = buffer[0] << 8 | buffer[1]
            if size == 0:
                self.transport.close()
                return
            if len(buffer) < 2 + size:
                return
            message = bytes(buffer[2 : 2 + size])
            del buffer[: 2 + size]
            self._arm()
            self._answer(message)
            self.answered += 1
            if self.limits.max_queries and self.answered >= self.limits.max_queries:
                self.drain()

    def _answer(self, message: bytes) -> None:
        started = time.perf_counter()
        reply = self.handler.handle(message, self.peer, True)
        if type(reply) is bytes:
            self.transport.write(len(reply).to_bytes(2, "big") + reply)
            self.latency.observe(time.perf_counter() - started)
        elif type(reply) is list:  # a zone transfer: several messages, in order
            self.transport.writelines([len(m).to_bytes(2, "big") + m for m in reply])
        elif reply is not None:
            self.pending += 1
            asyncio.ensure_future(self._later(reply, started))

    async def _later(self, pending, started: float) -> None:
        try:
            reply = await pending
        except Exception:
            log.exception("deferred answer to %s failed", self.peer)
            reply = None
        finally:
            self.pending -= 1
        if reply is not None and not self.transport.is_closing():
            self.transport.write(len(reply).to_bytes(2, "big") + reply)
            self.latency.observe(time.perf_counter() - started)
            self.last_active = time.monotonic()
        if self.draining and not self.pending:
            self.transport.close()
