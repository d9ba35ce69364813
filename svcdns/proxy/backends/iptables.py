"""iptables mode: kube-proxy's rules, chain for chain (``pkg/proxy/iptables/proxier.go``).

nat table::

  PREROUTING, OUTPUT -> KUBE-SERVICES      one rule per ClusterIP / external IP / LB IP:port
  KUBE-SERVICES -> KUBE-SVC-<h>            Cluster policy: even split over endpoints
                -> KUBE-SVL-<h>            internalTrafficPolicy Local: this node's endpoints
                -> KUBE-EXT-<h>            external traffic (external IPs, LB IPs, NodePorts)
                -> KUBE-NODEPORTS          last rule: destinations local to the node
  KUBE-SVC/SVL -> KUBE-SEP-<h>             one chain per endpoint: DNAT --to-destination
  POSTROUTING -> KUBE-POSTROUTING          MASQUERADE what KUBE-MARK-MASQ marked

filter table: KUBE-SERVICES / KUBE-EXTERNAL-SERVICES REJECT traffic to services without
endpoints (and DROP it for Local policies without local endpoints); KUBE-FORWARD
accepts marked and established traffic.

Chain hashes are kube-proxy's, so the rules read the same as on any cluster:
``KUBE-SVC-`` + base32(sha256("ns/svc:port" + "tcp"))[:16], and for endpoints
``KUBE-SEP-`` + base32(sha256("ns/svc:port" + "tcp" + "ip:port"))[:16].

Rendering is pure (:func:`render`); :class:`IptablesBackend` applies the text with
``iptables-restore --noflush`` and, after the first sync, writes only the chains of the
services that changed.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from ..model import Categorized, Key, ProxyView, ServicePortInfo, categorize_endpoints, of_family
from .tools import existing_state, run_tool

log = logging.getLogger(__name__)

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


@dataclass
class _ServiceRules:
    """One service port's share of the input, kept between syncs: an unchanged service
    costs a few list extends, not a re-render."""

    top: list[str]  # its KUBE-SERVICES / KUBE-NODEPORTS rules (nat)
    filter: list[str]  # its REJECT / DROP rules (filter)
    chains: list[str]  # its own chains (SVC, SVL, EXT, SEP)
    rules: list[str]  # the rules of those chains


@dataclass
class Rendered:
    text: str
    nat_chains: frozenset[str]  # every per-service chain that should exist after this sync
    written: int  # per-service chains whose rules this input (re)writes
    cache: dict = field(default_factory=dict)  # ServicePortName -> _ServiceRules, for the next partial render
    large: bool = False


class _Writer:
    """Accumulates the four sections of one iptables-restore input."""

    def __init__(self, view: ProxyView, family: int):
        self.view = view
        self.family = family
        self.cidr = view.cluster_cidr(family)
        self.filter_chains = [f":{c} - [0:0]" for c in FILTER_CHAINS]
        self.filter_rules: list[str] = []
        self.nat_chains = [f":{c} - [0:0]" for c in NAT_CHAINS]
        self.nat_rules: list[str] = []
        self.active: set[str] = set()
        self.written = 0
        self.large = False

    def service(self, svc: ServicePortInfo) -> _ServiceRules:
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
        return _ServiceRules(top, filt, chains, rules)

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
        for ep in cat.reachable:
            sep = endpoint_chain(name, proto, str(ep))
            chains.append(sep)
            comment = "" if self.large else f"-m comment --comment {name} "
            rules.append(f"-A {sep} {comment}-s {ep.ip} -j {KUBE_MARK_MASQ}")
            affinity = f"-m recent --name {sep} --set " if svc.affinity_timeout else ""
            rules.append(f"-A {sep} {comment}{affinity}-m {proto} -p {proto} -j DNAT --to-destination {ep}")
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
        """Affinity checks first (``recent``), then an even random split: the i-th of n
        rules matches with probability 1/(n-i), the last always."""
        name, proto = str(svc.name), svc.protocol.lower()
        out = []
        seps = [(ep, endpoint_chain(name, proto, str(ep))) for ep in endpoints]
        if svc.affinity_timeout:
            for ep, sep in seps:
                comment = "" if self.large else f'-m comment --comment "{name} -> {ep}" '
                out.append(f"-A {chain} {comment}-m recent --name {sep} --rcheck --seconds {svc.affinity_timeout} --reap -j {sep}")
        n = len(seps)
        for i, (ep, sep) in enumerate(seps):
            comment = "" if self.large else f'-m comment --comment "{name} -> {ep}" '
            stat = f"-m statistic --mode random --probability {probability(n - i)} " if i < n - 1 else ""
            out.append(f"-A {chain} {comment}{stat}-j {sep}")
        return out

    def finish(self, stale: Iterable[str], jumps: Iterable[Jump]) -> str:
        loopback = "::1/128" if self.family == 6 else "127.0.0.0/8"
        self.nat_rules.append(
            f'-A {KUBE_SERVICES} -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" '
            f"-m addrtype --dst-type LOCAL ! -d {loopback} -j {KUBE_NODEPORTS}"
        )
        for chain in sorted(stale):
            self.nat_chains.append(f":{chain} - [0:0]")
            self.nat_rules.append(f"-X {chain}")
        self.filter_rules += [
            f"-A {KUBE_FORWARD} -m conntrack --ctstate INVALID -j DROP",
            f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding rules" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT',
            f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
        ]
        jumps = list(jumps)
        head_nat = [
            f"-A {KUBE_POSTROUTING} -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
            f"-A {KUBE_POSTROUTING} -j MARK --xor-mark {MASQ_MARK}",
            f'-A {KUBE_POSTROUTING} -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
            f"-A {KUBE_MARK_MASQ} -j MARK --or-mark {MASQ_MARK}",
        ]
        lines = ["*filter", *self.filter_chains, *(j.line() for j in jumps if j.table == "filter"), *self.filter_rules, "COMMIT"]
        lines += ["*nat", *self.nat_chains, *(j.line() for j in jumps if j.table == "nat"), *head_nat, *self.nat_rules, "COMMIT", ""]
        return "\n".join(lines)


def render(
    view: ProxyView,
    family: int = 4,
    *,
    changed: set[Key] | None = None,
    existing: Iterable[str] = (),
    jumps: Iterable[Jump] = JUMPS,
    previous: Rendered | None = None,
) -> Rendered:
    """The iptables-restore input for one IP family.

    ``changed`` = None renders every chain (a full sync); otherwise only the chains of
    the services named in it are written and every other service's chains are left as
    they are (their KUBE-SERVICES rules are reused from ``previous`` when given).
    ``existing`` are chains known to be in the kernel: those of ours that no service uses
    any more are flushed and deleted. ``jumps`` are the built-in-chain rules to insert
    (pass only the missing ones)."""
    w = _Writer(view, family)
    services = [s for s in view.sorted_services() if of_family(s.cluster_ips, family)]
    w.large = sum(len(view.endpoints.get(s.name, ())) for s in services) > LARGE_CLUSTER_ENDPOINTS
    reuse = previous.cache if previous is not None and changed is not None and previous.large == w.large else {}
    cache = {}
    for svc in services:
        dirty = changed is None or svc.name.key in changed
        rules = None if dirty else reuse.get(svc.name)
        if rules is None:
            rules = w.service(svc)
        cache[svc.name] = rules
        w.filter_rules += rules.filter
        w.nat_rules += rules.top
        w.active.update(rules.chains)
        if dirty:
            w.written += len(rules.chains)
            w.nat_chains += [f":{c} - [0:0]" for c in rules.chains]
            w.nat_rules += rules.rules
    stale = {c for c in existing if c.startswith(SERVICE_CHAIN_PREFIXES)} - w.active
    return Rendered(w.finish(stale, jumps), frozenset(w.active), w.written, cache, w.large)


# --- applying ----------------------------------------------------------------------------


class IptablesBackend:
    """Applies :func:`render` output. The first sync (and any sync after a failure) is
    full; later ones rewrite only the chains of services that changed."""

    mode = "iptables"
    blocking = True

    def __init__(self, prefix: tuple[str, ...] = (), variant: str = "") -> None:
        self.prefix = list(prefix)  # e.g. ("ip", "netns", "exec", NS): tests and benchmarks
        self.variant = variant  # "" = the system's iptables; "legacy" / "nft" pick iptables-<variant>-restore
        self._previous: dict[int, Rendered] = {}
        self._full_done: set[int] = set()
        self.last_input_bytes = 0

    def render_all(self, view: ProxyView) -> str:
        """What a first sync on a fresh node applies (``--dry-run``)."""
        parts = []
        for family in view.families():
            text = render(view, family).text
            parts.append(text if family == 4 else "# ip6tables-restore input\n" + text)
        return "\n".join(parts)

    def sync(self, view: ProxyView, changed: set[Key] | None) -> None:
        total = 0
        for family in view.families():
            tool = ("iptables" if family == 4 else "ip6tables") + (f"-{self.variant}" if self.variant else "")
            save, restore = f"{tool}-save", f"{tool}-restore"
            full = changed is None or family not in self._full_done
            if full:
                chains, present = existing_state(run_tool([*self.prefix, save], what=save, timeout=300))
                missing = [j for j in JUMPS if (j.table, j.chain, j.target) not in present]
                existing = chains
                rendered = render(view, family, existing=existing, jumps=missing)
            else:
                previous = self._previous[family]
                rendered = render(view, family, changed=changed, existing=previous.nat_chains, jumps=(), previous=previous)
            self._full_done.discard(family)
            run_tool([*self.prefix, restore, "-w", "--noflush"], rendered.text, what=restore)
            self._previous[family] = rendered
            self._full_done.add(family)
            total += len(rendered.text)
            log.debug("%s: %s sync wrote %d service chains (%d bytes)", restore, "full" if full else "partial", rendered.written, len(rendered.text))
        self.last_input_bytes = total

    def close(self) -> None:
        """Rules stay in place when the proxy stops (as kube-proxy's do): connections keep
        flowing while it restarts."""
