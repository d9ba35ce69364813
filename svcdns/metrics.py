"""Prometheus metrics: one registry, names ``svcdns_<subsystem>_<name>`` as CoreDNS does.

DNS counters live as plain integers in the handler (the hot path cannot afford a labelled
prometheus call per query); a collector turns them into samples at scrape time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

if TYPE_CHECKING:  # pragma: no cover
    from .dns.compiler import AnswerTable
    from .dns.handler import DnsHandler
    from .dns.server import Latency
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
        for (qtype, rcode), n in list(self.handler.counts.items()):
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
