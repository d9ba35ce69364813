"""Talking to upstream nameservers: one question out, one matching answer back.

Every try uses a fresh UDP socket (a random source port from the kernel) and a random
query ID; a datagram whose ID or question does not match is discarded and we keep
listening until the try's timeout, so a spoofed or late answer is never taken. A
truncated answer is asked again over TCP. Upstreams are tried in the order given (as a
resolv.conf is), healthy ones first; one that fails ``MAX_FAILS`` times in a row is
skipped and probed in the background until it answers again (CoreDNS's forward plugin).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import struct
import time
from dataclasses import dataclass, field

from .cache import BadReply, records
from .server import Latency

log = logging.getLogger(__name__)

MAX_FAILS = 2  # consecutive failures before an upstream is marked down (CoreDNS max_fails)
PROBE_INTERVAL = 0.5  # seconds between health probes of a down upstream (CoreDNS health_check)
EDNS_PAYLOAD = 1232
_OPT = b"\x00\x00\x29" + struct.pack(">H", EDNS_PAYLOAD) + b"\x00\x00\x00\x00\x00\x00"
_PROBE_KEY = b"\x00\x00\x02\x00\x01"  # ". IN NS": what a health probe asks
SERVFAIL, NOTIMP, REFUSED, FORMERR = 2, 4, 5, 1


class UpstreamError(Exception):
    """No upstream gave a usable answer; ``reply`` is the last (SERVFAIL/REFUSED) one, if any."""

    def __init__(self, message: str, reply: bytes | None = None):
        super().__init__(message)
        self.reply = reply


@dataclass(eq=False)
class Upstream:
    """One nameserver and what we know about its health."""

    host: str
    port: int = 53
    fails: int = 0
    healthy: bool = True
    requests: int = 0
    failures: int = 0
    tcp_retries: int = 0
    latency: Latency = field(default_factory=Latency)
    _probe: asyncio.Task | None = None

    @property
    def name(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET


def make_query(key: bytes, *, edns: bool = True, rd: bool = True) -> tuple[int, bytes]:
    """A query for a question key with a fresh random ID (and our EDNS payload size)."""
    qid = secrets.randbits(16)
    header = struct.pack(">HBBHHHH", qid, 0x01 if rd else 0, 0, 1, 0, 0, 1 if edns else 0)
    return qid, header + key + (_OPT if edns else b"")


def matches(reply: bytes, qid: int, key: bytes) -> bool:
    """A reply answers our query: same ID, QR set, one question, same question."""
    qend = 12 + len(key)
    if len(reply) < qend or reply[0] << 8 | reply[1] != qid or not reply[2] & 0x80 or reply[4:6] != b"\x00\x01":
        return False
    name_end = qend - 4
    return reply[12:name_end].lower() == key[:-4] and reply[name_end:qend] == key[-4:]


async def udp_exchange(up: Upstream, key: bytes, timeout: float, *, edns: bool = True, rd: bool = True) -> bytes:
    loop = asyncio.get_running_loop()
    qid, query = make_query(key, edns=edns, rd=rd)
    sock = socket.socket(up.family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        sock.connect((up.host, up.port))  # the kernel then drops datagrams from anyone else
        sock.send(query)
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            reply = await asyncio.wait_for(loop.sock_recv(sock, 65535), remaining)
            if matches(reply, qid, key):
                return reply
            log.debug("discarded a reply from %s that does not match our query", up.name)
    finally:
        sock.close()


async def tcp_exchange(up: Upstream, key: bytes, timeout: float, *, rd: bool = True) -> bytes:
    async def exchange() -> bytes:
        qid, query = make_query(key, rd=rd)
        reader, writer = await asyncio.open_connection(up.host, up.port)
        try:
            writer.write(len(query).to_bytes(2, "big") + query)
            while True:
                size = int.from_bytes(await reader.readexactly(2), "big")
                reply = await reader.readexactly(size)
                if matches(reply, qid, key):
                    return reply
        finally:
            writer.close()

    return await asyncio.wait_for(exchange(), timeout)


class UpstreamGroup:
    """The upstreams for one domain (``.`` for everything, or a stub domain)."""

    def __init__(self, domain: str, servers: list[tuple[str, int]], timeout: float):
        self.domain = domain
        self.upstreams = [Upstream(host, port) for host, port in servers]
        self.timeout = timeout

    def all_down(self) -> bool:
        return not any(up.healthy for up in self.upstreams)

    def order(self) -> list[Upstream]:
        """Healthy upstreams in the order given; when none is, all of them (something must
        be tried, and a success brings an upstream back)."""
        healthy = [up for up in self.upstreams if up.healthy]
        return healthy or list(self.upstreams)

    async def exchange(self, key: bytes, deadline: float) -> bytes:
        """The first usable answer; SERVFAIL/REFUSED (or FORMERR/NOTIMP even without EDNS)
        from one upstream moves on to the next. An upstream that timed out gets one more
        try after the others while the deadline allows (a lost datagram is not a dead
        server; glibc's resolver retries the same way)."""
        loop = asyncio.get_running_loop()
        last: bytes | None = None
        errors = []
        queue = self.order()
        retried: set[int] = set()
        for up in queue:  # grows while we iterate: timed-out upstreams go to the back once
            remaining = deadline - loop.time()
            if remaining <= 0.001:
                break
            try:
                reply = await self.ask(up, key, min(self.timeout, remaining))
                records(reply, 12 + len(key))  # takes the reply apart; raises BadReply if it cannot
            except (OSError, TimeoutError, asyncio.TimeoutError, asyncio.IncompleteReadError, BadReply) as e:
                self._failed(up, e)
                errors.append(f"{up.name}: {_describe(e)}")
                if isinstance(e, (TimeoutError, asyncio.TimeoutError)) and id(up) not in retried:
                    retried.add(id(up))
                    queue.append(up)
                continue
            self._answered(up)
            if reply[3] & 0x0F in (SERVFAIL, REFUSED, FORMERR, NOTIMP):
                last = reply
                errors.append(f"{up.name}: rcode {reply[3] & 0x0F}")
                continue
            return reply
        raise UpstreamError("; ".join(errors) or "query timeout spent", last)

    async def ask(self, up: Upstream, key: bytes, timeout: float) -> bytes:
        """One try at one upstream, all steps within ``timeout``: UDP, again without EDNS if
        the server chokes on it, then TCP if the answer was truncated."""
        up.requests += 1
        started = time.perf_counter()
        end = started + timeout

        def left() -> float:
            remaining = end - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError
            return remaining

        try:
            reply = await udp_exchange(up, key, left())
            if reply[3] & 0x0F in (FORMERR, NOTIMP):  # an old server that does not speak EDNS
                reply = await udp_exchange(up, key, left(), edns=False)
            if reply[2] & 0x02:  # TC: the whole answer only comes over TCP
                up.tcp_retries += 1
                reply = await tcp_exchange(up, key, left())
        finally:
            up.latency.observe(time.perf_counter() - started)
        return reply

    def _answered(self, up: Upstream) -> None:
        up.fails = 0
        if not up.healthy:
            log.info("upstream %s answers again", up.name)
            up.healthy = True

    def _failed(self, up: Upstream, error: BaseException) -> None:
        up.failures += 1
        up.fails += 1
        if up.healthy and up.fails >= MAX_FAILS:
            up.healthy = False
            log.warning("upstream %s is down (%s); skipping it until it answers a probe", up.name, _describe(error))
            if up._probe is None or up._probe.done():
                up._probe = asyncio.ensure_future(self._probe_until_healthy(up))

    async def _probe_until_healthy(self, up: Upstream) -> None:
        while not up.healthy:
            await asyncio.sleep(PROBE_INTERVAL)
            try:
                await udp_exchange(up, _PROBE_KEY, self.timeout, rd=False)
            except (OSError, TimeoutError, asyncio.TimeoutError):
                continue
            self._answered(up)

    def close(self) -> None:
        for up in self.upstreams:
            if up._probe is not None:
                up._probe.cancel()


def _describe(error: BaseException) -> str:
    if isinstance(error, (TimeoutError, asyncio.TimeoutError)):
        return "timed out"
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


# --- resolv.conf --------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvConf:
    nameservers: tuple[tuple[str, int], ...]
    search: tuple[str, ...]


def parse_resolv_conf(text: str, port: int = 53) -> ResolvConf:
    """``nameserver`` and ``search``/``domain`` lines, as glibc reads them (the last
    search/domain line wins); everything else is ignored."""
    servers: list[tuple[str, int]] = []
    search: tuple[str, ...] = ()
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            servers.append((words[1], port))
        elif len(words) >= 2 and words[0] in ("search", "domain"):
            search = tuple(w.strip(".").lower() for w in words[1:] if w.strip("."))
    return ResolvConf(tuple(servers), search)
