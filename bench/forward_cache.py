"""QPS of forwarded answers served from svcdns's cache, on one core.

Starts Knot (a zone of NAMES hosts) and svcdns forwarding to it, both on loopback; svcdns
is pinned to CPU 0 and dnsperf to CPU 1. The cache is warmed by one pass over the names,
then dnsperf asks them for SECONDS seconds: every answer is a cache hit (the names' TTL
outlives the run). For comparison, the same run against a precompiled cluster name.

    .venv/bin/python bench/forward_cache.py [--seconds 10] [--names 1000]

Prints one line per run; docs/performance.md records the results.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.dns.nameservers import Knot, free_port, wait_answering  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dnsperf(port: int, queries: Path, seconds: int, cpu: str, server_pid: int) -> tuple[float, float]:
    """(answers per wall-clock second, answers per CPU-second of svcdns). The second is
    what one core sustains even when the machine is shared with other work."""
    used = cpu_seconds(server_pid)
    out = subprocess.run(
        ["taskset", "-c", cpu, "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-l", str(seconds),
         "-c", "4", "-q", "200"],
        capture_output=True, text=True, check=True,
    ).stdout
    used = cpu_seconds(server_pid) - used
    completed = int(re.search(r"Queries completed:\s+(\d+)", out).group(1))
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))
    return qps, completed / used if used else float("nan")


def metric(url: str, name: str) -> float:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--names", type=int, default=1000)
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = str(cpus[0]), str(cpus[-1])
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        zone = "$TTL 86400\n@ IN SOA ns.bench.test. admin.bench.test. 1 3600 600 86400 60\n@ IN NS ns\nns IN A 127.0.0.1\n"
        zone += "".join(f"h{i} IN A 192.0.2.{i % 250 + 1}\n" for i in range(args.names))
        with Knot(tmpdir / "knot", {"bench.test": zone}) as knot:
            port, health = free_port(), free_port()
            svcdns = subprocess.Popen(
                ["taskset", "-c", server_cpu, sys.executable, "-m", "svcdns", "--log-level", "warning", "serve",
                 "--listen", f"127.0.0.1:{port}", "--health", f"127.0.0.1:{health}", "--upstream", f"127.0.0.1:{knot.port}"],
            )
            try:
                wait_answering("127.0.0.1", port, "cluster.local")
                forwarded = tmpdir / "forwarded.txt"
                forwarded.write_text("".join(f"h{i}.bench.test A\n" for i in range(args.names)))
                cluster = tmpdir / "cluster.txt"
                cluster.write_text("my-service.default.svc.cluster.local A\n")
                warm = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(forwarded), "-n", "1"]
                subprocess.run(warm, capture_output=True, check=True)
                url = f"http://127.0.0.1:{health}/metrics"
                sent_before = metric(url, "svcdns_forward_requests_total")
                time.sleep(0.5)
                qps, per_cpu = dnsperf(port, forwarded, args.seconds, client_cpu, svcdns.pid)
                sent = metric(url, "svcdns_forward_requests_total") - sent_before
                print(f"forwarded cache hits ({args.names} names): {qps:,.0f} qps wall clock, {per_cpu:,.0f} per CPU-second of svcdns; "
                      f"upstream queries during the run: {sent:.0f}")
                qps, per_cpu = dnsperf(port, cluster, args.seconds, client_cpu, svcdns.pid)
                print(f"precompiled cluster answer (for comparison): {qps:,.0f} qps wall clock, {per_cpu:,.0f} per CPU-second of svcdns")
            finally:
                svcdns.terminate()
                svcdns.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
