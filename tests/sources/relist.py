"""Memory of `svcdns serve --kubeconfig` during a full relist, against the test API server.

Used by tests/sources/test_relist_memory.py (CI size) and bench/relist_memory.py
(10,000 services / 100,000 endpoints). Steps:

1. svcdns starts against an API holding one namespace: ``base`` RSS (the interpreter,
   libraries and empty tables).
2. The cluster is written: ``services`` Services with one EndpointSlice of ``endpoints``
   addresses each; once answered and settled, ``steady`` RSS.
3. The peak RSS counter is reset (``/proc/PID/clear_refs`` 5), then two relists:
   a. every resourceVersion expires under open watches (410): the reflectors relist
      objects that did not change;
   b. the worst case: while svcdns cannot reach the API, every EndpointSlice changes and
      the history is compacted, so the relist brings every slice anew.
   ``peak`` is VmHWM afterwards.

The issue's bound is peak <= 1.5 x steady; ``overhead`` = (peak - steady) / (steady -
base) is the stricter view at small sizes, where the interpreter dominates steady.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query

from tests.kubeapi import objects as o
from tests.kubeapi.server import KubeApi

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RelistMemory:
    base_kib: int
    steady_kib: int
    peak_kib: int
    relist_s: float

    @property
    def ratio(self) -> float:
        return self.peak_kib / self.steady_kib

    @property
    def overhead(self) -> float:
        return (self.peak_kib - self.steady_kib) / max(self.steady_kib - self.base_kib, 1)


def status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def settled_rss(pid: int, seconds: float = 1.0) -> int:
    time.sleep(seconds)
    return status(pid)["VmRSS"]


def wait_answer(port: int, name: str, want: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    query = dns.message.make_query(name, "A")
    while time.monotonic() < deadline:
        try:
            reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=1)
            if any(rr.address == want for rrset in reply.answer for rr in rrset):
                return
        except dns.exception.Timeout:
            pass
        time.sleep(0.02)
    raise AssertionError(f"{name} did not answer {want} within {timeout}s")


def slices(services: int, endpoints: int, generation: int) -> list[dict]:
    """One slice per service; every address changes with the generation."""
    out = []
    for i in range(services):
        first = i * endpoints
        addrs = [f"10.{128 + generation}.{(first + j) >> 8 & 255}.{(first + j) & 255}" for j in range(endpoints)]
        out.append(o.endpoint_slice(f"ns-{i % 10}", f"svc-{i}", addrs))
    return out


def measure(services: int, endpoints: int, workdir: Path, port: int, timeout: float = 120) -> RelistMemory:
    with KubeApi(bookmark_interval=1.0) as api:
        api.put(*[o.namespace(f"ns-{n}") for n in range(10)])
        kubeconfig = api.write_kubeconfig(workdir / "kubeconfig")
        proc = subprocess.Popen(
            [sys.executable, "-m", "svcdns", "--log-level", "warning", "serve", "--kubeconfig", kubeconfig,
             "--listen", f"127.0.0.1:{port}", "--no-autopath"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            probe, hprobe = "probe.ns-0.svc.cluster.local.", "hprobe.ns-0.svc.cluster.local."
            api.put(o.service("ns-0", "probe", "10.0.0.2"), o.service("ns-0", "hprobe", "None"),
                    o.endpoint_slice("ns-0", "hprobe", ["10.200.0.1"]))
            wait_answer(port, probe, "10.0.0.2", timeout)
            wait_answer(port, hprobe, "10.200.0.1", timeout)
            base = settled_rss(proc.pid)
            for start in range(0, services, 500):
                batch = range(start, min(start + 500, services))
                api.put(*[o.service(f"ns-{i % 10}", f"svc-{i}", f"10.{96 + (i >> 16)}.{i >> 8 & 255}.{i & 255}") for i in batch])
            first = slices(services, endpoints, 0)
            for start in range(0, services, 500):
                api.put(*first[start : start + 500])
            api.put(o.service("ns-0", "probe", "10.0.0.3"))
            wait_answer(port, probe, "10.0.0.3", timeout)
            steady = settled_rss(proc.pid, 2.0)
            Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
            started = time.monotonic()
            # a. 410 under open watches, nothing changed
            api.expire(close_watches=True)
            api.put(o.service("ns-0", "probe", "10.0.0.4"))
            wait_answer(port, probe, "10.0.0.4", timeout)
            # b. every slice changed while svcdns could not watch, history gone
            api.fail(1_000_000, 500)
            api.drop_watches()
            changed = slices(services, endpoints, 1)
            for start in range(0, services, 500):
                api.put(*changed[start : start + 500])
            api.put(o.service("ns-0", "probe", "10.0.0.5"), o.endpoint_slice("ns-0", "hprobe", ["10.200.0.2"]))
            api.expire(close_watches=True)
            api.clear_faults()
            wait_answer(port, probe, "10.0.0.5", timeout)  # both lists came back whole
            wait_answer(port, hprobe, "10.200.0.2", timeout)
            relist_s = time.monotonic() - started
            time.sleep(1.0)
            peak = status(proc.pid)["VmHWM"]
            return RelistMemory(base, steady, peak, relist_s)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
