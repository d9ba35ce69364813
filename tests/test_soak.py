"""A CI-sized soak (bench/soak.sh is the full one): dnsperf load while endpoints churn
10 times a second through a watched manifest file. No query is lost, no answer for a
churning service is NXDOMAIN, and every answer is a state that was current moments
before it was given."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from tests.dns.nameservers import free_port
from tests.test_shutdown import Replica, dnsperf, dnsperf_result

ROOT = Path(__file__).resolve().parent.parent
CHURN = ROOT / "bench" / "churn.py"
STALE = 0.5  # seconds an answer may lag the file: the 50 ms poll plus a reload under load


def updates(log: Path) -> dict[str, list[tuple[float, frozenset[str]]]]:
    """Per service, (time it became current, addresses), from bench/churn.py --log."""
    out: dict[str, list[tuple[float, frozenset[str]]]] = {}
    for line in log.read_text().splitlines():
        at, service, addrs = line.split()
        out.setdefault(service, []).append((float(at), frozenset(addrs.split(","))))
    return out


def current_between(history: list[tuple[float, frozenset[str]]], initial: frozenset[str], start: float, end: float) -> set[frozenset[str]]:
    """The states a service had at any moment in [start, end]."""
    states, state = set(), initial
    for at, addrs in history:
        if at > end:
            break
        if at >= start:
            states.add(state)
        state = addrs
    states.add(state)
    return states


@pytest.mark.skipif(shutil.which("dnsperf") is None, reason="dnsperf missing: `make test` installs it")
def test_churn_under_load_loses_nothing_and_never_contradicts(tmp_path):
    churn_file, churn_log = tmp_path / "churn.json", tmp_path / "churn.log"
    subprocess.run([sys.executable, str(CHURN), str(churn_file), "--init-only"], check=True)
    server = Replica(free_port(), "--manifests", str(churn_file), "--poll-interval", "0.05")
    try:
        queries = tmp_path / "queries.txt"
        queries.write_text("".join(f"churn-{k}.churn.svc.cluster.local. A\n" for k in range(10)))
        load = dnsperf(server.port, queries, "-l", "4", "-c", "4", "-Q", "3000")
        churn = subprocess.Popen([sys.executable, str(CHURN), str(churn_file), "--rate", "10", "--seconds", "3.5", "--log", str(churn_log)])
        observed: list[tuple[float, float, int, frozenset[str]]] = []
        stop = threading.Event()

        def poll() -> None:
            query = dns.message.make_query("churn-0.churn.svc.cluster.local.", "A")
            while not stop.is_set():
                sent = time.time()
                reply = dns.query.udp(query, "127.0.0.1", port=server.port, timeout=2)
                addrs = frozenset(rr.address for rrset in reply.answer for rr in rrset)
                observed.append((sent, time.time(), reply.rcode(), addrs))
                time.sleep(0.01)

        poller = threading.Thread(target=poll)
        poller.start()
        rss_before = server.rss_kib()
        assert churn.wait(timeout=20) == 0
        stop.set()
        poller.join(timeout=5)
        result = dnsperf_result(load)
        rss_after = server.rss_kib()
    finally:
        server.stop()

    assert result["lost"] == 0 and result["sent"] >= 8000, result
    history = updates(churn_log)
    assert len(history["churn-0"]) >= 3, "churn-0 changed several times while polled"
    initial = frozenset({"10.250.0.1", "10.251.0.1"})
    assert len({o[3] for o in observed}) >= 3, "the server followed the churn"
    for sent, received, rcode, addrs in observed:
        assert rcode == dns.rcode.NOERROR, "a service that exists throughout is never NXDOMAIN"
        assert addrs in current_between(history["churn-0"], initial, sent - STALE, received), (sent, sorted(addrs))
    assert rss_after - rss_before < 10 * 1024, (rss_before, rss_after)
