"""IPVS mode: the iptables part (no-endpoint REJECT/DROP, masquerade marks) is traced by
the iptables interpreter; a packet it lets through to a virtual server (from the
``ipvsadm-restore`` input) goes to a real server chosen by the scheduler. Hashing
schedulers (sh, dh) pick one server for a given client or destination; the others
spread new connections evenly over equal-weight servers (rr, wrr, lc, sed, nq with no
connections yet), which is the share shown."""

from __future__ import annotations

from ..proxy.schedulers import Real, make
from . import iptables
from .packet import Outcome, Packet, merge

FLAGS = {"-t": "tcp", "-u": "udp", "--sctp-service": "sctp"}


def virtual_servers(text: str) -> dict[tuple[str, str, int], tuple[str, int, list[str]]]:
    """{(proto, vip, port): (scheduler, persistence seconds, reals)}."""
    out: dict[tuple[str, str, int], tuple[str, int, list[str]]] = {}
    for line in text.splitlines():
        t = line.split()
        if len(t) < 3 or t[0] not in ("-A", "-a") or t[1] not in FLAGS:
            continue
        host, _, port = t[2].rpartition(":")
        key = (FLAGS[t[1]], host.strip("[]"), int(port))
        if t[0] == "-A":
            persist = int(t[t.index("-p") + 1]) if "-p" in t else 0
            out[key] = (t[t.index("-s") + 1], persist, [])
        elif key in out:
            out[key][2].append(t[t.index("-r") + 1])
    return out


def trace(ipvs_text: str, iptables_text: str, pkt: Packet, from_node: bool = False) -> list[Outcome]:
    vss = virtual_servers(ipvs_text)
    hairpin = iptables.masquerades_hairpin(iptables.parse(iptables_text).get("nat", {}))
    out = []
    for o in iptables.trace(iptables_text, pkt, from_node):
        vs = vss.get((pkt.proto, pkt.dst, pkt.port))
        if o.verdict != "ACCEPT" or vs is None:
            out.append(o)
            continue
        scheduler, persist, reals = vs
        affinity = f"ClientIP {persist}s" if persist else ""  # IPVS persistence
        rule = f"IPVS {pkt.proto} {pkt.dst}:{pkt.port} -s {scheduler}"
        if scheduler in ("sh", "dh"):
            servers = [Real(*_split(r)) for r in reals]
            pick = make(scheduler).pick(servers, client=pkt.src, dest=pkt.dst)
            chosen = [str(pick)] if pick is not None else []
        else:
            chosen = reals
        for real in chosen:
            target = real.replace("[", "").replace("]", "")
            masquerade = o.masquerade or (hairpin and iptables.dnat_host(target) == pkt.src)
            out.append(Outcome(o.probability / len(chosen), "DNAT", target, rule, masquerade, affinity))
    return merge(out)


def _split(real: str) -> tuple[str, int]:
    host, _, port = real.rpartition(":")
    return host.strip("[]"), int(port)
