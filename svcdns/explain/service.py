"""The Service behind a name: its type, selector, ports and every endpoint, marking which
addresses DNS returns for the name asked and why the others are left out."""

from __future__ import annotations

from ..dns.names import InvalidName, endpoint_hostname, parse_qname
from ..dns.records import T_AAAA, Resolver
from ..model import Service, ip_family
from .model import EndpointView, ServiceView, Step


def service_of(resolver: Resolver, steps: list[Step] | tuple[Step, ...]) -> tuple[Service, str] | None:
    """The Service the lookup was about (and the endpoint label asked for, if any): the
    one behind the answering query, else the first query that names an existing one.
    CNAME targets count (short names, autopath, ExternalName to a cluster name), and so
    do PTR targets (which service owns this address?)."""
    ordered = [s for s in steps if s.answered][-1:] + list(steps)
    for step in ordered:
        names = [step.qname] + [r.split()[-1].rstrip(".") for r in step.records if " IN CNAME " in r or " IN PTR " in r]
        for name in names:
            found = _parse_service(resolver, name)
            if found is not None:
                return found
    return None


def _parse_service(resolver: Resolver, qname: str) -> tuple[Service, str] | None:
    zone = resolver.zone_of(qname)
    if zone is None:
        return None
    try:
        q = parse_qname(qname[: -len(zone)].rstrip("."))
    except InvalidName:
        return None
    if q.kind != "svc" or not q.service:
        return None
    svc = resolver.state.services.get((q.namespace, q.service))
    return (svc, q.endpoint) if svc is not None else None


def service_view(resolver: Resolver, svc: Service, endpoint: str, qtype: int) -> ServiceView:
    if svc.type == "ExternalName":
        returns = f"a CNAME to {svc.external_name} (no endpoints, no proxying)"
    elif svc.headless:
        returns = "the addresses of its ready endpoints (headless: no ClusterIP)"
        if svc.publish_not_ready:
            returns = "the addresses of all its endpoints, ready or not (publishNotReadyAddresses: true)"
    else:
        returns = f"its ClusterIP {', '.join(svc.cluster_ips)}; the proxy spreads connections over the endpoints"
    ports = tuple(
        f"{p.name + ' ' if p.name else ''}{p.port}/{p.protocol} -> {p.target_port}" + (f" (nodePort {p.node_port})" if p.node_port else "")
        for p in svc.ports
    )
    return ServiceView(
        namespace=svc.namespace,
        name=svc.name,
        type=svc.type + (" (headless)" if svc.headless and svc.type != "ExternalName" else ""),
        cluster_ips=svc.cluster_ips,
        external_name=svc.external_name,
        selector=dict(svc.selector),
        ports=ports,
        publish_not_ready=svc.publish_not_ready,
        dns_returns=returns,
        endpoints=tuple(_endpoints(resolver, svc, endpoint, qtype)),
    )


def _endpoints(resolver: Resolver, svc: Service, wanted: str, qtype: int):
    if svc.type == "ExternalName":
        return
    family = 6 if qtype == T_AAAA else 4
    for sl in resolver.state.service_slices(svc.key):
        for ep in sl.endpoints:
            for addr in ep.addresses:
                host = endpoint_hostname(addr, ep.hostname, ep.target_name, resolver.cfg.endpoint_pod_names)
                in_dns, why = _verdict(svc, sl.address_type, ep.ready, ep.serving, ep.terminating, addr, host, wanted, family)
                yield EndpointView(addr, host, ep.node_name, ep.zone, ep.ready, ep.serving, ep.terminating, in_dns, why)


def _verdict(svc: Service, address_type: str, ready: bool, serving: bool, terminating: bool, addr: str, host: str, wanted: str, family: int) -> tuple[bool, str]:
    """Whether DNS returns this endpoint for the name asked, and why (the same tests as
    Resolver._endpoints, in words)."""
    if address_type == "FQDN":
        return False, "FQDN endpoints are never published in DNS"
    if not svc.headless and not wanted:
        return False, "ClusterIP service: DNS returns the ClusterIP, the proxy picks this endpoint"
    if wanted and wanted != host:
        return False, f"not the endpoint asked for ({wanted})"
    if not ready:
        state = "terminating" if terminating else "not ready"
        if serving and terminating:
            state = "terminating (still serving)"
        if not svc.publish_not_ready:
            return False, f"{state}, and publishNotReadyAddresses is false"
        return (ip_family(addr) == family), f"{state}, published because publishNotReadyAddresses is true"
    if ip_family(addr) != family:
        return False, f"IPv{ip_family(addr)}: returned to {'AAAA' if family == 4 else 'A'} queries"
    return True, "ready"
