"""nftables syncs against the real kernel: every transaction ``nft`` is given applies,
and after any chain of partial syncs the table holds exactly what a full sync of the same
state builds (same chains and rules, same map and set elements). TCP, UDP and SCTP
services, IPv4 and IPv6 tables."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from svcdns.proxy.backends.nftables import NftablesBackend, render
from svcdns.proxy.model import ProxyView

from .test_nftables_render import BASE, THREE, endpoint, service

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="network namespaces need root and nft (CI runs as root)")


@pytest.fixture
def netns():
    """Two fresh namespaces: one for partial syncs, one for the full sync to compare with."""
    names = [f"svcdns-nft-{os.getpid()}-{i}" for i in (1, 2)]
    for ns in names:
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        yield names
    finally:
        for ns in names:
            subprocess.run(["ip", "netns", "del", ns], check=False)


def nft(ns: str, *argv: str, text: str | None = None) -> str:
    proc = subprocess.run(["ip", "netns", "exec", ns, "nft", *argv], input=text, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"nft {' '.join(argv)}: {proc.stderr}\n{text or ''}"
    return proc.stdout


def table(ns: str, family: str = "ip") -> dict:
    """The table as data, without handles and declared sizes: {chain: [rules]},
    {set or map: sorted elements}."""
    chains: dict[str, list] = {}
    sets: dict[str, list] = {}
    for obj in json.loads(nft(ns, "-j", "list", "table", family, "svcdns"))["nftables"]:
        kind, body = next(iter(obj.items()))
        if kind == "chain":
            chains.setdefault(body["name"], [])
        elif kind == "rule":
            chains.setdefault(body["chain"], []).append(body["expr"])
        elif kind in ("set", "map"):
            sets[body["name"]] = sorted(json.dumps(e, sort_keys=True) for e in body.get("elem", ()))
    return {"chains": chains, "sets": sets}


def view(spec: dict, protocol: str = "TCP", node_port: int = 0) -> ProxyView:
    services = {s.name: s for s in (service(n, ip, protocol=protocol, node_port=node_port and node_port + i) for i, (n, (ip, _)) in enumerate(spec.items()))}
    cidrs = ("10.180.0.0/16", "fd00:180::/64")
    return ProxyView(services, {s.name: tuple(spec[s.name.name][1]) for s in services.values()}, "node-a", "", cidrs)


STEPS = [  # (what changes, {service: new value or None})
    ("an endpoint goes", {"a": ("172.30.0.1", THREE[:2])}),
    ("an endpoint comes: a new pool", {"b": ("172.30.0.2", [*BASE["b"][1], endpoint("10.180.0.10")])}),
    ("a service goes: its pool empties", {"c": None}),
    ("a shared endpoint leaves one service", {"b": ("172.30.0.2", BASE["b"][1][1:])}),
    ("and the other", {"a": ("172.30.0.1", THREE[1:2])}),
    ("a new service", {"d": ("172.30.0.4", [endpoint("10.180.0.6", local=True), endpoint("10.180.0.7")])}),
    ("everything back", {"a": BASE["a"], "b": BASE["b"], "c": BASE["c"], "d": None}),
]


@pytest.mark.parametrize("protocol,node_port", [("TCP", 0), ("UDP", 30100), ("SCTP", 0)])
def test_partial_syncs_end_where_a_full_sync_starts(netns, protocol, node_port):
    partial_ns, full_ns = netns
    spec = dict(BASE)
    previous = render(view(spec, protocol, node_port))
    nft(partial_ns, "-f", "-", text=previous.text)
    for what, change in STEPS:
        spec.update(change)
        spec = {k: v for k, v in spec.items() if v is not None}
        current = view(spec, protocol, node_port)
        previous = render(current, changed={("ns1", k) for k in change}, previous=previous)
        assert "delete table" not in previous.text, what
        nft(partial_ns, "-f", "-", text=previous.text)
        nft(full_ns, "-f", "-", text=render(current).text)
        assert table(partial_ns) == table(full_ns), what


def test_both_families_apply(netns):
    ns, _ = netns
    spec = {"v4": ("172.30.0.1", THREE), "v6": ("fd00:10::1", [endpoint("fd00:180::1", local=True), endpoint("fd00:180::2")])}
    backend = NftablesBackend(("ip", "netns", "exec", ns))
    v = view(spec, "UDP", 30053)
    backend.sync(v, None)
    assert set(table(ns, "ip6")["sets"]["endpoints-udp-2"]) == {
        json.dumps([{"concat": ["fd00:10::1", 80, i]}, {"concat": [ep, 8080]}], sort_keys=True)
        for i, ep in enumerate(("fd00:180::1", "fd00:180::2"))
    }
    assert table(ns, "ip6")["sets"]["hairpin"] == [json.dumps({"concat": ["fd00:180::1", "fd00:180::1"]}, sort_keys=True)]
    v.endpoints[next(n for n in v.services if n.name == "v6")] = (endpoint("fd00:180::2"),)
    backend.sync(v, {("ns1", "v6")})
    assert table(ns, "ip6")["sets"]["hairpin"] == []
    assert "endpoints-udp-2" not in table(ns, "ip6")["sets"] and table(ns, "ip6")["sets"]["endpoints-udp-1"]
    name = next(n for n in v.services if n.name == "v6")
    del v.services[name], v.endpoints[name]
    v.services_changed()
    backend.sync(v, {("ns1", "v6")})  # the last IPv6 service: its table is emptied, not forgotten
    assert table(ns, "ip6")["sets"]["service-ips"] == [] and "endpoints-udp-1" not in table(ns, "ip6")["sets"]
    assert len(table(ns, "ip")["sets"]["service-ips"]) == 1
