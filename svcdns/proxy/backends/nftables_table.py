"""The contents of svcdns's nftables table: chain and set names, the fixed base, the
shared endpoint pools, and one service port's chains and elements (see nftables.py for
the layout and why). Pure text; nftables.py decides what a sync writes."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

from ..model import ProxyView, ServicePortInfo, categorize_endpoints, of_family

TABLE = "svcdns"
MASQ_MARK = "0x4000"
CHAIN_NAME_MAX = 240  # nft allows 255; room for the "affinity-" set prefix
BATCH = 500  # elements per command: one command per element costs the kernel seconds at 10,000


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
    return hash_and_truncate(f"{n.namespace}/{n.name}/{n.protocol.lower()}/{n.port}__{ep.ip}/{ep.port}")


@dataclass(frozen=True)
class _Family:
    nf: str  # nft family of the table: ip | ip6
    addr: str  # ip | ip6 (expression prefix)
    addr_type: str  # ipv4_addr | ipv6_addr
    loopback: str


FAMILIES = {4: _Family("ip", "ip", "ipv4_addr", "127.0.0.0/8"), 6: _Family("ip6", "ip6", "ipv6_addr", "::1")}


class Pool(NamedTuple):
    """The service ports of one protocol that pick among ``size`` endpoints (of their
    Cluster or their Local set): one chain and two maps, shared by all of them. (One
    pool per protocol keeps the protocol out of every element's key: ~10 % less for
    ``nft`` to parse.)

    A Cluster pool's chain also marks sources outside the cluster CIDR for masquerade,
    once for all its services: what reaches it is ClusterIP traffic (kube-proxy's
    service-chain rule matches exactly that: ``ip daddr CLUSTER-IP tcp dport PORT ip
    saddr != CIDR``), external traffic already marked by its external chain, or, with
    Local external policy, traffic from inside the cluster CIDR, which is not marked."""

    local: bool
    protocol: str  # tcp | udp | sctp
    size: int

    @property
    def chain(self) -> str:
        return f"{'local-' if self.local else ''}endpoints-{self.protocol}-{self.size}"

    @property
    def by_address(self) -> str:  # the map of ClusterIP, external and LB IP traffic
        return self.chain

    @property
    def by_nodeport(self) -> str:
        return f"{self.chain}-nodeports"


@dataclass(slots=True)
class ServiceRules:
    """One service port's share of the table, kept for the next partial render. (Tuples
    of strings: the garbage collector stops tracking them, and 10,000 of these live
    between syncs.)"""

    elements: dict[str, tuple[str, ...]]  # shared map -> its "key : value" elements for this service
    chains: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()  # "add rule" lines of its chains
    sets: tuple[str, ...] = ()  # its affinity sets
    decl: tuple[str, ...] = ()  # their "add set" lines
    pools: tuple[Pool, ...] = ()
    hairpin: tuple[str, ...] = ()  # its endpoints on this node: they may be the client


@dataclass
class Writer:
    view: ProxyView
    family: int
    full: bool
    decl: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    adds: dict[str, list[str]] = field(default_factory=dict)  # map -> "key : value" (sets: "key")
    deletes: dict[str, list[str]] = field(default_factory=dict)  # map -> "key"
    flushes: list[str] = field(default_factory=list)  # stale chains: emptied before any removal
    tail: list[str] = field(default_factory=list)  # removals, after everything that referenced them
    written: int = 0

    def __post_init__(self):
        self.f = FAMILIES[self.family]
        self.cidr = self.view.cluster_cidr(self.family)
        self.t = f"{self.f.nf} {TABLE}"

    def rule(self, chain: str, text: str) -> None:
        self.rules.append(f"add rule {self.t} {chain} {text}")

    def elements_text(self) -> list[str]:
        """Element changes, deletions first, batched per map."""
        out = []
        for verb, changes in (("delete", self.deletes), ("add", self.adds)):
            for name, items in changes.items():
                for i in range(0, len(items), BATCH):
                    out.append(f"{verb} element {self.t} {name} {{ {', '.join(items[i:i + BATCH])} }}")
        return out

    def base(self) -> None:
        """Table, maps, the hairpin set and the fixed chains: written by full syncs only.
        (A partial sync that rewrote them would make ``nft`` load the whole table first.
        The hourly full sync repairs them.)"""
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
            ("nat-postrouting", "nat", "postrouting", "srcnat", f"ct status dnat {f.addr} saddr . {f.addr} daddr @hairpin masquerade fully-random"),
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

    def hairpin(self, size: int) -> None:
        f = self.f
        self.decl.append(f'add set {self.t} hairpin {{ type {f.addr_type} . {f.addr_type} ; size {size} ; comment "endpoints on this node, to masquerade a pod that reaches itself" ; }}')

    def pool(self, pool: Pool, sizes: dict[str, int]) -> None:
        """Declare a pool's maps and chain, and its two DNAT rules."""
        f, t, n = self.f, self.t, pool.size
        value = f"{f.addr} daddr . th dport"
        which = "Local" if pool.local else "Cluster"
        p = pool.protocol
        self.decl.append(f'add map {t} {pool.by_address} {{ typeof {f.addr} daddr . th dport . numgen random mod 1 : {value} ; size {sizes[pool.by_address]} ; comment "{p} services with {n} {which} endpoints: by address" ; }}')
        self.decl.append(f'add map {t} {pool.by_nodeport} {{ typeof th dport . numgen random mod 1 : {value} ; size {sizes[pool.by_nodeport]} ; comment "{p} services with {n} {which} endpoints: by NodePort" ; }}')
        self.decl.append(f"add chain {t} {pool.chain}")
        if not pool.local and self.cidr:
            self.rule(pool.chain, f"{f.addr} saddr != {self.cidr} jump mark-for-masquerade")
        self.rule(pool.chain, f"meta l4proto {p} dnat {f.addr} addr . port to {f.addr} daddr . th dport . numgen random mod {n} map @{pool.by_address}")
        self.rule(pool.chain, f"meta l4proto {p} dnat {f.addr} addr . port to th dport . numgen random mod {n} map @{pool.by_nodeport}")

    def drop_pool(self, pool: Pool) -> None:
        """Remove a pool no service uses any more (its rules first: they bind the maps)."""
        self.tail += [f"flush chain {self.t} {pool.chain}", f"delete map {self.t} {pool.by_address}",
                      f"delete map {self.t} {pool.by_nodeport}", f"delete chain {self.t} {pool.chain}"]

    def service(self, svc: ServicePortInfo) -> ServiceRules:
        """One service port's map elements, chains and affinity sets."""
        vmap: list[tuple[str, str]] = []  # (map, "key : verdict") in the verdict maps
        cluster_ip = of_family(svc.cluster_ips, self.family)[0]
        endpoints = tuple(e for e in self.view.endpoints.get(svc.name, ()) if e.family == self.family)
        cat = categorize_endpoints(endpoints, svc, self.view.node_name, self.view.node_zone)
        base = chain_base(svc)
        svc_chain, local_chain, ext_chain = f"service-{base}", f"local-{base}", f"external-{base}"
        proto = svc.protocol.lower()
        external_ips = (*of_family(svc.external_ips, self.family), *of_family(svc.load_balancer_ips, self.family))
        has_internal = cat.has_any and not (svc.internal_local and not cat.local)
        has_external = cat.has_any and not (svc.external_policy_local and not cat.local)
        no_ep = "goto reject-chain" if not cat.has_any else "drop"
        internal = local_chain if svc.internal_local else svc_chain
        if has_internal:
            vmap.append(("service-ips", f"{cluster_ip} . {proto} . {svc.port} : goto {internal}"))
        else:
            vmap.append(("no-endpoint-services", f"{cluster_ip} . {proto} . {svc.port} : {no_ep}"))
        for ip in external_ips:
            if cat.has_any:
                vmap.append(("service-ips", f"{ip} . {proto} . {svc.port} : goto {ext_chain}"))
            if not has_external:
                vmap.append(("no-endpoint-services", f"{ip} . {proto} . {svc.port} : {no_ep}"))
        if svc.node_port:
            if cat.has_any:
                vmap.append(("service-nodeports", f"{proto} . {svc.node_port} : goto {ext_chain}"))
            if not has_external:
                vmap.append(("no-endpoint-nodeports", f"{proto} . {svc.node_port} : {no_ep}"))
        elements: dict[str, list[str]] = {}
        for name, item in vmap:
            elements.setdefault(name, []).append(item)

        out = ServiceRules(elements, hairpin=tuple(ep.ip for ep in cat.reachable if ep.local))
        pools: list[Pool] = []
        chains: dict[str, list[str]] = {}
        external = cat.has_any and svc.externally_accessible
        if external:
            chains[ext_chain] = self._external(svc, svc_chain, local_chain if cat.local else None, has_external)
        # which destinations reach each dispatch chain: (its addresses, whether NodePorts do)
        if cat.cluster and svc.uses_cluster_endpoints:
            reach = ((cluster_ip,) if not svc.internal_local else ()) + (external_ips if external else ())
            chains[svc_chain] = self._dispatch(svc, cat.cluster, cluster_ip, Pool(False, proto, len(cat.cluster)), reach, external, elements, pools, masquerade=not svc.internal_local)
        if cat.local and svc.uses_local_endpoints:
            ext_local = external and svc.external_policy_local
            reach = ((cluster_ip,) if svc.internal_local else ()) + (external_ips if ext_local else ())
            chains[local_chain] = self._dispatch(svc, cat.local, cluster_ip, Pool(True, proto, len(cat.local)), reach, ext_local, elements, pools, masquerade=svc.internal_local)
        if svc.affinity_timeout:
            for ep in cat.reachable:
                name = endpoint_base(svc, ep)
                chains[f"endpoint-{name}"] = [f"update @affinity-{name} {{ {self.f.addr} saddr }}", f"meta l4proto {proto} dnat to {ep}"]
            out.sets = tuple(f"affinity-{endpoint_base(svc, ep)}" for ep in cat.reachable)
            out.decl = tuple(f"add set {self.t} {s} {{ type {self.f.addr_type} ; flags dynamic,timeout ; timeout {svc.affinity_timeout}s ; }}" for s in out.sets)
        out.chains = tuple(chains)
        out.rules = tuple(f"add rule {self.t} {name} {text}" for name, body in chains.items() for text in body)
        out.pools = tuple(pools)
        for name, items in elements.items():
            elements[name] = tuple(items)
        return out

    def _dispatch(self, svc: ServicePortInfo, endpoints, cluster_ip: str, pool: Pool, reach: tuple[str, ...], nodeport: bool,
                  elements: dict[str, list[str]], pools: list[Pool], masquerade: bool) -> list[str]:
        """A service (or local) chain: masquerade mark, then the affinity checks and a
        numgen ladder to the endpoint chains, or (no affinity) the service's pool, whose
        maps get one element per endpoint for every destination that reaches this chain."""
        f = self.f
        proto = svc.protocol.lower()
        body = []
        # A Cluster pool's chain marks off-cluster sources itself (see Pool); a Local one
        # must not: external traffic with Local policy keeps its source address.
        if masquerade and self.cidr and (pool.local or svc.affinity_timeout):
            body.append(f"{f.addr} daddr {cluster_ip} {proto} dport {svc.port} {f.addr} saddr != {self.cidr} jump mark-for-masquerade")
        if svc.affinity_timeout:
            names = [endpoint_base(svc, ep) for ep in endpoints]
            body += [f"{f.addr} saddr @affinity-{name} goto endpoint-{name}" for name in names]
            n = len(names)
            body += [f"numgen random mod {n - i} 0 goto endpoint-{name}" for i, name in enumerate(names[:-1])]
            body.append(f"goto endpoint-{names[-1]}")
            return body
        values = [f"{i} : {ep.ip} . {ep.port}" for i, ep in enumerate(endpoints)]  # index : endpoint
        if reach:
            keys = [f"{ip} . {svc.port} . " for ip in reach]
            elements.setdefault(pool.by_address, []).extend(k + v for k in keys for v in values)
        if nodeport and svc.node_port:
            key = f"{svc.node_port} . "
            elements.setdefault(pool.by_nodeport, []).extend(key + v for v in values)
        pools.append(pool)
        body.append(f"goto {pool.chain}")
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

    def write(self, old: ServiceRules | None, new: ServiceRules | None) -> None:
        """One service's changes against what the table holds for it (``old``)."""
        if self.full:  # nothing to compare with
            for name, items in new.elements.items():
                self.adds.setdefault(name, []).extend(items)
        else:
            before, after = old.elements if old else {}, new.elements if new else {}
            for name in dict.fromkeys([*before, *after]):
                kept = set(after.get(name, ()))
                gone = [e.partition(" : ")[0] for e in before.get(name, ()) if e not in kept]
                kept = set(before.get(name, ()))
                added = [e for e in after.get(name, ()) if e not in kept]
                if gone:
                    self.deletes.setdefault(name, []).extend(gone)
                if added:
                    self.adds.setdefault(name, []).extend(added)
        if new:
            self.written += len(new.chains)
            self.decl += new.decl
            for name in new.chains:  # "add" keeps an existing chain: flush it to rewrite it
                self.decl += [f"add chain {self.t} {name}"] if self.full else [f"add chain {self.t} {name}", f"flush chain {self.t} {name}"]
            self.rules += new.rules
        if old:
            stale = [c for c in old.chains if not new or c not in new.chains]
            self.flushes += [f"flush chain {self.t} {c}" for c in stale]  # stale chains may refer to each other
            self.tail += [f"delete chain {self.t} {c}" for c in stale]
            self.tail += [f"delete set {self.t} {s}" for s in old.sets if not new or s not in new.sets]


