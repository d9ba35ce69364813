"""Glue between the cluster state and a backend: trackers accumulate, one method syncs.

The cluster state tells us which services a commit touched; for each, the proxy view
(service ports, endpoints) is recomputed and handed to the change trackers. A sync
checks the trackers out, folds the changes into the flat maps the backends render from,
and asks the backend to apply, passing the set of changed services (or None for a full
sync: the first one, any after a failure, and after this node's zone changed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..store import ClusterState, Delta
from .model import Key, ProxyView, service_endpoints, service_ports
from .tracker import EndpointsChangeTracker, ServiceChangeTracker, apply_changes

log = logging.getLogger(__name__)


class Backend(Protocol):
    mode: str
    last_input_bytes: int

    def render_all(self, view: ProxyView) -> str: ...

    def sync(self, view: ProxyView, changed: set[Key] | None) -> object: ...

    def close(self) -> object: ...


class ProxyMetrics:
    """``svcdns_proxy_*`` metrics (kube-proxy's sync_proxy_rules_* equivalents)."""

    def __init__(self, registry: CollectorRegistry):
        self.sync_duration = Histogram(
            "svcdns_proxy_sync_duration_seconds", "Time to render and apply the rules.", ["mode", "kind"], registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.sync_errors = Counter("svcdns_proxy_sync_errors", "Syncs the kernel tools refused.", ["mode"], registry=registry)
        self.last_sync = Gauge("svcdns_proxy_last_sync_timestamp_seconds", "When the rules were last applied.", registry=registry)
        self.service_ports = Gauge("svcdns_proxy_service_ports", "Service ports programmed.", registry=registry)
        self.pending = Gauge("svcdns_proxy_changes_pending", "Services changed since the last sync.", registry=registry)
        self.input_bytes = Gauge("svcdns_proxy_restore_input_bytes", "Size of the last rules input.", registry=registry)


FULL_SYNC_PERIOD = 3600.0  # kube-proxy's FullSyncPeriod: rewrite everything at least hourly


class Proxier:
    """Feeds ``backend`` from ``state``. ``sync()`` is the one function that applies."""

    resync_period = 30.0  # an idle proxy still re-applies (repairing flushed rules) this often

    def __init__(self, state: ClusterState, backend: Backend, node_name: str, cluster_cidrs: tuple[str, ...] = (), metrics: ProxyMetrics | None = None):
        self.state = state
        self.backend = backend
        self.node_name = node_name
        self.view = ProxyView({}, {}, node_name, "", cluster_cidrs)
        self.services = ServiceChangeTracker()
        self.endpoints = EndpointsChangeTracker()
        self.metrics = metrics
        self.need_full_sync = True
        self.last_apply = self.last_full = 0.0  # monotonic
        self.on_pending = lambda: None  # set by the runner: ask for a sync
        self._lock = asyncio.Lock()
        state.subscribe(self.on_change)
        if state.synced:
            self.on_change(Delta(full=True))

    def on_change(self, delta: Delta) -> None:
        """A ClusterState commit: recompute the proxy view of every touched service."""
        keys = set(self.state.services) | set(self.services.synced) | set(self.endpoints.synced) if delta.full else delta.services
        if delta.nodes or delta.full:
            node = self.state.nodes.get(("", self.node_name))
            zone = node.zone if node else ""
            if zone != self.view.node_zone:
                self.view.node_zone = zone
                self.need_full_sync = True  # topology hints select other endpoints everywhere
        for key in keys:
            self.services.update(key, service_ports(self.state.services.get(key)))
            self.endpoints.update(key, service_endpoints(key, self.state.service_slices(key), self.node_name))
        if self.metrics:
            self.metrics.pending.set(len(self.services) + len(self.endpoints))
        if self.state.synced and (len(self.services) or len(self.endpoints) or self.need_full_sync):
            self.on_pending()

    def checkout(self) -> set[Key] | None:
        """Fold pending changes into the view. Returns the changed services, or None
        when the next apply must be a full sync."""
        service_changes = self.services.checkout()
        endpoint_changes = self.endpoints.checkout()
        apply_changes(self.view.services, service_changes)
        if service_changes:
            self.view.services_changed()
        apply_changes(self.view.endpoints, endpoint_changes)
        changed = set(service_changes) | set(endpoint_changes)
        if self.need_full_sync or time.monotonic() - self.last_full > FULL_SYNC_PERIOD:
            return None
        return changed

    async def sync(self) -> bool:
        """Apply the current view; True on success. Nothing is applied before the
        source's first full load (kube-proxy waits for Services and EndpointSlices)."""
        if not self.state.synced:
            log.debug("not syncing until the cluster state has been loaded")
            return True
        async with self._lock:
            changed = self.checkout()
            if changed is not None and not changed and time.monotonic() - self.last_apply < self.resync_period:
                return True  # nothing changed and the rules were applied recently
            kind = "full" if changed is None else "partial"
            started = time.perf_counter()
            try:
                if getattr(self.backend, "blocking", False):  # subprocesses: keep the loop free
                    await asyncio.to_thread(self.backend.sync, self.view, changed)
                else:
                    await self.backend.sync(self.view, changed)
            except Exception as e:
                self.need_full_sync = True  # the changes are consumed: only a full sync repairs
                if self.metrics:
                    self.metrics.sync_errors.labels(self.backend.mode).inc()
                log.error("%s sync failed: %s", self.backend.mode, e)
                return False
            elapsed = time.perf_counter() - started
            self.need_full_sync = False
            self.last_apply = time.monotonic()
            if changed is None:
                self.last_full = self.last_apply
            if self.metrics:
                self.metrics.sync_duration.labels(self.backend.mode, kind).observe(elapsed)
                self.metrics.last_sync.set_to_current_time()
                self.metrics.service_ports.set(len(self.view.services))
                self.metrics.pending.set(0)
                self.metrics.input_bytes.set(self.backend.last_input_bytes)
            log.info(
                "%s %s sync: %d service ports, %s services changed, %d bytes applied in %.3f s",
                self.backend.mode, kind, len(self.view.services), "all" if changed is None else len(changed), self.backend.last_input_bytes, elapsed,
            )
            return True

    def render(self) -> str:
        """What a full sync would apply (``--dry-run``)."""
        self.checkout()
        return self.backend.render_all(self.view)
