"""``svcdns proxy``: source -> cluster state -> proxier -> backend, in one process per node.

``--dry-run`` prints what a first sync would apply and exits; ``--once`` applies it and
exits; otherwise the proxy follows changes (bounded by ``--min-sync-period``), resyncs
periodically, and serves /health (503 once a requested sync is overdue), /ready (200
after the first successful sync) and /metrics on ``--health``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from ..config import ConfigError, ProxyConfig
from ..http import HealthServer
from ..metrics import Metrics
from ..sources.manifests import ManifestSource
from ..store import ClusterState
from .proxier import Backend, Proxier, ProxyMetrics
from .runner import SyncRunner

log = logging.getLogger(__name__)

LIVE_SOURCE_MISSING = (
    "the live API source (--kubeconfig / in-cluster) is not available in this build yet; "
    "give the cluster state with --manifests PATH"
)


def make_backend(config: ProxyConfig) -> tuple[Backend, str]:
    """The backend for ``--mode``, and a note when ipvs had to fall back to iptables."""
    from .backends.iptables import IptablesBackend

    if config.mode == "iptables":
        return IptablesBackend(), ""
    if config.mode == "nftables":
        from .backends.nftables import NftablesBackend

        return NftablesBackend(), ""
    if config.mode == "userspace":
        from .backends.userspace import UserspaceBackend

        return UserspaceBackend(config.scheduler), ""
    from .backends.ipvs import IpvsBackend, ipvs_available

    ok, why = ipvs_available()
    if ok:
        return IpvsBackend(config.scheduler), ""
    return IptablesBackend(), f"IPVS is not available in this kernel ({why}); running in iptables mode instead, as kube-proxy does"


def check(config: ProxyConfig) -> None:
    """Flag combinations that cannot work (raises ConfigError naming the flag)."""
    if config.kubeconfig is not None or not config.manifests:
        raise ConfigError(LIVE_SOURCE_MISSING)
    if config.once and config.mode == "userspace" and not config.dry_run:
        raise ConfigError("--once: the userspace proxy carries the connections itself and must keep running; use --dry-run to see its rules")


class ProxyServer:
    """One node's proxy. ``await start()`` loads and syncs; ``await close()`` stops."""

    def __init__(self, config: ProxyConfig):
        self.config = config
        self.metrics = Metrics()
        self.state = ClusterState(derive_endpoints=True, implicit_namespaces=True)
        self.source = ManifestSource(
            list(config.manifests), self.state, interval=config.poll_interval,
            on_error=lambda e: self.metrics.source_errors.labels("manifests").inc(),
        )
        self.backend, self.fallback = make_backend(config)
        self.proxier = Proxier(self.state, self.backend, config.node_name, config.cluster_cidrs, ProxyMetrics(self.metrics.registry))
        self.proxier.resync_period = config.sync_period
        self.runner = SyncRunner(
            self.proxier.sync, min_interval=config.min_sync_period, max_interval=config.sync_period, retry_interval=min(config.sync_period, 5.0),
        )
        self.proxier.on_pending = self.runner.request
        self.health = (
            HealthServer(*config.health, ready=self.ready, registry=self.metrics.registry, healthy=self.healthy) if config.health else None
        )
        self._tasks: list[asyncio.Task] = []

    def ready(self) -> bool:
        return self.runner.last_success > 0

    def healthy(self) -> bool:
        return self.runner.healthy(grace=max(2 * self.config.sync_period, 60.0))

    def load(self) -> None:
        if self.fallback:
            log.warning("%s", self.fallback)
        self.source.load()
        log.info("%s mode on node %s: %d services loaded", self.backend.mode, self.config.node_name, len(self.state.services))

    async def start(self) -> None:
        if self.health:
            await self.health.start()
        self.load()
        await self.runner.run_once()
        self._tasks = [asyncio.ensure_future(self.runner.loop()), asyncio.ensure_future(self.source.run())]

    async def close(self) -> None:
        self.runner.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        result = self.backend.close()
        if asyncio.iscoroutine(result):
            await result
        if self.health:
            await self.health.close()


async def _serve(server: ProxyServer) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except OSError as e:
        log.error("cannot start: %s", e)
        await server.close()
        return 1
    await stop.wait()
    log.info("shutting down")
    await server.close()
    return 0


async def _once(server: ProxyServer) -> int:
    server.load()
    ok = await server.proxier.sync()
    return 0 if ok else 1


def run(config: ProxyConfig) -> int:
    check(config)
    server = ProxyServer(config)
    if config.dry_run:
        server.load()
        if server.fallback:
            print(f"svcdns proxy: {server.fallback}; the rules below are the iptables-restore input", file=sys.stderr)
        if config.mode == "userspace":
            print("# proxy ports are chosen at random when the listeners open; shown here as 0")
        sys.stdout.write(server.proxier.render())
        return 0
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    return asyncio.run(_once(server) if config.once else _serve(server))
