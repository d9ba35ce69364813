"""Graceful shutdown and rolling restarts of `svcdns serve` as a process: lameduck,
pending answers finished, and two replicas on one SO_REUSEPORT address handing over
under dnsperf load without losing a query. Also: memory stays flat under a flood."""

from __future__ import annotations

import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import dns.message
import dns.query
import pytest

from tests.dns.nameservers import SlowServer, free_port

NAME = "redis-master.default.svc.cluster.local."


class Replica:
    """One `svcdns serve` process on 127.0.0.1:port, with /ready on its own port."""

    def __init__(self, port: int, *args: str):
        self.port, self.http = port, free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "svcdns", "--log-level", "warning", "serve", "--listen", f"127.0.0.1:{port}",
             "--health", f"127.0.0.1:{self.http}", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 20
        while self.ready() != 200:
            if self.proc.poll() is not None:
                raise AssertionError(f"svcdns exited: {self.proc.stderr.read()}")
            if time.monotonic() > deadline:
                raise AssertionError("svcdns did not become ready")
            time.sleep(0.05)

    def ready(self) -> int | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/ready", timeout=1) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return None

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc.stderr.close()


@pytest.fixture
def replicas():
    started: list[Replica] = []

    def start(port: int, *args: str) -> Replica:
        started.append(Replica(port, *args))
        return started[-1]

    yield start
    for r in started:
        r.stop()


def ask(port: int) -> str:
    reply = dns.query.udp(dns.message.make_query(NAME, "A"), "127.0.0.1", port=port, timeout=2)
    return reply.answer[0][0].address


def test_lameduck_keeps_answering_while_not_ready(replicas):
    r = replicas(free_port(), "--lameduck", "1.5")
    r.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    while r.ready() != 503:
        assert time.monotonic() - sent < 0.5, "/ready turns 503 at once"
        time.sleep(0.02)
    while time.monotonic() - sent < 1.2:
        assert ask(r.port) == "10.0.0.11", "still answering during the lameduck period"
        time.sleep(0.1)
    assert r.proc.wait(timeout=10) == 0
    assert 1.5 <= time.monotonic() - sent < 5


def test_second_signal_cuts_lameduck_short(replicas):
    r = replicas(free_port(), "--lameduck", "30")
    r.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    r.proc.send_signal(signal.SIGTERM)
    assert r.proc.wait(timeout=5) == 0


def test_pending_tcp_answer_is_delivered_after_sigterm(replicas):
    """A forwarded query over TCP waiting on a slow upstream when SIGTERM arrives still
    gets its answer; then the process exits."""
    with SlowServer(0.8) as upstream:
        r = replicas(free_port(), "--upstream", f"{upstream.address[0]}:{upstream.address[1]}")
        wire = dns.message.make_query("slow.example.test.", "A").to_wire()
        with socket.create_connection(("127.0.0.1", r.port), timeout=5) as s:
            s.sendall(struct.pack(">H", len(wire)) + wire)
            time.sleep(0.2)
            r.proc.send_signal(signal.SIGTERM)
            size = struct.unpack(">H", s.recv(2))[0]
            data = b""
            while len(data) < size:
                data += s.recv(size - len(data))
            assert dns.message.from_wire(data).answer[0][0].address == "192.0.2.77"
            s.settimeout(2)
            assert s.recv(1) == b"", "then the connection is closed"
        assert r.proc.wait(timeout=10) == 0


DNSPERF = shutil.which("dnsperf")


def dnsperf(port: int, queries: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [DNSPERF, "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-t", "2", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def dnsperf_result(proc: subprocess.Popen) -> dict[str, float]:
    out = proc.communicate(timeout=60)[0]
    fields = {}
    for line in out.splitlines():
        parts = line.split()
        if line.strip().startswith(("Queries sent:", "Queries completed:", "Queries lost:")):
            fields[parts[1].rstrip(":")] = float(parts[2])
    assert fields, out
    return fields


@pytest.mark.skipif(DNSPERF is None, reason="dnsperf missing: `make test` installs it")
def test_rolling_restart_under_load_loses_no_queries(replicas, tmp_path):
    """A, then B on the same address (SO_REUSEPORT); A is stopped (SIGTERM, lameduck),
    then C replaces B the same way, all under dnsperf: every query is answered."""
    queries = tmp_path / "queries.txt"
    queries.write_text(f"{NAME} A\nnginx.default.svc.cluster.local. A\nnope.default.svc.cluster.local. A\n")
    port = free_port()
    flags = ("--reuse-port", "--lameduck", "0.3")
    a = replicas(port, *flags)
    load = dnsperf(port, queries, "-l", "6", "-c", "8", "-Q", "10000")
    time.sleep(0.5)
    b = replicas(port, *flags)
    a.proc.send_signal(signal.SIGTERM)
    assert a.proc.wait(timeout=10) == 0
    c = replicas(port, *flags)
    b.proc.send_signal(signal.SIGTERM)
    assert b.proc.wait(timeout=10) == 0
    result = dnsperf_result(load)
    assert c.proc.poll() is None
    assert result["sent"] > 10000
    assert result["lost"] == 0, result


@pytest.mark.skipif(DNSPERF is None, reason="dnsperf missing: `make test` installs it")
def test_memory_stays_flat_under_a_flood_of_unique_names(replicas, tmp_path):
    """Floods of never-seen names whose NXDOMAINs are cached (the answer cache is an LRU
    of 50,000 entries): RSS grows ~7 MB a flood while the cache fills and churns once,
    then another flood leaves it where it was (bench/flood.py runs more rounds)."""
    r = replicas(free_port())
    rss = [r.rss_kib()]
    for round_ in range(4):
        names = tmp_path / f"flood{round_}.txt"
        names.write_text("".join(f"n{round_}x{i}.cluster.local. A\n" for i in range(40000)))
        result = dnsperf_result(dnsperf(r.port, names, "-n", "1", "-c", "4", "-q", "500"))
        assert result["completed"] >= 0.99 * result["sent"]
        rss.append(r.rss_kib())
    print("RSS KiB: start, after each flood:", rss)
    assert rss[1] - rss[0] > 2 * 1024, "the first floods fill the cache (the measure can see growth)"
    assert rss[4] - rss[3] < 4 * 1024, f"RSS grew {rss} KiB after the cache was full"
    assert ask(r.port) == "10.0.0.11"
