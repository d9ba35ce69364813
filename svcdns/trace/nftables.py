"""Run a packet through ``nft -f`` input: the nat base chains of its first hook
(prerouting for a pod, output for the node), then the filter chains of the next
(forward / output) when nothing DNATed it. Verdict maps are looked up with the packet's
``daddr . l4proto . dport``; ``numgen random mod N`` splits the walk N ways; an affinity
set holds no earlier client (the first connection; later ones stick)."""

from __future__ import annotations

import re

from .packet import Outcome, Packet, State, Unsupported, in_net, merge

HOOKS = {False: ("prerouting", "forward"), True: ("output", "output")}


class Ruleset:
    def __init__(self, text: str):
        self.rules: dict[str, list[str]] = {}
        self.base: list[tuple[int, str, str, str]] = []  # (priority, type, hook, chain)
        self.maps: dict[str, dict[str, str]] = {}
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
            m = re.match(r"add map \S+ \S+ (\S+)", line)
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
        key, _, verdict = item.partition(" : ")
        out[key.strip()] = verdict.strip()
    return out


def trace(text: str, pkt: Packet, from_node: bool = False) -> list[Outcome]:
    rs = Ruleset(text)
    nat_hook, filter_hook = HOOKS[from_node]
    out = []
    for o in _base(rs, "nat", nat_hook, pkt, State()):
        if o.verdict != "ACCEPT":
            out.append(o)
            continue
        for f in _base(rs, "filter", filter_hook, pkt, State(o.probability, affinity=o.affinity)):
            out.append(Outcome(f.probability, f.verdict, f.target, f.rule, o.masquerade, f.affinity))
    return merge(out)


def _base(rs: Ruleset, kind: str, hook: str, pkt: Packet, st: State) -> list[Outcome]:
    """Every base chain of this hook in priority order; ACCEPT goes on to the next."""
    live, done = [st], []
    for chain in rs.chains(kind, hook):
        nxt = []
        for s in live:
            for o in _walk(rs, chain, pkt, s, 0):
                if o.verdict in ("RETURN", "ACCEPT"):
                    nxt.append(State(o.probability, 0x4000 if o.masquerade else s.mark, o.affinity))
                else:
                    done.append(o)
        live = nxt
    return done + [Outcome(s.probability, "ACCEPT", "", f"{kind} {hook}: no rule took it", bool(s.mark & 0x4000), s.affinity) for s in live]


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
            for p, verdict, s2 in branches:
                if verdict is None:
                    nxt.append(s2)
                    continue
                kind, _, arg = verdict.partition(" ")
                text = f"{chain}: {rule}"
                mq = bool(s2.mark & 0x4000)
                if kind in ("jump", "goto"):
                    for o in _walk(rs, arg, pkt, s2, depth + 1):
                        if o.verdict == "RETURN" and kind == "jump":
                            nxt.append(State(o.probability, 0x4000 if o.masquerade else s2.mark, o.affinity))
                        else:
                            results.append(o)
                elif kind == "dnat":
                    results.append(Outcome(s2.probability, "DNAT", arg.removeprefix("to ").replace("[", "").replace("]", ""), text, mq, s2.affinity))
                elif kind in ("drop", "reject"):
                    results.append(Outcome(s2.probability, kind.upper(), "", text, mq, s2.affinity))
                elif kind in ("return", "accept"):
                    results.append(Outcome(s2.probability, kind.upper(), "", text, mq, s2.affinity))
                else:
                    raise Unsupported(f"verdict {verdict!r} in: {text}")
        live = nxt
        if not live:
            break
    return results + [Outcome(s.probability, "RETURN", masquerade=bool(s.mark & 0x4000), affinity=s.affinity) for s in live]


def _rule(rs: Ruleset, rule: str, pkt: Packet, st: State):
    """Yield (share, verdict or None to go on, state) for one rule."""
    t = rule.split()
    i, mark = 0, st.mark
    while i < len(t):
        w = t[i]
        rest = " ".join(t[i:])
        if rest.startswith(("ip daddr . meta l4proto . th dport vmap @", "ip6 daddr . meta l4proto . th dport vmap @")):
            v = rs.maps.get(t[i + 9][1:], {}).get(f"{pkt.dst} . {pkt.proto} . {pkt.port}")
            yield (1.0, v, State(st.probability, mark, st.affinity))
            return
        if rest.startswith("meta l4proto . th dport vmap @"):
            v = rs.maps.get(t[i + 6][1:], {}).get(f"{pkt.proto} . {pkt.port}")
            yield (1.0, v, State(st.probability, mark, st.affinity))
            return
        if rest.startswith("numgen random mod "):
            n = int(t[i + 3])
            table = rs.maps.get(t[i + 5][1:], {}) if t[i + 5].startswith("@") else _elements(rest.split("{", 1)[1].rsplit("}", 1)[0].strip())
            for k in range(n):
                yield (1 / n, table.get(str(k)), State(st.probability / n, mark, st.affinity))
            return
        if w in ("ip", "ip6") and t[i + 1] in ("daddr", "saddr"):
            addr = pkt.dst if t[i + 1] == "daddr" else pkt.src
            neg = t[i + 2] == "!="
            val = t[i + 3] if neg else t[i + 2]
            if val.startswith("@"):  # an affinity set: empty for a first connection
                yield (1.0, None, State(st.probability, mark, f"ClientIP {rs.sets.get(val[1:], '?')}s"))
                return
            if in_net(addr, val) == neg:
                return
            i += 4 if neg else 3
        elif w in ("tcp", "udp", "sctp", "th") and t[i + 1] == "dport":
            if (w != "th" and pkt.proto != w) or str(pkt.port) != t[i + 2]:
                return
            i += 3
        elif w == "meta" and t[i + 1] == "l4proto" and t[i + 2] not in (".",):
            if pkt.proto != t[i + 2]:
                return
            i += 3
        elif rest.startswith("fib daddr type local"):
            if pkt.dst not in pkt.local:
                return
            i += 4
        elif rest.startswith("ct state new"):
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
        elif w == "masquerade":
            yield (1.0, None, State(st.probability, mark, st.affinity))
            return
        elif w in ("jump", "goto"):
            yield (1.0, f"{w} {t[i + 1]}", State(st.probability, mark, st.affinity))
            return
        elif w == "dnat":
            yield (1.0, f"dnat {' '.join(t[i + 1:])}", State(st.probability, mark, st.affinity))
            return
        elif w in ("drop", "reject", "return", "accept"):
            yield (1.0, w, State(st.probability, mark, st.affinity))
            return
        elif w == "comment":
            return
        else:
            raise Unsupported(f"expression {rest!r} in rule: {rule}")
    yield (1.0, None, State(st.probability, mark, st.affinity))
