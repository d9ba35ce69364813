"""nftables mode's layout and its partial syncs, from rendered text (no kernel: see
test_nftables_sync.py for the same against nft).

Services of one protocol with N endpoints share one chain ``endpoints-<proto>-N`` and its
maps; a service's own chain holds a ``goto`` to it and the maps one element per endpoint;
the hairpin set holds this node's endpoints once each. A partial render touches only the changed services and
creates or deletes shared objects when the first service starts or the last one stops
using them."""

from __future__ import annotations

import pytest

from svcdns.proxy.backends.nftables import Rendered, capacity, chain_base, render
from svcdns.proxy.model import EndpointInfo, ProxyView, ServicePortInfo, ServicePortName

CIDR = "10.180.0.0/16"
T = "ip svcdns"


def service(name: str, cluster_ip: str, port: int = 80, protocol: str = "TCP", **kw) -> ServicePortInfo:
    spn = ServicePortName("ns1", name, "p", protocol)
    return ServicePortInfo(spn, (cluster_ip,), port, kw.get("node_port", 0), kw.get("affinity", 0), False, False, (), ())


def endpoint(ip: str, local: bool = False, port: int = 8080) -> EndpointInfo:
    return EndpointInfo(ip, port, True, True, False, local)


def view(spec: dict[str, tuple[str, list[EndpointInfo]]], **kw) -> ProxyView:
    """{service name: (cluster IP, endpoints)} on node-a."""
    services = {s.name: s for s in (service(n, ip, **kw) for n, (ip, _) in spec.items())}
    endpoints = {s.name: tuple(spec[s.name.name][1]) for s in services.values()}
    return ProxyView(services, endpoints, "node-a", "", (CIDR,))


def lines(rendered: Rendered | str, needle: str) -> list[str]:
    text = rendered if isinstance(rendered, str) else rendered.text
    return [ln for ln in text.splitlines() if needle in ln]


def chain_of(name: str, protocol: str = "tcp") -> str:
    return f"service-{chain_base(service(name, '0.0.0.0', protocol=protocol.upper()))}"


def elements(rendered: Rendered, verb: str, name: str, table: str = T) -> set[str]:
    out: set[str] = set()
    for ln in lines(rendered, f"{verb} element {table} {name} {{"):
        out.update(ln.split("{ ", 1)[1].rsplit(" }", 1)[0].split(", "))
    return out


THREE = [endpoint("10.180.0.1", local=True), endpoint("10.180.0.2"), endpoint("10.180.0.3")]
BASE = {"a": ("172.30.0.1", THREE), "b": ("172.30.0.2", [endpoint("10.180.0.1", local=True), endpoint("10.180.0.4"), endpoint("10.180.0.5")]),
        "c": ("172.30.0.3", [endpoint("10.180.0.6", local=True), endpoint("10.180.0.7")])}


def test_services_with_equal_endpoint_counts_share_a_pool():
    out = render(view(BASE))
    assert lines(out, f"add rule {T} {chain_of('a')} ") == [f"add rule {T} {chain_of('a')} goto endpoints-tcp-3"]
    assert lines(out, f"add rule {T} {chain_of('c')} ") == [f"add rule {T} {chain_of('c')} goto endpoints-tcp-2"]
    assert lines(out, f"add rule {T} endpoints-tcp-3 ") == [
        f"add rule {T} endpoints-tcp-3 ip saddr != {CIDR} jump mark-for-masquerade",  # once for all its services
        f"add rule {T} endpoints-tcp-3 meta l4proto tcp dnat ip addr . port to ip daddr . th dport . numgen random mod 3 map @endpoints-tcp-3",
        f"add rule {T} endpoints-tcp-3 meta l4proto tcp dnat ip addr . port to th dport . numgen random mod 3 map @endpoints-tcp-3-nodeports",
    ]
    assert len(lines(out, f"add chain {T} endpoints-")) == 2 and len(lines(out, f"add map {T} endpoints-tcp-3")) == 2
    assert elements(out, "add", "endpoints-tcp-3") == {
        "172.30.0.1 . 80 . 0 : 10.180.0.1 . 8080", "172.30.0.1 . 80 . 1 : 10.180.0.2 . 8080", "172.30.0.1 . 80 . 2 : 10.180.0.3 . 8080",
        "172.30.0.2 . 80 . 0 : 10.180.0.1 . 8080", "172.30.0.2 . 80 . 1 : 10.180.0.4 . 8080", "172.30.0.2 . 80 . 2 : 10.180.0.5 . 8080",
    }
    assert not lines(out, f"add chain {T} endpoint-")  # per-endpoint chains only for ClientIP affinity


def test_hairpin_set_holds_each_endpoint_on_this_node_once():
    out = render(view(BASE))
    assert elements(out, "add", "hairpin") == {"10.180.0.1 . 10.180.0.1", "10.180.0.6 . 10.180.0.6"}
    postrouting = [ln.split("nat-postrouting ")[1] for ln in lines(out, f"add rule {T} nat-postrouting ")]
    assert postrouting == ["ct status dnat ip saddr . ip daddr @hairpin masquerade fully-random", "jump masquerading"]


def test_nodeports_have_their_own_map():
    out = render(view({"a": ("172.30.0.1", THREE[:2])}, node_port=30080))
    assert elements(out, "add", "endpoints-tcp-2-nodeports") == {"30080 . 0 : 10.180.0.1 . 8080", "30080 . 1 : 10.180.0.2 . 8080"}


@pytest.mark.parametrize("protocol", ["UDP", "SCTP"])
def test_other_protocols_have_their_own_pools(protocol):
    p = protocol.lower()
    out = render(view({"a": ("172.30.0.1", THREE[:1])}, protocol=protocol))
    assert elements(out, "add", f"endpoints-{p}-1") == {"172.30.0.1 . 80 . 0 : 10.180.0.1 . 8080"}
    assert f"add rule {T} endpoints-{p}-1 meta l4proto {p} dnat ip addr . port to ip daddr . th dport . numgen random mod 1 map @endpoints-{p}-1" in out.text
    assert "endpoints-tcp" not in out.text


def test_ipv6_family_table():
    spec = {"a": ("fd00:10::1", [endpoint("fd00:180::1", local=True), endpoint("fd00:180::2")])}
    services = {s.name: s for s in [service("a", "fd00:10::1")]}
    v = ProxyView(services, {n: tuple(spec["a"][1]) for n in services}, "node-a", "", ("fd00:180::/64",))
    out = render(v, 6)
    assert elements(out, "add", "endpoints-tcp-2", "ip6 svcdns") == {"fd00:10::1 . 80 . 0 : fd00:180::1 . 8080", "fd00:10::1 . 80 . 1 : fd00:180::2 . 8080"}
    assert elements(out, "add", "hairpin", "ip6 svcdns") == {"fd00:180::1 . fd00:180::1"}
    assert "add rule ip6 svcdns nat-postrouting ct status dnat ip6 saddr . ip6 daddr @hairpin masquerade fully-random" in out.text
    assert "add rule ip6 svcdns endpoints-tcp-2 meta l4proto tcp dnat ip6 addr . port to ip6 daddr . th dport . numgen random mod 2 map @endpoints-tcp-2" in out.text


def test_affinity_keeps_endpoint_chains_and_splits_by_a_numgen_ladder():
    v = view({"s": ("172.30.0.9", THREE)}, affinity=300)
    out = render(v)
    body = [ln.split(f"{chain_of('s')} ", 1)[1] for ln in lines(out, f"add rule {T} {chain_of('s')} ")]
    assert body[0] == f"ip daddr 172.30.0.9 tcp dport 80 ip saddr != {CIDR} jump mark-for-masquerade"
    chains = [r.rsplit("goto ", 1)[1] for r in body[1:]]
    assert [r.rsplit("goto ", 1)[0] for r in body[1:]] == [  # affinity checks, then 1/3, 1/2 of the rest, the rest
        *[f"ip saddr @affinity-{c.removeprefix('endpoint-')} " for c in chains[:3]], "numgen random mod 3 0 ", "numgen random mod 2 0 ", "",
    ]
    assert chains[3:] == chains[:3]
    assert len(lines(out, "update @affinity-")) == 3 and "endpoints-tcp-3" not in out.text


# Partial renders: (case, change to BASE, lines that must appear, substrings that must not)
PARTIAL = [
    ("an endpoint goes: its service moves to the existing 2-pool", {"a": ("172.30.0.1", THREE[:2])},
     [f"flush chain {T} {chain_of('a')}", f"add rule {T} {chain_of('a')} goto endpoints-tcp-2",
      f"delete element {T} endpoints-tcp-3 {{ 172.30.0.1 . 80 . 0, 172.30.0.1 . 80 . 1, 172.30.0.1 . 80 . 2 }}",
      f"add element {T} endpoints-tcp-2 {{ 172.30.0.1 . 80 . 0 : 10.180.0.1 . 8080, 172.30.0.1 . 80 . 1 : 10.180.0.2 . 8080 }}"],
     ["add map", "delete map", "hairpin", "service-ips", chain_of("b")]),
    ("a fourth endpoint: the 4-pool is created", {"a": ("172.30.0.1", [*THREE, endpoint("10.180.0.8")])},
     [f"add chain {T} endpoints-tcp-4", f"add rule {T} endpoints-tcp-4 ip saddr != {CIDR} jump mark-for-masquerade"],
     ["delete map", "hairpin"]),
    ("the last service of the 2-pool goes: the pool is deleted after its rules", {"c": None},
     [f"delete element {T} service-ips {{ 172.30.0.3 . tcp . 80 }}", f"flush chain {T} {chain_of('c')}", f"delete chain {T} {chain_of('c')}",
      f"flush chain {T} endpoints-tcp-2", f"delete map {T} endpoints-tcp-2", f"delete map {T} endpoints-tcp-2-nodeports", f"delete chain {T} endpoints-tcp-2",
      f"delete element {T} hairpin {{ 10.180.0.6 . 10.180.0.6 }}"],
     ["add "]),
    ("an endpoint another service still uses stays in the hairpin set", {"a": ("172.30.0.1", THREE[1:])},
     [f"add rule {T} {chain_of('a')} goto endpoints-tcp-2"], ["hairpin"]),
    ("a new service on a new endpoint on this node", {"d": ("172.30.0.4", [endpoint("10.180.0.9", local=True)])},
     [f"add element {T} service-ips {{ 172.30.0.4 . tcp . 80 : goto {chain_of('d')} }}", f"add element {T} hairpin {{ 10.180.0.9 . 10.180.0.9 }}",
      f"add chain {T} endpoints-tcp-1"], ["delete"]),
    ("the endpoint moves to another port: only its element changes", {"c": ("172.30.0.3", [endpoint("10.180.0.6", True, 9090), endpoint("10.180.0.7")])},
     [f"delete element {T} endpoints-tcp-2 {{ 172.30.0.3 . 80 . 0 }}", f"add element {T} endpoints-tcp-2 {{ 172.30.0.3 . 80 . 0 : 10.180.0.6 . 9090 }}"],
     ["hairpin", "add map", "172.30.0.3 . 80 . 1"]),
]


@pytest.mark.parametrize("case,change,want,unwanted", PARTIAL, ids=[c[0] for c in PARTIAL])
def test_partial_render(case, change, want, unwanted):
    before = view(BASE)
    first = render(before)
    spec = {**BASE, **change}
    after = view({k: v for k, v in spec.items() if v is not None})
    second = render(after, changed={("ns1", k) for k in change}, previous=first)
    assert "delete table" not in second.text
    for ln in want:
        assert ln in second.text.splitlines(), f"{ln!r} missing from:\n{second.text}"
    for s in unwanted:
        assert s not in second.text, f"{s!r} in:\n{second.text}"
    full = render(after)  # the partial result remembers what a full render would build
    assert second.pools == full.pools and second.hairpin == full.hairpin and second.counts == full.counts
    assert second.chains == full.chains


def test_removals_come_after_what_referred_to_them():
    first = render(view(BASE))
    second = render(view({"a": BASE["a"], "b": BASE["b"]}), changed={("ns1", "c")}, previous=first)
    order = second.text.splitlines()
    assert order.index(f"delete element {T} service-ips {{ 172.30.0.3 . tcp . 80 }}") < order.index(f"delete chain {T} {chain_of('c')}")
    assert order.index(f"flush chain {T} endpoints-tcp-2") < order.index(f"delete map {T} endpoints-tcp-2") < order.index(f"delete chain {T} endpoints-tcp-2")


def test_unchanged_services_are_not_written():
    first = render(view(BASE))
    second = render(view(BASE), changed=set(), previous=first)
    assert second.text.strip() == "" and second.written == 0


def test_a_partial_render_that_would_outgrow_a_map_is_full():
    n = capacity(0)  # the smallest size a map is declared with
    first = render(view({"a": ("172.30.0.1", THREE[:1])}))
    assert f"add map {T} endpoints-tcp-1 {{" in first.text and f"size {n} ;" in lines(first, f"add map {T} endpoints-tcp-1 ")[0]
    many = {f"s{i}": (f"172.31.{i >> 8}.{i & 255}", [endpoint(f"10.181.{i >> 8}.{i & 255}")]) for i in range(n)}
    second = render(view({**many, "a": ("172.30.0.1", THREE[:1])}), changed={("ns1", k) for k in many}, previous=first)
    assert second.text.startswith(f"add table {T}\ndelete table {T}\n")
    assert f"size {capacity(n + 1)} ;" in lines(second, f"add map {T} endpoints-tcp-1 ")[0]
