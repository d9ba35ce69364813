"""Scale benchmark of the live API source: a cluster of 10,000 services and 100,000
endpoints served by the test API server (tests/kubeapi), followed by a real
``svcdns serve --kubeconfig`` process with default settings.

Measures
  * time to ready: process start -> /ready 200 (every kind listed, answers compiled)
  * RSS of the svcdns process once ready, and its peak (VmHWM)
  * API event -> DNS answer latency: a write is made through the API server, then the
    name is queried over UDP in a tight loop until the new answer appears (p50/p99),
    for Service updates (ClusterIP changes) and EndpointSlice updates (headless A)
  * relist: the API expires every resourceVersion under open watches (410), and a change
    made meanwhile must appear after the full relist and reconcile

    .venv/bin/python bench/scale_api.py [--services 10000] [--endpoints 10] [--events 200]

Traffic stays on 127.0.0.1. Results print as a markdown table and go to bench/out/.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dns.message  # noqa: E402
import dns.query  # noqa: E402

from tests.kubeapi import objects as o  # noqa: E402
from tests.kubeapi.server import KubeApi  # noqa: E402

NAMESPACES = 50


def free_port() -> int:
    with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u.bind(("127.0.0.1", port))
        return port


def cluster(services: int, per_service: int, legacy: bool):
    """Namespaces, services (every 10th headless), one EndpointSlice of ``per_service``
    endpoints each and, as the endpoints controller writes them, legacy Endpoints."""
    yield from (o.namespace(f"ns-{n}") for n in range(NAMESPACES))
    for i in range(services):
        ns, name = f"ns-{i % NAMESPACES}", f"svc-{i}"
        headless = i % 10 == 0
        ip = "None" if headless else f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}"
        yield o.service(ns, name, ip, ports=(("http", 80), ("metrics", 9090)))
        addrs = [f"10.{128 + (i * per_service + j) // 65536}.{(i * per_service + j) // 256 % 256}.{(i * per_service + j) % 256}"
                 for j in range(per_service)]
        yield o.endpoint_slice(ns, name, addrs, ports=(("http", 8080), ("metrics", 9090)))
        if legacy:
            yield o.endpoints(ns, name, addrs, ports=(("http", 8080), ("metrics", 9090)))


def query(port: int, name: str) -> list[str]:
    msg = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=2)
    return sorted(rd.address for rrset in msg.answer for rd in rrset)


def wait_answer(port: int, name: str, want: list[str], timeout: float = 10.0) -> float:
    deadline = time.perf_counter() + timeout
    while True:
        if query(port, name) == want:
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{name}: {want} not served within {timeout}s")


def ready(http_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/ready", timeout=1) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def relisted(http_port: int, timeout: float = 120.0) -> None:
    """Wait until every watched kind has finished a LIST after the first
    (svcdns_source_relists on /metrics), so that the relist's CPU and peak are complete."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=2) as r:
            counts = [float(line.split()[-1]) for line in r.read().decode().splitlines()
                      if line.startswith("svcdns_source_relists_total{")]
        if counts and min(counts) >= 1:
            return
        time.sleep(0.05)
    raise RuntimeError("not every kind relisted")


def memory(pid: int) -> tuple[float, float]:
    """(RSS, peak RSS) in MiB."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return int(fields["VmRSS"][0]) / 1024, int(fields["VmHWM"][0]) / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat): on a shared machine
    this is what a process cost, whatever the wall clock says."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def api_server(conn, services: int, per_service: int, legacy: bool) -> None:
    """The test API server in its own process, so that its work and the benchmark's
    query loop do not share one interpreter lock. Commands arrive over ``conn``."""
    with KubeApi(bookmark_interval=5.0) as api:
        objs = list(cluster(services, per_service, legacy))
        for i in range(0, len(objs), 5000):
            api.put(*objs[i : i + 5000])
        del objs
        # It stands in for kube-apiserver (Go): keep CPython's collector from walking
        # the 30,000 stored objects and their history while it serves svcdns.
        gc.collect()
        gc.freeze()
        conn.send("loaded")
        while True:
            cmd, arg = conn.recv()
            if cmd == "put":
                api.put(arg)
                conn.send(None)
            elif cmd == "expire":
                api.expire(close_watches=True)
                conn.send(None)
            elif cmd == "kubeconfig":
                conn.send(api.write_kubeconfig(arg))
            elif cmd == "stop":
                conn.send(None)
                return


def start_api(args):
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.Process(target=api_server, args=(child, args.services, args.endpoints, not args.no_legacy_endpoints))
    started = time.perf_counter()
    proc.start()
    assert parent.recv() == "loaded"
    print(f"API server loaded in {time.perf_counter() - started:.1f}s", file=sys.stderr)

    def call(cmd, arg):
        parent.send((cmd, arg))
        return parent.recv()

    return proc, call


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--endpoints", type=int, default=10, help="endpoints per service")
    ap.add_argument("--events", type=int, default=200, help="updates timed per kind")
    ap.add_argument("--no-legacy-endpoints", action="store_true", help="do not create core/v1 Endpoints beside the slices")
    args = ap.parse_args()
    results: dict = {"services": args.services, "endpoints": args.services * args.endpoints}

    api_proc, api = start_api(args)
    with tempfile.TemporaryDirectory() as tmp:
        dns_port, http_port = free_port(), free_port()
        kubeconfig = api("kubeconfig", str(Path(tmp) / "kubeconfig"))
        cmd = [sys.executable, "-m", "svcdns", "serve", "--kubeconfig", kubeconfig,
               "--listen", f"127.0.0.1:{dns_port}", "--health", f"127.0.0.1:{http_port}"]
        log = open(Path(tmp) / "svcdns.log", "w")
        api_cpu = cpu_seconds(api_proc.pid)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT)
        try:
            while not ready(http_port):
                if proc.poll() is not None or time.perf_counter() - t0 > 600:
                    raise RuntimeError(f"svcdns did not become ready; see {log.name}")
                time.sleep(0.02)
            results["time_to_ready_s"] = round(time.perf_counter() - t0, 2)
            results["svcdns_cpu_ready_s"] = round(cpu_seconds(proc.pid), 2)
            results["api_server_cpu_ready_s"] = round(cpu_seconds(api_proc.pid) - api_cpu, 2)
            rss, peak = memory(proc.pid)
            results["rss_ready_mib"], results["rss_peak_mib"] = round(rss), round(peak)
            print(f"ready in {results['time_to_ready_s']}s (CPU: svcdns {results['svcdns_cpu_ready_s']}s, "
                  f"API server {results['api_server_cpu_ready_s']}s), RSS {rss:.0f} MiB (peak {peak:.0f})", file=sys.stderr)

            # Service updates: a ClusterIP service gets a new address
            lat = []
            for k in range(args.events):
                i = 1 + (k * 7919) % (args.services - 1)
                if i % 10 == 0:
                    i += 1
                ns, name = f"ns-{i % NAMESPACES}", f"svc-{i}"
                new_ip = f"10.250.{k // 256}.{k % 256}"
                t_event = time.perf_counter()  # before the write: the latency includes the API server's part
                api("put", o.service(ns, name, new_ip, ports=(("http", 80), ("metrics", 9090))))
                lat.append(wait_answer(dns_port, f"{name}.{ns}.svc.cluster.local.", [new_ip]) - t_event)
            results["service_update_ms"] = {"p50": round(pct(lat, 50) * 1000, 2), "p99": round(pct(lat, 99) * 1000, 2)}

            # EndpointSlice updates: a headless service's endpoints change
            lat = []
            for k in range(args.events):
                i = (k * 10) % args.services
                ns, name = f"ns-{i % NAMESPACES}", f"svc-{i}"
                addrs = sorted(f"10.251.{k % 256}.{j}" for j in range(args.endpoints))
                t_event = time.perf_counter()
                api("put", o.endpoint_slice(ns, name, addrs, ports=(("http", 8080), ("metrics", 9090))))
                lat.append(wait_answer(dns_port, f"{name}.{ns}.svc.cluster.local.", addrs) - t_event)
            results["slice_update_ms"] = {"p50": round(pct(lat, 50) * 1000, 2), "p99": round(pct(lat, 99) * 1000, 2)}

            # 410 under open watches: full relist + reconcile at scale
            cpu_before = cpu_seconds(proc.pid)
            results["rss_before_relist_mib"] = round(memory(proc.pid)[0])
            t_event = time.perf_counter()
            api("expire", None)
            api("put", o.service("ns-1", "svc-1", "10.252.0.1", ports=(("http", 80), ("metrics", 9090))))
            results["relist_s"] = round(wait_answer(dns_port, "svc-1.ns-1.svc.cluster.local.", ["10.252.0.1"], 120) - t_event, 2)
            relisted(http_port)
            results["svcdns_cpu_relist_s"] = round(cpu_seconds(proc.pid) - cpu_before, 2)
            rss, peak = memory(proc.pid)
            results["rss_after_relist_mib"], results["rss_peak_mib"] = round(rss), round(peak)
            results["alive"] = proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()
            api("stop", None)
            api_proc.join(timeout=30)

    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale_api.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| services | endpoints | time to ready | CPU to ready: svcdns / API server | RSS ready (peak) | service update p50 / p99 "
          "| slice update p50 / p99 | relist after 410 (svcdns CPU) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    s, e = results["service_update_ms"], results["slice_update_ms"]
    print(f"| {args.services:,} | {results['endpoints']:,} | {results['time_to_ready_s']} s "
          f"| {results['svcdns_cpu_ready_s']} s / {results['api_server_cpu_ready_s']} s | {results['rss_ready_mib']} MiB "
          f"({results['rss_peak_mib']} MiB) | {s['p50']} / {s['p99']} ms | {e['p50']} / {e['p99']} ms "
          f"| {results['relist_s']} s ({results['svcdns_cpu_relist_s']} s) |")
    return 0 if results["alive"] else 1


if __name__ == "__main__":
    sys.exit(main())
