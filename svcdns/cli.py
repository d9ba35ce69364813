"""Command line: ``svcdns serve`` (more commands plug in as subparsers).

Flag names are a contract other tools depend on: extend, never rename.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from .config import PROXY_MODES, PROXY_SCHEDULERS, ConfigError, ProxyConfig, ServeConfig, parse_cidrs, parse_hostport

log = logging.getLogger("svcdns")


def _zone(value: str) -> str:
    zone = value.strip().strip(".").lower()
    if not zone or any(not label or len(label) > 63 for label in zone.split(".")):
        raise argparse.ArgumentTypeError(f"{value!r} is not a DNS zone")
    return zone


def _ttl(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 3600:
        raise argparse.ArgumentTypeError(f"{value!r} is not a TTL in seconds (0-3600)")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="svcdns", description="Service discovery for Kubernetes: cluster DNS, service proxy, service env vars.")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="log verbosity (default info)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="authoritative cluster DNS", description="Serve the cluster zone from manifests (or the embedded example).")
    serve.add_argument("--manifests", action="append", default=[], metavar="PATH", help="manifest file or directory (repeatable); re-read when it changes")
    serve.add_argument("--listen", default="0.0.0.0:53", metavar="HOST:PORT", help="UDP and TCP address (default 0.0.0.0:53)")
    serve.add_argument("--zone", action="append", type=_zone, metavar="ZONE", help="cluster zone (repeatable; default cluster.local)")
    serve.add_argument("--ttl", type=_ttl, default=5, metavar="SECONDS", help="TTL of cluster records (default 5)")
    serve.add_argument("--health", metavar="HOST:PORT", help="serve /health, /ready and /metrics here")
    serve.add_argument("--pods", choices=["insecure", "verified", "disabled"], default="insecure", help="pod records a-b-c-d.ns.pod.ZONE (CoreDNS semantics; default insecure)")
    serve.add_argument("--endpoint-pod-names", action="store_true", help="name endpoints without a hostname after their pod")
    serve.set_defaults(run=run_serve)
    add_proxy_parser(sub)
    return parser


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds (0-3600)")
    return seconds


def add_proxy_parser(sub) -> None:
    proxy = sub.add_parser(
        "proxy", help="service proxy (kube-proxy's job)",
        description="Balance Service virtual IPs over their endpoints on this node, in userspace, iptables, ipvs or nftables mode.",
    )
    proxy.add_argument("--mode", required=True, choices=PROXY_MODES, help="how to proxy (ipvs falls back to iptables without kernel IPVS)")
    proxy.add_argument("--manifests", action="append", default=[], metavar="PATH", help="manifest file or directory (repeatable); re-read when it changes")
    proxy.add_argument("--kubeconfig", metavar="PATH", help="watch the API server of this kubeconfig (default without --manifests: in-cluster)")
    proxy.add_argument("--node-name", required=True, metavar="NODE", help="this node's name (Local traffic policies, topology hints)")
    proxy.add_argument("--cluster-cidr", metavar="CIDR", help="pod network; traffic from outside it to a service is masqueraded")
    proxy.add_argument("--scheduler", choices=PROXY_SCHEDULERS, default="rr", help="backend choice in userspace and ipvs modes (IPVS semantics; default rr)")
    proxy.add_argument("--once", action="store_true", help="sync once and exit")
    proxy.add_argument("--dry-run", action="store_true", help="print what would be applied and exit")
    proxy.add_argument("--min-sync-period", type=_seconds, default=1.0, metavar="S", help="at most one sync per S seconds; changes in between are batched (default 1)")
    proxy.add_argument("--health", metavar="HOST:PORT", help="serve /health, /ready and /metrics here")
    proxy.set_defaults(run=run_proxy)


def proxy_config(args: argparse.Namespace) -> ProxyConfig:
    return ProxyConfig(
        mode=args.mode,
        node_name=args.node_name,
        manifests=tuple(args.manifests),
        kubeconfig=args.kubeconfig,
        cluster_cidrs=parse_cidrs(args.cluster_cidr, "--cluster-cidr") if args.cluster_cidr else (),
        scheduler=args.scheduler,
        once=args.once,
        dry_run=args.dry_run,
        min_sync_period=args.min_sync_period,
        health=parse_hostport(args.health, "--health") if args.health else None,
    )


def run_proxy(args: argparse.Namespace) -> int:
    from .proxy.command import run

    return run(proxy_config(args))


def serve_config(args: argparse.Namespace) -> ServeConfig:
    return ServeConfig(
        manifests=tuple(args.manifests),
        listen=parse_hostport(args.listen, "--listen"),
        zones=tuple(dict.fromkeys(args.zone or ["cluster.local"])),
        ttl=args.ttl,
        health=parse_hostport(args.health, "--health") if args.health else None,
        pods=args.pods,
        endpoint_pod_names=args.endpoint_pod_names,
    )


def run_serve(args: argparse.Namespace) -> int:
    from .serve import Server

    config = serve_config(args)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio still works
        log.info("uvloop not available; using the default event loop")
    server = Server(config)
    try:
        asyncio.run(server.serve_forever())
    except OSError as e:
        log.error("cannot serve on %s:%d: %s", *config.listen, e.strerror or e)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.run(args)
    except ConfigError as e:
        parser.error(str(e))
    except KeyboardInterrupt:
        return 130
    return 0
