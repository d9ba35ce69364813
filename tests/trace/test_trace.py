"""svcdns proxy trace: the iptables and nftables rules svcdns proxy renders, run through
an interpreter, must say what the real kernel does with them. The manifest is the proxy
behaviour tests' own (tests/proxy/testdata/lab.yaml) and the expectations are theirs
(tests/proxy/test_traffic.py: real connections through real rules in network
namespaces): Cluster and Local policy, affinity, no endpoints, UDP, terminating
fallback, topology hints."""

from __future__ import annotations

from pathlib import Path

import pytest

from svcdns.cli import main
from svcdns.sources.manifests import ManifestSource
from svcdns.store import ClusterState
from svcdns.trace import MODES, Packet, Unsupported, iptables, proxy_view, trace

LAB = Path(__file__).parent.parent / "proxy" / "testdata" / "lab.yaml"
POD = "10.244.1.50"
POD_P1 = "10.244.1.1"  # p1, an endpoint on node-a
P1, P2, P3 = "10.244.1.1:8080", "10.244.1.2:8080", "10.244.1.3:8080"
THIRD = 1 / 3

# (case, dst, port, proto, want {target or verdict: probability}, affinity)
CASES = [
    ("cluster policy: even split", "10.96.0.10", 80, "tcp", {P1: THIRD, P2: THIRD, P3: THIRD}, ""),
    ("ClientIP affinity", "10.96.0.11", 80, "tcp", {P1: THIRD, P2: THIRD, P3: THIRD}, "ClientIP 300s"),
    ("internalTrafficPolicy Local: this node's endpoint only", "10.96.0.12", 80, "tcp", {P1: 1.0}, ""),
    ("Local policy, no local endpoint: drop", "10.96.0.13", 80, "tcp", {"DROP": 1.0}, ""),
    ("no endpoints: reject", "10.96.0.14", 80, "tcp", {"REJECT": 1.0}, ""),
    ("udp service", "10.96.0.16", 53, "udp", {P1: 0.5, "10.244.1.2:8080": 0.5}, ""),
    ("serving-terminating fallback", "10.96.0.17", 80, "tcp", {P2: 1.0}, ""),
    ("topology hints keep traffic in zone", "10.96.0.18", 80, "tcp", {P1: 1.0}, ""),
    ("wrong port of a service address: untouched", "10.96.0.10", 81, "tcp", {"ACCEPT": 1.0}, ""),
    ("not a service: untouched", "192.0.2.1", 80, "tcp", {"ACCEPT": 1.0}, ""),
]


@pytest.fixture(scope="module")
def view():
    state = ClusterState(derive_endpoints=True, implicit_namespaces=True)
    ManifestSource([str(LAB)], state).load()
    return proxy_view(state, "node-a", ("10.244.0.0/16",))


def shares(outcomes) -> dict[str, float]:
    return {(o.target if o.verdict == "DNAT" else o.verdict): round(o.probability, 6) for o in outcomes}


@pytest.mark.parametrize("case,dst,port,proto,want,affinity", CASES, ids=[c[0] for c in CASES])
def test_trace_agrees_with_the_kernel(view, case, dst, port, proto, want, affinity):
    results = trace(view, Packet(POD, dst, port, proto))
    assert set(results) == set(MODES)
    for mode, outcomes in results.items():
        assert shares(outcomes) == {k: round(v, 6) for k, v in want.items()}, mode
        assert {o.affinity for o in outcomes} == {affinity}, mode


def test_masquerade_for_clients_outside_the_cluster_cidr(view):
    for mode, outcomes in trace(view, Packet("192.168.7.7", "10.96.0.10", 80, "tcp")).items():
        assert all(o.masquerade for o in outcomes), mode
    for mode, outcomes in trace(view, Packet(POD, "10.96.0.10", 80, "tcp")).items():
        assert not any(o.masquerade for o in outcomes), mode


@pytest.mark.parametrize("mode", MODES)
def test_hairpin_is_masqueraded(view, mode):
    """p1 reaching a service of its own and landing on itself (tests/proxy/test_traffic.py
    connects the same way): only that outcome is masqueraded."""
    outcomes = {o.target: o.masquerade for o in trace(view, Packet("10.244.1.1", "10.96.0.10", 80, "tcp"))[mode]}
    assert outcomes == {P1: True, P2: False, P3: False}


def test_from_the_node_itself(view):
    for mode, outcomes in trace(view, Packet("10.0.0.5", "10.96.0.14", 80, "tcp"), from_node=True).items():
        assert shares(outcomes) == {"REJECT": 1.0}, mode
    for mode, outcomes in trace(view, Packet("10.0.0.5", "10.96.0.12", 80, "tcp"), from_node=True).items():
        assert shares(outcomes) == {P1: 1.0}, mode


def test_the_responsible_rule_is_named(view):
    out = trace(view, Packet(POD, "10.96.0.14", 80, "tcp"))
    assert "-j REJECT" in out["iptables"][0].rule and "lab/empty:http has no endpoints" in out["iptables"][0].rule
    assert out["nftables"][0].rule.endswith("reject")


def test_ipvs_source_hashing_picks_one_server_per_client(view):
    from svcdns.proxy.schedulers import Real, make

    reals = [Real("10.244.1.1", 8080), Real("10.244.1.2", 8080), Real("10.244.1.3", 8080)]
    for client in ("10.244.1.50", "10.244.1.51", "192.168.0.9"):
        want = str(make("sh").pick(reals, client=client))
        out = trace(view, Packet(client, "10.96.0.10", 80, "tcp"), scheduler="sh")["ipvs"]
        assert [(o.target, o.probability) for o in out] == [(want, 1.0)]


def test_unknown_match_is_an_error_not_a_guess():
    text = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -m owner --uid-owner 0 -j DROP\nCOMMIT\n"
    with pytest.raises(Unsupported, match="--uid-owner"):
        iptables.trace(text, Packet(POD, "10.96.0.10", 80, "tcp"))


def test_cli(capsys):
    assert main(["proxy", "trace", POD, "10.96.0.12:80/tcp", "--manifests", str(LAB), "--node-name", "node-a",
                 "--cluster-cidr", "10.244.0.0/16"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:5] == [
        f"{POD} -> 10.96.0.12:80/tcp on node node-a", "  iptables:", f"    {P1} 100.0%", "  nftables:", f"    {P1} 100.0%",
    ]
    assert "modes agree" in out
    with pytest.raises(SystemExit):
        main(["proxy", "trace", POD, "10.96.0.12:http", "--manifests", str(LAB)])
    assert "is not DST_IP:PORT/PROTO" in capsys.readouterr().err


def test_cli_traces_a_node_port_to_the_addresses_given_with_node_ip(capsys):
    """A NodePort answers on the node's own addresses: without --node-ip the destination
    is just an address; with it, both rule sets send the connection to this node's
    endpoint (externalTrafficPolicy Local)."""
    case = str(LAB.parent.parent / "cases" / "external-local.yaml")
    argv = ["proxy", "trace", "192.0.2.9", "10.0.0.5:3001/tcp", "--manifests", case, "--node-name", "node-a",
            "--cluster-cidr", "10.180.0.0/16"]
    assert main(argv) == 0
    assert "not a service address" in capsys.readouterr().out
    assert main([*argv, "--node-ip", "10.0.0.5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:5] == ["  iptables:", "    10.180.0.1:80 100.0%", "  nftables:", "    10.180.0.1:80 100.0%"]


def test_explain_shows_where_cluster_ip_traffic_goes(capsys):
    import json

    assert main(["explain", "local.lab.svc.cluster.local.", "--manifests", str(LAB), "--node-name", "node-a", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {t["mode"]: [(d["target"], d["probability"]) for d in t["destinations"]] for t in doc["traffic"]} == {
        "iptables": [(P1, 1.0)], "nftables": [(P1, 1.0)], "ipvs": [(P1, 1.0)],
    }
    assert main(["explain", "empty.lab.svc.cluster.local.", "--manifests", str(LAB), "--node-name", "node-a", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {t["mode"]: [d["target"] for d in t["destinations"]] for t in doc["traffic"]} == {"iptables": ["REJECT"], "nftables": ["REJECT"], "ipvs": ["REJECT"]}


def test_cli_reads_a_live_cluster(capsys, tmp_path):
    from tests.kubeapi import objects as o
    from tests.kubeapi.server import KubeApi

    with KubeApi() as api:
        api.put(
            o.namespace("lab"),
            o.service("lab", "web", "10.96.0.10", ports=(("http", 80),)),
            o.endpoint_slice("lab", "web", ["10.244.1.1", "10.244.1.2"], ports=(("http", 8080),)),
        )
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        assert main(["proxy", "trace", POD, "10.96.0.10:80/tcp", "--kubeconfig", kubeconfig, "--node-name", "node-1"]) == 0
    out = capsys.readouterr().out
    assert f"    {P1} 50.0%" in out and "    10.244.1.2:8080 50.0%" in out and "modes agree" in out


def test_a_pod_reaching_itself_through_its_service_is_masqueraded(view):
    """Hairpin: a connection DNATed to its own client is masqueraded, and only that one."""
    for mode, outcomes in trace(view, Packet(POD_P1, "10.96.0.20", 80, "tcp")).items():
        assert [(o.target, o.masquerade) for o in outcomes] == [(P1, True)], mode
    for mode, outcomes in trace(view, Packet(POD_P1, "10.96.0.10", 80, "tcp")).items():
        assert {o.target: o.masquerade for o in outcomes} == {P1: True, P2: False, P3: False}, mode


def test_nodeport_from_outside(view):
    pkt = Packet("192.168.7.7", "10.0.0.5", 30080, "tcp", local=frozenset({"10.0.0.5"}))
    for mode, outcomes in trace(view, pkt).items():
        if mode != "ipvs":  # NodePorts are not programmed in ipvs mode
            assert shares(outcomes) == {P1: round(THIRD, 6), P2: round(THIRD, 6), P3: round(THIRD, 6)}, mode
            assert all(o.masquerade for o in outcomes), mode


def test_nftables_ipv6_and_udp():
    state = ClusterState(derive_endpoints=True, implicit_namespaces=True)
    ManifestSource([str(LAB.parent.parent / "cases" / "udp-dual-stack.yaml")], state).load()
    v6 = proxy_view(state, "node-a", ("10.180.0.0/16", "fd00:180::/64"))
    out = trace(v6, Packet("fd00:180::9", "fd00:10::a", 53, "udp"))["nftables"]
    assert [(o.verdict, o.target, o.probability, o.masquerade) for o in out] == [("DNAT", "fd00:180::5:53", 1.0, False)]
    out = trace(v6, Packet("fd00:180::5", "fd00:10::a", 53, "udp"))["nftables"]
    assert [(o.target, o.masquerade) for o in out] == [("fd00:180::5:53", True)]  # hairpin
    out = trace(v6, Packet("2001:db8::1", "fd00:10::a", 53, "tcp"))["nftables"]
    assert [(o.target, o.masquerade) for o in out] == [("fd00:180::5:53", True)]  # from outside the cluster CIDR


def test_nftables_numgen_ladder_shares():
    """rule i of n takes 1/(n-i) of what is left: an even split."""
    from svcdns.trace import nftables

    chain = ["numgen random mod 3 0 goto a", "numgen random mod 2 0 goto b", "goto c"]
    text = "\n".join(
        ["add chain ip t pre { type nat hook prerouting priority dstnat ; }", "add chain ip t s", "add rule ip t pre jump s"]
        + [f"add chain ip t {c}\nadd rule ip t {c} meta l4proto tcp dnat to 10.0.0.{i}:80" for i, c in enumerate("abc", 1)]
        + [f"add rule ip t s {r}" for r in chain]
    )
    out = nftables.trace(text, Packet(POD, "10.96.0.10", 80, "tcp"))
    assert shares(out) == {f"10.0.0.{i}:80": round(THIRD, 6) for i in (1, 2, 3)}


# externalTrafficPolicy: Local (tests/proxy/cases/external-local.yaml: LB IP 1.2.3.4,
# external IP 192.168.99.11, NodePort 3001; 10.180.0.1 on this node, 10.180.0.2 not).
# (case, source, destination, port, from the node, want {target: (share, masquerade)})
E1, E2 = "10.180.0.1:80", "10.180.0.2:80"
EXTERNAL_LOCAL = [
    ("LB IP from outside: this node's endpoint, source kept", "192.0.2.9", "1.2.3.4", 80, False, {E1: (1.0, False)}),
    ("LB IP from a pod: every endpoint, source kept", "10.180.5.5", "1.2.3.4", 80, False, {E1: (0.5, False), E2: (0.5, False)}),
    ("NodePort from outside: this node's endpoint, source kept", "192.0.2.9", "10.0.0.5", 3001, False, {E1: (1.0, False)}),
    ("NodePort from the node: every endpoint, masqueraded", "10.0.0.5", "10.0.0.5", 3001, True, {E1: (0.5, True), E2: (0.5, True)}),
    ("ClusterIP from outside the cluster CIDR: masqueraded", "192.0.2.9", "172.30.0.46", 80, False, {E1: (0.5, True), E2: (0.5, True)}),
    ("external IP from its own endpoint: hairpin", "10.180.0.1", "192.168.99.11", 80, False, {E1: (0.5, True), E2: (0.5, False)}),
]


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
@pytest.mark.parametrize("case,src,dst,port,from_node,want", EXTERNAL_LOCAL, ids=[c[0] for c in EXTERNAL_LOCAL])
def test_external_traffic_policy_local(case, src, dst, port, from_node, want, mode):
    """The same answers from both modes' rules (iptables: KUBE-EXT- with addrtype
    matches; nftables: fib saddr/daddr type local)."""
    from svcdns.proxy.backends import iptables as ipt_render
    from svcdns.proxy.backends import nftables as nft_render
    from svcdns.trace import nftables

    state = ClusterState(derive_endpoints=True, implicit_namespaces=True)
    ManifestSource([str(LAB.parent.parent / "cases" / "external-local.yaml")], state).load()
    view = proxy_view(state, "node-a", ("10.180.0.0/16",))
    pkt = Packet(src, dst, port, "tcp", local=frozenset({"10.0.0.5"}))
    if mode == "iptables":
        out = iptables.trace(ipt_render.render(view).text, pkt, from_node=from_node)
    else:
        out = nftables.trace(nft_render.render(view).text, pkt, from_node=from_node)
    assert {o.target: (round(o.probability, 6), o.masquerade) for o in out} == want
