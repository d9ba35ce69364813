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
