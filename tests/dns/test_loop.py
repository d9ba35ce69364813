"""Forwarding loops (svcdns forwarding to itself, directly or through another forwarder)
are found at start-up and refused with a clear error, as CoreDNS's loop plugin does."""

from __future__ import annotations

import subprocess
import sys

import pytest

from svcdns.dns.recursion import ForwardingLoop
from tests.dns.nameservers import Dnsmasq, Knot, free_port


def test_upstream_is_svcdns_itself(serve, tmp_path):
    port = free_port()
    with pytest.raises(ForwardingLoop, match="forwarding loop detected"):
        serve(listen=("127.0.0.1", port), upstreams=(("127.0.0.1", port),))
    # The failed start released its port: a correct configuration can bind it now.
    with Knot(tmp_path / "knot") as knot:
        srv = serve(listen=("127.0.0.1", port), upstreams=(knot.address,))
        assert srv.query("www.example.test.").answer[0][0].address == "192.0.2.10"


def test_loop_through_another_forwarder(serve, tmp_path):
    port = free_port()
    with Dnsmasq(tmp_path / "dnsmasq", server=("127.0.0.1", port)) as dnsmasq:
        with pytest.raises(ForwardingLoop, match=f"127.0.0.1:{dnsmasq.port}"):
            serve(listen=("127.0.0.1", port), upstreams=(("127.0.0.1", dnsmasq.port),))


def test_loop_through_a_stub_domain(serve, tmp_path):
    port = free_port()
    with Dnsmasq(tmp_path / "dnsmasq", server=("127.0.0.1", port)) as dnsmasq:
        with pytest.raises(ForwardingLoop):
            serve(listen=("127.0.0.1", port), stub_domains=(("corp.internal", (("127.0.0.1", dnsmasq.port),)),))


def test_no_loop_through_a_forwarder_to_a_real_upstream(serve, tmp_path):
    with Knot(tmp_path / "knot") as knot, Dnsmasq(tmp_path / "dnsmasq", server=knot.address) as dnsmasq:
        srv = serve(upstreams=(("127.0.0.1", dnsmasq.port),))
        assert srv.query("www.example.test.").answer[0][0].address == "192.0.2.10"


def test_command_line_reports_the_loop_and_exits_1():
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "svcdns", "serve", "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 1
    assert "forwarding loop detected" in proc.stderr
    assert f"127.0.0.1:{port}" in proc.stderr
