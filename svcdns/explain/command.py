"""``svcdns explain NAME``: load the cluster as serve would, explain, print."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import TYPE_CHECKING

from . import DEFAULT_NDOTS, qtype_code

if TYPE_CHECKING:
    from ..config import ServeConfig

# What running the command needs is imported when it runs: every svcdns command builds
# this parser, and `svcdns serve` should not pay for explain's modules to start.


def _qtype(value: str) -> int:
    try:
        return qtype_code(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _pod(value: str) -> tuple[str, str]:
    ns, sep, name = value.partition("/")
    if not sep or not ns or not name:
        raise argparse.ArgumentTypeError(f"{value!r} is not NAMESPACE/POD")
    return ns, name


def _ndots(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 15:
        raise argparse.ArgumentTypeError(f"{value!r} is not 0-15 (what resolv.conf allows)")
    return int(value)


def add_parser(sub) -> None:
    from ..cli import _namespace, _ttl, _zone, add_forwarding_flags, add_service_cidr_flag

    p = sub.add_parser(
        "explain",
        help="why a name resolves the way it does",
        description="Show the queries a pod's resolver sends for NAME, what svcdns answers each and why, "
        "the queries wasted and how to avoid them, and the Service behind the name.",
    )
    p.add_argument("name", metavar="NAME", help="the name as the application asks for it (a trailing dot makes it absolute)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--namespace", type=_namespace, metavar="NS", help="a pod in this namespace asks (default: default)")
    who.add_argument("--pod", type=_pod, metavar="NS/POD", help="this pod asks (its namespace; autopath if svcdns knows its IP)")
    p.add_argument("--qtype", type=_qtype, default=1, metavar="TYPE", help="query type (default A)")
    p.add_argument("--ndots", type=_ndots, default=DEFAULT_NDOTS, metavar="N", help="the pod's ndots option (default 5)")
    p.add_argument("--format", choices=["text", "json"], default="text", help="text (default) or one JSON document")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--manifests", action="append", default=[], metavar="PATH", help="manifest file or directory (repeatable)")
    source.add_argument("--kubeconfig", metavar="PATH", help="read the cluster of this kubeconfig (in a pod: no flag needed; "
                        "with neither flag outside a pod: the embedded example, as serve)")
    p.add_argument("--zone", action="append", type=_zone, metavar="ZONE", help="cluster zone (repeatable; default cluster.local)")
    p.add_argument("--ttl", type=_ttl, default=5, metavar="SECONDS", help="TTL of cluster records (default 5)")
    p.add_argument("--pods", choices=["insecure", "verified", "disabled"], default="insecure", help="pod records, as serve")
    p.add_argument("--endpoint-pod-names", action="store_true", help="as serve")
    p.add_argument("--node-name", default="", metavar="NODE", help="trace ClusterIP traffic as svcdns proxy on this node would route it")
    p.add_argument("--cluster-cidr", metavar="CIDR", help="the pod network, as svcdns proxy takes it")
    add_service_cidr_flag(p)
    add_forwarding_flags(p)
    # serve_config() reads serve's flags; explain has no listeners and reads manifests only.
    p.set_defaults(run=run, listen="127.0.0.1:0", health=None, naive=False, metrics=None, namespaces=None, labels=None)


def run(args: argparse.Namespace) -> int:
    from ..cli import serve_config
    from ..oneshot import CommandError

    config = serve_config(args)
    try:
        return asyncio.run(_run(args, config))
    except CommandError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


run.oneshot = True  # terse "error: ..." logging, as env and ipam


async def _run(args: argparse.Namespace, config: ServeConfig) -> int:
    from ..dns.records import Resolver, ResolverConfig
    from ..oneshot import CommandError, load, sync_live
    from ..serve import build_recursor, choose_source, example_manifests
    from .fetch import explain_live
    from .render import render_json, render_text

    kind = choose_source(config)
    if kind == "kube":
        state = await sync_live(config.kubeconfig, pods=True, endpoints=True)
    else:
        paths = list(config.manifests) or [example_manifests()]
        for path in config.manifests:
            if not os.path.exists(path):
                raise CommandError(f"--manifests {path}: no such file or directory")
        state, _ = load(paths, config.service_cidrs, derive_endpoints=True)
    resolver = Resolver(state, ResolverConfig(zones=config.zones, ttl=config.ttl, pod_mode=config.pods, endpoint_pod_names=config.endpoint_pod_names))
    recursor = build_recursor(config, state, asyncio.get_running_loop().time) if config.upstreams or config.stub_domains else None
    namespace, pod_label, autopath, why = args.namespace or "default", "", config.autopath, "" if config.autopath else "svcdns serve --autopath"
    pod_ip = ""
    if args.pod:
        namespace, name = args.pod
        pod_label = f"{namespace}/{name}"
        pod = state.pods.get((namespace, name))
        if pod is None:
            raise CommandError(f"--pod {pod_label}: no such pod in the cluster state")
        pod_ip = pod.ips[0] if pod.ips else ""
        if autopath and not pod.ips:
            autopath, why = False, f"pod {pod_label} has no IP yet, so svcdns cannot tell its queries apart"
    try:
        ex = await explain_live(
            resolver, recursor, args.name, qtype=args.qtype, namespace=namespace, pod=pod_label, autopath=autopath,
            autopath_off=why, ndots=args.ndots, host_search=config.search,
        )
    finally:
        if recursor is not None:
            recursor.close()
    ex = _with_traffic(ex, state, args, pod_ip)
    sys.stdout.write(render_json(ex) if args.format == "json" else render_text(ex))
    return 0


def _with_traffic(ex, state, args, pod_ip: str):
    """Add where the service's ClusterIP traffic goes (iptables and nftables, traced)."""
    import dataclasses

    from ..trace import Unsupported, proxy_view
    from .traffic import traffic

    svc = ex.service
    if svc is None or not svc.cluster_ips:
        return ex
    cidrs = tuple(c.strip() for c in args.cluster_cidr.split(",")) if args.cluster_cidr else ()
    src = pod_ip or (cidrs[0].split("/")[0] if cidrs else "0.0.0.0")
    record = state.services[(svc.namespace, svc.name)]
    try:
        found = traffic(proxy_view(state, args.node_name, cidrs), svc, [(p.port, p.protocol) for p in record.ports], src)
    except Unsupported as e:
        return dataclasses.replace(ex, notes=ex.notes + (f"cannot trace ClusterIP traffic: {e}",))
    return dataclasses.replace(ex, traffic=found)
