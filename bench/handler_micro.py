#!/usr/bin/env python3
"""Time DnsHandler.handle on its hot path, in-process (no sockets): what per-query
bookkeeping (metrics by namespace, the query log switch) costs.

    .venv/bin/python bench/handler_micro.py [--rounds 40] [--n 20000] [--against GIT_REV]

Three queries: a precompiled service answer from a pod client, the same from a client
that is not a pod, and a search-path NXDOMAIN from a pod (autopath off, so it stays on
the hot path). Prints the best-of-rounds nanoseconds per call. With ``--against REV``
the handler module of that revision is loaded alongside and the two are timed in
alternating rounds (the fair comparison on a busy machine); results go in
docs/performance.md ("Handler hot path")."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message

from svcdns.dns.compiler import AnswerTable
from svcdns.dns.handler import DnsHandler
from svcdns.dns.records import Resolver, ResolverConfig
from svcdns.sources.manifests import ManifestSource
from svcdns.store import ClusterState

CLUSTER = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  ports: [{port: 80, protocol: TCP}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop}
spec: {containers: [{name: c, image: busybox}]}
status: {phase: Running, podIP: 10.244.0.5}
"""
CASES = {
    "service A, pod client": ("web.shop.svc.cluster.local", "10.244.0.5"),
    "service A, not a pod": ("web.shop.svc.cluster.local", "192.168.1.9"),
    "search miss, pod client": ("github.com.shop.svc.cluster.local", "10.244.0.5"),
}


def handler_class_at(rev: str):
    """DnsHandler as it was at git revision ``rev`` (loaded as a sibling module)."""
    source = subprocess.run(["git", "show", f"{rev}:svcdns/dns/handler.py"], capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.gettempdir()) / f"svcdns_handler_{os.getpid()}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("svcdns.dns._handler_then", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    path.unlink()
    return module.DnsHandler


def build(cls, manifest: str):
    state = ClusterState(derive_endpoints=True, implicit_namespaces=True)
    resolver = Resolver(state, ResolverConfig())
    table = AnswerTable(state, resolver)
    ManifestSource([manifest], state).load()
    return cls(state, resolver, table).handle


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--against", metavar="GIT_REV")
    args = parser.parse_args()
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(CLUSTER)
        f.flush()
        handlers = {"now": build(DnsHandler, f.name)}
        if args.against:
            handlers[args.against] = build(handler_class_at(args.against), f.name)
    for label, (qname, client) in CASES.items():
        wire = dns.message.make_query(qname, "A", use_edns=False).to_wire()
        best = dict.fromkeys(handlers, float("inf"))
        for handle in handlers.values():
            assert type(handle(wire, client, False)) is bytes, label
        for _ in range(args.rounds):
            for name, handle in handlers.items():
                start = time.perf_counter_ns()
                for _ in range(args.n):
                    handle(wire, client, False)
                best[name] = min(best[name], (time.perf_counter_ns() - start) / args.n)
        print(f"{label:26s} " + "  ".join(f"{name}: {ns:6.0f} ns" for name, ns in best.items()))


if __name__ == "__main__":
    main()
