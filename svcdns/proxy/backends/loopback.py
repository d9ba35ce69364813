"""The hairpin set: this node's endpoints, for masquerading a pod sent to itself.

A pod that connects to one of its services and is given itself as the endpoint must be
masqueraded, or it answers its own SYN from its own address and the connection fails.
kube-proxy's iptables mode marks such packets in a per-endpoint chain; its ipvs mode
matches them after DNAT with the ipset KUBE-LOOP-BACK (endpoint IP, port, endpoint IP)
in KUBE-POSTROUTING. svcdns's iptables and ipvs modes both use the set: it lets the
iptables mode drop the 100,000 per-endpoint chains that made a sync of 10,000 services
take seconds. Only this node's endpoints can be hairpin destinations (another node's
pods reach their services through their own node), so the set is small: a node's pods.
"""

from __future__ import annotations

from collections.abc import Iterable

from .tools import run_tool

# Set names per family (kube-proxy ipvs mode's).
LOOP_BACK = {4: "KUBE-LOOP-BACK", 6: "KUBE-6-LOOP-BACK"}


def entry(ip: str, protocol: str, port: int) -> str:
    """The set entry of an endpoint: its address, protocol:port, and its address again
    (the connection's source when the endpoint is also the client)."""
    return f"{ip},{protocol.lower()}:{port},{ip}"


def masquerade_rule(chain: str, family: int) -> str:
    """The rule (first in ``chain``, KUBE-POSTROUTING) that masquerades hairpin traffic."""
    return (f'-A {chain} -m comment --comment "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose" '
            f"-m set --match-set {LOOP_BACK[family]} dst,dst,src -j MASQUERADE")


def loop_back_restore(family: int, entries: Iterable[str], *, previous: frozenset[str] | None, existing_sets: Iterable[str] = ()) -> str:
    """``ipset restore`` input that makes the family's KUBE-LOOP-BACK hold ``entries``.

    With ``previous`` (what the last sync left) only the difference is sent. Without it
    (a full sync) a fresh set is filled and swapped in, so the set is never seen half
    full, and its size limit fits the cluster (ipset's default maxelem is 65,536)."""
    name = LOOP_BACK[family]
    entries = frozenset(entries)
    if previous is not None:
        lines = [f"del {name} {e} -exist" for e in sorted(previous - entries)]
        lines += [f"add {name} {e} -exist" for e in sorted(entries - previous)]
        return "".join(line + "\n" for line in lines)
    new = name + "-new"
    inet = "inet6" if family == 6 else "inet"
    maxelem = max(65536, 1 << (2 * len(entries)).bit_length())
    hashsize = max(1024, 1 << (len(entries) // 4).bit_length())  # sized up front: no rehashing while filling
    existing_sets = set(existing_sets)
    lines = [f"destroy {new}"] if new in existing_sets else []  # left by an interrupted sync
    lines.append(f"create {new} hash:ip,port,ip family {inet} hashsize {hashsize} maxelem {maxelem}")
    lines += [f"add {new} {e}" for e in sorted(entries)]
    lines += [f"swap {new} {name}", f"destroy {new}"] if name in existing_sets else [f"rename {new} {name}"]
    return "".join(line + "\n" for line in lines)


def dry_run(family: int, entries: Iterable[str]) -> str:
    """What a first sync applies, as ``--dry-run`` prints it."""
    return f"# ipset restore input ({LOOP_BACK[family]})\n" + loop_back_restore(family, entries, previous=None)


class LoopBackSets:
    """The kernel's KUBE-LOOP-BACK sets as this proxy last left them. A full sync (or the
    first after a failure) swaps in a filled set; later ones send only the difference."""

    def __init__(self, prefix: Iterable[str] = ()):
        self.prefix = list(prefix)  # e.g. ("ip", "netns", "exec", NS): tests and benchmarks
        self._applied: dict[int, frozenset[str]] = {}

    def sync(self, family: int, entries: Iterable[str], *, full: bool) -> int:
        """Make the family's set hold ``entries``; returns the size of the input sent."""
        entries = frozenset(entries)
        previous = self._applied.pop(family, None)  # forgotten until this succeeds
        if full:
            previous = None
        sets = run_tool([*self.prefix, "ipset", "list", "-n"], what="ipset list").split() if previous is None else ()
        text = loop_back_restore(family, entries, previous=previous, existing_sets=sets)
        if text:
            run_tool([*self.prefix, "ipset", "restore"], text, what="ipset restore")
        self._applied[family] = entries
        return len(text)
