"""Where traffic to a Service's ClusterIP:port goes: the proxy's rules for this node,
traced (svcdns.trace) for each port and mode. Pure: the caller gives the proxy view."""

from __future__ import annotations

from ..proxy.model import ProxyView
from ..trace import Packet, trace
from .model import Destination, ServiceView, Traffic


def traffic(view: ProxyView, svc: ServiceView, ports: list[tuple[int, str]], src: str) -> tuple[Traffic, ...]:
    """One Traffic per ClusterIP, port and mode (the ports as (port, protocol))."""
    out = []
    for ip in svc.cluster_ips:
        for port, proto in ports:
            for mode, outcomes in trace(view, Packet(src, ip, port, proto.lower())).items():
                dests = tuple(
                    Destination(o.target if o.verdict == "DNAT" else o.verdict, o.probability, "" if o.verdict == "DNAT" else o.rule)
                    for o in outcomes
                )
                affinity = next((o.affinity for o in outcomes if o.affinity), "")
                node = f"node {view.node_name}" if view.node_name else "no node given (--node-name): Local policies see no local endpoints"
                out.append(Traffic(f"{ip}:{port}/{proto}", mode, dests, scheduler="random split" if len(dests) > 1 else "", affinity=affinity, note=node))
    return tuple(out)
