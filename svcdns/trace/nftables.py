"""Run a packet through ``nft -f`` input: the nat base chains of its first hook
(prerouting for a pod, output for the node), then the filter chains of the next
(forward / output) when nothing DNATed it. Lookups in maps and sets use the packet's
fields (``ip daddr . meta l4proto . th dport``); ``numgen random mod N`` splits the walk N
ways, so a ``numgen random mod N 0`` match takes 1/N of it and a map keyed by a numgen
value gives each key its share; an affinity set holds no earlier client (the first
connection; later ones stick). A DNATed packet then passes nat postrouting, where the
hairpin set and the masquerade mark decide whether its source is rewritten."""

from __future__ import annotations

import re
from dataclasses import replace

from .packet import Outcome, Packet, State, Unsupported, in_net, merge

HOOKS = {False: ("prerouting", "forward"), True: ("output", "output")}
MASQ_MARK = 0x4000


class Ruleset:
    def __init__(self, text: str):
        self.rules: dict[str, list[str]] = {}
        self.base: list[tuple[int, str, str, str]] = []  # (priority, type, hook, chain)
        self.maps: dict[str, dict[str, str]] = {}  # maps and sets (a set element maps to "")
        self.sets: dict[str, str] = {}  # affinity set -> its timeout in seconds
        for line in text.splitlines():
            line = line.strip()
            m = re.match(r"add chain \S+ \S+ (\S+)(?: \{ type (\w+) hook (\w+) priority ([\w-]+) ;)?", line)
            if m:
                self.rules.setdefault(m[1], [])
                if m[2]:
                    prio = {"dstnat": -100, "srcnat": 100, "filter": 0}.get(m[4], None)
                    self.base.append((int(m[4]) if prio is None else prio, m[2], m[3], m[1]))
                continue
            m = re.match(r"add rule \S+ \S+ (\S+) (.*)", line)
            if m:
                self.rules.setdefault(m[1], []).append(m[2])
                continue
            m = re.match(r"add set \S+ \S+ (\S+) .*timeout (\d+)s", line)
            if m:
                self.sets[m[1]] = m[2]
                continue
            m = re.match(r"add (?:map|set) \S+ \S+ (\S+)", line)
            if m:
                self.maps.setdefault(m[1], {})
                continue
            m = re.match(r"add element \S+ \S+ (\S+) \{ (.*) \}$", line)
            if m:
                self.maps.setdefault(m[1], {}).update(_elements(m[2]))

    def chains(self, kind: str, hook: str) -> list[str]:
        return [c for _, t, h, c in sorted(self.base) if t == kind and h == hook]


def _elements(text: str) -> dict[str, str]:
    out = {}
    for item in text.split(", "):
        key, _, value = item.partition(" : ")
        out[key.strip()] = value.strip()
    return out


def trace(text: str, pkt: Packet, from_node: bool = False) -> list[Outcome]:
    rs = Ruleset(text)
    nat_hook, filter_hook = HOOKS[from_node]
    out = []
    for o in _base(rs, "nat", nat_hook, pkt, State()):
        if o.verdict == "DNAT":
            out.append(replace(o, masquerade=_masqueraded(rs, pkt, o)))
        elif o.verdict != "ACCEPT":
            out.append(o)
        else:
            for f in _base(rs, "filter", filter_hook, pkt, State(o.probability, affinity=o.affinity)):
                out.append(Outcome(f.probability, f.verdict, f.target, f.rule, o.masquerade, f.affinity))
    return merge(out)


def _masqueraded(rs: Ruleset, pkt: Packet, o: Outcome) -> bool:
    """Whether nat postrouting masquerades the DNATed packet of outcome ``o``."""
    ip, _, port = o.target.rpartition(":")
    after = replace(pkt, dst=ip, port=int(port), ct_status=pkt.ct_status | {"dnat"})
    ends = _base(rs, "nat", "postrouting", after, State(mark=MASQ_MARK if o.masquerade else 0))
    return any(e.verdict == "MASQUERADE" for e in ends)


def _base(rs: Ruleset, kind: str, hook: str, pkt: Packet, st: State) -> list[Outcome]:
    """Every base chain of this hook in priority order; ACCEPT goes on to the next."""
    live, done = [st], []
    for chain in rs.chains(kind, hook):
        nxt = []
        for s in live:
            for o in _walk(rs, chain, pkt, s, 0):
                if o.verdict in ("RETURN", "ACCEPT"):
                    nxt.append(State(o.probability, MASQ_MARK if o.masquerade else s.mark, o.affinity))
                else:
                    done.append(o)
        live = nxt
    return done + [Outcome(s.probability, "ACCEPT", "", f"{kind} {hook}: no rule took it", bool(s.mark & MASQ_MARK), s.affinity) for s in live]


def _walk(rs: Ruleset, chain: str, pkt: Packet, st: State, depth: int) -> list[Outcome]:
    if depth > 32:
        raise Unsupported(f"jump depth over 32 at {chain}: a loop?")
    results, live = [], [st]
    for rule in rs.rules.get(chain, []):
        nxt = []
        for s in live:
            branches = list(_rule(rs, rule, pkt, s))
            if not branches:  # the rule does not match: on to the next
                nxt.append(s)
            for verdict, s2 in branches:
                if verdict is None:
                    nxt.append(s2)
                    continue
                kind, _, arg = verdict.partition(" ")
                text = f"{chain}: {rule}"
                mq = bool(s2.mark & MASQ_MARK)
                if kind in ("jump", "goto"):
                    for o in _walk(rs, arg, pkt, s2, depth + 1):
                        if o.verdict == "RETURN" and kind == "jump":
                            nxt.append(State(o.probability, MASQ_MARK if o.masquerade else s2.mark, o.affinity))
                        else:
                            results.append(o)
                elif kind == "dnat":
                    results.append(Outcome(s2.probability, "DNAT", arg.removeprefix("to ").replace("[", "").replace("]", ""), text, mq, s2.affinity))
                elif kind in ("drop", "reject", "return", "accept", "masquerade"):
                    results.append(Outcome(s2.probability, kind.upper(), "", text, mq, s2.affinity))
                else:
                    raise Unsupported(f"verdict {verdict!r} in: {text}")
        live = nxt
        if not live:
            break
    return results + [Outcome(s.probability, "RETURN", masquerade=bool(s.mark & MASQ_MARK), affinity=s.affinity) for s in live]


def _field(t: list[str], i: int, pkt: Packet) -> tuple[list[tuple[float, str]], int] | None:
    """The packet field named at t[i]: its possible values with their shares, and the
    index after it; None when t[i] names no field."""
    pair = t[i:i + 2]
    if pair in (["ip", "saddr"], ["ip6", "saddr"]):
        return [(1.0, pkt.src)], i + 2
    if pair in (["ip", "daddr"], ["ip6", "daddr"]):
        return [(1.0, pkt.dst)], i + 2
    if pair == ["meta", "l4proto"]:
        return [(1.0, pkt.proto)], i + 2
    if pair == ["th", "dport"]:
        return [(1.0, str(pkt.port))], i + 2
    if t[i:i + 3] == ["numgen", "random", "mod"]:
        n = int(t[i + 3])
        return [(1 / n, str(k)) for k in range(n)], i + 4
    return None


def _key(t: list[str], i: int, pkt: Packet) -> tuple[list[tuple[float, str]], int]:
    """A concatenation ``a . b . c`` of fields from t[i]: [(share, "a . b . c")]."""
    keys, i = _field(t, i, pkt)
    while i < len(t) and t[i] == ".":
        more, i = _field(t, i + 1, pkt)
        keys = [(p * q, f"{a} . {b}") for p, a in keys for q, b in more]
    return keys, i


def _rule(rs: Ruleset, rule: str, pkt: Packet, st: State):
    """Yield (verdict, or None to go on to the next rule; state) for each way the rule
    can go, the state carrying that way's probability. Nothing: it does not match."""
    t = rule.split()
    i, mark, prob = 0, st.mark, st.probability

    def state(share: float = 1.0) -> State:
        return State(prob * share, mark, st.affinity)

    while i < len(t):
        w = t[i]
        rest = " ".join(t[i:])
        if _field(t, i, pkt) and (t[i + 2:i + 3] == ["."] or t[i] == "numgen"):  # a concatenation or a random draw
            keys, j = _key(t, i, pkt)
            op = t[j] if j < len(t) else ""
            if op == "vmap":
                table = rs.maps.get(t[j + 1][1:], {})
                for share, key in keys:
                    yield table.get(key), state(share)
                return
            if op.startswith("@"):
                table = rs.maps.get(op[1:], {})
                hit = sum(share for share, key in keys if key in table)
                if hit < 1:
                    yield None, state(1 - hit)  # not in the set: the rule does not match
                if not hit:
                    return
                prob, i = prob * hit, j + 1
                continue
            value = t[j + 1] if op == "==" else op  # numgen random mod N [==] V
            hit = sum(share for share, key in keys if key == value)
            yield None, state(1 - hit)
            prob, i = prob * hit, (j + 2 if op == "==" else j + 1)
            continue
        if w in ("ip", "ip6") and t[i + 1] in ("daddr", "saddr"):
            addr = pkt.dst if t[i + 1] == "daddr" else pkt.src
            neg = t[i + 2] == "!="
            val = t[i + 3] if neg else t[i + 2]
            if val.startswith("@"):  # an affinity set: empty for a first connection
                yield None, State(prob, mark, f"ClientIP {rs.sets.get(val[1:], '?')}s")
                return
            if in_net(addr, val) == neg:
                return
            i += 4 if neg else 3
        elif w in ("tcp", "udp", "sctp", "th") and t[i + 1] == "dport":
            if (w != "th" and pkt.proto != w) or str(pkt.port) != t[i + 2]:
                return
            i += 3
        elif w == "meta" and t[i + 1] == "l4proto":
            if pkt.proto != t[i + 2]:
                return
            i += 3
        elif rest.startswith(("fib daddr type local", "fib saddr type local")):
            if (pkt.dst if t[i + 1] == "daddr" else pkt.src) not in pkt.local:
                return
            i += 4
        elif rest.startswith("ct state new"):
            i += 3
        elif w == "ct" and t[i + 1] == "status":
            if t[i + 2] not in pkt.ct_status:
                return
            i += 3
        elif rest.startswith("meta mark & "):
            m = re.match(r"meta mark & (\S+) == (\S+)", rest)
            if (mark & int(m[1], 0)) != int(m[2], 0):
                return
            i += 6
        elif rest.startswith("meta mark set meta mark "):
            op, val = t[i + 5], int(t[i + 6], 0)
            mark = mark | val if op == "or" else mark ^ val
            i += 7
        elif w == "update":
            i = t.index("}", i) + 1
        elif w == "dnat" and "map" in t:  # dnat ip addr . port to KEY map @M
            j = t.index("to", i) + 1
            keys, j = _key(t, j, pkt)
            table = rs.maps.get(t[j + 1][1:], {})
            for share, key in keys:
                ip, _, port = table.get(key, " . ").partition(" . ")
                yield (f"dnat to {ip}:{port}" if ip else None), state(share)  # no element: no match
            return
        elif w in ("jump", "goto"):
            yield f"{w} {t[i + 1]}", state()
            return
        elif w == "dnat":
            yield f"dnat {' '.join(t[i + 1:])}", state()
            return
        elif w in ("drop", "reject", "return", "accept", "masquerade"):
            yield w, state()
            return
        elif w == "comment":
            return
        else:
            raise Unsupported(f"expression {rest!r} in rule: {rule}")
    yield None, state()
