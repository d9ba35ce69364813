"""``svcdns serve``: wires source -> cluster state -> compiled answers -> DNS server.

Lifecycle like uvicorn's: bind (fail fast), load, serve; on SIGTERM/SIGINT report
not-ready, close listeners and stop.
"""

from __future__ import annotations

import asyncio
import os
import logging
import signal
import time
from importlib import resources

from .config import ServeConfig
from .dns.compiler import AnswerTable
from .dns.handler import DnsHandler
from .dns.records import Resolver, ResolverConfig
from .dns.server import DnsServer
from .http import HealthServer
from .ipam import ClusterIPAllocator
from .metrics import Metrics
from .sources.manifests import ManifestSource
from .store import ClusterState

log = logging.getLogger(__name__)


def example_manifests() -> str:
    """Path of the embedded example cluster (built from the project's reference notes)."""
    return str(resources.files("svcdns") / "examples" / "cluster.yaml")


class Server:
    """One svcdns DNS server. ``await start()`` binds and loads; ``await close()`` stops."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.metrics = Metrics()
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
        self.table = AnswerTable(self.state, self.resolver)
        self.handler = DnsHandler(self.state, self.resolver, self.table)
        self.dns = DnsServer(self.handler, *config.listen, udp_io=os.environ.get("SVCDNS_UDP_IO", "mmsg"))
        self.metrics.add_dns(self.handler, self.dns.latency, self.table, self.state)
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
        self.draining = False
        self._tasks: list[asyncio.Task] = []

    def ready(self) -> bool:
        return self.state.synced and not self.draining

    async def start(self) -> None:
        await self.dns.start()
        if self.health:
            await self.health.start()
        if not self.config.manifests:
            log.warning("no --manifests given and no cluster configured: serving the embedded example cluster (%s)", example_manifests())
        self.source.load()
        self._tasks.append(asyncio.ensure_future(self.source.run()))
        log.info(
            "serving %s on %s:%d (udp+tcp): %d services, %d precompiled answers",
            ", ".join(self.config.zones), self.dns.host, self.dns.port, len(self.state.services), len(self.table.answers),
        )

    async def close(self) -> None:
        self.draining = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.dns.close()
        if self.health:
            await self.health.close()

    async def serve_forever(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        log.info("shutting down")
        await self.close()
