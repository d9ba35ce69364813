"""Real connections through svcdns's rules, in every mode.

Each mode gets its own namespace lab (tests/proxy/netlab.py); `svcdns proxy` runs in the
node namespace exactly as on a node, and a client pod connects to ClusterIPs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from svcdns.proxy.backends.ipvs import ipvs_available

from .netlab import CLUSTER_CIDR, NODE_GW, Lab

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="network namespaces need root and iproute2 (CI runs as root)")

TESTDATA = Path(__file__).parent / "testdata"
PODS = [("p1", "10.244.1.1"), ("p2", "10.244.1.2"), ("p3", "10.244.1.3"), ("dead", "10.244.1.9")]
MODES = ["iptables", "nftables", "ipvs", "userspace"]
WEB, STICKY, LOCAL, LOCAL_NONE, EMPTY, FLAKY, DNS, DRAINING, HINTED, WEB_NP, SELF = (f"10.96.0.{i}" for i in range(10, 21))


def proxy_argv(mode: str, manifests: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "svcdns", "proxy", "--mode", mode, "--manifests", str(manifests),
        "--node-name", "node-a", "--cluster-cidr", CLUSTER_CIDR, *extra,
    ]


class ModeLab:
    """A lab with svcdns proxy applied in one mode."""

    def __init__(self, mode: str, tmp: Path):
        self.mode = mode
        self.manifests = tmp / "cluster.yaml"
        shutil.copy(TESTDATA / "lab.yaml", self.manifests)
        self.lab = Lab(PODS, dead=("dead",)).__enter__()
        self.stderr = ""

    def start(self) -> None:
        if self.mode == "userspace":
            with open(self.manifests.parent / "proxy.log", "w") as log:  # the child keeps its own copy
                self.proc = self.lab.start(proxy_argv(self.mode, self.manifests, "--min-sync-period", "0.2"), stdout=log, stderr=subprocess.STDOUT)
            self.lab.wait_for(lambda: "REDIRECT" in self.lab.node_exec("iptables-save", "-t", "nat").stdout, what="the userspace proxy's rules")
            return
        run = self.lab.node_exec(*proxy_argv(self.mode, self.manifests, "--once"), check=False)
        self.stderr = run.stderr
        assert run.returncode == 0, run.stderr


@pytest.fixture(scope="module", params=MODES)
def mode_lab(request, tmp_path_factory):
    ml = ModeLab(request.param, tmp_path_factory.mktemp(request.param))
    try:
        ml.start()
        yield ml
    finally:
        ml.lab.close()


def within(count: int, n: int, k: int) -> bool:
    """count of n draws that hit one of k equally likely outcomes, within 5.5 sigma."""
    mean = n / k
    sigma = (n * (1 / k) * (1 - 1 / k)) ** 0.5
    return abs(count - mean) <= 5.5 * sigma


def test_even_split_over_endpoints(mode_lab):
    counts = mode_lab.lab.tally(WEB, 80, 240)
    assert set(counts) == {"p1", "p2", "p3"}, counts
    assert all(within(counts[p], 240, 3) for p in ("p1", "p2", "p3")), counts


def test_client_ip_affinity_sticks(mode_lab):
    lab = mode_lab.lab
    first = lab.ask(STICKY, 80)
    assert first in ("p1", "p2", "p3")
    assert lab.tally(STICKY, 80, 25) == {first: 25}
    # another client (the node itself) is pinned too, independently
    node_first = lab.ask(STICKY, 80, source="node")
    assert lab.tally(STICKY, 80, 10, source="node") == {node_first: 10}


def test_local_policy_uses_only_this_nodes_endpoints(mode_lab):
    assert mode_lab.lab.tally(LOCAL, 80, 20) == {"p1": 20}


def test_local_policy_without_local_endpoints_drops(mode_lab):
    assert mode_lab.lab.ask(LOCAL_NONE, 80, timeout=1.0) == "timeout"


def test_service_without_endpoints_rejects(mode_lab):
    lab = mode_lab.lab
    assert lab.ask(EMPTY, 80) == "refused"
    assert lab.ask(EMPTY, 80, source="node") == "refused"


def test_udp_service(mode_lab):
    answers = {mode_lab.lab.ask(DNS, 53, udp=True) for _ in range(10)}
    assert answers and answers <= {"p1", "p2"}, answers


def test_terminating_endpoints_are_the_fallback(mode_lab):
    assert mode_lab.lab.tally(DRAINING, 80, 10) == {"p2": 10}


def test_topology_hints_keep_traffic_in_zone(mode_lab):
    assert mode_lab.lab.tally(HINTED, 80, 10) == {"p1": 10}


def test_pod_reaches_itself_through_its_service(mode_lab):
    """Hairpin: the endpoint chosen is the client itself, so the proxy must masquerade
    the connection (kube-proxy does the same) or the pod answers its own SYN directly."""
    lab = mode_lab.lab
    assert lab.tally(SELF, 80, 5, source="p1") == {"p1": 5}
    counts = lab.tally(WEB, 80, 60, source="p1")  # itself sometimes, the others otherwise
    assert set(counts) == {"p1", "p2", "p3"}, counts


def test_nodeport_reaches_endpoints(mode_lab):
    if mode_lab.mode == "ipvs" and ipvs_available()[0]:
        pytest.skip("NodePorts are not programmed in ipvs mode (see svcdns/proxy/backends/ipvs.py)")
    counts = mode_lab.lab.tally(NODE_GW, 30080, 30)
    assert set(counts) <= {"p1", "p2", "p3"} and len(counts) >= 2, counts


@pytest.mark.parametrize("mode_lab", ["ipvs"], indirect=True)
def test_ipvs_mode_falls_back_to_iptables_without_kernel_ipvs(mode_lab):
    available, _ = ipvs_available()
    rules = mode_lab.lab.node_exec("iptables-save", "-t", "nat").stdout
    if available:
        assert "KUBE-SVC-" not in rules
    else:
        assert "running in iptables mode instead" in mode_lab.stderr
        assert "KUBE-SVC-" in rules and "KUBE-SEP-" in rules


@pytest.mark.parametrize("mode_lab", ["userspace"], indirect=True)
def test_userspace_listens_on_a_random_port_per_service_port(mode_lab):
    rules = mode_lab.lab.node_exec("iptables-save", "-t", "nat").stdout
    ports = {}
    for line in rules.splitlines():
        if line.startswith("-A KUBE-PORTALS-CONTAINER"):
            ports[line.split(" -d ")[1].split()[0]] = int(line.rsplit("--to-ports ", 1)[1])
    assert ports[WEB + "/32"] != ports[STICKY + "/32"]
    assert all(32768 <= p <= 60999 for p in ports.values()), ports
    assert EMPTY + "/32" not in ports  # no endpoints: rejected, not redirected


@pytest.mark.parametrize("mode_lab", ["userspace"], indirect=True)
def test_userspace_retries_past_a_dead_backend(mode_lab):
    # round robin sends every other connection to the dead endpoint first
    assert mode_lab.lab.tally(FLAKY, 80, 12) == {"p1": 12}
