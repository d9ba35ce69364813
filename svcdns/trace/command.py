"""``svcdns proxy trace SRC_IP DST_IP:PORT/PROTO``: load the cluster as ``svcdns proxy``
does, render each mode's rules, run the packet through them, print side by side."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import TYPE_CHECKING

from .packet import Packet

if TYPE_CHECKING:
    from .packet import Outcome


def _dest(value: str) -> tuple[str, int, str]:
    addr, _, proto = value.partition("/")
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    proto = (proto or "tcp").lower()
    try:
        host = str(ipaddress.ip_address(host))  # one spelling, as --node-ip's
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not DST_IP:PORT/PROTO") from None
    if not port.isdigit() or not 0 < int(port) < 65536 or proto not in ("tcp", "udp", "sctp"):
        raise argparse.ArgumentTypeError(f"{value!r} is not DST_IP:PORT/PROTO (PROTO tcp, udp or sctp)")
    return host, int(port), proto


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an IP address") from None


def add_parser(sub) -> None:
    p = sub.add_parser(
        "proxy-trace", prog="svcdns proxy trace", help="where a connection goes in each proxy mode (svcdns proxy trace)",
        description="Run a packet through the rules each proxy mode would render for the current state, without touching "
        "the kernel, and print where it may go (with probabilities), or DROP/REJECT and the rule responsible.",
    )
    p.add_argument("src", type=_ip, metavar="SRC_IP", help="the client's address (a pod IP, or the node's)")
    p.add_argument("dst", type=_dest, metavar="DST_IP:PORT/PROTO", help="e.g. 10.96.0.10:80/tcp")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--manifests", action="append", default=[], metavar="PATH", help="manifest file or directory (repeatable)")
    source.add_argument("--kubeconfig", metavar="PATH", help="read the cluster of this kubeconfig (default without --manifests: in-cluster)")
    p.add_argument("--node-name", default="", metavar="NODE", help="the node the packet is on (Local policies, topology hints)")
    p.add_argument("--cluster-cidr", metavar="CIDR", help="pod network, as svcdns proxy takes it (masquerading)")
    p.add_argument("--scheduler", default="rr", choices=("rr", "wrr", "lc", "dh", "sh", "sed", "nq"), help="ipvs mode's scheduler (default rr)")
    p.add_argument("--from-node", action="store_true", help="the connection starts on the node itself (OUTPUT), not in a pod; SRC_IP is then one of the node's addresses")
    p.add_argument("--node-ip", action="append", default=[], type=_ip, metavar="IP",
                   help="an address of the node (repeatable): NodePorts answer on these, and rules for traffic from the node match them")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from ..oneshot import CommandError, check_source, load, sync_live
    from . import Unsupported, proxy_view, trace  # the proxy's modules: only when tracing

    try:
        check_source(args)
        if args.manifests:
            state, _ = load(args.manifests, (), derive_endpoints=True)
        else:  # as svcdns proxy reads a live cluster: services, slices, nodes (zones)
            state = asyncio.run(sync_live(args.kubeconfig, endpoints=True, nodes=True))
    except CommandError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    cidrs = tuple(c.strip() for c in args.cluster_cidr.split(",")) if args.cluster_cidr else ()
    dst, port, proto = args.dst
    local = frozenset(args.node_ip) | ({args.src} if args.from_node else set())
    pkt = Packet(args.src, dst, port, proto, local=local)
    try:
        results = trace(proxy_view(state, args.node_name, cidrs), pkt, from_node=args.from_node, scheduler=args.scheduler)
    except Unsupported as e:
        print(f"error: cannot trace: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(render(pkt, args.node_name, results))
    return 0


def describe(o: Outcome) -> str:
    if o.verdict == "DNAT":
        text = f"{o.target} {o.probability:.1%}"
    elif o.verdict == "ACCEPT":
        text = f"not a service address: delivered as addressed {o.probability:.1%}"
    else:
        text = f"{o.verdict} {o.probability:.1%} ({o.rule})"
    return text + (", masqueraded" if o.masquerade else "")


def render(pkt: Packet, node: str, results: dict[str, list[Outcome]]) -> str:
    lines = [f"{pkt.src} -> {pkt.dst}:{pkt.port}/{pkt.proto}" + (f" on node {node}" if node else "")]
    for mode, outcomes in results.items():
        affinity = next((o.affinity for o in outcomes if o.affinity), "")
        lines.append(f"  {mode}:" + (f" (first connection; later ones stick: {affinity})" if affinity else ""))
        lines.extend(f"    {describe(o)}" for o in outcomes)
    views = {tuple((o.verdict, o.target, round(o.probability, 6)) for o in outs) for outs in results.values()}
    lines.append("  modes agree" if len(views) == 1 else "  modes DIFFER")
    lines.append("  (userspace mode is not traced; ipvs shares are the scheduler's over equal-weight servers)")
    return "\n".join(lines) + "\n"
