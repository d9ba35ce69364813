"""Command line: ``svcdns serve | env | ipam`` (more commands plug in as subparsers).

Flag names are a contract other tools depend on: extend, never rename.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys

from .config import ConfigError, ServeConfig, parse_hostport
from .env import DEFAULT_WARN_BYTES, FORMATS
from .ipam import RangeError, parse_service_cidrs

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


def _service_cidrs(value: str) -> tuple:
    try:
        return parse_service_cidrs(value)
    except RangeError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _namespace(value: str) -> str:
    if not value or len(value) > 63 or not all(c.isdigit() or "a" <= c <= "z" or c == "-" for c in value) or value[0] == "-" or value[-1] == "-":
        raise argparse.ArgumentTypeError(f"{value!r} is not a namespace name (a DNS label: a-z, 0-9, '-')")
    return value


def _bytes(value: str) -> int:
    units = {"": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2}
    match = re.fullmatch(r"(\d+)\s*([a-zA-Z]*)", value.strip())
    if not match or match[2].lower() not in units:
        raise argparse.ArgumentTypeError(f"{value!r} is not a size (bytes, or with KiB/MiB)")
    return int(match[1]) * units[match[2].lower()]


def add_service_cidr_flag(parser: argparse.ArgumentParser) -> None:
    """``--service-cluster-ip-range`` as serve, env and proxy take it (one parser, one meaning)."""
    parser.add_argument(
        "--service-cluster-ip-range",
        type=_service_cidrs,
        default=(),
        metavar="CIDR[,CIDR]",
        help="allocate ClusterIPs to manifest Services that have none and validate requested ones, as kube-apiserver does",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="svcdns", description="Service discovery for Kubernetes: cluster DNS, service proxy, service env vars.")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="log verbosity (default: info for serve, warning otherwise)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="authoritative cluster DNS", description="Serve the cluster zone from manifests (or the embedded example).")
    serve.add_argument("--manifests", action="append", default=[], metavar="PATH", help="manifest file or directory (repeatable); re-read when it changes")
    serve.add_argument("--listen", default="0.0.0.0:53", metavar="HOST:PORT", help="UDP and TCP address (default 0.0.0.0:53)")
    serve.add_argument("--zone", action="append", type=_zone, metavar="ZONE", help="cluster zone (repeatable; default cluster.local)")
    serve.add_argument("--ttl", type=_ttl, default=5, metavar="SECONDS", help="TTL of cluster records (default 5)")
    serve.add_argument("--health", metavar="HOST:PORT", help="serve /health, /ready and /metrics here")
    serve.add_argument("--pods", choices=["insecure", "verified", "disabled"], default="insecure", help="pod records a-b-c-d.ns.pod.ZONE (CoreDNS semantics; default insecure)")
    serve.add_argument("--endpoint-pod-names", action="store_true", help="name endpoints without a hostname after their pod")
    add_service_cidr_flag(serve)
    serve.set_defaults(run=run_serve)

    env = sub.add_parser(
        "env",
        help="the service environment variables kubelet injects",
        description="Print the variables kubelet would inject into every container of a pod in NAMESPACE, sorted.",
    )
    source = env.add_mutually_exclusive_group()
    source.add_argument("--manifests", action="append", default=[], metavar="PATH", help="manifest file or directory (repeatable)")
    source.add_argument("--kubeconfig", metavar="PATH", help="read Services from the cluster of this kubeconfig (in a pod: no flag needed)")
    env.add_argument("--namespace", required=True, type=_namespace, metavar="NS", help="the pod's namespace")
    env.add_argument("--no-service-links", action="store_true", help="as enableServiceLinks: false (only default/kubernetes)")
    env.add_argument("--format", choices=FORMATS, default="env", help="env: KEY=VALUE lines (default); json: one object; shell: export lines quoted for sh")
    env.add_argument("--output", metavar="FILE", help="write to FILE atomically instead of stdout")
    env.add_argument("--warn-bytes", type=_bytes, default=DEFAULT_WARN_BYTES, metavar="BYTES", help="warn when the environment passes this size (default 128KiB)")
    add_service_cidr_flag(env)
    env.set_defaults(run=_oneshot("run_env"))

    ipam = sub.add_parser(
        "ipam",
        help="check manifest ClusterIPs against a service range",
        description="Allocate and validate the ClusterIPs of manifest Services; print NAMESPACE/NAME FAMILY ADDRESS static|dynamic, then usage.",
    )
    ipam.add_argument("--manifests", action="append", required=True, metavar="PATH", help="manifest file or directory (repeatable)")
    ipam.add_argument("--service-cluster-ip-range", type=_service_cidrs, required=True, metavar="CIDR[,CIDR]", help="the cluster's service range(s), primary first")
    ipam.set_defaults(run=_oneshot("run_ipam"))
    return parser


def _oneshot(name: str):
    def run(args: argparse.Namespace) -> int:
        from . import oneshot

        try:
            return getattr(oneshot, name)(args)
        except oneshot.CommandError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1

    run.oneshot = True
    return run


def serve_config(args: argparse.Namespace) -> ServeConfig:
    return ServeConfig(
        manifests=tuple(args.manifests),
        listen=parse_hostport(args.listen, "--listen"),
        zones=tuple(dict.fromkeys(args.zone or ["cluster.local"])),
        ttl=args.ttl,
        health=parse_hostport(args.health, "--health") if args.health else None,
        pods=args.pods,
        endpoint_pod_names=args.endpoint_pod_names,
        service_cidrs=args.service_cluster_ip_range,
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


class _BriefFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args.run, "oneshot", False):  # short-lived: terse "warning: ..." lines, no timestamps
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_BriefFormatter())
        logging.basicConfig(level=(args.log_level or "warning").upper(), handlers=[handler], force=True)
    else:
        logging.basicConfig(level=(args.log_level or "info").upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.run(args)
    except ConfigError as e:
        parser.error(str(e))
    except KeyboardInterrupt:
        return 130
    return 0
