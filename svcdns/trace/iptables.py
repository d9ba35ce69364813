"""Run a packet through iptables-restore input (the nat table, then filter if nothing
DNATed it), as the kernel would for the first packet of a connection: ``statistic``
splits the walk by its probability, ``recent --rcheck`` finds no earlier choice (the
first connection; later ones stick), jumps, RETURN and built-in chain ends as netfilter."""

from __future__ import annotations

import shlex

from .packet import Outcome, Packet, State, Unsupported, in_net, merge

# The first built-in chain each table's packet passes: a pod's connection is routed
# (PREROUTING, FORWARD); a process on the node starts in OUTPUT.
ENTRY = {"nat": "PREROUTING", "filter": "FORWARD"}
ENTRY_FROM_NODE = {"nat": "OUTPUT", "filter": "OUTPUT"}
TERMINAL = {"ACCEPT", "DROP", "REJECT", "DNAT"}


def parse(text: str) -> dict[str, dict[str, list[list[str]]]]:
    """{table: {chain: [rule tokens]}}; ``-I`` rules go first, in the order given."""
    tables: dict[str, dict[str, list[list[str]]]] = {}
    inserted: dict[tuple[str, str], int] = {}
    table = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("*"):
            table = tables.setdefault(line[1:], {})
        elif line.startswith(":") and table is not None:
            table.setdefault(line[1:].split()[0], [])
        elif line.startswith(("-A ", "-I ")) and table is not None:
            tokens = shlex.split(line)
            chain = table.setdefault(tokens[1], [])
            if tokens[0] == "-I":
                at = inserted.get((id(table), tokens[1]), 0)
                chain.insert(at, tokens[2:])
                inserted[(id(table), tokens[1])] = at + 1
            else:
                chain.append(tokens[2:])
    return tables


def trace(text: str, pkt: Packet, from_node: bool = False) -> list[Outcome]:
    tables = parse(text)
    entry = ENTRY_FROM_NODE if from_node else ENTRY
    nat = _walk(tables.get("nat", {}), entry["nat"], pkt, State(), 0)
    hairpin = masquerades_hairpin(tables.get("nat", {}))
    out = []
    for o in nat:
        if o.verdict == "DNAT" and hairpin and dnat_host(o.target) == pkt.src and not o.masquerade:
            o = Outcome(o.probability, o.verdict, o.target, o.rule, True, o.affinity)
        if o.verdict == "DNAT" or o.verdict in ("DROP", "REJECT"):
            out.append(o)
            continue
        for f in _walk(tables.get("filter", {}), entry["filter"], pkt, State(o.probability, affinity=o.affinity), 0):
            out.append(Outcome(f.probability, f.verdict, f.target, f.rule, o.masquerade, f.affinity))
    return merge(out)


def masquerades_hairpin(nat: dict[str, list[list[str]]]) -> bool:
    """KUBE-POSTROUTING masquerades connections DNATed back to their source (the
    KUBE-LOOP-BACK set holds every local endpoint, so membership is that equality)."""
    return any("--match-set" in rule and "dst,dst,src" in rule for rule in nat.get("KUBE-POSTROUTING", []))


def dnat_host(target: str) -> str:
    """The address of a DNAT target "10.0.0.1:80" / "[fd00::1]:80"."""
    return target.rpartition(":")[0].strip("[]")


def _walk(chains, name: str, pkt: Packet, st: State, depth: int) -> list[Outcome]:
    """Outcomes of traversing chain ``name``; verdict "RETURN" means fell off the end."""
    if depth > 32:
        raise Unsupported(f"jump depth over 32 at {name}: a loop?")
    results: list[Outcome] = []
    live = [st]
    for rule in chains.get(name, []):
        nxt = []
        for s in live:
            p, target, opts = _match(rule, pkt, s)
            if p <= 0:
                nxt.append(s)
                continue
            taken = State(s.probability * p, s.mark, s.affinity, s.trail)
            if p < 1:
                nxt.append(State(s.probability * (1 - p), s.mark, s.affinity, s.trail))
            results += _target(chains, name, rule, target, opts, pkt, taken, depth, nxt)
        live = nxt
        if not live:
            break
    results += [Outcome(s.probability, "RETURN", affinity=s.affinity, masquerade=bool(s.mark & 0x4000)) for s in live]
    if depth == 0:  # a built-in chain's end: the policy (ACCEPT)
        results = [Outcome(o.probability, "ACCEPT", "", o.rule or f"{name} policy", o.masquerade, o.affinity) if o.verdict == "RETURN" else o for o in results]
    return results


def _target(chains, name, rule, target, opts, pkt, st: State, depth, nxt) -> list[Outcome]:
    text = f"-A {name} " + shlex.join(rule)
    if target == "DNAT":
        return [Outcome(st.probability, "DNAT", opts["--to-destination"], text, bool(st.mark & 0x4000), st.affinity)]
    if target in ("DROP", "REJECT", "ACCEPT"):
        return [Outcome(st.probability, target, "", text, bool(st.mark & 0x4000), st.affinity)]
    if target == "RETURN":
        return [Outcome(st.probability, "RETURN", affinity=st.affinity, masquerade=bool(st.mark & 0x4000))]
    if target == "MARK":
        mark = st.mark | int(opts.get("--or-mark", "0"), 0)
        mark ^= int(opts.get("--xor-mark", "0"), 0)
        nxt.append(State(st.probability, mark, st.affinity, st.trail))
        return []
    if target in ("MASQUERADE", "", None):
        nxt.append(st)
        return []
    if target not in chains:
        raise Unsupported(f"target {target} in: {text}")
    out = []
    for o in _walk(chains, target, pkt, st, depth + 1):
        if o.verdict == "RETURN":  # back in this chain: the next rules see it
            nxt.append(State(o.probability, 0x4000 if o.masquerade else st.mark, o.affinity, st.trail))
        else:
            out.append(o)
    return out


def _match(rule: list[str], pkt: Packet, st: State) -> tuple[float, str, dict]:
    """(probability the rule matches, its target, target options)."""
    p, i, neg, target, opts = 1.0, 0, False, "", {}
    if "--rcheck" in rule and "--seconds" in rule:  # a ClientIP affinity check
        st.affinity = f"ClientIP {rule[rule.index('--seconds') + 1]}s"
    while i < len(rule):
        tok = rule[i]
        arg = rule[i + 1] if i + 1 < len(rule) else ""
        if tok == "!":
            neg, i = True, i + 1
            continue
        ok, step = True, 2
        if tok == "-m":
            pass
        elif tok == "-p":
            ok = pkt.proto == arg
        elif tok == "-d":
            ok = in_net(pkt.dst, arg)
        elif tok == "-s":
            ok = in_net(pkt.src, arg)
        elif tok == "--dport":
            ok = str(pkt.port) == arg
        elif tok == "--comment":
            pass
        elif tok == "--ctstate":
            ok = "NEW" in arg.split(",")
        elif tok == "--mark":
            value, _, mask = arg.partition("/")
            ok = st.mark & int(mask or "0xffffffff", 0) == int(value, 0)
        elif tok == "--mode":
            pass
        elif tok == "--probability":
            p *= float(arg)
        elif tok in ("--dst-type", "--src-type"):  # addrtype: LOCAL is an address of this node
            if arg != "LOCAL":
                raise Unsupported(f"address type {arg} in: {shlex.join(rule)}")
            ok = (pkt.dst if tok == "--dst-type" else pkt.src) in pkt.local
        elif tok in ("--name", "--seconds"):
            pass
        elif tok == "--rcheck":
            ok, step = False, 1  # no earlier connection from this client
        elif tok in ("--reap", "--set", "--rsource", "--mask", "--random-fully"):
            step = 2 if tok == "--mask" else 1
        elif tok == "-j":
            target = arg
            opts = _options(rule[i + 2 :])
            break
        else:
            raise Unsupported(f"match {tok} in: {shlex.join(rule)}")
        if ok == neg:
            return 0.0, target, opts
        neg = False
        i += step
    return p, target, opts


def _options(tokens: list[str]) -> dict:
    opts, i = {}, 0
    while i < len(tokens):
        if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            opts[tokens[i]] = tokens[i + 1]
            i += 2
        else:
            opts[tokens[i]] = ""
            i += 1
    return opts
