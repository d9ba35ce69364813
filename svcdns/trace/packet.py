"""A packet to trace and where it may end up: the shared vocabulary of the rule
interpreters (kube-proxy's ``runPacketFlowTests`` idea: check what rules *mean*)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Packet:
    """The first packet of a new connection, as the node's netfilter sees it."""

    src: str
    dst: str
    port: int
    proto: str  # tcp | udp | sctp
    local: frozenset[str] = frozenset()  # the node's own addresses (NodePorts match these)
    ct_status: frozenset[str] = frozenset()  # conntrack status after the nat hooks ("dnat")

    @property
    def family(self) -> int:
        return 6 if ":" in self.dst else 4


@dataclass(frozen=True, slots=True)
class Outcome:
    """One way the packet may go: DNAT to an endpoint, or a verdict, with its share."""

    probability: float
    verdict: str  # DNAT | DROP | REJECT | ACCEPT (not a service address: untouched)
    target: str = ""  # "10.244.1.1:8080" for DNAT
    rule: str = ""  # the rule that decided
    masquerade: bool = False
    affinity: str = ""  # "ClientIP 10800s" when a later connection sticks to its first choice


@dataclass
class State:
    """What the walk carries along one branch."""

    probability: float = 1.0
    mark: int = 0
    affinity: str = ""
    trail: list[str] = field(default_factory=list)


def in_net(addr: str, spec: str) -> bool:
    try:
        return ipaddress.ip_address(addr) in ipaddress.ip_network(spec, strict=False)
    except ValueError:
        return False


def merge(outcomes: list[Outcome]) -> list[Outcome]:
    """Same verdict and target: one outcome with the summed probability."""
    out: dict[tuple[str, str], Outcome] = {}
    for o in outcomes:
        key = (o.verdict, o.target)
        prev = out.get(key)
        if prev is None:
            out[key] = o
        else:
            out[key] = Outcome(prev.probability + o.probability, o.verdict, o.target, prev.rule, prev.masquerade or o.masquerade, prev.affinity or o.affinity)
    return sorted(out.values(), key=lambda o: (o.verdict != "DNAT", o.target))


class Unsupported(ValueError):
    """A rule uses a match or target the interpreter does not know: say so, never guess."""
