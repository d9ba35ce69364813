"""Endpoint categorisation (kube-proxy's CategorizeEndpoints), names and trackers."""

from __future__ import annotations

import pytest

from svcdns.proxy.backends.iptables_rules import endpoint_chain, port_proto_hash, probability
from svcdns.proxy.backends.nftables import hash_and_truncate
from svcdns.proxy.model import EndpointInfo, ServicePortInfo, ServicePortName, categorize_endpoints
from svcdns.proxy.tracker import ServiceChangeTracker, apply_changes

NAME = ServicePortName("ns1", "svc1", "p80", "TCP")


def svc(internal_local=False, external_local=False, node_port=0) -> ServicePortInfo:
    return ServicePortInfo(NAME, ("172.30.0.41",), 80, node_port, 0, internal_local, external_local, (), ())


def ep(ip: str, *, ready=True, serving=None, terminating=False, local=False, zones=(), nodes=()) -> EndpointInfo:
    return EndpointInfo(ip, 80, ready, ready if serving is None else serving, terminating, local, frozenset(zones), frozenset(nodes))


A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"

# (case, service, endpoints, node zone) -> (cluster IPs, local IPs, reachable IPs, has_any)
CATEGORIZE = [
    ("cluster uses all ready", svc(), [ep(A), ep(B, local=True)], "", ([A, B], [], [A, B], True)),
    ("not ready ones are left out", svc(), [ep(A), ep(B, ready=False, serving=False)], "", ([A], [], [A], True)),
    ("terminating only as fallback", svc(), [ep(A), ep(B, ready=False, serving=True, terminating=True)], "", ([A], [], [A], True)),
    ("fallback when nothing is ready", svc(), [ep(A, ready=False, serving=True, terminating=True), ep(B, ready=False, serving=False, terminating=True)], "", ([A], [], [A], True)),
    ("nothing usable", svc(), [ep(A, ready=False, serving=False)], "", ([], [], [], False)),
    ("internal Local: local ready only", svc(internal_local=True), [ep(A, local=True), ep(B)], "", ([], [A], [A], True)),
    ("internal Local: none local", svc(internal_local=True), [ep(B)], "", ([], [], [], True)),
    ("internal Local: local terminating fallback", svc(internal_local=True), [ep(A, local=True, ready=False, serving=True, terminating=True), ep(B)], "", ([], [A], [A], True)),
    ("external Local uses both sets", svc(external_local=True, node_port=30001), [ep(A, local=True), ep(B)], "", ([A, B], [A], [A, B], True)),
    ("zone hints honoured", svc(), [ep(A, zones=["z1"]), ep(B, zones=["z2"]), ep(C, zones=["z1"])], "z1", ([A, C], [], [A, C], True)),
    ("hints ignored unless all have one", svc(), [ep(A, zones=["z1"]), ep(B)], "z1", ([A, B], [], [A, B], True)),
    ("hints ignored when none for this zone", svc(), [ep(A, zones=["z2"]), ep(B, zones=["z2"])], "z1", ([A, B], [], [A, B], True)),
    ("hints ignored without a zone label", svc(), [ep(A, zones=["z1"])], "", ([A], [], [A], True)),
    ("node hints win", svc(), [ep(A, zones=["z1"], nodes=["node-a"]), ep(B, zones=["z1"], nodes=["node-b"])], "z1", ([A], [], [A], True)),
    ("hints of unready endpoints do not count", svc(), [ep(A, zones=["z1"]), ep(B, ready=False, serving=True, terminating=True)], "z1", ([A], [], [A], True)),
    ("topology + Local: union", svc(external_local=True, node_port=30001), [ep(A, zones=["z2"], local=True), ep(B, zones=["z1"])], "z1", ([B], [A], [A, B], True)),
]


@pytest.mark.parametrize("case,service,endpoints,zone,want", CATEGORIZE, ids=[c[0] for c in CATEGORIZE])
def test_categorize_endpoints(case, service, endpoints, zone, want):
    got = categorize_endpoints(tuple(endpoints), service, "node-a", zone)
    ips = lambda eps: sorted(e.ip for e in eps)
    assert (ips(got.cluster), ips(got.local), ips(got.reachable), got.has_any) == want


# Names kube-proxy gives the same objects (from its own tests and a live cluster's dump).
NAMES = [
    (port_proto_hash("default/kubernetes:https", "tcp"), "NPX46M4PTMTKRN6Y"),
    (port_proto_hash("kube-system/kube-dns:dns", "udp"), "TCOU7JCQXEZGVUNU"),
    (port_proto_hash("kube-system/kube-dns:dns-tcp", "tcp"), "ERIFXISQEP7F7OF4"),
    (port_proto_hash("ns1/svc1:p80", "tcp"), "XPGD46QRK7WJZT7O"),
    (endpoint_chain("ns1/svc1:p80", "tcp", "10.180.0.1:80"), "KUBE-SEP-SXIVWICOYRO3J4NJ"),
    (hash_and_truncate("ns1/svc1/tcp/p80"), "ULMVA6XW-ns1/svc1/tcp/p80"),
    (hash_and_truncate("ns1/svc1/tcp/p80__10.180.0.1/80"), "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"),
    (probability(3), "0.3333333333"),
    (str(ServicePortName("ns", "svc", "", "TCP")), "ns/svc"),
    (str(EndpointInfo("fd00::1", 53, True, True, False, False)), "[fd00::1]:53"),
]


@pytest.mark.parametrize("got,want", NAMES, ids=[w for _, w in NAMES])
def test_names_match_kube_proxy(got, want):
    assert got == want


def test_tracker_collapses_a_b_a():
    tracker = ServiceChangeTracker()
    a = {NAME: svc()}
    b = {NAME: svc(internal_local=True)}
    tracker.update(("ns1", "svc1"), a)
    assert tracker.checkout() == {("ns1", "svc1"): ({}, a)}
    assert tracker.update(("ns1", "svc1"), b) is True
    assert tracker.update(("ns1", "svc1"), a) is False  # back where it was synced: nothing pending
    assert tracker.checkout() == {}


def test_tracker_removal_and_flat_map():
    tracker = ServiceChangeTracker()
    flat: dict = {}
    tracker.update(("ns1", "svc1"), {NAME: svc()})
    apply_changes(flat, tracker.checkout())
    assert flat == {NAME: svc()}
    tracker.update(("ns1", "svc1"), {})
    changes = tracker.checkout()
    apply_changes(flat, changes)
    assert flat == {} and tracker.synced == {}
    assert changes == {("ns1", "svc1"): ({NAME: svc()}, {})}


def test_zone_change_of_this_node_forces_a_full_sync(tmp_path):
    """Topology hints select other endpoints for every service: partial is not enough."""
    from pathlib import Path

    from svcdns.model import Node
    from svcdns.proxy.proxier import Proxier
    from svcdns.sources.manifests import ManifestSource
    from svcdns.store import ClusterState

    state = ClusterState()
    ManifestSource([str(Path(__file__).parent / "testdata" / "lab.yaml")], state).load()
    proxier = Proxier(state, None, "node-a")
    assert proxier.view.node_zone == "zone-a"
    proxier.need_full_sync = False
    proxier.last_full = float("inf")  # as if a full sync just happened
    assert proxier.checkout() == {("lab", s) for s in ("web", "sticky", "local", "local-none", "flaky", "dns", "draining", "hinted", "web-np", "empty", "self")}
    state.apply(Node("node-a", "zone-b"))
    state.commit()
    assert proxier.view.node_zone == "zone-b" and proxier.checkout() is None
