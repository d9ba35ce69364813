#!/usr/bin/env python3
"""Where a query's CPU goes, measured in-process (robust on a busy machine).

    bench/hot_path.py [N_SERVICES=10000] [--queries 50000] [--repeat 5]

Loads bench/out/N (run bench/dataset.py N first), then measures CPU time (thread time,
best of --repeat) per query for:
  handler   DnsHandler.handle over the dnsperf query mix (answers only, no I/O)
  naive     the baseline: dnslib parses every query, the Resolver answers, dnslib packs
  udp-mmsg  the batched UDP reader: queries sent on a loopback socket, then recvmmsg,
            handle, sendmmsg (syscalls included, client side excluded)
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import dns.message  # noqa: E402

from svcdns.dns import mmsg  # noqa: E402
from svcdns.dns.compiler import AnswerTable  # noqa: E402
from svcdns.dns.handler import DnsHandler  # noqa: E402
from svcdns.dns.naive import NaiveHandler  # noqa: E402
from svcdns.dns.records import Resolver, ResolverConfig  # noqa: E402
from svcdns.dns.server import Latency  # noqa: E402
from svcdns.sources.manifests import ManifestSource  # noqa: E402
from svcdns.store import ClusterState  # noqa: E402


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.thread_time()
        fn()
        times.append(time.thread_time() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", default="10000")
    ap.add_argument("--queries", type=int, default=50000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    data = os.path.join(os.path.dirname(__file__), "out", args.n)
    state = ClusterState(derive_endpoints=True, implicit_namespaces=True)
    resolver = Resolver(state, ResolverConfig())
    table = AnswerTable(state, resolver)
    ManifestSource([os.path.join(data, "cluster.json")], state).load()
    handler = DnsHandler(state, resolver, table)
    lines = [ln.split() for ln in open(os.path.join(data, "queries.txt")) if ln.strip()][: args.queries]
    wires = [dns.message.make_query(name, qtype, id=i & 0xFFFF).to_wire() for i, (name, qtype) in enumerate(lines)]
    for w in wires:  # warm the caches a long-running server has warm
        handler.handle(w, "127.0.0.1", False)

    def run_handler():
        for w in wires:
            handler.handle(w, "127.0.0.1", False)

    per = best(run_handler, args.repeat) / len(wires) * 1e6
    print(f"handler   {per:6.2f} us/query")

    naive = NaiveHandler(state, resolver)
    sample = wires[:5000]

    def run_naive():
        for w in sample:
            naive.handle(w, "127.0.0.1", False)

    naive_per = best(run_naive, max(1, args.repeat // 2)) / len(sample) * 1e6
    print(f"naive     {naive_per:6.2f} us/query  (fast path {naive_per / per:.0f}x faster)")

    if mmsg.available():
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind(("127.0.0.1", 0))
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        client.setblocking(False)
        reader = mmsg.MmsgReader(server, handler, Latency())
        addr = server.getsockname()
        chunk = 512  # what one wake-up drains (8 batches of 64)
        best_spent = None
        for _ in range(args.repeat):
            spent, answered = 0.0, 0
            for start in range(0, len(wires), chunk):
                for w in wires[start : start + chunk]:
                    client.sendto(w, addr)
                t0 = time.thread_time()
                reader.on_readable()
                spent += time.thread_time() - t0
                try:
                    while True:
                        client.recv(4096)
                        answered += 1
                except BlockingIOError:
                    pass
            assert answered == len(wires), f"only {answered} of {len(wires)} answered"
            best_spent = spent if best_spent is None else min(best_spent, spent)
        print(f"udp-mmsg  {best_spent / len(wires) * 1e6:6.2f} us/query  (recvmmsg + handle + sendmmsg)")

if __name__ == "__main__":
    main()
