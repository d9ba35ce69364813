"""``svcdns proxy``: source -> cluster state -> proxier -> backend, in one process per node.

``--dry-run`` prints what a first sync would apply and exits; ``--once`` applies it and
exits; otherwise the proxy follows changes (bounded by ``--min-sync-period``), resyncs
periodically, and serves /health (503 once a requested sync is overdue), /ready (200
after the first successful sync) and /metrics on ``--health``.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import sys

from ..config import ConfigError, ProxyConfig
from ..http import HealthServer
from ..ipam import ClusterIPAllocator
from ..metrics import Metrics
from ..sources.manifests import ManifestSource
from ..store import ClusterState
from .proxier import Backend, Proxier, ProxyMetrics
from .runner import SyncRunner

log = logging.getLogger(__name__)

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


# The kernel tools each mode drives, with their Debian packages: checked at start, so a
# node without them gets one clear error instead of a sync failing every few seconds.
TOOLS = {
    "iptables": (("iptables-restore", "iptables"), ("ipset", "ipset")),
    "ipvs": (("iptables-restore", "iptables"), ("ipset", "ipset")),  # and ipvsadm, unless it falls back to iptables
    "nftables": (("nft", "nftables"),),
    "userspace": (("iptables-restore", "iptables"),),
}


def check(config: ProxyConfig) -> None:
    """Flag combinations that cannot work and missing tools (raises ConfigError)."""
    if config.once and config.mode == "userspace" and not config.dry_run:
        raise ConfigError("--once: the userspace proxy carries the connections itself and must keep running; use --dry-run to see its rules")
    if config.dry_run:
        return
    missing = [(tool, package) for tool, package in TOOLS[config.mode] if shutil.which(tool) is None]
    if missing:
        raise ConfigError(
            f"--mode {config.mode} needs {', '.join(t for t, _ in missing)} on PATH "
            f"(Debian/Ubuntu: apt-get install {' '.join(sorted({p for _, p in missing}))})"
        )


class ProxyServer:
    """One node's proxy. ``await start()`` loads and syncs; ``await close()`` stops."""

    def __init__(self, config: ProxyConfig):
        self.config = config
        self.metrics = Metrics()
        self.live = not config.manifests  # --kubeconfig, or in-cluster
        if self.live:  # the API's controllers wrote the endpoints: nothing to derive
            self.state = ClusterState()
            self.source = None
        else:
            self.state = ClusterState(derive_endpoints=True, implicit_namespaces=True)
            on_error = lambda e: self.metrics.source_errors.labels("manifests").inc()  # noqa: E731
            self.source = ManifestSource(
                list(config.manifests), self.state, interval=config.poll_interval, on_error=on_error,
                services_hook=ClusterIPAllocator(config.service_cidrs, on_error=on_error) if config.service_cidrs else None,
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

    async def load(self) -> None:
        """The first full state: the manifests read, or every watched kind listed (as
        kube-proxy, nothing is synced before Services and EndpointSlices are known)."""
        if self.fallback:
            log.warning("%s", self.fallback)
        if self.live:
            await self._start_kube()
            await self.source.synced.wait()
        else:
            self.source.load()
        log.info("%s mode on node %s: %d services loaded", self.backend.mode, self.config.node_name, len(self.state.services))

    async def _start_kube(self) -> None:
        from ..sources.kube import KubeOptions, KubeSource
        from ..sources.kubeauth import api_client

        cfg = self.config
        api = await api_client(cfg.kubeconfig, cfg.serviceaccount_dir)
        options = KubeOptions(nodes=True, endpoints=False, namespace_objects=False)  # what the proxy reads (see deploy/proxy/rbac.yaml)
        self.source = KubeSource(api, self.state, options, cfg.watch, on_reject=self.metrics.source_errors.labels("kube").inc)
        self._tasks.append(asyncio.ensure_future(self.source.run()))

    async def start(self) -> None:
        if self.health:
            await self.health.start()
        await self.load()
        await self.runner.run_once()
        self._tasks.append(asyncio.ensure_future(self.runner.loop()))
        if not self.live:
            self._tasks.append(asyncio.ensure_future(self.source.run()))

    async def close(self) -> None:
        self.runner.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.live and self.source is not None:
            await self.source.close()
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
    try:
        await server.load()
        ok = await server.proxier.sync()
    finally:
        await server.close()
    return 0 if ok else 1


async def _dry_run(server: ProxyServer) -> str:
    try:
        await server.load()
        return server.proxier.render()
    finally:
        await server.close()


def run(config: ProxyConfig) -> int:
    check(config)
    server = ProxyServer(config)
    if config.dry_run:
        rules = asyncio.run(_dry_run(server))
        if server.fallback:
            print(f"svcdns proxy: {server.fallback}; the rules below are the ipset and iptables-restore input", file=sys.stderr)
        if config.mode == "userspace":
            print("# proxy ports are chosen at random when the listeners open; shown here as 0")
        sys.stdout.write(rules)
        return 0
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    return asyncio.run(_once(server) if config.once else _serve(server))
