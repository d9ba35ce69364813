"""``svcdns serve``: wires source -> cluster state -> compiled answers -> DNS server.

Lifecycle like uvicorn's: bind (fail fast), load, serve. On SIGTERM, CoreDNS's lameduck:
/ready turns 503 at once (load balancers and kube-proxy stop sending new clients), the
server keeps answering for ``--lameduck`` seconds, then closes its listeners, answers
what already arrived and waits for pending answers. SIGINT (Ctrl-C) skips the lameduck
period; a second signal cuts it short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from importlib import resources
from typing import Mapping

from . import heap
from .config import ServeConfig
from .dns.acl import AccessList
from .dns.autopath import AutoPath
from .dns.cache import ForwardCache
from .dns.chaos import ExplainResponder
from .dns.compiler import AnswerTable
from .dns.handler import DnsHandler
from .dns.naive import NaiveHandler
from .dns.overload import RateLimiter
from .dns.records import Resolver, ResolverConfig
from .dns.recursion import Recursor
from .dns.server import DnsServer
from .dns.tcp import TcpLimits
from .dns.upstream import UpstreamGroup
from .http import HealthServer
from .ipam import ClusterIPAllocator
from .metrics import Metrics
from .sources.kubeauth import in_cluster
from .sources.manifests import ManifestSource
from .store import ClusterState

log = logging.getLogger(__name__)


def example_manifests() -> str:
    """Path of the embedded example cluster (built from the project's reference notes)."""
    return str(resources.files("svcdns") / "examples" / "cluster.yaml")


def choose_source(config: ServeConfig, environ: Mapping[str, str] = os.environ) -> str:
    """``manifests`` when --manifests is given; else ``kube`` with --kubeconfig or inside
    a pod (API address in the environment and a service account token mounted); else
    ``example``, the embedded example cluster."""
    if config.manifests:
        return "manifests"
    if config.kubeconfig or in_cluster(config.serviceaccount_dir, environ):
        return "kube"
    return "example"


class Server:
    """One svcdns DNS server. ``await start()`` binds and loads; ``await close()`` stops."""

    def __init__(self, config: ServeConfig, *, clock=time.monotonic, own_process: bool = False):
        # clock: what the forwarding cache ages entries by (tests pass one they control).
        # own_process: this server is the whole process (`svcdns serve`), so it may tune
        # the process-wide garbage collector around its first load (see load_frozen).
        self.config = config
        self.own_process = own_process
        self.metrics = Metrics()
        self.source_kind = choose_source(config)
        if self.source_kind == "kube":
            # A real cluster has an EndpointSlice controller and Namespace objects.
            self.state = ClusterState(derive_endpoints=False, implicit_namespaces=False)
        else:
            self.state = ClusterState(derive_endpoints=True, implicit_namespaces=True)
        listen_host = config.listen[0]
        ns_fallback = (listen_host,) if listen_host not in ("0.0.0.0", "::") else ("127.0.0.1",)
        self.resolver = Resolver(
            self.state,
            ResolverConfig(
                zones=config.zones,
                ttl=config.ttl,
                pod_mode=config.pods,
                endpoint_pod_names=config.endpoint_pod_names,
                ns_addresses=ns_fallback,
                serial=int(time.time()),
            ),
        )
        self.recursor = build_recursor(config, self.state, clock)
        self.table = AnswerTable(self.state, self.resolver, recursion_available=self.recursor is not None)
        self.autopath = AutoPath(self.resolver, self.recursor, config.search) if config.autopath else None
        self.handler = DnsHandler(
            self.state,
            self.resolver,
            self.table,
            recursor=self.recursor,
            autopath=self.autopath,
            allow_transfer=AccessList(config.allow_transfer) if config.allow_transfer else None,
            limiter=RateLimiter(config.overload.rate_limit) if config.overload.rate_limit else None,
            overload_action=config.overload.action,
            max_inflight=config.overload.max_inflight,
            explainer=ExplainResponder(
                self.resolver, self.recursor, AccessList(config.allow_explain), autopath=config.autopath, host_search=config.search
            ),
            log_queries=config.log_queries,
        )
        if config.naive:
            self.handler = NaiveHandler(self.state, self.resolver)
        over = config.overload
        self.dns = DnsServer(
            self.handler,
            *config.listen,
            udp_io=os.environ.get("SVCDNS_UDP_IO", "mmsg"),
            tcp_limits=TcpLimits(over.tcp_idle_timeout, over.tcp_max_connections, over.tcp_max_queries),
            reuse_port=over.reuse_port,
        )
        self.metrics.add_dns(self.handler, self.dns.latency, self.table, self.state)
        if not config.naive:
            self.metrics.add_overload(self.handler, self.dns.tcp)
        self.metrics.add_recursion(self.recursor, self.autopath)
        self.source = None
        if self.source_kind != "kube":
            paths = list(config.manifests) or [example_manifests()]
            self.source = ManifestSource(
                paths,
                self.state,
                interval=config.poll_interval,
                on_error=lambda e: self.metrics.source_errors.labels("manifests").inc(),
                services_hook=ClusterIPAllocator(config.service_cidrs, on_error=lambda e: self.metrics.source_errors.labels("manifests").inc())
                if config.service_cidrs
                else None,
            )
        self.health = HealthServer(*config.health, ready=self.ready, registry=self.metrics.registry) if config.health else None
        # --metrics: a second listener for Prometheus on its conventional port (9153)
        self.metrics_http = HealthServer(*config.metrics, ready=self.ready, registry=self.metrics.registry) if config.metrics else None
        self.draining = False
        self._tasks: list[asyncio.Task] = []

    def ready(self) -> bool:
        return self.state.synced and not self.draining

    async def start(self) -> None:
        """Bind, check for a forwarding loop (raises ForwardingLoop), load, serve."""
        await self.dns.start()
        if self.recursor is not None:
            try:
                await self.recursor.check_loops(self.config.upstream_timeout)
            except BaseException:
                self.recursor.close()
                await self.dns.close()
                raise
        if self.health:
            await self.health.start()
        if self.metrics_http:
            await self.metrics_http.start()
        if self.source_kind == "kube":
            await self._start_kube()
            return
        if self.config.kubeconfig:
            log.warning("--manifests given: serving them, not the cluster of --kubeconfig %s", self.config.kubeconfig)
        if self.config.namespaces or self.config.labels:
            log.warning("--namespaces and --labels apply to the live API only; the manifests are served whole")
        if self.source_kind == "example":
            log.warning("no --manifests given and no cluster configured: serving the embedded example cluster (%s)", example_manifests())
        with load_frozen() if self.own_process else contextlib.nullcontext():
            self.source.load()
        self._tasks.append(asyncio.ensure_future(self.source.run()))
        log.info(
            "serving %s on %s:%d (udp+tcp): %d services, %d precompiled answers",
            ", ".join(self.config.zones), self.dns.host, self.dns.port, len(self.state.services), len(self.table.answers),
        )
        if self.recursor is not None:
            for group in self.recursor.groups:
                log.info("forwarding %s to %s", group.domain or "other names", ", ".join(up.name for up in group.upstreams))

    async def _start_kube(self) -> None:
        """Live API: answers (SERVFAIL for cluster names) and /health start at once;
        /ready follows the first full sync of every watched kind."""
        from .sources.kube import KubeOptions, KubeSource
        from .sources.kubeauth import api_client

        cfg = self.config
        api = await api_client(cfg.kubeconfig, cfg.serviceaccount_dir)
        # Pods cost memory; they are watched when a feature needs them: verified pod
        # records, and autopath (a client's namespace comes from its pod's address).
        options = KubeOptions(namespaces=cfg.namespaces, labels=cfg.labels, pods=cfg.pods == "verified" or self.autopath is not None)
        self.source = KubeSource(api, self.state, options, cfg.watch, on_reject=self.metrics.source_errors.labels("kube").inc)
        self.metrics.add_kube(self.source)
        self._tasks.append(asyncio.ensure_future(self.source.run()))
        log.info("serving %s on %s:%d (udp+tcp); waiting for the first full sync with the Kubernetes API",
                 ", ".join(cfg.zones), self.dns.host, self.dns.port)

    async def close(self, lameduck: float = 0.0, interrupt: asyncio.Event | None = None) -> None:
        """Stop: report not-ready, keep answering ``lameduck`` seconds (cut short when
        ``interrupt`` is set), then close listeners and wait for pending answers (at most
        a forwarded query's budget)."""
        self.draining = True
        if lameduck > 0:
            log.info("lameduck: /ready reports 503; answering for %.1f s more", lameduck)
            try:
                await asyncio.wait_for((interrupt or asyncio.Event()).wait(), lameduck)
            except asyncio.TimeoutError:
                pass
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.source_kind == "kube" and self.source is not None:
            await self.source.close()
        await self.dns.close(grace=self.config.query_timeout)  # pending forwarded answers still need the recursor
        if self.recursor is not None:
            self.recursor.close()
        if self.health:
            await self.health.close()
        if self.metrics_http:
            await self.metrics_http.close()

    async def serve_forever(self) -> None:
        signals: list[int] = []
        stop, again = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(sig: int) -> None:
            signals.append(sig)
            (again if stop.is_set() else stop).set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        await stop.wait()
        lameduck = self.config.overload.lameduck if signals[0] == signal.SIGTERM else 0.0
        log.info("shutting down")
        await self.close(lameduck, again)


@contextlib.contextmanager
def load_frozen():
    """The first load allocates ~1M objects that live as long as the process (records,
    indexes, compiled answers) and form no reference cycles. With the cyclic collector
    on, the allocation count alone triggers ~10 full collections over the growing heap
    during the load (~0.15-0.3 s of a 10,000-service start), and later each full
    collection rescans all of it, holding up answers for ~0.14 s. So the collector
    rests during the load, and what the load built is frozen (``gc.freeze``: never
    scanned again; reference counting still frees records a change replaces). The
    live source does the same around each LIST (svcdns/heap.py)."""
    try:
        with heap.loading():
            yield
    finally:
        heap.settle()


def build_recursor(config: ServeConfig, state: ClusterState, clock) -> Recursor | None:
    """Forwarding, when any upstream is configured: the default group (``.``) plus one
    group per stub domain."""
    groups = [UpstreamGroup(domain, list(servers), config.upstream_timeout) for domain, servers in config.stub_domains]
    if config.upstreams:
        groups.append(UpstreamGroup("", list(config.upstreams), config.upstream_timeout))
    if not groups:
        return None
    cache = ForwardCache(config.cache_size, config.cache_max_ttl, config.serve_stale, clock)
    return Recursor(state, groups, cache, allow=config.allow_recursion, query_timeout=config.query_timeout)
