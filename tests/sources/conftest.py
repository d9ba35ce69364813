"""Fixtures for the live source: the test API server and svcdns servers following it."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import dns.rcode
import dns.rdatatype
import pytest

from svcdns.config import WatchTiming
from tests.conftest import RunningServer, base_config
from tests.kubeapi import objects as o
from tests.kubeapi.server import KubeApi

# Short enough that every fault heals well inside the 3 s the issue allows, long enough
# that a healthy watch (bookmarks every 0.2 s) is never taken for a dead one.
FAST = WatchTiming(
    page_size=3,  # exercise limit/continue on every list
    watch_timeout=(5, 10),
    idle_timeout=1.0,
    request_timeout=1.0,
    backoff_initial=0.05,
    backoff_cap=0.5,
    retry_after_cap=5.0,
    refetch_delay=0.2,
)


@pytest.fixture
def kubeapi():
    with KubeApi(bookmark_interval=0.2) as api:
        yield api


@pytest.fixture
def live(kubeapi, tmp_path):
    """``srv = live(**config_overrides)``: svcdns following ``kubeapi``; waits for /ready
    unless ``wait=False``."""
    started = []

    def start(wait: bool = True, **overrides) -> RunningServer:
        overrides.setdefault("watch", FAST)
        kubeconfig = kubeapi.write_kubeconfig(tmp_path / f"kubeconfig-{len(started)}")
        srv = RunningServer(base_config(kubeconfig=kubeconfig, **overrides)).__enter__()
        started.append(srv)
        if wait:
            eventually(lambda: ready(srv), timeout=5, what="/ready")
        return srv

    yield start
    for srv in started:
        srv.__exit__(None, None, None)


def seed(api: KubeApi) -> None:
    """A small cluster: namespaces default and web, a ClusterIP and a headless service."""
    api.put(
        o.namespace("default"),
        o.namespace("web"),
        o.service("default", "kubernetes", "10.0.0.1", ports=(("https", 443),)),
        o.endpoint_slice("default", "kubernetes", ["172.18.0.2"], ports=(("https", 6443),)),
        o.service("web", "frontend", "10.0.10.1"),
        o.endpoint_slice("web", "frontend", ["10.244.1.10", "10.244.2.11"]),
        o.service("web", "db", "None", ports=(("pg", 5432),)),
        o.endpoint_slice("web", "db", ["10.244.1.20"], ports=(("pg", 5432),), hostnames={"10.244.1.20": "db-0"}),
    )


def ready(srv: RunningServer) -> bool:
    try:
        with urllib.request.urlopen(srv.health_url + "/ready", timeout=2) as r:
            return r.status == 200
    except urllib.error.HTTPError:
        return False


def answer(srv: RunningServer, name: str, rdtype: str = "A") -> tuple[str, list[str]]:
    """(rcode, sorted rdata) of a real UDP query."""
    msg = srv.query(name, rdtype)
    want = dns.rdatatype.from_text(rdtype)
    return dns.rcode.to_text(msg.rcode()), sorted(rd.to_text() for rrset in msg.answer if rrset.rdtype == want for rd in rrset)


def eventually(check, timeout: float, what: str = "condition", interval: float = 0.02):
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")
        time.sleep(interval)


def converges(srv: RunningServer, name: str, rdtype: str, want: tuple[str, list[str]], timeout: float) -> float:
    """Wait until the answer is ``want``; returns how long it took."""
    started = time.monotonic()
    got = []

    def check():
        got[:] = [answer(srv, name, rdtype)]
        return got[0] == want

    try:
        eventually(check, timeout, f"{name} {rdtype} -> {want}")
    except AssertionError:
        raise AssertionError(f"{name} {rdtype}: wanted {want} within {timeout}s, still {got[0]}") from None
    return time.monotonic() - started


def metrics_text(srv: RunningServer) -> str:
    with urllib.request.urlopen(srv.health_url + "/metrics", timeout=2) as r:
        return r.read().decode()


def sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")
