"""``svcdns proxy trace``: where a connection would go, in every proxy mode, for the
current state -- rendered as each mode renders it and run through an interpreter of
those rules, without touching the kernel."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import iptables, nftables
from .packet import Outcome, Packet, Unsupported

if TYPE_CHECKING:
    from ..proxy.model import ProxyView
    from ..store import ClusterState

MODES = ("iptables", "nftables", "ipvs")

__all__ = ["Outcome", "Packet", "Unsupported", "MODES", "proxy_view", "trace"]


class _NoBackend:
    mode = "trace"

    def render_all(self, view: ProxyView) -> str:  # pragma: no cover - not used
        return ""


def proxy_view(state: ClusterState, node_name: str, cluster_cidrs: tuple[str, ...] = ()) -> ProxyView:
    """The view a node's proxier renders from (service ports, endpoints, this node)."""
    from ..proxy.proxier import Proxier  # with prometheus_client: not for every command's parser

    proxier = Proxier(state, _NoBackend(), node_name, cluster_cidrs)
    proxier.checkout()
    return proxier.view


def trace(view: ProxyView, pkt: Packet, from_node: bool = False, scheduler: str = "rr") -> dict[str, list[Outcome]]:
    """{mode: outcomes} for the first packet of a new connection (``scheduler``: ipvs's)."""
    from ..proxy.backends import iptables as ipt_render
    from ..proxy.backends import ipvs as ipvs_render
    from ..proxy.backends import nftables as nft_render
    from . import ipvs

    return {
        "iptables": iptables.trace(ipt_render.render(view, pkt.family).text, pkt, from_node),
        "nftables": nftables.trace(nft_render.render(view, pkt.family).text, pkt, from_node),
        "ipvs": ipvs.trace(
            ipvs_render.render_ipvs(ipvs_render.desired(view, scheduler, pkt.family)),
            ipvs_render.render_iptables(view, pkt.family), pkt, from_node,
        ),
    }
