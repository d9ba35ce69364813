"""Answers for cluster names: the Kubernetes DNS specification (1.1.0) as CoreDNS's
kubernetes plugin implements it. Pure: reads the cluster state, returns an Answer as data,
never touches a socket. The compiler precomputes common answers with the same function
the slow path calls, so both paths always agree.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, NamedTuple


from ..model import Service, ip_family
from ..store import ClusterState
from .names import InvalidName, Query, endpoint_hostname, parse_qname, pod_name_ip, reverse_ip

DNS_SCHEMA_VERSION = "1.1.0"
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
T_A, T_NS, T_CNAME, T_SOA, T_PTR, T_HINFO, T_TXT, T_AAAA, T_SRV, T_ANY = 1, 2, 5, 6, 12, 13, 16, 28, 33, 255
MAX_CNAME_CHAIN = 8


class RR(NamedTuple):
    """A resource record as data. Names are lowercase without the trailing dot.

    ``data`` by type: A/AAAA an address; CNAME/PTR/NS a name; SRV (priority, weight,
    port, target); TXT/HINFO a tuple of strings; SOA (mname, rname, serial, refresh,
    retry, expire, minimum); any other type the raw RDATA bytes."""

    name: str
    rtype: int
    ttl: int
    data: Any


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer as data: the server packs it. ``rule`` says which part of the spec
    produced it (for logs, tests and ``explain``)."""

    rcode: int
    answer: tuple[RR, ...] = ()
    authority: tuple[RR, ...] = ()
    additional: tuple[RR, ...] = ()
    rule: str = ""
    authoritative: bool = True
    # The answer ends in a CNAME to this name outside the cluster (an ExternalName): with
    # forwarding on, the server appends the target's records resolved upstream.
    chase: str = ""


@dataclass(frozen=True, slots=True)
class _Target:
    """One matching (address-or-name, port, owner label) found for a query (msg.Service)."""

    host: str  # IP address, or a DNS name for ExternalName
    port: int  # -1: no declared port
    domain: str  # the name an SRV record points at
    is_name: bool = False  # host is an ExternalName target, not an address


@dataclass
class ResolverConfig:
    zones: tuple[str, ...] = ("cluster.local",)
    ttl: int = 5
    pod_mode: str = "insecure"  # insecure | verified | disabled
    endpoint_pod_names: bool = False
    ns_addresses: tuple[str, ...] = ()  # fallback NS glue when kube-system/kube-dns is absent
    serial: int = 1


class Resolver:
    """Cluster-zone resolution over a ClusterState (CoreDNS kubernetes plugin semantics)."""

    def __init__(self, state: ClusterState, config: ResolverConfig):
        self.state = state
        self.cfg = config
        self.zones = tuple(sorted((z.strip(".").lower() for z in config.zones), key=len, reverse=True))
        self.primary_zone = config.zones[0].strip(".").lower()

    # --- entry point -------------------------------------------------------------------

    def zone_of(self, qname: str) -> str | None:
        for zone in self.zones:
            if qname == zone or qname.endswith("." + zone):
                return zone
        return None

    def resolve(self, qname: str, qtype: int, client_ns: str | None = None) -> Answer | None:
        """Answer ``qname`` (lowercase, no trailing dot) or return None if it is not a
        cluster name (the server refuses or forwards it)."""
        zone = self.zone_of(qname)
        if zone is not None:
            return self._zone_answer(qname, qtype, zone)
        if qname.endswith((".in-addr.arpa", ".ip6.arpa")):
            return self._reverse(qname, qtype)
        return self._short_name(qname, qtype, client_ns)

    # --- names in a cluster zone -------------------------------------------------------

    def _zone_answer(self, qname: str, qtype: int, zone: str) -> Answer:
        base = qname[: -len(zone)].rstrip(".")
        if base == "" and qtype in (T_SOA, T_NS):
            if qtype == T_SOA:
                return Answer(NOERROR, (self.soa(zone),), rule="zone apex SOA")
            ns, glue = self._ns(zone)
            return Answer(NOERROR, ns, additional=glue, rule="zone apex NS")
        if base == "dns-version" and qtype == T_TXT:
            return Answer(NOERROR, (RR(qname, T_TXT, 28800, (DNS_SCHEMA_VERSION,)),), rule="dns-version TXT")
        if base == "ns.dns" and qtype in (T_A, T_AAAA):
            want = 4 if qtype == T_A else 6
            recs = tuple(_address(qname, ip, self.cfg.ttl) for ip in self._ns_ips() if ip_family(ip) == want)
            return self._positive(qname, zone, recs, "nameserver address")
        try:
            targets, kind = self._lookup(qname, base, qtype, zone)
        except _NameError as e:
            return Answer(NXDOMAIN, authority=(self.soa(zone),), rule=str(e))
        rule = spec_rule(kind, qtype).replace("{mode}", self.cfg.pod_mode)
        if qtype == T_ANY:  # RFC 8482: a minimal answer to ANY
            return Answer(NOERROR, (RR(qname, T_HINFO, self.cfg.ttl, ("RFC8482", "")),), rule="ANY (RFC 8482)")
        if qtype in (T_A, T_AAAA):
            return self._addresses(qname, qtype, zone, targets, rule, chain=0)
        if qtype == T_SRV:
            return self._srv(qname, zone, targets, rule)
        if qtype == T_CNAME:
            recs = tuple(RR(qname, T_CNAME, self.cfg.ttl, t.host) for t in targets[:1] if t.is_name)
            return self._positive(qname, zone, recs, rule)
        return self._positive(qname, zone, (), rule)

    def _lookup(self, qname: str, base: str, qtype: int, zone: str) -> tuple[list[_Target], str]:
        """Targets for a name and the kind of name it is (a key of RULES; CoreDNS
        Records/findServices/findPods); raises _NameError saying why the name does not exist."""
        try:
            q = parse_qname(base)
        except InvalidName:
            raise _NameError("NXDOMAIN: not a name the Kubernetes DNS schema defines") from None
        if q.kind == "":
            return [], "zone"
        if not self.state.namespace_exists(q.namespace) and q.namespace:
            raise _NameError(f"NXDOMAIN: namespace {q.namespace!r} does not exist")
        if not q.namespace:
            return [], "zone"
        if not q.service:
            return [], "namespace"
        if q.kind == "pod":
            return self._pod(q), "pod"
        svc = self.state.services.get((q.namespace, q.service))
        if svc is None:
            raise _NameError(f"NXDOMAIN: no service {q.service!r} in namespace {q.namespace!r}")
        if svc.type == "ExternalName":
            if q.endpoint:
                raise _NameError("NXDOMAIN: an ExternalName service has no endpoints")
            if qtype == T_SRV:  # CoreDNS serves no SRV for external services
                return [], "externalname"
            return [_Target(svc.external_name, -1, "", is_name=True)], "externalname"
        if svc.headless or q.endpoint:
            return self._endpoints(svc, q, zone)
        targets = []
        found = False
        for p in svc.ports:
            if _port_matches(q, p.name, p.protocol):
                found = True
                targets.extend(_Target(ip, p.port, f"{svc.name}.{svc.namespace}.svc.{zone}") for ip in svc.cluster_ips)
        if not found:
            raise _NameError(f"NXDOMAIN: service {svc.namespace}/{svc.name} has no port {q.port}/{q.protocol}" if q.port else f"NXDOMAIN: service {svc.namespace}/{svc.name} has no ports")
        return targets, "clusterip"

    def _endpoints(self, svc: Service, q: Query, zone: str) -> tuple[list[_Target], str]:
        targets = []
        names = self.cfg.endpoint_pod_names
        for sl in self.state.service_slices(svc.key):
            if sl.address_type == "FQDN":
                continue
            ports = [(p.name, p.protocol, p.port) for p in sl.ports] or [("", "", -1)]
            for ep in sl.endpoints:
                if not (ep.ready or svc.publish_not_ready):
                    continue
                for addr in ep.addresses:
                    host = endpoint_hostname(addr, ep.hostname, ep.target_name, names)
                    if q.endpoint and q.endpoint != host:
                        continue
                    for name, proto, port in ports:
                        if _port_matches(q, name, proto):
                            targets.append(_Target(addr, port, f"{host}.{svc.name}.{svc.namespace}.svc.{zone}"))
        if not targets:
            what = f"endpoint {q.endpoint!r}" if q.endpoint else "ready endpoints"
            raise _NameError(f"NXDOMAIN: service {svc.namespace}/{svc.name} has no {what}" + (f" with port {q.port}/{q.protocol}" if q.port else ""))
        return targets, "endpoint" if q.endpoint else "headless"

    def _pod(self, q: Query) -> list[_Target]:
        if self.cfg.pod_mode == "disabled":
            raise _NameError("NXDOMAIN: pod records are disabled (--pods disabled)")
        if q.endpoint or q.port:
            raise _NameError("NXDOMAIN: not a pod name")
        ip = pod_name_ip(q.service)
        if ip is None:
            raise _NameError(f"NXDOMAIN: {q.service!r} is not a dashed IP address")
        if self.cfg.pod_mode == "verified":
            pod = self.state.pod_by_ip.get(ip)
            if pod is None or pod.namespace != q.namespace:
                raise _NameError(f"NXDOMAIN: no pod with IP {ip} in namespace {q.namespace!r} (--pods verified)")
        return [_Target(ip, -1, "")]

    # --- building the records ---------------------------------------------------------

    def _addresses(self, qname: str, qtype: int, zone: str, targets: list[_Target], rule: str, chain: int) -> Answer:
        want = 4 if qtype == T_A else 6
        records: list[RR] = []
        seen: set[str] = set()
        ttl = self.cfg.ttl
        chase = ""
        for t in targets:
            if not t.is_name:
                if ip_family(t.host) == want and t.host not in seen:
                    seen.add(t.host)
                    records.append(_address(qname, t.host, ttl))
                continue
            # ExternalName: a CNAME, followed when the target is one of ours.
            if t.host == qname:
                continue
            cname = RR(qname, T_CNAME, ttl, t.host)
            target_zone = self.zone_of(t.host)
            if target_zone is None or chain >= MAX_CNAME_CHAIN:
                records.append(cname)
                chase = t.host if target_zone is None else ""
                continue
            try:
                more, _ = self._lookup(t.host, t.host[: -len(target_zone)].rstrip("."), qtype, target_zone)
            except _NameError:
                continue
            follow = self._addresses(t.host, qtype, target_zone, more, rule, chain + 1)
            if follow.answer:
                records.append(cname)
                records.extend(follow.answer)
                chase = follow.chase
        answer = self._positive(qname, zone, tuple(records), rule)
        return replace(answer, chase=chase) if chase else answer

    def _srv(self, qname: str, zone: str, targets: list[_Target], rule: str) -> Answer:
        ttl = self.cfg.ttl
        weight = max(1, 100 // len(targets)) if targets else 0  # CoreDNS: floor(100/N), at least 1
        records: list[RR] = []
        extra: list[RR] = []
        seen_srv: set[tuple[str, int]] = set()
        seen_addr: set[tuple[str, str]] = set()
        for t in targets:
            if t.port == -1 or t.is_name:
                continue
            if (t.domain, t.port) not in seen_srv:
                seen_srv.add((t.domain, t.port))
                records.append(RR(qname, T_SRV, ttl, (0, weight, t.port, t.domain)))
            if (t.domain, t.host) not in seen_addr:
                seen_addr.add((t.domain, t.host))
                extra.append(_address(t.domain, t.host, ttl))
        return self._positive(qname, zone, tuple(records), rule, tuple(extra))

    def _positive(self, qname: str, zone: str, records: tuple[RR, ...], rule: str, extra: tuple[RR, ...] = ()) -> Answer:
        if records:
            return Answer(NOERROR, records, additional=extra, rule=rule)
        return Answer(NOERROR, authority=(self.soa(zone),), rule=f"NODATA: {rule}")

    def soa(self, zone: str) -> RR:
        ttl = self.cfg.ttl
        return RR(zone, T_SOA, min(300, ttl), (f"ns.dns.{zone}", f"hostmaster.{zone}", self.cfg.serial, 7200, 1800, 86400, ttl))

    def _ns_ips(self) -> tuple[str, ...]:
        kube_dns = self.state.services.get(("kube-system", "kube-dns"))
        if kube_dns is not None and kube_dns.cluster_ips:
            return kube_dns.cluster_ips
        return self.cfg.ns_addresses

    def _ns(self, zone: str) -> tuple[tuple[RR, ...], tuple[RR, ...]]:
        target = f"ns.dns.{zone}"
        ns = (RR(zone, T_NS, self.cfg.ttl, target),)
        return ns, tuple(_address(target, ip, self.cfg.ttl) for ip in self._ns_ips())

    # --- reverse and short names --------------------------------------------------------

    def _reverse(self, qname: str, qtype: int) -> Answer | None:
        """PTR for ClusterIPs and endpoint addresses; other addresses are not ours."""
        ip = reverse_ip(qname)
        if ip is None:
            return None
        names = self.reverse_names(ip)
        if not names:
            return None
        if qtype != T_PTR:
            return Answer(NOERROR, rule="NODATA: reverse name of a cluster address")
        rule = "PTR for a ClusterIP (spec 2.3.3)" if ip in self.state.service_by_ip else "PTR for a headless endpoint (spec 2.4.3)"
        return Answer(NOERROR, tuple(RR(qname, T_PTR, self.cfg.ttl, n) for n in names), rule=rule)

    def reverse_names(self, ip: str) -> list[str]:
        zone = self.primary_zone
        key = self.state.service_by_ip.get(ip)
        if key is not None:
            return [f"{key[1]}.{key[0]}.svc.{zone}"]
        names = []
        for key in self.state.services_with_endpoint_ip(ip):
            svc = self.state.services.get(key)
            if svc is None:
                continue
            for sl in self.state.service_slices(key):
                for ep in sl.endpoints:
                    if ip in ep.addresses and (ep.ready or svc.publish_not_ready):
                        host = endpoint_hostname(ip, ep.hostname, ep.target_name, self.cfg.endpoint_pod_names)
                        names.append(f"{host}.{svc.name}.{svc.namespace}.svc.{zone}")
        return sorted(set(names))

    def _short_name(self, qname: str, qtype: int, client_ns: str | None) -> Answer | None:
        """``svc.ns``, ``_port._proto.svc.ns`` and (from the client's namespace, else
        default) ``svc`` / ``_port._proto.svc``: a CNAME to the full name plus its records."""
        labels = qname.split(".")
        ported = len(labels) >= 3 and labels[0].startswith("_") and labels[1].startswith("_")
        rest = labels[2:] if ported else labels
        if len(rest) == 2:
            namespaces = [rest[1]]
        elif len(rest) == 1:
            namespaces = [ns for ns in (client_ns, "default") if ns]
        else:
            return None
        for ns in namespaces:
            if (ns, rest[0]) not in self.state.services:
                continue
            prefix = labels[:2] if ported else []
            full = ".".join([*prefix, rest[0], ns, "svc", self.primary_zone])
            target = self._zone_answer(full, qtype if qtype != T_CNAME else T_A, self.primary_zone)
            if target.rcode != NOERROR:
                continue
            cname = RR(qname, T_CNAME, self.cfg.ttl, full)
            if qtype == T_CNAME:
                return Answer(NOERROR, (cname,), rule=f"short name CNAME to {full} (svcdns extension)")
            return Answer(
                NOERROR, (cname, *target.answer), additional=target.additional, rule=f"short name CNAME to {full} (svcdns extension), then {target.rule}", chase=target.chase
            )
        return None


# What each kind of cluster name answers, by query type, naming the section of the
# Kubernetes DNS specification (1.1.0) or the CoreDNS behaviour behind it: the rule
# ``explain`` shows and the query log prints.
RULES = {
    ("clusterip", T_A): "service A/AAAA record: the ClusterIP (spec 2.3.1)",
    ("clusterip", T_SRV): "SRV for a named port of a ClusterIP service (spec 2.3.2)",
    ("headless", T_A): "headless service: an A/AAAA record per ready endpoint (spec 2.4.1)",
    ("headless", T_SRV): "SRV for a named port of a headless service, one per ready endpoint (spec 2.4.2)",
    ("endpoint", T_A): "headless endpoint A/AAAA record by hostname (spec 2.4.1)",
    ("endpoint", T_SRV): "SRV for a named port of one endpoint (spec 2.4.2)",
    ("externalname", T_A): "ExternalName CNAME (spec 2.5.1)",
    ("externalname", T_SRV): "ExternalName: no SRV records (spec 2.5.1, as CoreDNS)",
    ("pod", T_A): "pod record a-b-c-d.<ns>.pod (CoreDNS --pods {mode}; not in the spec)",
    ("zone", T_A): "zone structure: exists, holds no records",
    ("namespace", T_A): "namespace name: exists, holds no records",
}


def spec_rule(kind: str, qtype: int) -> str:
    """The rule for a kind of name and a query type (A and AAAA share theirs; other types
    get the A rule: they are NODATA for the same reason)."""
    return RULES.get((kind, T_SRV if qtype == T_SRV else T_A)) or RULES[(kind, T_A)]


class _NameError(Exception):
    """The name does not exist (NXDOMAIN); the message says why."""


def _port_matches(q: Query, name: str, protocol: str) -> bool:
    return (not q.port or q.port == name.lower()) and (not q.protocol or q.protocol == protocol.lower())


def _address(name: str, ip: str, ttl: int) -> RR:
    return RR(name, T_A if ip_family(ip) == 4 else T_AAAA, ttl, ip)

