"""nftables mode: one table per IP family (``ip svcdns``), modelled on kube-proxy's
nftables proxier (``pkg/proxy/nftables/proxier.go``).

Traffic is dispatched by verdict maps keyed on ``address . protocol . port``::

  nat-prerouting / nat-output -> services:
      ip daddr . meta l4proto . th dport vmap @service-ips     (ClusterIP, external, LB IPs)
      fib daddr type local ... jump nodeports                     (vmap @service-nodeports)
  service-<h>-ns/svc/tcp/port:   mark off-cluster sources for masquerade, affinity
      lookups, then ``numgen random mod N vmap @lb-<h>-...`` (lb-...: 0 : goto endpoint-...)
  endpoint-<h>-...__ip/port:     ``dnat to ip:port`` (+ ``update @affinity-...``)
  filter-{input,forward,output} -> service-endpoints-check: @no-endpoint-services sends
      services without endpoints to reject-chain (Local ones without local endpoints: drop)

Names follow kube-proxy's ``hashAndTruncate``: 8 base32 characters of sha256(name), a
dash, then the readable name. Every input is one ``nft -f`` transaction: the kernel takes
all of it or none. The first sync replaces the table; later ones re-fill the maps and
rewrite only the chains of services that changed (affinity sets keep their entries).
"""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass, field
from functools import lru_cache

from ..model import Key, ProxyView, ServicePortInfo, categorize_endpoints, of_family
from .tools import run_tool

log = logging.getLogger(__name__)

TABLE = "svcdns"
MASQ_MARK = "0x4000"
CHAIN_NAME_MAX = 240  # nft allows 255; room for the "lb-local-" map prefix


@lru_cache(maxsize=1 << 18)
def hash_and_truncate(name: str) -> str:
    """kube-proxy's hashAndTruncate: unique and still readable."""
    digest = base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()[:8]
    out = f"{digest}-{name}"
    return out if len(out) <= CHAIN_NAME_MAX else out[: CHAIN_NAME_MAX - 3] + "..."


def chain_base(svc: ServicePortInfo) -> str:
    n = svc.name
    return hash_and_truncate(f"{n.namespace}/{n.name}/{n.protocol.lower()}/{n.port}")


def endpoint_base(svc: ServicePortInfo, ep) -> str:
    n = svc.name
    ip = ep.ip
    return hash_and_truncate(f"{n.namespace}/{n.name}/{n.protocol.lower()}/{n.port}__{ip}/{ep.port}")


@dataclass
class _Family:
    nf: str  # nft family of the table: ip | ip6
    addr: str  # ip | ip6 (expression prefix)
    addr_type: str  # ipv4_addr | ipv6_addr
    loopback: str


FAMILIES = {4: _Family("ip", "ip", "ipv4_addr", "127.0.0.0/8"), 6: _Family("ip6", "ip6", "ipv6_addr", "::1")}


@dataclass
class _ServiceRules:
    """One service port's share of a transaction, kept for the next partial render."""

    elements: list[tuple[str, str, str]]  # (map, key, verdict) in the shared maps
    chains: list[str]
    sets: list[str]  # affinity sets
    maps: list[str]  # its endpoint maps (numgen -> endpoint chain)
    decl: list[str]  # its "add set" / "add map" lines
    rules: list[str]
    lb_elements: list[str]  # the elements of its endpoint maps


@dataclass
class Rendered:
    text: str
    chains: frozenset[str]  # per-service chains after this sync
    sets: frozenset[str]  # affinity sets after this sync
    maps: frozenset[str] = frozenset()  # per-service endpoint maps after this sync
    written: int = 0
    cache: dict = field(default_factory=dict)  # ServicePortName -> _ServiceRules (partial-sync form)


@dataclass
class _Writer:
    view: ProxyView
    family: int
    full: bool
    decl: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    adds: dict[str, list[str]] = field(default_factory=dict)  # map -> "key : verdict"
    deletes: dict[str, list[str]] = field(default_factory=dict)  # map -> "key"
    elements: list[str] = field(default_factory=list)  # per-service endpoint map elements
    chains: set[str] = field(default_factory=set)
    sets: set[str] = field(default_factory=set)
    maps: set[str] = field(default_factory=set)
    written: int = 0

    def __post_init__(self):
        self.f = FAMILIES[self.family]
        self.cidr = self.view.cluster_cidr(self.family)
        self.t = f"{self.f.nf} {TABLE}"

    def rule(self, chain: str, text: str) -> None:
        self.rules.append(f"add rule {self.t} {chain} {text}")

    def elements_text(self) -> list[str]:
        """Element changes, batched per map (one command per 500 elements: 10,000
        single-element commands cost the kernel seconds)."""
        out = []
        for verb, changes in (("delete", self.deletes), ("add", self.adds)):
            for mapname, items in changes.items():
                for i in range(0, len(items), 500):
                    out.append(f"{verb} element {self.t} {mapname} {{ {', '.join(items[i:i + 500])} }}")
        return out

    def base(self) -> None:
        """Table, maps and the fixed chains: written by full syncs only. (A partial sync
        that rewrote them would make ``nft`` load every set of the table first: +0.8 s at
        10,000 services. The hourly full sync repairs them.)"""
        f, t = self.f, self.t
        self.decl.append(f'add table {t} {{ comment "rules for svcdns proxy (kube-proxy compatible)" ; }}')
        for name, key, comment in (
            ("service-ips", f"{f.addr_type} . inet_proto . inet_service", "ClusterIP, ExternalIP and LoadBalancer IP traffic"),
            ("service-nodeports", "inet_proto . inet_service", "NodePort traffic"),
            ("no-endpoint-services", f"{f.addr_type} . inet_proto . inet_service", "vmap to drop or reject packets to services with no endpoints"),
            ("no-endpoint-nodeports", "inet_proto . inet_service", "vmap to drop or reject packets to service nodeports with no endpoints"),
        ):
            self.decl.append(f'add map {t} {name} {{ type {key} : verdict ; comment "{comment}" ; }}')
        hooks = (
            ("nat-prerouting", "nat", "prerouting", "dstnat", "jump services"),
            ("nat-output", "nat", "output", "-100", "jump services"),  # nft rejects "dstnat" for output
            ("nat-postrouting", "nat", "postrouting", "srcnat", "jump masquerading"),
            ("filter-input", "filter", "input", "-110", "ct state new jump nodeport-endpoints-check"),
            ("filter-input", "filter", "input", "-110", "ct state new jump service-endpoints-check"),
            ("filter-forward", "filter", "forward", "-110", "ct state new jump service-endpoints-check"),
            ("filter-output", "filter", "output", "-110", "ct state new jump service-endpoints-check"),
        )
        fixed = ["services", "nodeports", "masquerading", "mark-for-masquerade", "reject-chain", "service-endpoints-check", "nodeport-endpoints-check"]
        for name in dict.fromkeys(h[0] for h in hooks):
            _, kind, hook, prio, _ = next(h for h in hooks if h[0] == name)
            self.decl.append(f"add chain {t} {name} {{ type {kind} hook {hook} priority {prio} ; }}")
        self.decl += [f"add chain {t} {name}" for name in fixed]
        for name, _, _, _, action in hooks:
            self.rule(name, action)
        self.rule("mark-for-masquerade", f"meta mark set meta mark or {MASQ_MARK}")
        self.rule("masquerading", f"meta mark & {MASQ_MARK} == 0 return")
        self.rule("masquerading", f"meta mark set meta mark xor {MASQ_MARK}")
        self.rule("masquerading", "masquerade fully-random")
        self.rule("reject-chain", "reject")
        self.rule("service-endpoints-check", f"{f.addr} daddr . meta l4proto . th dport vmap @no-endpoint-services")
        self.rule("nodeport-endpoints-check", "fib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports")
        self.rule("services", f"{f.addr} daddr . meta l4proto . th dport vmap @service-ips")
        self.rule("services", f"fib daddr type local {f.addr} daddr != {f.loopback} jump nodeports")
        self.rule("nodeports", "meta l4proto . th dport vmap @service-nodeports")

    def service(self, svc: ServicePortInfo) -> _ServiceRules:
        """One service port's map elements, chains and affinity sets."""
        f = self.f
        elements: list[tuple[str, str, str]] = []

        def element(mapname: str, key: str, verdict: str) -> None:
            elements.append((mapname, key, verdict))

        cluster_ip = of_family(svc.cluster_ips, self.family)[0]
        endpoints = tuple(e for e in self.view.endpoints.get(svc.name, ()) if e.family == self.family)
        cat = categorize_endpoints(endpoints, svc, self.view.node_name, self.view.node_zone)
        base = chain_base(svc)
        svc_chain, local_chain, ext_chain = f"service-{base}", f"local-{base}", f"external-{base}"
        proto = svc.protocol.lower()
        has_internal = cat.has_any and not (svc.internal_local and not cat.local)
        has_external = cat.has_any and not (svc.external_policy_local and not cat.local)
        no_ep = "goto reject-chain" if not cat.has_any else "drop"
        internal = local_chain if svc.internal_local else svc_chain
        element("service-ips" if has_internal else "no-endpoint-services", f"{cluster_ip} . {proto} . {svc.port}", f"goto {internal}" if has_internal else no_ep)
        for ip in (*of_family(svc.external_ips, self.family), *of_family(svc.load_balancer_ips, self.family)):
            if cat.has_any:
                element("service-ips", f"{ip} . {proto} . {svc.port}", f"goto {ext_chain}")
            if not has_external:
                element("no-endpoint-services", f"{ip} . {proto} . {svc.port}", no_ep)
        if svc.node_port:
            if cat.has_any:
                element("service-nodeports", f"{proto} . {svc.node_port}", f"goto {ext_chain}")
            if not has_external:
                element("no-endpoint-nodeports", f"{proto} . {svc.node_port}", no_ep)

        chains: dict[str, list[str]] = {}
        lb: dict[str, list[str]] = {}  # per-chain endpoint maps: name -> "i : goto endpoint-..."
        if cat.has_any and svc.externally_accessible:
            chains[ext_chain] = self._external(svc, svc_chain, local_chain if cat.local else None, has_external)
        if cat.cluster and svc.uses_cluster_endpoints:
            chains[svc_chain] = self._dispatch(svc, cat.cluster, cluster_ip, f"lb-{base}", lb, masquerade=not svc.internal_local)
        if cat.local and svc.uses_local_endpoints:
            chains[local_chain] = self._dispatch(svc, cat.local, cluster_ip, f"lb-local-{base}", lb, masquerade=svc.internal_local)
        for ep in cat.reachable:
            name = f"endpoint-{endpoint_base(svc, ep)}"
            body = [f"{f.addr} saddr {ep.ip} jump mark-for-masquerade"]
            if svc.affinity_timeout:
                body.append(f"update @affinity-{endpoint_base(svc, ep)} {{ {f.addr} saddr }}")
            body.append(f"meta l4proto {proto} dnat to {ep}")
            chains[name] = body
        affinity = sorted({f"affinity-{endpoint_base(svc, ep)}" for ep in cat.reachable}) if svc.affinity_timeout else []
        decl = [f"add set {self.t} {name} {{ type {f.addr_type} ; flags dynamic,timeout ; timeout {svc.affinity_timeout}s ; }}" for name in affinity]
        decl += [f"add map {self.t} {name} {{ typeof numgen random mod 2 : verdict ; }}" for name in lb]
        rules = [f"add rule {self.t} {name} {text}" for name, body in chains.items() for text in body]
        lb_elements = [f"add element {self.t} {name} {{ {', '.join(targets)} }}" for name, targets in lb.items()]
        return _ServiceRules(elements, list(chains), affinity, list(lb), decl, rules, lb_elements)

    def add(self, rules: _ServiceRules, write: bool, old: _ServiceRules | None = None) -> None:
        """Account for one service; ``write`` its chains and its element changes
        (against ``old``, what the previous sync applied for it)."""
        if write:
            self.change_elements(old.elements if old else [], rules.elements)
        self.chains.update(rules.chains)
        self.sets.update(rules.sets)
        self.maps.update(rules.maps)
        if write:
            self.written += len(rules.chains)
            self.decl += rules.decl
            if not self.full:
                self.decl += [f"flush map {self.t} {name}" for name in rules.maps]
            self.elements += rules.lb_elements
            for name in rules.chains:  # "add" keeps an existing chain: flush it to rewrite it
                self.decl += [f"add chain {self.t} {name}"] if self.full else [f"add chain {self.t} {name}", f"flush chain {self.t} {name}"]
            self.rules += rules.rules

    def change_elements(self, old: list[tuple[str, str, str]], new: list[tuple[str, str, str]]) -> None:
        """Delete what is gone (or changed its verdict) and add what is new."""
        gone, added = set(old) - set(new), set(new) - set(old)
        for element in old:
            if element in gone:
                self.deletes.setdefault(element[0], []).append(element[1])
        for element in new:
            if element in added:
                self.adds.setdefault(element[0], []).append(f"{element[1]} : {element[2]}")

    def _dispatch(self, svc: ServicePortInfo, endpoints, cluster_ip: str, lb_name: str, lb: dict, masquerade: bool) -> list[str]:
        """Masquerade, affinity lookups, then one random draw into a named verdict map.
        (Named, not anonymous: the kernel allocates anonymous set names by scanning every
        set of the table, which made a 10,000-service transaction take minutes.)"""
        f = self.f
        proto = svc.protocol.lower()
        body = []
        if masquerade and self.cidr:
            body.append(f"{f.addr} daddr {cluster_ip} {proto} dport {svc.port} {f.addr} saddr != {self.cidr} jump mark-for-masquerade")
        if svc.affinity_timeout:
            for ep in endpoints:
                base = endpoint_base(svc, ep)
                body.append(f"{f.addr} saddr @affinity-{base} goto endpoint-{base}")
        lb[lb_name] = [f"{i} : goto endpoint-{endpoint_base(svc, ep)}" for i, ep in enumerate(endpoints)]
        body.append(f"numgen random mod {len(endpoints)} vmap @{lb_name}")
        return body

    def _external(self, svc: ServicePortInfo, svc_chain: str, local_chain: str | None, has_external: bool) -> list[str]:
        f = self.f
        if not svc.external_policy_local:
            return ["jump mark-for-masquerade", f"goto {svc_chain}"]
        body = []
        if self.cidr:
            body.append(f"{f.addr} saddr {self.cidr} goto {svc_chain}")
        body += ["fib saddr type local jump mark-for-masquerade", f"fib saddr type local goto {svc_chain}"]
        if has_external and local_chain:
            body.append(f"goto {local_chain}")
        return body


def render(view: ProxyView, family: int = 4, *, changed: set[Key] | None = None, previous: Rendered | None = None) -> Rendered:
    """The ``nft -f`` input for one family. ``changed`` = None (or no ``previous``) is a
    full sync that replaces the table; otherwise only changed services' chains and map
    elements are rewritten and chains/maps/sets no service uses any more are deleted."""
    full = changed is None or previous is None
    w = _Writer(view, family, full)
    if full:
        w.base()
    reuse = {} if full else previous.cache
    cache = {}
    for svc in view.sorted_services():
        if not of_family(svc.cluster_ips, family):
            continue
        dirty = full or svc.name.key in changed
        rules = None if dirty else reuse.get(svc.name)
        if rules is None:
            rules = w.service(svc)
        cache[svc.name] = rules
        w.add(rules, dirty, reuse.get(svc.name))
    for name, gone in reuse.items():  # services that no longer exist: their elements go
        if name not in cache:
            w.change_elements(gone.elements, [])
    head = [f"add table {w.t}", f"delete table {w.t}"] if full else []
    tail = []
    if not full:
        # order matters: rules reference maps and sets, map elements reference chains
        stale_chains = previous.chains - w.chains
        tail += [f"flush chain {w.t} {c}" for c in sorted(stale_chains)]
        tail += [f"delete map {w.t} {m}" for m in sorted(previous.maps - w.maps)]
        tail += [f"delete chain {w.t} {c}" for c in sorted(stale_chains)]
        tail += [f"delete set {w.t} {s}" for s in sorted(previous.sets - w.sets)]
    text = "\n".join([*head, *w.decl, *w.rules, *w.elements_text(), *w.elements, *tail, ""])
    return Rendered(text, frozenset(w.chains), frozenset(w.sets), frozenset(w.maps), w.written, cache)


class NftablesBackend:
    """Applies :func:`render` output with ``nft -f`` (one atomic transaction per sync)."""

    mode = "nftables"
    blocking = True

    def __init__(self, prefix: tuple[str, ...] = ()) -> None:
        self.prefix = list(prefix)  # e.g. ("ip", "netns", "exec", NS): tests and benchmarks
        self._previous: dict[int, Rendered] = {}
        self.last_input_bytes = 0

    def render_all(self, view: ProxyView) -> str:
        return "\n".join(render(view, family).text for family in view.families())

    def sync(self, view: ProxyView, changed: set[Key] | None) -> None:
        total = 0
        for family in view.families():
            previous = self._previous.pop(family, None)  # a failed sync forgets: next one is full
            rendered = render(view, family, changed=changed, previous=previous)
            run_tool([*self.prefix, "nft", "-f", "-"], rendered.text, what="nft -f")
            self._previous[family] = rendered
            total += len(rendered.text)
        self.last_input_bytes = total

    def close(self) -> None:
        """The table stays when the proxy stops, as kube-proxy's does."""
