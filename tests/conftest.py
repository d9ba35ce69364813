"""Shared fixtures: a real svcdns server on loopback, and real DNS clients (dnspython)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest

from svcdns.config import ServeConfig
from svcdns.serve import Server, example_manifests
from svcdns.sources.manifests import ManifestSource
from svcdns.store import ClusterState

TESTDATA = Path(__file__).parent / "testdata"


class RunningServer:
    """A Server running on its own event loop in a thread, so tests can use blocking
    dnspython clients against it. Bound to 127.0.0.1 on a free port."""

    def __init__(self, config: ServeConfig, **server_kwargs):
        self.config = config
        self.server_kwargs = server_kwargs  # e.g. clock= for the forwarding cache
        self.loop = asyncio.new_event_loop()
        self.server: Server | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> "RunningServer":
        self._thread.start()
        self.server = Server(self.config, **self.server_kwargs)
        try:
            asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(timeout=30)
        except BaseException:
            self._stop_loop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(timeout=30)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    def call(self, fn, *args):
        """Run fn on the server's loop (the state is single-threaded) and return its result."""

        async def run():
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=30)

    @property
    def port(self) -> int:
        return self.server.dns.port

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.server.health.port}"

    def query(self, name: str, rdtype: str = "A", *, tcp: bool = False, source: str | None = None, **make_kwargs) -> dns.message.Message:
        """Ask over UDP (or TCP), from ``source`` (a 127.x address: a pod's IP) if given."""
        q = dns.message.make_query(name, rdtype, **make_kwargs)
        if tcp:
            return dns.query.tcp(q, "127.0.0.1", port=self.port, timeout=5, source=source)
        return dns.query.udp(q, "127.0.0.1", port=self.port, timeout=5, source=source)

    def send_raw(self, wire: bytes, timeout: float = 1.0) -> bytes | None:
        import socket

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(wire, ("127.0.0.1", self.port))
            try:
                return s.recv(65535)
            except socket.timeout:
                return None


def base_config(**overrides) -> ServeConfig:
    cfg = ServeConfig(listen=("127.0.0.1", 0), health=("127.0.0.1", 0), poll_interval=0.2)
    return replace(cfg, **overrides)


@pytest.fixture(scope="session")
def example_server():
    """svcdns serving the embedded example cluster (no --manifests)."""
    with RunningServer(base_config()) as srv:
        yield srv


@pytest.fixture
def serve():
    """Start servers with custom config: ``srv = serve(manifests=(path,))``."""
    started = []

    def start(clock=None, **overrides) -> RunningServer:
        srv = RunningServer(base_config(**overrides), **({"clock": clock} if clock else {})).__enter__()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.__exit__(None, None, None)


def state_from_yaml(text: str, tmp_path: Path, **kwargs) -> ClusterState:
    """A ClusterState loaded from manifest text, the way `svcdns serve` loads it."""
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    state = ClusterState(derive_endpoints=True, implicit_namespaces=True, **kwargs)
    ManifestSource([str(path)], state).load()
    return state


def example_state() -> ClusterState:
    state = ClusterState(derive_endpoints=True, implicit_namespaces=True)
    ManifestSource([example_manifests()], state).load()
    return state


def rrset_texts(section) -> list[str]:
    """Records as sorted zone-file lines (lowercase owner), for table comparisons."""
    out = []
    for rrset in section:
        for rd in rrset:
            out.append(f"{rrset.name.to_text().lower()} {rrset.ttl} IN {dns.rdatatype.to_text(rrset.rdtype)} {rd.to_text()}")
    return sorted(out)


@pytest.fixture(scope="module")
def knot(tmp_path_factory):
    """A real upstream nameserver (Knot DNS on loopback) serving the test zones of
    tests/dns/nameservers.py; one per test module."""
    from tests.dns.nameservers import Knot

    with Knot(tmp_path_factory.mktemp("knot")) as server:
        yield server
