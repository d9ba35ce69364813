"""The queries a pod's stub resolver sends for one name, and what svcdns answers each.

A pod with ``dnsPolicy: ClusterFirst`` gets ``search NS.svc.ZONE svc.ZONE ZONE <host
domains>`` and ``options ndots:5``. glibc (and musl) try a name with fewer than ``ndots``
dots under every search domain first and as written last; one with more dots as written
first; one ending in a dot only as written. They go on past NXDOMAIN, NODATA and
SERVFAIL and stop at the first answer (or at REFUSED). svcdns answers each query the way
its handler does: the Resolver for cluster names, autopath for a pod's first search
domain, an upstream for the rest. Pure: upstream replies come in as ``forwarded``; the
names still missing are reported so the caller can fetch them and ask again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ..dns.records import NXDOMAIN, RR, T_A, T_AAAA, T_CNAME, T_HINFO, T_NS, T_PTR, T_SOA, T_SRV, T_TXT, Answer, Resolver
from .model import RCODE_NAMES, UNKNOWN, Forwarded, Step

T_MX = 15
TYPE_NAMES = {T_A: "A", T_NS: "NS", T_CNAME: "CNAME", T_SOA: "SOA", T_PTR: "PTR", T_HINFO: "HINFO", T_MX: "MX", T_TXT: "TXT", T_AAAA: "AAAA", T_SRV: "SRV"}


def pod_search(namespace: str, zone: str, host_search: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The search list kubelet writes into a ClusterFirst pod's resolv.conf."""
    return (f"{namespace}.svc.{zone}", f"svc.{zone}", zone, *host_search)


def candidates(name: str, search: tuple[str, ...], ndots: int) -> list[str]:
    """The names a stub resolver tries for ``name``, in order (glibc res_search)."""
    if name.endswith("."):
        return [name.rstrip(".").lower()]
    name = name.lower()
    expanded = [f"{name}.{domain}" for domain in search]
    return [name, *expanded] if name.count(".") >= ndots else [*expanded, name]


def rr_text(rr: RR) -> str:
    """A record in zone-file form (as dig prints it, tabs aside)."""
    data = rr.data
    if rr.rtype in (T_CNAME, T_NS, T_PTR):
        data = f"{data}."
    elif rr.rtype == T_MX:
        data = f"{data[0]} {data[1]}."
    elif rr.rtype == T_SRV:
        data = f"{data[0]} {data[1]} {data[2]} {data[3]}."
    elif rr.rtype in (T_TXT, T_HINFO):
        data = " ".join(f'"{s}"' for s in data)
    elif rr.rtype == T_SOA:
        data = f"{data[0]}. {data[1]}. " + " ".join(str(v) for v in data[2:])
    elif isinstance(data, bytes):
        data = f"\\# {len(data)} {data.hex()}"
    return f"{rr.name}. {rr.ttl} IN {TYPE_NAMES.get(rr.rtype, f'TYPE{rr.rtype}')} {data}"


@dataclass
class Client:
    """Who asks and what svcdns is configured to do for them."""

    namespace: str
    autopath: bool  # svcdns knows this pod (by IP) and walks its search path
    routes: tuple[tuple[str, str], ...] = ()  # (domain, upstreams) forwarding routes; "" = every other name
    host_search: tuple[str, ...] = ()  # the node's search domains, appended to the pod's
    forwarded: Mapping[str, Forwarded] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # upstream questions not in `forwarded`

    def route(self, qname: str) -> str | None:
        best = None
        for domain, upstreams in self.routes:
            if domain == "" or qname == domain or qname.endswith("." + domain):
                if best is None or len(domain) > len(best[0]):
                    best = (domain, upstreams)
        return best[1] if best else None

    def upstream(self, qname: str) -> Forwarded | None:
        reply = self.forwarded.get(qname)
        if reply is None and qname not in self.missing:
            self.missing.append(qname)
        return reply


class Stub:
    """Runs the stub resolver's sequence against svcdns's answers."""

    def __init__(self, resolver: Resolver, client: Client, qtype: int):
        self.resolver, self.client, self.qtype = resolver, client, qtype

    def lookup(self, name: str, ndots: int, autopath: bool) -> list[Step]:
        search = pod_search(self.client.namespace, self.resolver.primary_zone, self.client.host_search)
        steps = []
        for qname in candidates(name, search, ndots):
            step = self.ask(qname, autopath)
            steps.append(step)
            if step.stops or step.rcode == UNKNOWN:
                break
        return steps

    def ask(self, qname: str, autopath: bool) -> Step:
        answer = self.resolver.resolve(qname, self.qtype, self.client.namespace)
        if answer is None:
            return self._forward(qname)
        if answer.rcode == NXDOMAIN and autopath and (walked := self._autopath(qname)) is not None:
            return walked
        records, rule = self._records(answer)
        return Step(qname, RCODE_NAMES.get(answer.rcode, str(answer.rcode)), records, rule, "svcdns")

    def _records(self, answer: Answer) -> tuple[tuple[str, ...], str]:
        """The answer's records, with an ExternalName's target resolved upstream appended
        (as the handler chases it)."""
        records = tuple(rr_text(rr) for rr in answer.answer)
        rule = answer.rule
        if answer.chase:
            route = self.client.route(answer.chase)
            if route is None:
                return records, (
                    f"{rule}; target {answer.chase} is outside the cluster and no upstream is configured: the answer holds "
                    "only the CNAME (stub resolvers do not chase it: the application gets no address)"
                )
            reply = self.client.upstream(answer.chase)
            if reply is not None:
                records += tuple(r for r in reply.records if r not in records)
            rule = f"{rule}; target {answer.chase} resolved upstream ({route})"
        return records, rule

    def _forward(self, qname: str) -> Step:
        route = self.client.route(qname)
        if route is None:
            return Step(qname, "REFUSED", (), "not a cluster name and no upstream is configured (svcdns serve --upstream)", "svcdns")
        reply = self.client.upstream(qname)
        rule = f"not a cluster name: forwarded upstream to {route}"
        if reply is None:
            return Step(qname, UNKNOWN, (), rule, "upstream")
        return Step(qname, RCODE_NAMES.get(reply.rcode, str(reply.rcode)), reply.records, rule, "upstream")

    def _autopath(self, qname: str) -> Step | None:
        """Autopath (svcdns/dns/autopath.py): the first search domain missed, so svcdns
        tries the rest of the pod's path itself and answers with a CNAME to what exists."""
        found = None
        for zone in self.resolver.zones:
            first = f".{self.client.namespace}.svc.{zone}"
            if qname.endswith(first) and len(qname) > len(first):
                found = (qname[: -len(first)], zone)
                break
        if found is None:
            return None
        base, zone = found
        path = [f"{base}.svc.{zone}", f"{base}.{zone}", *(f"{base}.{s}" for s in self.client.host_search), base]
        for name in path:
            step = self.ask(name, autopath=False)
            if step.rcode == UNKNOWN:
                return Step(qname, UNKNOWN, (), f"autopath: walking the search path, {name} is asked upstream", "autopath")
            if step.rcode != "NOERROR":
                continue
            ttl = step.records[0].split()[1] if step.records else "5"
            cname = f"{qname}. {ttl} IN CNAME {name}."
            rule = f"autopath: {qname} does not exist, so svcdns walked the pod's search path itself; {name} answered ({step.rule})"
            return Step(qname, "NOERROR", (cname, *step.records), rule, "autopath")
        return None
