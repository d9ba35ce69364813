#!/usr/bin/env python3
"""Proxy sync benchmark: 10,000 services x 10 endpoints (configurable).

Measures, for iptables and nftables mode:
  - render: building the full restore input (pure Python, no kernel),
  - full sync: render + apply to a fresh network namespace (iptables-restore / nft -f),
  - input size of the full sync,
  - incremental sync after one endpoint of one service changes (checkout, render, apply),
    and its input size.

Needs root (it creates and deletes one network namespace, svcdns-bench-<pid>; no traffic
is sent). Results go to stdout as a Markdown table; record them in docs/performance.md.

  sudo .venv/bin/python bench/proxy_sync.py [--services 10000] [--endpoints 10] [--modes iptables,nftables]

"iptables" is the system's iptables (iptables-nft on Debian 12); name the backend with
iptables-legacy or iptables-nft to compare them on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svcdns.model import Endpoint, EndpointPort, EndpointSlice, Service, ServicePort
from svcdns.proxy.backends.iptables import IptablesBackend
from svcdns.proxy.backends.iptables import render as ipt_render
from svcdns.proxy.backends.nftables import NftablesBackend
from svcdns.proxy.backends.nftables import render as nft_render
from svcdns.proxy.proxier import Proxier
from svcdns.store import ClusterState



def ip(base: int, i: int) -> str:
    n = base + i
    return f"{n >> 24 & 255}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def build_state(services: int, endpoints: int, nodes: int = 3) -> ClusterState:
    """A synced cluster state holding the synthetic services (ClusterIPs from 10.96.0.0/12,
    endpoints from 10.128.0.0/9, spread round-robin over ``nodes`` nodes, of which node-0
    is the one syncing)."""
    state = ClusterState()
    svc_base, ep_base = (10 << 24) + (96 << 16), (10 << 24) + (128 << 16)
    for s in range(services):
        ns, name = f"ns{s % 100}", f"svc{s}"
        state.apply(Service(ns, name, "ClusterIP", (ip(svc_base, s + 1),), False, "", (ServicePort("http", "TCP", 80, 8080, 0),),
                            (("app", name),), False, 0, False, False, (), (), (), ""))
        eps = tuple(
            Endpoint((ip(ep_base, s * endpoints + e),), True, True, False, "", f"node-{(s * endpoints + e) % nodes}", "", (), (), "")
            for e in range(endpoints)
        )
        state.apply(EndpointSlice(ns, f"{name}-abc", name, "IPv4", (EndpointPort("http", "TCP", 8080),), eps))
    state.mark_synced()
    state.commit()
    return state


def timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - started, result


def cpu_seconds() -> float:
    """User + system time of this process and its finished children (the kernel tools)."""
    return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) for f in ("ru_utime", "ru_stime"))


def bench_mode(mode: str, state: ClusterState, ns: str) -> dict:
    """mode: nftables, iptables (the system's), iptables-legacy or iptables-nft."""
    prefix = ("ip", "netns", "exec", ns)
    backend = NftablesBackend(prefix) if mode == "nftables" else IptablesBackend(prefix, mode.partition("-")[2])
    proxier = Proxier(state, backend, "node-0", ("10.128.0.0/9",))
    proxier.checkout()
    render = nft_render if mode == "nftables" else ipt_render
    render_s, rendered = timed(render, proxier.view)
    cpu = cpu_seconds()
    full_s, ok = timed(lambda: asyncio.run(proxier.sync()))
    full_cpu = cpu_seconds() - cpu
    assert ok, "full sync failed"
    full_bytes = backend.last_input_bytes

    # one endpoint of one service goes away
    key = ("ns7", "svc7")
    old = state.slices[("ns7", "svc7-abc")]
    state.apply(replace(old, endpoints=old.endpoints[1:]))
    state.commit()
    cpu = cpu_seconds()
    inc_s, ok = timed(lambda: asyncio.run(proxier.sync()))
    inc_cpu = cpu_seconds() - cpu
    assert ok, "incremental sync failed"
    assert key in state.services
    inc_bytes = backend.last_input_bytes
    state.apply(old)  # restore for the next mode
    state.commit()
    return {"mode": mode, "render_s": render_s, "full_s": full_s, "full_bytes": full_bytes, "inc_s": inc_s, "inc_bytes": inc_bytes,
            "lines": rendered.text.count("\n"), "full_cpu": full_cpu, "inc_cpu": inc_cpu}


def size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def tool_version(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True).stdout.strip().splitlines()[0]
    except (OSError, IndexError):
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--nodes", type=int, default=3,
                    help="nodes the endpoints are spread over (this node's share is what hairpin sets hold; "
                         "kubelet's default of 110 pods per node means ~1,000 nodes for 100,000 endpoints)")
    ap.add_argument("--modes", default="iptables,nftables", help="comma-separated: nftables, iptables, iptables-legacy, iptables-nft")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root: it applies the rules in a network namespace it creates", file=sys.stderr)
        return 2
    t, state = timed(build_state, args.services, args.endpoints, args.nodes)
    print(f"built {args.services} services x {args.endpoints} endpoints on {args.nodes} nodes in {t:.1f} s", file=sys.stderr)
    rows = []
    for mode in args.modes.split(","):
        ns = f"svcdns-bench-{os.getpid()}-{mode}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            rows.append(bench_mode(mode, state, ns))
            print(f"{mode}: done", file=sys.stderr)
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=False)
    print(f"\n{args.services} services x {args.endpoints} endpoints over {args.nodes} nodes; Python {platform.python_version()}, "
          f"{tool_version(['iptables', '--version'])}, {tool_version(['nft', '--version'])}, {os.cpu_count()} CPUs\n")
    print("| mode | render (full) | full sync (render + apply) | full input | incremental sync (1 endpoint) | incremental input |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['mode']} | {r['render_s']:.2f} s | {r['full_s']:.2f} s | {size(r['full_bytes'])} ({r['lines']:,} lines) "
              f"| {r['inc_s'] * 1000:.0f} ms | {size(r['inc_bytes'])} |")
    print("\nCPU (user + system, this process and the kernel tool it ran): " + "; ".join(
        f"{r['mode']} full sync {r['full_cpu']:.2f} s, incremental {r['inc_cpu'] * 1000:.0f} ms" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
