"""The live cluster as a source: reflectors for every kind svcdns needs, feeding one
ClusterState.

    Namespaces       always (NODATA vs NXDOMAIN needs to know which namespaces exist)
    Services         with --labels as their label selector
    EndpointSlices   discovery.k8s.io/v1, same label selector (slices carry their
                     service's labels)
    Endpoints        only where no slice stands for them (see sources.legacy)
    Pods             only when a consumer needs them (--pods verified, ...)
    Nodes            only when a consumer needs them (the proxy's topology)

With --namespaces, each namespaced kind gets one reflector per namespace.

The state stays unsynced, and receives no commit, until every reflector has finished
its first LIST: until then the DNS server answers cluster names with SERVFAIL (never a
premature NXDOMAIN) and /ready says 503. After that every batch of watch events is
committed at once, so an answer changes within milliseconds of the event arriving, and
the compiler recompiles only the services the batch touched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .. import heap
from ..config import WatchTiming
from ..model import Record
from ..store import ClusterState
from .legacy import LegacyEndpoints
from .reflector import KIND_APIS, Outage, Reflector, plural

if TYPE_CHECKING:
    from .kubelib import ApiClient

log = logging.getLogger(__name__)

Key = tuple[str, str]
SELECTED_KINDS = ("Service", "EndpointSlice", "Endpoints")  # --labels applies to these


@dataclass(frozen=True)
class KubeOptions:
    """What to watch. ``pods``/``nodes``: whether some consumer needs that kind."""

    namespaces: tuple[str, ...] = ()  # () = every namespace
    labels: str | None = None  # label selector for Services and their endpoints
    pods: bool = False
    nodes: bool = False
    endpoints: bool = True  # legacy Endpoints where no EndpointSlice stands for them
    namespace_objects: bool = True  # DNS needs them (NXDOMAIN vs NODATA); the proxy does not


class StateSink:
    """Writes one kind's records into the state."""

    def __init__(self, kind: str, state: ClusterState, flush: Callable[[], None]):
        self.kind, self.state, self.flush = kind, state, flush

    def wants(self, key: Key) -> bool:
        return True

    def upsert(self, rec: Record) -> None:
        self.state.apply(rec)

    def skip(self, key: Key) -> None:
        pass

    def delete(self, key: Key) -> None:
        self.state.remove(self.kind, key)


class NamespaceSink(StateSink):
    """With --namespaces, other namespaces do not exist as far as DNS is concerned."""

    def __init__(self, state: ClusterState, flush: Callable[[], None], only: tuple[str, ...]):
        super().__init__("Namespace", state, flush)
        self.only = frozenset(only)

    def wants(self, key: Key) -> bool:
        return not self.only or key[1] in self.only


class SliceSink(StateSink):
    """EndpointSlices; tells the legacy Endpoints sink which services gained or lost slices."""

    def __init__(self, state: ClusterState, flush: Callable[[], None], legacy: LegacyEndpoints | None):
        super().__init__("EndpointSlice", state, flush)
        self.legacy = legacy

    def upsert(self, rec: Record) -> None:
        old = self.state.slices.get(rec.key)
        self.state.apply(rec)
        if self.legacy is not None:
            for sl in (old, rec):
                if sl is not None and sl.service:
                    self.legacy.slices_changed((sl.namespace, sl.service))

    def delete(self, key: Key) -> None:
        old = self.state.slices.get(key)
        self.state.remove(self.kind, key)
        if self.legacy is not None and old is not None and old.service:
            self.legacy.slices_changed((old.namespace, old.service))


class KubeSource:
    """Runs the reflectors; ``synced`` is set after the first full sync of every kind."""

    def __init__(
        self,
        api_client: ApiClient,
        state: ClusterState,
        options: KubeOptions = KubeOptions(),
        timing: WatchTiming = WatchTiming(),
        *,
        on_reject: Callable[[], None] | None = None,
    ):
        self.api_client, self.state, self.options, self.timing = api_client, state, options, timing
        self.outage = Outage()
        self.synced = asyncio.Event()
        self.legacy = LegacyEndpoints(state, self.flush, delay=timing.refetch_delay) if options.endpoints else None
        self.reflectors: list[Reflector] = []
        self._unsynced: set[Reflector] = set()
        self._slices_synced = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._started = time.monotonic()
        self._on_reject = on_reject
        self._settled = False  # heap.settle() ran after the first full sync
        for kind in self.kinds():
            for ns in (options.namespaces or (None,)) if KIND_APIS[kind].namespaced else (None,):
                self._add(kind, ns)
        if self.legacy is not None:
            by_ns = {r.namespace: r for r in self.reflectors if r.kind == "Endpoints"}
            self.legacy.fetch = next(iter(by_ns.values())).fetch
            self.legacy.forget = lambda key: (by_ns.get(key[0]) or by_ns.get(None)).known.pop(key, None)

    def kinds(self) -> list[str]:
        kinds = ["Namespace", "Service", "EndpointSlice"] if self.options.namespace_objects else ["Service", "EndpointSlice"]
        if self.options.endpoints:
            kinds.append("Endpoints")
        if self.options.pods:
            kinds.append("Pod")
        if self.options.nodes:
            kinds.append("Node")
        return kinds

    def _add(self, kind: str, namespace: str | None) -> None:
        if kind == "Namespace":
            sink = NamespaceSink(self.state, self.flush, self.options.namespaces)
        elif kind == "EndpointSlice":
            sink = SliceSink(self.state, self.flush, self.legacy)
        elif kind == "Endpoints":
            sink = self.legacy
        else:
            sink = StateSink(kind, self.state, self.flush)
        reflector = Reflector(
            self.api_client,
            kind,
            sink,
            timing=self.timing,
            outage=self.outage,
            namespace=namespace,
            label_selector=self.options.labels if kind in SELECTED_KINDS else None,
            optional=kind == "EndpointSlice",
            on_synced=self._on_synced,
            on_reject=self._on_reject,
        )
        self.reflectors.append(reflector)
        self._unsynced.add(reflector)

    # --- running ----------------------------------------------------------------------

    async def run(self) -> None:
        """Run every reflector until cancelled. Endpoints start once the slices are
        known, so that shadowed Endpoints are never parsed in the first place."""
        log.info("watching %s%s", ", ".join(plural(k) for k in self.kinds()),
                 f" in namespaces {', '.join(self.options.namespaces)}" if self.options.namespaces else "")
        for r in self.reflectors:
            self._tasks.append(asyncio.ensure_future(self._run(r)))
        try:
            await asyncio.gather(*self._tasks)
        finally:
            for task in self._tasks:
                task.cancel()
            if self.legacy is not None:
                self.legacy.close()

    async def _run(self, reflector: Reflector) -> None:
        if reflector.kind == "Endpoints":
            await self._slices_synced.wait()
        await reflector.run()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.legacy is not None:
            self.legacy.close()
        await self.api_client.close()
        if self._settled:
            heap.unsettle()

    def flush(self) -> None:
        """A batch is complete. Before the first full sync nothing is committed: the DNS
        tables stay empty and cluster names get SERVFAIL."""
        if self.state.synced:
            self.state.commit()

    def _on_synced(self, reflector: Reflector) -> None:
        self._unsynced.discard(reflector)
        if not any(r.kind == "EndpointSlice" for r in self._unsynced):
            self._slices_synced.set()
        if self._unsynced or self.state.synced:
            return
        self.state.mark_synced()
        self.state.commit()
        heap.settle()
        self._settled = True
        self.synced.set()
        log.info(
            "in sync with the Kubernetes API after %.2fs: %d namespaces, %d services, %d EndpointSlices, %d Endpoints, %d pods",
            time.monotonic() - self._started, len(self.state.namespaces), len(self.state.services),
            len(self.state.slices), len(self.state.endpoints), len(self.state.pods),
        )
