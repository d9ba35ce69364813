#!/usr/bin/env python3
"""10,000 services / 100,000 endpoints through both sources.

    bench/scale.py [N_SERVICES=10000] [--changes 1000] [--skip-api]

Manifests (`kubectl get -o json` output from bench/dataset.py, read by a real
`svcdns serve --manifests` process):
  * time to ready (start -> /ready), the process's CPU time by then, RSS once ready;
    the CPU split: the same load in this process (read + parse, compile) and the rest
    of the server's CPU (interpreter, imports, binding)
  * peak RSS (VmHWM) across a full reload of the 29 MB file (the manifest analogue of a
    relist: every object re-read and compared)
  * the cost of one change: in-process, an EndpointSlice of one service is updated and
    committed 1,000 times; the time until its new answer is in the table (p50/p99) and
    how many answers were recompiled each time (proportional to that service, not to
    the cluster)
API source: bench/scale_api.py (the test API server) with --events = --changes.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from svcdns.dns.compiler import AnswerTable  # noqa: E402
from svcdns.dns.records import Resolver, ResolverConfig  # noqa: E402
from svcdns.dns.wire import question_key  # noqa: E402
from svcdns.serve import load_frozen  # noqa: E402
from svcdns.sources.manifests import ManifestSource  # noqa: E402
from svcdns.store import ClusterState  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(pid: int) -> dict[str, int]:
    out = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) // 1024
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def manifests_process(path: str) -> dict:
    dns_port, http_port = free_port(), free_port()
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "svcdns", "--log-level", "warning", "serve", "--manifests", path,
                             "--listen", f"127.0.0.1:{dns_port}", "--health", f"127.0.0.1:{http_port}"], cwd=ROOT)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None:
                    raise SystemExit("svcdns exited")
                time.sleep(0.05)
        ready = time.monotonic() - started
        cpu = cpu_seconds(proc.pid)
        at_ready = status(proc.pid)
        os.utime(path)  # a full reload: the file is re-read and every object compared
        time.sleep(4)  # the poll (1 s) plus the re-read
        after = status(proc.pid)
        return {"ready_s": ready, "cpu_ready_s": cpu, "rss_ready_mb": at_ready["VmRSS"], "peak_reload_mb": after["VmHWM"], "rss_after_reload_mb": after["VmRSS"]}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class TimedTable(AnswerTable):
    """Notes the CPU time of each compile."""

    compile_cpu: list[float]

    def on_change(self, delta) -> None:
        started = time.process_time()
        super().on_change(delta)
        self.__dict__.setdefault("compile_cpu", []).append(time.process_time() - started)


def change_cost(path: str, changes: int) -> dict:
    state = ClusterState(derive_endpoints=True, implicit_namespaces=True)
    resolver = Resolver(state, ResolverConfig())
    table = TimedTable(state, resolver)
    t0 = time.process_time()
    with load_frozen():  # as `svcdns serve` loads
        ManifestSource([path], state).load()
    load_cpu = time.process_time() - t0
    key = next(k for k, s in state.services.items() if s.headless)
    (slice_key,) = [k for k, s in state.slices.items() if s.service == key[1] and k[0] == key[0]]
    qkey = question_key(f"{key[1]}.{key[0]}.svc.cluster.local", 1)
    compiled = []
    original = table._compile
    table._compile = lambda *a: (compiled.append(1), original(*a))
    latencies, counts = [], []
    for i in range(changes):
        sl = state.slices[slice_key]
        ep = sl.endpoints[0]
        moved = replace(ep, addresses=(f"10.250.{i // 250}.{i % 250 + 1}",))
        before = table.answers.get(qkey)
        compiled.clear()
        t0 = time.perf_counter()
        state.apply(replace(sl, endpoints=(moved, *sl.endpoints[1:])))
        state.commit()
        latencies.append(time.perf_counter() - t0)
        counts.append(len(compiled))
        assert table.answers.get(qkey) != before, "the answer changed"
    return {"load_cpu_s": load_cpu, "compile_cpu_s": table.compile_cpu[0], "p50_ms": pct(latencies, 0.5) * 1000, "p99_ms": pct(latencies, 0.99) * 1000, "answers_recompiled": max(counts),
            "answers_total": len(table.answers)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", nargs="?", default="10000")
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--skip-api", action="store_true")
    args = ap.parse_args()
    path = ROOT / "bench" / "out" / args.n / "cluster.json"
    if not path.exists():
        subprocess.run([sys.executable, str(ROOT / "bench" / "dataset.py"), args.n], check=True)
    m = manifests_process(str(path))
    c = change_cost(str(path), args.changes)
    print("| source | time to ready | RSS ready | peak RSS (full reload) | change -> new answer p50 / p99 | answers recompiled per change |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| manifests ({args.n} services) | {m['ready_s']:.2f} s | {m['rss_ready_mb']} MB | {m['peak_reload_mb']} MB "
          f"({m['peak_reload_mb'] / m['rss_ready_mb']:.2f}x) | {c['p50_ms']:.2f} / {c['p99_ms']:.2f} ms (in-process) | "
          f"{c['answers_recompiled']} of {c['answers_total']} |")
    print(f"CPU: server process {m['cpu_ready_s']:.2f} s by ready; the same load in-process {c['load_cpu_s']:.2f} s "
          f"(read + parse {c['load_cpu_s'] - c['compile_cpu_s']:.2f} s, compile {c['compile_cpu_s']:.2f} s); "
          f"the rest (interpreter, imports, binding) ~{m['cpu_ready_s'] - c['load_cpu_s']:.2f} s")
    sys.stdout.flush()
    if not args.skip_api:
        subprocess.run([sys.executable, str(ROOT / "bench" / "scale_api.py"), "--services", args.n, "--events", str(args.changes)], check=True)


if __name__ == "__main__":
    main()
