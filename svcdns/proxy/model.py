"""The proxy's view of the cluster: service ports and their endpoints, as kube-proxy sees them.

Services and EndpointSlices from the cluster state are shrunk to what a proxier renders
(``pkg/proxy/serviceport.go``, ``endpoint.go``), and :func:`categorize_endpoints` decides
which endpoints a node uses for a service port, exactly as kube-proxy 1.33+
(``pkg/proxy/topology.go``): ready endpoints, else serving-terminating ones; ``Local``
traffic policies restricted to this node's endpoints; topology hints honoured only when
every ready endpoint carries one and some are meant for this node or its zone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from ..model import EndpointSlice, Service, ip_family

Key = tuple[str, str]  # (namespace, name) of a Service


@dataclass(frozen=True, slots=True, order=True)
class ServicePortName:
    """One port of one service: kube-proxy's unit of proxying."""

    namespace: str
    name: str
    port: str  # the port's name; "" for a single unnamed port
    protocol: str  # TCP | UDP | SCTP

    def __str__(self) -> str:
        """``ns/name:port`` (``ns/name`` for an unnamed port), as kube-proxy prints it and
        hashes it into chain names."""
        base = f"{self.namespace}/{self.name}"
        return f"{base}:{self.port}" if self.port else base

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class ServicePortInfo:
    """What every backend needs to proxy one service port."""

    name: ServicePortName
    cluster_ips: tuple[str, ...]  # one per IP family the service has
    port: int
    node_port: int  # 0 = none
    affinity_timeout: int  # ClientIP affinity in seconds; 0 = none
    internal_local: bool  # internalTrafficPolicy: Local
    external_local: bool  # externalTrafficPolicy: Local
    external_ips: tuple[str, ...]
    load_balancer_ips: tuple[str, ...]

    @property
    def protocol(self) -> str:
        return self.name.protocol

    @property
    def externally_accessible(self) -> bool:
        return bool(self.node_port or self.external_ips or self.load_balancer_ips)

    @property
    def external_policy_local(self) -> bool:
        return self.external_local and self.externally_accessible

    @property
    def uses_cluster_endpoints(self) -> bool:
        """Cluster endpoints are needed for Cluster internal policy, and for any external
        traffic (even with Local external policy: short-circuiting pod traffic)."""
        return not self.internal_local or self.externally_accessible

    @property
    def uses_local_endpoints(self) -> bool:
        return self.internal_local or self.external_policy_local


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    """One usable backend address of a service port."""

    ip: str
    port: int
    ready: bool
    serving: bool
    terminating: bool
    local: bool  # on this node (EndpointSlice nodeName)
    zone_hints: frozenset[str] = frozenset()
    node_hints: frozenset[str] = frozenset()

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"

    @property
    def family(self) -> int:
        return 6 if ":" in self.ip else 4


def service_ports(svc: Service | None) -> dict[ServicePortName, ServicePortInfo]:
    """The proxied ports of a service: none for headless, ExternalName or IP-less ones."""
    if svc is None or not svc.cluster_ips or svc.headless or svc.type == "ExternalName":
        return {}
    out = {}
    for sp in svc.ports:
        name = ServicePortName(svc.namespace, svc.name, sp.name, sp.protocol)
        out[name] = ServicePortInfo(
            name=name,
            cluster_ips=svc.cluster_ips,
            port=sp.port,
            node_port=sp.node_port if svc.type in ("NodePort", "LoadBalancer") else 0,
            affinity_timeout=svc.session_affinity_timeout,
            internal_local=svc.internal_local,
            external_local=svc.external_local,
            external_ips=svc.external_ips,
            load_balancer_ips=svc.load_balancer_ips if svc.type == "LoadBalancer" else (),
        )
    return out


def service_endpoints(key: Key, slices: Iterable[EndpointSlice], node_name: str) -> dict[ServicePortName, tuple[EndpointInfo, ...]]:
    """Endpoints per service port, from a service's slices (kube-proxy's EndpointSliceCache).

    An endpoint that is neither ready nor serving-and-terminating can never be used and is
    left out. The same address in two slices counts once (a ready copy wins). Each port's
    endpoints are sorted by ``ip:port`` text, as kube-proxy sorts them."""
    ns, name = key
    found: dict[ServicePortName, dict[str, EndpointInfo]] = {}
    for sl in slices:
        if sl.address_type == "FQDN":
            continue
        for ep in sl.endpoints:
            if not (ep.ready or (ep.serving and ep.terminating)):
                continue
            ip = ep.addresses[0]
            for port in sl.ports:
                if not port.port:
                    continue
                spn = ServicePortName(ns, name, port.name, port.protocol)
                info = EndpointInfo(
                    ip=ip,
                    port=port.port,
                    ready=ep.ready,
                    serving=ep.serving,
                    terminating=ep.terminating,
                    local=bool(node_name) and ep.node_name == node_name,
                    zone_hints=frozenset(ep.hint_zones),
                    node_hints=frozenset(ep.hint_nodes),
                )
                bucket = found.setdefault(spn, {})
                text = str(info)
                old = bucket.get(text)
                if old is None or (info.ready and not old.ready):
                    bucket[text] = info
    return {spn: tuple(eps[k] for k in sorted(eps)) for spn, eps in found.items()}


class Categorized(NamedTuple):
    cluster: tuple[EndpointInfo, ...]  # for Cluster traffic policy (topology applied)
    local: tuple[EndpointInfo, ...]  # for Local traffic policy
    reachable: tuple[EndpointInfo, ...]  # union of both: the endpoints that need rules here
    has_any: bool  # usable endpoints exist somewhere in the cluster


def topology_mode(endpoints: Iterable[EndpointInfo], node_name: str, zone: str) -> str:
    """"PreferSameNode", "PreferSameZone" or "" (no topology), from the hints of the
    ready endpoints: hints count only when every ready endpoint has one and at least
    one names this node (or this node's zone)."""
    all_node, for_node, all_zone, for_zone = True, False, True, False
    for ep in endpoints:
        if not ep.ready:
            continue
        if not ep.node_hints:
            all_node = False
        elif node_name in ep.node_hints:
            for_node = True
        if not ep.zone_hints:
            all_zone = False
        elif zone in ep.zone_hints:
            for_zone = True
    if all_node and for_node:
        return "PreferSameNode"
    if all_zone and for_zone and zone:
        return "PreferSameZone"
    return ""


def categorize_endpoints(endpoints: tuple[EndpointInfo, ...], svc: ServicePortInfo, node_name: str, zone: str) -> Categorized:
    """Which endpoints this node uses for ``svc`` (kube-proxy's CategorizeEndpoints).

    "Usable" means ready, falling back (separately for Cluster and Local) to
    serving-terminating endpoints when none is ready."""
    cluster: tuple[EndpointInfo, ...] = ()
    local: tuple[EndpointInfo, ...] = ()
    has_any = False
    mode = ""
    if svc.uses_cluster_endpoints:
        mode = topology_mode(endpoints, node_name, zone)
        if mode == "PreferSameNode":
            cluster = tuple(ep for ep in endpoints if ep.ready and node_name in ep.node_hints)
        elif mode == "PreferSameZone":
            cluster = tuple(ep for ep in endpoints if ep.ready and zone in ep.zone_hints)
        else:
            cluster = tuple(ep for ep in endpoints if ep.ready)
        if not cluster:
            cluster = tuple(ep for ep in endpoints if ep.serving and ep.terminating)
        has_any = bool(cluster)
    if not svc.uses_local_endpoints:
        return Categorized(cluster, (), cluster, has_any)

    local_ready = local_terminating = False
    for ep in endpoints:
        if ep.ready:
            has_any = True
            local_ready = local_ready or ep.local
        elif ep.serving and ep.terminating:
            has_any = True
            local_terminating = local_terminating or ep.local
    serving_terminating = False
    if local_ready:
        local = tuple(ep for ep in endpoints if ep.local and ep.ready)
    elif local_terminating:
        serving_terminating = True
        local = tuple(ep for ep in endpoints if ep.local and ep.serving and ep.terminating)
    if not svc.uses_cluster_endpoints:
        return Categorized((), local, local, has_any)
    if mode == "" and not serving_terminating:
        return Categorized(cluster, local, cluster, has_any)  # cluster is a superset of local
    merged = {str(ep): ep for ep in cluster}
    merged.update((str(ep), ep) for ep in local)
    return Categorized(cluster, local, tuple(merged[k] for k in sorted(merged)), has_any)


def family_of(ip: str) -> int:
    return ip_family(ip)


@dataclass
class ProxyView:
    """Everything a backend renders from: the synced service ports and endpoints, and
    the facts about this node that categorisation needs."""

    services: dict[ServicePortName, ServicePortInfo]
    endpoints: dict[ServicePortName, tuple[EndpointInfo, ...]]
    node_name: str
    node_zone: str = ""
    cluster_cidrs: tuple[str, ...] = ()  # --cluster-cidr, one per family at most
    _order: list[ServicePortName] | None = None  # sorted service names, until services change

    def cluster_cidr(self, family: int) -> str | None:
        return next((c for c in self.cluster_cidrs if (":" in c) == (family == 6)), None)

    def families(self) -> tuple[int, ...]:
        """4 always (the node's rules exist even with no services); 6 when a service has
        an IPv6 cluster IP."""
        v6 = any(":" in ip for s in self.services.values() for ip in s.cluster_ips)
        return (4, 6) if v6 else (4,)

    def sorted_services(self) -> list[ServicePortInfo]:
        """Services in a stable order (so rendered rules are reproducible). The order is
        kept until ``services_changed`` (sorting 10,000 names costs more than a sync)."""
        if self._order is None or len(self._order) != len(self.services):
            self._order = sorted(self.services)
        return [self.services[k] for k in self._order]

    def services_changed(self) -> None:
        self._order = None


def of_family(ips: Iterable[str], family: int) -> tuple[str, ...]:
    return tuple(ip for ip in ips if (":" in ip) == (family == 6))
