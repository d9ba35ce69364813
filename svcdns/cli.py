"""Command line: ``svcdns serve | env | ipam | explain`` (more commands plug in as subparsers).

Flag names are a contract other tools depend on: extend, never rename.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys

from .config import (
    PRIVATE_NETWORKS, PROXY_MODES, PROXY_SCHEDULERS, ConfigError, OverloadConfig, ProxyConfig, ServeConfig, parse_cidrs,
    parse_hostport, parse_label_selector, parse_namespaces, parse_networks,
)
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


def _positive(kind):
    def parse(value: str):
        try:
            number = kind(value)
        except ValueError:
            number = -1
        if number <= 0:
            raise argparse.ArgumentTypeError(f"{value!r} is not a positive number")
        return number

    return parse


def _lameduck(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 300:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds (0-300)")
    return seconds


def add_overload_flags(serve: argparse.ArgumentParser) -> None:
    """Overload, TCP limits and graceful shutdown (issue 7)."""
    group = serve.add_argument_group("overload and shutdown")
    add = group.add_argument
    add("--max-inflight", type=_positive(int), default=1000, metavar="N",
        help="answers that may wait on upstreams at once (forwarding, autopath; UDP and TCP); over it, --overload-action (default 1000)")
    add("--rate-limit", type=_positive(float), metavar="QPS",
        help="queries per second per client /24 (IPv4) or /56 (IPv6), bursts of one second's worth; over it, --overload-action (default off)")
    add("--overload-action", choices=["refuse", "drop"], default="refuse",
        help="what a query over a limit gets: REFUSED (default) or no answer at all")
    add("--tcp-idle-timeout", type=_seconds, default=10.0, metavar="SECONDS",
        help="close a TCP connection that has not completed a query for this long, however slowly it sends (default 10)")
    add("--tcp-max-connections", type=_positive(int), default=1000, metavar="N",
        help="open TCP connections; at the cap a new one evicts the quietest (default 1000)")
    add("--tcp-max-queries", type=_count, default=0, metavar="N", help="close a TCP connection after N queries (default 0: no limit)")
    add("--lameduck", type=_lameduck, default=0.0, metavar="SECONDS",
        help="on SIGTERM keep answering this long while /ready reports 503, then stop (default 0; CoreDNS deployments use 5)")
    add("--reuse-port", action="store_true",
        help="bind with SO_REUSEPORT so a new svcdns can take over the address before this one stops (rolling restart)")


def overload_config(args: argparse.Namespace) -> OverloadConfig:
    return OverloadConfig(
        max_inflight=args.max_inflight,
        rate_limit=args.rate_limit or 0.0,
        action=args.overload_action,
        tcp_idle_timeout=args.tcp_idle_timeout,
        tcp_max_connections=args.tcp_max_connections,
        tcp_max_queries=args.tcp_max_queries,
        lameduck=args.lameduck,
        reuse_port=args.reuse_port,
    )
def add_observability_flags(serve: argparse.ArgumentParser) -> None:
    """Explain over DNS and the query log (issue 8)."""
    obs = serve.add_argument_group("debugging")
    obs.add_argument("--allow-explain", action="append", metavar="CIDR",
        help="clients that may ask `dig NAME.explain.svcdns CH TXT` (repeatable; default loopback and private ranges)")
    obs.add_argument("--log-queries", action="store_true",
        help="log every query (client, namespace, name, type, rcode, time) on the svcdns.query logger; off costs nothing")


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
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="log verbosity (default: info for serve, warning otherwise)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="authoritative cluster DNS",
        description="Serve the cluster zone from manifests, from a live cluster (--kubeconfig, or the service account "
        "when running in a pod), or else from the embedded example cluster.",
    )
    serve.add_argument("--manifests", action="append", default=[], metavar="PATH", help="manifest file or directory (repeatable); re-read when it changes")
    serve.add_argument("--poll-interval", type=_seconds, default=1.0, metavar="SECONDS", help="how often --manifests are checked for changes (default 1)")
    serve.add_argument("--listen", default="0.0.0.0:53", metavar="HOST:PORT", help="UDP and TCP address (default 0.0.0.0:53)")
    serve.add_argument("--zone", action="append", type=_zone, metavar="ZONE", help="cluster zone (repeatable; default cluster.local)")
    serve.add_argument("--ttl", type=_ttl, default=5, metavar="SECONDS", help="TTL of cluster records (default 5)")
    serve.add_argument("--health", metavar="HOST:PORT", help="serve /health, /ready and /metrics here")
    serve.add_argument("--pods", choices=["insecure", "verified", "disabled"], default="insecure", help="pod records a-b-c-d.ns.pod.ZONE (CoreDNS semantics; default insecure)")
    serve.add_argument("--endpoint-pod-names", action="store_true", help="name endpoints without a hostname after their pod")
    serve.add_argument("--naive", action="store_true", help="answer every query by parsing it with dnslib and resolving it on the spot (a benchmark baseline)")
    add_service_cidr_flag(serve)
    add_forwarding_flags(serve)
    add_observability_flags(serve)
    serve.add_argument("--metrics", metavar="HOST:PORT", help="also serve /metrics here (Prometheus convention: port 9153)")
    serve.add_argument("--kubeconfig", metavar="PATH", help="follow the cluster of this kubeconfig (in a pod, the service account is used without it)")
    serve.add_argument("--namespaces", metavar="NS[,NS...]", help="live API: serve only these namespaces (default all)")
    serve.add_argument("--labels", metavar="SELECTOR", help="live API: serve only services matching this label selector, e.g. 'tier!=internal'")
    add_overload_flags(serve)
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
    add_proxy_parser(sub)
    from .trace.command import add_parser as add_trace

    add_trace(sub)  # `svcdns proxy trace ...` is routed here by main()

    from .explain.command import add_parser as add_explain

    add_explain(sub)
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


def _sync_seconds(value: str) -> float:
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
    proxy.add_argument("--min-sync-period", type=_sync_seconds, default=1.0, metavar="S", help="at most one sync per S seconds; changes in between are batched (default 1)")
    proxy.add_argument("--health", metavar="HOST:PORT", help="serve /health, /ready and /metrics here")
    add_service_cidr_flag(proxy)
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
        service_cidrs=args.service_cluster_ip_range,
    )


def run_proxy(args: argparse.Namespace) -> int:
    from .proxy.command import run
    from .sources.kubeauth import AuthError

    try:
        return run(proxy_config(args))
    except AuthError as e:
        log.error("cannot connect to the Kubernetes API: %s", e)
        return 1


def serve_config(args: argparse.Namespace) -> ServeConfig:
    zones = tuple(dict.fromkeys(args.zone or ["cluster.local"]))
    upstreams, search = upstream_servers(args.upstream)
    return ServeConfig(
        manifests=tuple(args.manifests),
        poll_interval=getattr(args, "poll_interval", 1.0),  # (explain shares this builder without the flag)
        listen=parse_hostport(args.listen, "--listen"),
        zones=zones,
        ttl=args.ttl,
        health=parse_hostport(args.health, "--health") if args.health else None,
        pods=args.pods,
        endpoint_pod_names=args.endpoint_pod_names,
        naive=args.naive,
        service_cidrs=args.service_cluster_ip_range,
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
        allow_explain=parse_networks(getattr(args, "allow_explain", None) or PRIVATE_NETWORKS, "--allow-explain"),
        log_queries=getattr(args, "log_queries", False),
        metrics=parse_hostport(args.metrics, "--metrics") if args.metrics else None,
        kubeconfig=args.kubeconfig,
        namespaces=parse_namespaces(args.namespaces) if args.namespaces is not None else (),
        labels=parse_label_selector(args.labels) if args.labels is not None else None,
        overload=overload_config(args) if hasattr(args, "max_inflight") else OverloadConfig(),
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
    from .sources.kubeauth import AuthError

    server = Server(config, own_process=True)
    try:
        asyncio.run(server.serve_forever())
    except AuthError as e:
        log.error("cannot connect to the Kubernetes API: %s", e)
        return 1
    except OSError as e:
        log.error("cannot serve on %s:%d: %s", *config.listen, e.strerror or e)
        return 1
    except ForwardingLoop as e:
        log.error("%s", e)
        return 1
    return 0


class _BriefFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    for i in range(len(argv) - 1):  # `proxy trace` is its own command (proxy's flags do not apply)
        if argv[i] == "proxy" and argv[i + 1] == "trace":
            argv[i : i + 2] = ["proxy-trace"]
            break
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
