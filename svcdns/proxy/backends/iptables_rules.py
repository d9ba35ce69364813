"""The contents of svcdns's iptables rules: chain names and hashes (kube-proxy's), the
jumps from the built-in chains, one service port's rules, and rule-by-rule edits of the
shared chains (see iptables.py for the layout and why). Pure text; iptables.py decides
what a sync writes."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from operator import itemgetter

from ..model import Categorized, ProxyView, ServicePortInfo, categorize_endpoints, of_family
from . import loopback

# Chains every sync writes in full (a ":CHAIN" line flushes it under --noflush).
KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
FILTER_CHAINS = (KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS)
NAT_CHAINS = (KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ)
# Per-service chains; a chain with one of these prefixes that no service uses is deleted.
SERVICE_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-")
MASQ_MARK = "0x4000"
# Above this many endpoints, per-endpoint comments are left out (kube-proxy's
# largeClusterMode): they make up ~40% of the restore input.
LARGE_CLUSTER_ENDPOINTS = 1000


@dataclass(frozen=True)
class Jump:
    """A rule in a built-in chain that sends traffic into ours. These are inserted once
    (when missing), never rewritten: other software owns those chains."""

    table: str
    chain: str
    target: str
    comment: str
    match: str = ""

    def line(self) -> str:
        match = f"{self.match} " if self.match else ""
        return f'-I {self.chain} {match}-m comment --comment "{self.comment}" -j {self.target}'


NEW = "-m conntrack --ctstate NEW"
JUMPS = (
    Jump("filter", "INPUT", KUBE_EXTERNAL_SERVICES, "kubernetes externally-visible service portals", NEW),
    Jump("filter", "FORWARD", KUBE_EXTERNAL_SERVICES, "kubernetes externally-visible service portals", NEW),
    Jump("filter", "INPUT", KUBE_NODEPORTS, "kubernetes health check service ports"),
    Jump("filter", "FORWARD", KUBE_SERVICES, "kubernetes service portals", NEW),
    Jump("filter", "OUTPUT", KUBE_SERVICES, "kubernetes service portals", NEW),
    Jump("filter", "FORWARD", KUBE_FORWARD, "kubernetes forwarding rules"),
    Jump("nat", "OUTPUT", KUBE_SERVICES, "kubernetes service portals"),
    Jump("nat", "PREROUTING", KUBE_SERVICES, "kubernetes service portals"),
    Jump("nat", "POSTROUTING", KUBE_POSTROUTING, "kubernetes postrouting rules"),
)


@lru_cache(maxsize=1 << 18)
def port_proto_hash(service_port_name: str, protocol: str) -> str:
    """kube-proxy's portProtoHash: 16 base32 characters of sha256(name + protocol), so
    ``KUBE-XXX-`` + hash fits iptables' 28-character chain names."""
    return base64.b32encode(hashlib.sha256((service_port_name + protocol).encode()).digest()).decode()[:16]


@lru_cache(maxsize=1 << 18)
def endpoint_chain(service_port_name: str, protocol: str, endpoint: str) -> str:
    """``KUBE-SEP-`` chain of one endpoint (kube-proxy's servicePortEndpointChainName)."""
    digest = hashlib.sha256((service_port_name + protocol + endpoint).encode()).digest()
    return "KUBE-SEP-" + base64.b32encode(digest).decode()[:16]


def service_chain(prefix: str, svc: ServicePortInfo) -> str:
    """``KUBE-SVC-``/``KUBE-SVL-``/``KUBE-EXT-`` + the service port's hash."""
    return prefix + port_proto_hash(str(svc.name), svc.protocol.lower())


@lru_cache(maxsize=1024)
def probability(n: int) -> str:
    """``--probability`` for the first of n remaining endpoints: 1/n, printed as kube-proxy does."""
    return f"{1.0 / n:0.10f}"


@lru_cache(maxsize=4096)
def _stat(n: int, i: int) -> str:
    """The ``statistic`` match of the i-th of n split rules (none on the last)."""
    return f"-m statistic --mode random --probability {probability(n - i)} " if i < n - 1 else ""


@dataclass
class ServiceRules:
    """One service port's share of the input, kept between syncs: an unchanged service
    costs a few list extends, not a re-render."""

    top: list[str]  # its KUBE-SERVICES / KUBE-NODEPORTS rules (nat)
    filter: list[str]  # its REJECT / DROP rules (filter)
    chains: list[str]  # its own chains (SVC, SVL, EXT, SEP)
    rules: list[str]  # the rules of those chains
    loop_back: tuple[str, ...] = ()  # its local endpoints as KUBE-LOOP-BACK entries
    order: str = ""  # its chains' hash: a full sync writes services in descending order of it


class Writer:
    """Accumulates the four sections of one iptables-restore input."""

    def __init__(self, view: ProxyView, family: int):
        self.view = view
        self.family = family
        self.cidr = view.cluster_cidr(family)
        self.filter_chains = [f":{c} - [0:0]" for c in FILTER_CHAINS]
        self.filter_rules: list[str] = []
        self.nat_chains: list[str] = []  # partial sync: per-service chains to rewrite
        self.nat_rules: list[str] = []  # partial sync: their rules
        self.nat_blocks: list[tuple[str, list[str]]] = []  # (order, lines) per service (full sync)
        self.active: set[str] = set()
        self.written = 0
        self.large = False

    def service(self, svc: ServicePortInfo) -> ServiceRules:
        """All rules of one service port (kube-proxy's loop body in syncProxyRules)."""
        top: list[str] = []
        filt: list[str] = []
        cluster_ip = of_family(svc.cluster_ips, self.family)[0]
        endpoints = tuple(e for e in self.view.endpoints.get(svc.name, ()) if e.family == self.family)
        cat = categorize_endpoints(endpoints, svc, self.view.node_name, self.view.node_zone)
        name = str(svc.name)
        proto = svc.protocol.lower()
        svc_chain, svl_chain, ext_chain = (service_chain(p, svc) for p in ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-"))
        internal_chain = svl_chain if svc.internal_local else svc_chain
        has_internal = cat.has_any and not (svc.internal_local and not cat.local)
        has_external = cat.has_any and not (svc.external_policy_local and not cat.local)
        external_chain = svl_chain if svc.external_policy_local else svc_chain
        if not cat.has_any:
            internal_target = external_target = "REJECT"
            internal_comment = external_comment = f'"{name} has no endpoints"'
        else:
            internal_target = external_target = "DROP"
            internal_comment = external_comment = f'"{name} has no local endpoints"'
        match = f"-m {proto} -p {proto}"

        if has_internal:
            top.append(f'-A {KUBE_SERVICES} -m comment --comment "{name} cluster IP" {match} -d {cluster_ip} --dport {svc.port} -j {internal_chain}')
        else:
            filt.append(f"-A {KUBE_SERVICES} -m comment --comment {internal_comment} {match} -d {cluster_ip} --dport {svc.port} -j {internal_target}")
        for ip in of_family(svc.external_ips, self.family):
            if cat.has_any:
                top.append(f'-A {KUBE_SERVICES} -m comment --comment "{name} external IP" {match} -d {ip} --dport {svc.port} -j {ext_chain}')
            if not has_external:
                filt.append(f"-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {external_comment} {match} -d {ip} --dport {svc.port} -j {external_target}")
        for ip in of_family(svc.load_balancer_ips, self.family):
            if cat.has_any:
                top.append(f'-A {KUBE_SERVICES} -m comment --comment "{name} loadbalancer IP" {match} -d {ip} --dport {svc.port} -j {ext_chain}')
        if not has_external:
            for ip in of_family(svc.load_balancer_ips, self.family):
                filt.append(f"-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {external_comment} {match} -d {ip} --dport {svc.port} -j {external_target}")
        if svc.node_port:
            if cat.has_any:
                top.append(f"-A {KUBE_NODEPORTS} -m comment --comment {name} {match} --dport {svc.node_port} -j {ext_chain}")
            if not has_external:
                filt.append(
                    f"-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {external_comment} -m addrtype --dst-type LOCAL {match} --dport {svc.node_port} -j {external_target}"
                )
        chains, rules = self._service_chains(svc, cat, cluster_ip, internal_chain if has_internal else None, ext_chain, external_chain if has_external else None)
        loop_back = tuple(loopback.entry(ep.ip, proto, ep.port) for ep in cat.reachable if ep.local)
        return ServiceRules(top, filt, chains, rules, loop_back, svc_chain[len("KUBE-SVC-") :])

    def _service_chains(self, svc, cat: Categorized, cluster_ip, internal_chain, ext_chain, external_policy_chain) -> tuple[list[str], list[str]]:
        """The per-service chains: SVC/SVL (dispatch), EXT (external traffic), SEP (DNAT)."""
        name, proto = str(svc.name), svc.protocol.lower()
        chains: list[str] = []
        rules: list[str] = []
        if internal_chain and self.cidr:
            # Off-cluster traffic to a service IP is masqueraded: the reply must come back
            # through this node, whichever node the endpoint is on.
            rules.append(
                f'-A {internal_chain} -m comment --comment "{name} cluster IP" -m {proto} -p {proto} -d {cluster_ip} --dport {svc.port} ! -s {self.cidr} -j {KUBE_MARK_MASQ}'
            )
        if cat.has_any and svc.externally_accessible:
            chains.append(ext_chain)
            rules.extend(self._ext_rules(svc, ext_chain, external_policy_chain))
        svc_chain, svl_chain = service_chain("KUBE-SVC-", svc), service_chain("KUBE-SVL-", svc)
        if cat.cluster and svc.uses_cluster_endpoints:
            chains.append(svc_chain)
            rules.extend(self._dispatch(svc, svc_chain, cat.cluster))
        if cat.local and svc.uses_local_endpoints:
            chains.append(svl_chain)
            rules.extend(self._dispatch(svc, svl_chain, cat.local))
        if not svc.affinity_timeout:
            return chains, rules
        for ep in cat.reachable:
            sep = endpoint_chain(name, proto, str(ep))
            chains.append(sep)
            comment = "" if self.large else f"-m comment --comment {name} "
            rules.append(f"-A {sep} {comment}-s {ep.ip} -j {KUBE_MARK_MASQ}")
            affinity = f"-m recent --name {sep} --set " if svc.affinity_timeout else ""
            rules.append(f"-A {sep} {comment}{affinity}-p {proto} -j DNAT --to-destination {ep}")
        return chains, rules

    def _ext_rules(self, svc: ServicePortInfo, ext_chain: str, policy_chain: str | None) -> list[str]:
        name = str(svc.name)
        svc_chain = service_chain("KUBE-SVC-", svc)
        out = []
        if not svc.external_policy_local:
            out.append(f'-A {ext_chain} -m comment --comment "masquerade traffic for {name} external destinations" -j {KUBE_MARK_MASQ}')
        else:
            if self.cidr:  # pod traffic to an external address behaves as if it went out and back in
                out.append(f'-A {ext_chain} -m comment --comment "pod traffic for {name} external destinations" -s {self.cidr} -j {svc_chain}')
            out.append(f'-A {ext_chain} -m comment --comment "masquerade LOCAL traffic for {name} external destinations" -m addrtype --src-type LOCAL -j {KUBE_MARK_MASQ}')
            out.append(f'-A {ext_chain} -m comment --comment "route LOCAL traffic for {name} external destinations" -m addrtype --src-type LOCAL -j {svc_chain}')
        if policy_chain:
            out.append(f"-A {ext_chain} -j {policy_chain}")
        return out

    def _dispatch(self, svc: ServicePortInfo, chain: str, endpoints) -> list[str]:
        """An even random split: the i-th of n rules matches with probability 1/(n-i),
        the last always. Without affinity each rule DNATs; with it, affinity checks
        (``recent``) come first and the rules jump to per-endpoint chains."""
        name, proto = str(svc.name), svc.protocol.lower()
        n = len(endpoints)
        if not svc.affinity_timeout:
            # `-p` alone, not kube-proxy's `-m tcp -p tcp`: DNAT to a port needs the
            # protocol, not the tcp match (nat sees no fragments: conntrack reassembles).
            # One match fewer on 100,000 rules: full sync 2.5x faster on iptables-nft,
            # the legacy table's replace 20 % faster (docs/performance.md).
            dnat = f"-p {proto} -j DNAT --to-destination"
            if self.large:
                return [f"-A {chain} {_stat(n, i)}{dnat} {ep}" for i, ep in enumerate(endpoints)]
            return [f'-A {chain} -m comment --comment "{name} -> {ep}" {_stat(n, i)}{dnat} {ep}' for i, ep in enumerate(endpoints)]
        out = []
        seps = [(ep, endpoint_chain(name, proto, str(ep))) for ep in endpoints]
        for ep, sep in seps:
            comment = "" if self.large else f'-m comment --comment "{name} -> {ep}" '
            out.append(f"-A {chain} {comment}-m recent --name {sep} --rcheck --seconds {svc.affinity_timeout} --reap -j {sep}")
        for i, (ep, sep) in enumerate(seps):
            comment = "" if self.large else f'-m comment --comment "{name} -> {ep}" '
            out.append(f"-A {chain} {comment}{_stat(n, i)}-j {sep}")
        return out

    def finish(self, stale: Iterable[str], jumps: Iterable[Jump]) -> str:
        lo_net = "::1/128" if self.family == 6 else "127.0.0.0/8"
        # Service by service, each declaring its chains just before its rules, in
        # descending order of the chains' hash. iptables-nft (the default iptables on
        # Debian 12) files every chain a --noflush restore names into a name-sorted
        # list, walking it from the smallest name for each of the 130,000 rules
        # (nft_cache_level_set): with every chain declared up front, a rule cost a walk
        # over thousands of names (4 s of a 6 s restore at 10,000 services); in this
        # order the name it looks for is at the head. The legacy backend's sorted chain
        # list gains too (0.82 -> 0.70 s). docs/performance.md.
        body = [line for _, block in sorted(self.nat_blocks, key=itemgetter(0), reverse=True) for line in block]
        body.append(
            f'-A {KUBE_SERVICES} -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" '
            f"-m addrtype --dst-type LOCAL ! -d {lo_net} -j {KUBE_NODEPORTS}"
        )
        body += [f":{chain} - [0:0]" for chain in sorted(stale)] + [f"-X {chain}" for chain in sorted(stale)]
        self.filter_rules += [
            f"-A {KUBE_FORWARD} -m conntrack --ctstate INVALID -j DROP",
            f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding rules" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT',
            f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
        ]
        jumps = list(jumps)
        head_nat = [
            loopback.masquerade_rule(KUBE_POSTROUTING, self.family),
            f"-A {KUBE_POSTROUTING} -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
            f"-A {KUBE_POSTROUTING} -j MARK --xor-mark {MASQ_MARK}",
            f'-A {KUBE_POSTROUTING} -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
            f"-A {KUBE_MARK_MASQ} -j MARK --or-mark {MASQ_MARK}",
        ]
        lines = ["*filter", *self.filter_chains, *(j.line() for j in jumps if j.table == "filter"), *self.filter_rules, "COMMIT"]
        fixed = [f":{c} - [0:0]" for c in NAT_CHAINS]
        lines += ["*nat", *fixed, *(j.line() for j in jumps if j.table == "nat"), *head_nat, *body, "COMMIT", ""]
        return "\n".join(lines)

    def finish_delta(self, stale: Iterable[str], edits: Edits) -> str:
        """A partial sync: the changed services' own chains rewritten, their rules in the
        shared chains deleted and added one by one, stale chains removed (after the rules
        that jump to them). A table with nothing to change is left out."""
        lines = []
        if edits.filter_delete or edits.filter_add:
            lines += ["*filter", *edits.filter_delete, *edits.filter_add, "COMMIT"]
        chains = sorted(self.nat_chains) + [f":{c} - [0:0]" for c in sorted(stale)]
        tail = [f"-X {c}" for c in sorted(stale)]
        if chains or edits.nat_delete or edits.nat_add:
            lines += ["*nat", *chains, *edits.nat_delete, *self.nat_rules, *edits.nat_add, *tail, "COMMIT"]
        return "\n".join([*lines, ""])


@dataclass
class Edits:
    """Rule-by-rule changes to the shared chains (KUBE-SERVICES, KUBE-NODEPORTS, the
    filter chains) in a partial sync. Rewriting KUBE-SERVICES whole (kube-proxy's way)
    means 10,000 rules re-parsed per sync; an endpoint change leaves it untouched."""

    nat_delete: list[str] = field(default_factory=list)
    nat_add: list[str] = field(default_factory=list)
    filter_delete: list[str] = field(default_factory=list)
    filter_add: list[str] = field(default_factory=list)

    def replace(self, old: ServiceRules | None, new: ServiceRules | None) -> None:
        """``old`` (what the kernel has for a service) becomes ``new`` (None: gone)."""
        self._diff(old.top if old else [], new.top if new else [], self.nat_delete, self.nat_add)
        self._diff(old.filter if old else [], new.filter if new else [], self.filter_delete, self.filter_add)

    @staticmethod
    def _diff(before: list[str], after: list[str], delete: list[str], add: list[str]) -> None:
        keep = set(before) & set(after)
        delete += ["-D" + rule[2:] for rule in before if rule not in keep]  # "-A CHAIN spec" -> "-D CHAIN spec"
        for rule in after:
            if rule not in keep:
                # KUBE-SERVICES must end with its "-j KUBE-NODEPORTS" rule: insert above it
                add.append(f"-I {KUBE_SERVICES} 1 " + rule[len(_APPEND_SERVICES) :] if rule.startswith(_APPEND_SERVICES) else rule)


_APPEND_SERVICES = f"-A {KUBE_SERVICES} "
