"""What the rate limiter costs on the hot path: DnsHandler.handle on a precompiled answer,
with --rate-limit off and on (one client prefix, and 10,000 prefixes in turn).

    .venv/bin/python bench/overload_cost.py

Best of 5 runs of 300,000 calls each, in-process (no sockets): the handler's own cost.
"""

from __future__ import annotations

import itertools
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dns.message  # noqa: E402

from svcdns.config import ServeConfig  # noqa: E402
from svcdns.dns.overload import RateLimiter  # noqa: E402
from svcdns.serve import Server  # noqa: E402

N = 300000


def per_query(handle, clients) -> float:
    it = itertools.cycle(clients)
    return min(timeit.repeat(lambda: handle(QUERY, next(it), False), number=N, repeat=5)) / N * 1e9


server = Server(ServeConfig(listen=("127.0.0.1", 0)))
server.source.load()
handler = server.handler
QUERY = dns.message.make_query("redis-master.default.svc.cluster.local.", "A").to_wire()
one = ["10.1.2.3"]
many = [f"10.{i >> 8 & 255}.{i & 255}.7" for i in range(10000)]
for label, limiter, clients in [
    ("off, one client", None, one),
    ("off, 10,000 clients", None, many),
    ("on, one prefix", RateLimiter(1e12), one),
    ("on, 10,000 prefixes", RateLimiter(1e12), many),
]:
    handler.limiter = limiter
    print(f"rate limit {label}: {per_query(handler.handle, clients):.0f} ns/query")
