"""Command line: ``svcdns serve`` (more commands plug in as subparsers).

Flag names are a contract other tools depend on: extend, never rename.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from .config import PRIVATE_NETWORKS, ConfigError, ServeConfig, parse_hostport, parse_networks

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


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 60:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds (0-60]")
    return seconds


def _count(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number >= 0")
    return int(value)


def add_forwarding_flags(serve: argparse.ArgumentParser) -> None:
    """Forwarding, cache, autopath and the access lists (issue 4)."""
    fwd = serve.add_argument_group("forwarding (names outside the cluster zones)")
    add = fwd.add_argument
    add("--upstream", action="append", default=[], metavar="ADDR[:PORT]|FILE",
        help="upstream nameserver (repeatable, tried in order), or a resolv.conf whose nameservers to use; "
        "without one, names outside the cluster are REFUSED")
    add("--stub-domain", action="append", default=[], metavar="DOMAIN=ADDR[,ADDR]",
        help="send names under DOMAIN to these nameservers (repeatable; kube-dns stubDomains)")
    add("--upstream-timeout", type=_seconds, default=2.0, metavar="SECONDS", help="how long one try at one upstream waits (default 2)")
    add("--query-timeout", type=_seconds, default=4.0, metavar="SECONDS", help="a forwarded query's whole budget (default 4)")
    add("--cache-size", type=_count, default=10000, metavar="N", help="forwarded answers cached (default 10000; 0 turns the cache off)")
    add("--cache-max-ttl", type=_count, default=3600, metavar="SECONDS", help="longest a forwarded answer is cached (default 3600)")
    add("--serve-stale", type=_count, default=3600, metavar="SECONDS",
        help="serve expired answers this long when every upstream fails (default 3600; 0 off; RFC 8767)")
    add("--autopath", action=argparse.BooleanOptionalAction, default=True, help="walk a pod's search path server-side (default on)")
    add("--allow-recursion", action="append", metavar="CIDR",
        help="clients that may have names outside the cluster resolved (repeatable; default loopback and private ranges)")
    add("--allow-transfer", action="append", default=[], metavar="CIDR",
        help="clients allowed AXFR/IXFR of the cluster zones over TCP (default none)")


def upstream_servers(values: list[str]) -> tuple[tuple[tuple[str, int], ...], tuple[str, ...]]:
    """``--upstream`` values: addresses, or resolv.conf files (read here, at the edge).
    Returns the nameservers and the files' search domains (for autopath)."""
    from .dns.upstream import parse_resolv_conf

    servers: list[tuple[str, int]] = []
    search: list[str] = []
    for value in values:
        if "/" not in value:
            servers.append(parse_hostport(value, "--upstream", default_port=53))
            continue
        try:
            with open(value, encoding="utf-8", errors="replace") as f:
                conf = parse_resolv_conf(f.read())
        except OSError as e:
            raise ConfigError(f"--upstream: cannot read {value}: {e.strerror or e}") from None
        if not conf.nameservers:
            raise ConfigError(f"--upstream: {value} has no nameserver lines")
        servers.extend(parse_hostport(host, f"--upstream ({value})", default_port=port) for host, port in conf.nameservers)
        search.extend(conf.search)
    return tuple(dict.fromkeys(servers)), tuple(dict.fromkeys(search))


def stub_domains(values: list[str], zones: tuple[str, ...]) -> tuple[tuple[str, tuple[tuple[str, int], ...]], ...]:
    out: dict[str, tuple[tuple[str, int], ...]] = {}
    for value in values:
        domain, sep, addrs = value.partition("=")
        if not sep or not addrs.strip():
            raise ConfigError(f"--stub-domain: {value!r} is not DOMAIN=ADDR[,ADDR]")
        try:
            domain = _zone(domain)
        except argparse.ArgumentTypeError as e:
            raise ConfigError(f"--stub-domain: {e}") from None
        if any(domain == z or domain.endswith("." + z) for z in zones):
            raise ConfigError(f"--stub-domain: {domain} is inside a cluster zone; svcdns answers it itself")
        out[domain] = tuple(parse_hostport(a.strip(), f"--stub-domain {domain}", default_port=53) for a in addrs.split(","))
    return tuple(out.items())


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
    add_forwarding_flags(serve)
    serve.set_defaults(run=run_serve)
    return parser


def serve_config(args: argparse.Namespace) -> ServeConfig:
    zones = tuple(dict.fromkeys(args.zone or ["cluster.local"]))
    upstreams, search = upstream_servers(args.upstream)
    return ServeConfig(
        manifests=tuple(args.manifests),
        listen=parse_hostport(args.listen, "--listen"),
        zones=zones,
        ttl=args.ttl,
        health=parse_hostport(args.health, "--health") if args.health else None,
        pods=args.pods,
        endpoint_pod_names=args.endpoint_pod_names,
        upstreams=upstreams,
        stub_domains=stub_domains(args.stub_domain, zones),
        search=search,
        upstream_timeout=args.upstream_timeout,
        query_timeout=args.query_timeout,
        cache_size=args.cache_size,
        cache_max_ttl=args.cache_max_ttl,
        serve_stale=args.serve_stale,
        autopath=args.autopath,
        allow_recursion=parse_networks(args.allow_recursion or PRIVATE_NETWORKS, "--allow-recursion"),
        allow_transfer=parse_networks(args.allow_transfer, "--allow-transfer"),
    )


def run_serve(args: argparse.Namespace) -> int:
    from .dns.recursion import ForwardingLoop
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
    except ForwardingLoop as e:
        log.error("%s", e)
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
