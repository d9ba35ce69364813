"""Overload protection: a per-client-prefix rate limit and the replies over a limit.

Cluster DNS must keep answering its well-behaved clients while one pod (or a spoofed
flood) sends far more than its share. Clients are grouped by network prefix — a /24 for
IPv4, a /56 for IPv6, the sizes CoreDNS's and BIND's response rate limits use — and each
prefix gets a token bucket: ``rate`` queries a second with a burst of one second's worth.
Over the limit the server answers REFUSED (the client learns to back off or try another
server) or drops the query (``drop``: nothing to amplify with spoofed sources).

Cost is the design constraint: with the limit off the handler pays one ``is None`` test;
with it on, one dict lookup and a little float arithmetic per query. The bucket table is
bounded (``max_prefixes``): a flood from many prefixes evicts idle buckets first and, if
that is not enough, starts the table afresh — memory stays flat whatever arrives.
"""

from __future__ import annotations

import socket
import time

REFUSED = 5

# Where to cut an address into its prefix: IPv4 keeps three octets (a /24), IPv6 the
# first 7 bytes (a /56).
_V6_PREFIX_BYTES = 7


def client_prefix(client: str) -> str | bytes:
    """The rate-limit key of a client address: '10.1.2' for 10.1.2.3, 7 raw bytes for IPv6."""
    if ":" not in client:
        return client.rpartition(".")[0]
    try:
        return socket.inet_pton(socket.AF_INET6, client.partition("%")[0])[:_V6_PREFIX_BYTES]
    except OSError:
        return client


class RateLimiter:
    """Token buckets per client prefix: ``allow(client)`` is True while the prefix is
    within ``rate`` queries a second (bursts up to ``burst``)."""

    __slots__ = ("rate", "burst", "max_prefixes", "buckets", "clock", "limited")

    def __init__(self, rate: float, *, burst: float | None = None, max_prefixes: int = 65536, clock=time.monotonic):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(rate, 1.0))
        self.max_prefixes = max_prefixes
        self.buckets: dict[str | bytes, list[float]] = {}  # prefix -> [tokens, last refill]
        self.clock = clock
        self.limited = 0  # queries over the limit, for the metrics

    def allow(self, client: str) -> bool:
        prefix = client.rpartition(".")[0] if ":" not in client else client_prefix(client)
        now = self.clock()
        bucket = self.buckets.get(prefix)
        if bucket is None:
            if len(self.buckets) >= self.max_prefixes:
                self._evict(now)
            self.buckets[prefix] = [self.burst - 1.0, now]
            return True
        tokens = bucket[0] + (now - bucket[1]) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return True
        bucket[0] = tokens
        self.limited += 1
        return False

    def _evict(self, now: float) -> None:
        """Drop buckets that have refilled (their prefix has been quiet: forgetting it
        changes nothing); if fewer than half go, forget everything. Amortised O(1)."""
        rate, burst = self.rate, self.burst
        idle = [p for p, (tokens, last) in self.buckets.items() if tokens + (now - last) * rate >= burst]
        if len(idle) < self.max_prefixes // 2:
            self.buckets.clear()
            return
        for prefix in idle:
            del self.buckets[prefix]


def refused(data: bytes) -> bytes | None:
    """REFUSED for a query, echoing its question when it is a plain one (QDCOUNT 1,
    uncompressed name), else the header alone; None when there is no header to answer."""
    n = len(data)
    if n < 12 or data[2] & 0x80:
        return None
    flags = bytes((0x80 | (data[2] & 0x79), REFUSED))
    if data[4:6] == b"\x00\x01":
        i = 12
        while i < n and data[i] and data[i] < 64:
            i += data[i] + 1
        if i < n and data[i] == 0 and i + 5 <= n:
            return data[:2] + flags + b"\x00\x01\x00\x00\x00\x00\x00\x00" + data[12 : i + 5]
    return data[:2] + flags + b"\x00" * 8
