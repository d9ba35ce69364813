"""Prometheus metrics: one registry, names ``svcdns_<subsystem>_<name>`` as CoreDNS does.

DNS counters live as plain integers in the handler (the hot path cannot afford a labelled
prometheus call per query); a collector turns them into samples at scrape time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

if TYPE_CHECKING:  # pragma: no cover
    from .dns.autopath import AutoPath
    from .dns.compiler import AnswerTable
    from .dns.handler import DnsHandler
    from .dns.recursion import Recursor
    from .dns.server import Latency
    from .dns.tcp import TcpConnections
    from .sources.kube import KubeSource
    from .store import ClusterState

RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 16: "BADVERS"}


class Metrics:
    """One registry per server (tests run several in one process)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.source_errors = Counter(
            "svcdns_source_errors", "Objects or documents a source rejected, by source.", ["source"], registry=self.registry
        )

    def add_dns(self, handler: "DnsHandler", latency: "Latency", table: "AnswerTable", state: "ClusterState") -> None:
        self.registry.register(DnsCollector(handler, latency, table, state))

    def add_overload(self, handler: "DnsHandler", tcp: "TcpConnections") -> None:
        self.registry.register(OverloadCollector(handler, tcp))

    def add_recursion(self, recursor: "Recursor | None", autopath: "AutoPath | None") -> None:
        if recursor is not None or autopath is not None:
            self.registry.register(RecursionCollector(recursor, autopath))

    def add_kube(self, source: "KubeSource") -> None:
        self.registry.register(KubeCollector(source))


class DnsCollector:
    """Exposes the DNS handler's counters, latency and the state's size and freshness."""

    def __init__(self, handler: "DnsHandler", latency: "Latency", table: "AnswerTable", state: "ClusterState"):
        self.handler, self.latency, self.table, self.state = handler, latency, table, state

    def collect(self):
        from .dns.handler import qtype_name

        requests = CounterMetricFamily("svcdns_dns_requests", "DNS requests by query type.", labels=["qtype"])
        responses = CounterMetricFamily("svcdns_dns_responses", "DNS responses by rcode.", labels=["rcode"])
        by_type: dict[str, int] = {}
        by_rcode: dict[str, int] = {}
        for code, n in list(self.handler.counts.items()):
            qtype, rcode = code >> 5, code & 31
            t = qtype_name(qtype)
            by_type[t] = by_type.get(t, 0) + n
            r = RCODE_NAMES.get(rcode, "other")
            by_rcode[r] = by_rcode.get(r, 0) + n
        for t, n in sorted(by_type.items()):
            requests.add_metric([t], n)
        for r, n in sorted(by_rcode.items()):
            responses.add_metric([r], n)
        yield requests
        yield responses
        yield CounterMetricFamily("svcdns_dns_dropped", "Packets dropped without a reply.", value=self.handler.dropped)
        yield from namespace_families(self.handler)
        lat = self.latency
        cumulative, buckets = 0, []
        for bound, n in zip((*lat.buckets, float("inf")), lat.counts):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily(
            "svcdns_dns_request_duration_seconds", "Time to answer a query.", buckets=buckets, sum_value=lat.sum
        )
        yield GaugeMetricFamily("svcdns_dns_records", "Precompiled answers held.", value=len(self.table.answers))
        yield GaugeMetricFamily(
            "svcdns_store_last_sync_timestamp_seconds", "When the cluster state last changed.", value=self.table.last_change
        )
        yield GaugeMetricFamily("svcdns_store_services", "Services in the cluster state.", value=len(self.state.services))
        yield GaugeMetricFamily("svcdns_store_synced", "1 once the first full sync is done.", value=int(self.state.synced))


class OverloadCollector:
    """What the overload limits turned away, and how close the server is to them."""

    def __init__(self, handler: "DnsHandler", tcp: "TcpConnections"):
        self.handler, self.tcp = handler, tcp

    def collect(self):
        over = CounterMetricFamily(
            "svcdns_dns_overload", "Queries over a limit (answered REFUSED or dropped), by limit.", labels=["limit"]
        )
        for limit, n in sorted(self.handler.overload.items()):
            over.add_metric([limit], n)
        yield over
        yield GaugeMetricFamily("svcdns_dns_inflight", "Answers waiting on upstreams now.", value=self.handler.inflight)
        tcp = self.tcp
        yield GaugeMetricFamily("svcdns_dns_tcp_connections", "Open TCP connections.", value=len(tcp.open))
        closed = CounterMetricFamily("svcdns_dns_tcp_closed", "TCP connections the server closed, by reason.", labels=["reason"])
        closed.add_metric(["evicted"], tcp.evicted)
        closed.add_metric(["refused"], tcp.refused)
        closed.add_metric(["timeout"], tcp.timed_out)
        yield closed
UNKNOWN_NAMESPACE = "unknown"  # the label of clients that are not pods svcdns knows


def namespace_families(handler: "DnsHandler"):
    """Requests, NXDOMAIN, SERVFAIL and search-path misses by the client pod's namespace
    (from the pod-IP index; ``unknown`` for other clients). Bounded by the namespaces.
    (The --naive benchmark baseline keeps no such counts.)"""
    if not hasattr(handler, "namespaces"):
        return
    requests = CounterMetricFamily(
        "svcdns_dns_namespace_requests", "DNS requests answered, by the client pod's namespace.", labels=["namespace"]
    )
    nxdomain = CounterMetricFamily(
        "svcdns_dns_namespace_nxdomain", "NXDOMAIN answers, by the client pod's namespace.", labels=["namespace"]
    )
    servfail = CounterMetricFamily(
        "svcdns_dns_namespace_servfail", "SERVFAIL answers, by the client pod's namespace.", labels=["namespace"]
    )
    misses = CounterMetricFamily(
        "svcdns_dns_search_path_misses",
        "NXDOMAIN for <name>.<namespace>.svc.<zone> asked by a pod of that namespace: search-path expansions that missed.",
        labels=["namespace"],
    )
    for namespace, per in [(UNKNOWN_NAMESPACE, handler.unknown), *sorted(list(handler.namespaces.items()))]:
        rcodes = list(per.rcodes)
        requests.add_metric([namespace], sum(rcodes))
        nxdomain.add_metric([namespace], rcodes[3])
        servfail.add_metric([namespace], rcodes[2])
        if namespace is not UNKNOWN_NAMESPACE:
            misses.add_metric([namespace], per.search_misses)
    yield from (requests, nxdomain, servfail, misses)


def _histogram(name: str, doc: str, labels: list[str], series) -> HistogramMetricFamily:
    """A histogram family from (label values, Latency) pairs."""
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, lat in series:
        cumulative, buckets = 0, []
        for bound, n in zip((*lat.buckets, float("inf")), lat.counts):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        family.add_metric(values, buckets, lat.sum)
    return family


class RecursionCollector:
    """Forwarding, the cache in front of it, and autopath (CoreDNS's forward, cache and
    autopath metrics, under svcdns_). ``to`` is an upstream address: bounded by config."""

    def __init__(self, recursor: "Recursor | None", autopath: "AutoPath | None"):
        self.recursor, self.autopath = recursor, autopath

    def collect(self):
        if self.autopath is not None:
            yield CounterMetricFamily(
                "svcdns_autopath_success", "Queries answered by walking a pod's search path.", value=self.autopath.hits
            )
        rec = self.recursor
        if rec is None:
            return
        ups = [(group.domain or ".", up) for group in rec.groups for up in group.upstreams]
        counters = {
            "svcdns_forward_requests": ("Queries sent to an upstream.", lambda up: up.requests),
            "svcdns_forward_failures": ("Upstream tries that timed out or failed to connect.", lambda up: up.failures),
            "svcdns_forward_tcp_retries": ("Truncated upstream answers asked again over TCP.", lambda up: up.tcp_retries),
        }
        for name, (doc, value) in counters.items():
            family = CounterMetricFamily(name, doc, labels=["to", "domain"])
            for domain, up in ups:
                family.add_metric([up.name, domain], value(up))
            yield family
        healthy = GaugeMetricFamily(
            "svcdns_forward_healthy", "1 while an upstream is in use, 0 while it is skipped.", labels=["to", "domain"]
        )
        for domain, up in ups:
            healthy.add_metric([up.name, domain], int(up.healthy))
        yield healthy
        yield _histogram(
            "svcdns_forward_request_duration_seconds", "Time an upstream took to answer.", ["to", "domain"],
            [([up.name, domain], up.latency) for domain, up in ups],
        )
        yield CounterMetricFamily(
            "svcdns_recursion_refused", "Non-cluster queries refused (client not in --allow-recursion).", value=rec.refused
        )
        cache = rec.cache
        hits = CounterMetricFamily("svcdns_cache_hits", "Forwarded answers served from the cache.", labels=["type"])
        hits.add_metric(["success"], cache.hits[0])
        hits.add_metric(["denial"], cache.hits[1])
        yield hits
        yield CounterMetricFamily("svcdns_cache_misses", "Forwarded questions not (freshly) cached.", value=cache.misses)
        yield CounterMetricFamily("svcdns_cache_evictions", "Cache entries evicted for want of room.", value=cache.evictions)
        yield CounterMetricFamily(
            "svcdns_cache_served_stale", "Expired answers served because every upstream failed.", value=cache.stale_served
        )
        entries = len(cache.entries) + len(cache.composed)
        yield GaugeMetricFamily("svcdns_cache_entries", "Answers held in the forwarding cache.", value=entries)


class KubeCollector:
    """The live source's health, per kind (namespaced reflectors of one kind summed):
    how stale the state may be, how often watches restart and lists are redone."""

    def __init__(self, source: "KubeSource"):
        self.source = source

    def collect(self):
        age = GaugeMetricFamily(
            "svcdns_source_sync_age_seconds",
            "Seconds since the state of this kind was last known to match the API (0 while its watch is open).",
            labels=["kind"],
        )
        synced = GaugeMetricFamily("svcdns_source_synced", "1 once this kind's first LIST completed.", labels=["kind"])
        objects = GaugeMetricFamily("svcdns_source_objects", "Objects of this kind the API server holds for us.", labels=["kind"])
        restarts = CounterMetricFamily(
            "svcdns_source_watch_restarts", "Watches that ended and were reopened, by reason.", labels=["kind", "reason"]
        )
        relists = CounterMetricFamily("svcdns_source_relists", "LISTs after the first (410 Gone, lost history).", labels=["kind"])
        errors = CounterMetricFamily("svcdns_source_api_errors", "Failed LIST/WATCH requests, each followed by a backoff.", labels=["kind"])
        by_kind: dict[str, list] = {}
        for r in self.source.reflectors:
            by_kind.setdefault(r.kind, []).append(r)
        for kind, group in sorted(by_kind.items()):
            age.add_metric([kind], max(r.stats.sync_age() for r in group))
            synced.add_metric([kind], int(all(r.stats.synced for r in group)))
            objects.add_metric([kind], sum(len(r.known) for r in group))
            reasons: dict[str, int] = {}
            for r in group:
                for reason, n in r.stats.restarts.items():
                    reasons[reason] = reasons.get(reason, 0) + n
            for reason, n in sorted(reasons.items()):
                restarts.add_metric([kind, reason], n)
            relists.add_metric([kind], sum(r.stats.relists for r in group))
            errors.add_metric([kind], sum(r.stats.api_errors for r in group))
        yield from (age, synced, objects, restarts, relists, errors)
