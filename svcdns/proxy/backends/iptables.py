"""iptables mode: kube-proxy's rules, chain for chain (``pkg/proxy/iptables/proxier.go``).

nat table::

  PREROUTING, OUTPUT -> KUBE-SERVICES      one rule per ClusterIP / external IP / LB IP:port
  KUBE-SERVICES -> KUBE-SVC-<h>            Cluster policy: even split over endpoints
                -> KUBE-SVL-<h>            internalTrafficPolicy Local: this node's endpoints
                -> KUBE-EXT-<h>            external traffic (external IPs, LB IPs, NodePorts)
                -> KUBE-NODEPORTS          last rule: destinations local to the node
  KUBE-SVC/SVL: DNAT --to-destination      one rule per endpoint, an even random split
  KUBE-SVC/SVL -> KUBE-SEP-<h>             ClientIP affinity only: one chain per endpoint
  POSTROUTING -> KUBE-POSTROUTING          MASQUERADE hairpin traffic (ipset KUBE-LOOP-BACK)
                                           and what KUBE-MARK-MASQ marked

filter table: KUBE-SERVICES / KUBE-EXTERNAL-SERVICES REJECT traffic to services without
endpoints (and DROP it for Local policies without local endpoints); KUBE-FORWARD
accepts marked and established traffic.

Chain hashes are kube-proxy's, so the rules read the same as on any cluster:
``KUBE-SVC-`` + base32(sha256("ns/svc:port" + "tcp"))[:16], and for endpoints
``KUBE-SEP-`` + base32(sha256("ns/svc:port" + "tcp" + "ip:port"))[:16].

Where this departs from kube-proxy, and why: kube-proxy gives every endpoint a
``KUBE-SEP-`` chain (mark hairpin traffic, then DNAT). At 10,000 services x 10 endpoints
that is 110,000 chains, and ``iptables-restore`` spends most of its time on chains (the
legacy backend's chain list: 8.5 s to load kube-proxy's layout, 0.9 s without the
endpoint chains; see docs/performance.md). Here a service's chain DNATs directly, and
hairpin traffic (a pod whose connection to its service lands on itself, which must be
masqueraded or the pod answers its own SYN) is matched after DNAT in KUBE-POSTROUTING by
the ipset ``KUBE-LOOP-BACK`` (endpoint IP, port, endpoint IP): kube-proxy's ipvs mode
does the same with a set of that name. Only this node's endpoints can be hairpin
destinations (another node's pods reach their services through their own node), so the
set holds the local endpoints: tens to hundreds of entries. Services with ClientIP
affinity keep kube-proxy's per-endpoint chains, which ``-m recent`` needs.

Rendering is pure (:func:`render`); :class:`IptablesBackend` applies the ipset changes
with ``ipset restore`` and then the text with ``iptables-restore --noflush``; after the
first sync it writes only the chains of the services that changed.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..model import Key, ProxyView, of_family
from . import loopback
from .iptables_rules import (
    JUMPS,
    LARGE_CLUSTER_ENDPOINTS,
    SERVICE_CHAIN_PREFIXES,
    Edits,
    Jump,
    Writer,
)
from .tools import existing_state, run_tool

log = logging.getLogger(__name__)


@dataclass
class Rendered:
    text: str
    nat_chains: frozenset[str]  # every per-service chain that should exist after this sync
    written: int  # per-service chains whose rules this input (re)writes
    cache: dict = field(default_factory=dict)  # ServicePortName -> ServiceRules, for the next partial render
    large: bool = False
    loop_back: Counter = field(default_factory=Counter)  # KUBE-LOOP-BACK entry -> service ports using it


def render(
    view: ProxyView,
    family: int = 4,
    *,
    changed: set[Key] | None = None,
    existing: Iterable[str] = (),
    jumps: Iterable[Jump] = JUMPS,
    previous: Rendered | None = None,
) -> Rendered:
    """The iptables-restore input for one IP family.

    ``changed`` = None renders every chain (a full sync). Otherwise only the chains of
    the services named in it are written: with ``previous`` (the last sync's result) as
    a delta touching only those services (:func:`_render_delta`), without it by
    rewriting the shared chains whole. ``existing`` are chains known to be in the
    kernel: those of ours that no service uses any more are flushed and deleted.
    ``jumps`` are the built-in-chain rules to insert (pass only the missing ones)."""
    w = Writer(view, family)
    w.large = sum(map(len, view.endpoints.values())) > LARGE_CLUSTER_ENDPOINTS
    if previous is not None and changed is not None and previous.large == w.large:
        return _render_delta(w, changed, previous)
    cache = {}
    for svc in view.sorted_services():
        if not of_family(svc.cluster_ips, family):
            continue
        dirty = changed is None or svc.name.key in changed
        rules = w.service(svc)
        cache[svc.name] = rules
        w.active.update(rules.chains)
        w.filter_rules += rules.filter
        if dirty:
            w.written += len(rules.chains)
            w.nat_blocks.append((rules.order, [*(f":{c} - [0:0]" for c in rules.chains), *rules.rules, *rules.top]))
        else:
            w.nat_blocks.append((rules.order, rules.top))
    stale = {c for c in existing if c.startswith(SERVICE_CHAIN_PREFIXES)} - w.active
    loop_back = Counter(e for rules in cache.values() for e in rules.loop_back)
    return Rendered(w.finish(stale, jumps), frozenset(w.active), w.written, cache, w.large, loop_back)


def _render_delta(w: Writer, changed: set[Key], previous: Rendered) -> Rendered:
    """A partial sync as a delta on ``previous``: work proportional to the changed
    services (a few ms), not to the cluster (an O(n) render was ~55 ms at 10,000)."""
    view, family = w.view, w.family
    cache = dict(previous.cache)
    active = set(previous.nat_chains)
    loop_back = Counter(previous.loop_back)  # an IP:port can serve several service ports
    edits = Edits()
    ports = {spn for spn in previous.cache if spn.key in changed}
    ports.update(spn for spn in view.services if spn.key in changed)
    for spn in sorted(ports):
        old = cache.pop(spn, None)
        if old is not None:
            active.difference_update(old.chains)
            loop_back.subtract(old.loop_back)
        svc = view.services.get(spn)
        new = w.service(svc) if svc is not None and of_family(svc.cluster_ips, family) else None
        edits.replace(old, new)
        if new is not None:
            cache[spn] = new
            active.update(new.chains)
            loop_back.update(new.loop_back)
            w.written += len(new.chains)
            w.nat_chains += [f":{c} - [0:0]" for c in new.chains]
            w.nat_rules += new.rules
    stale = previous.nat_chains - active
    loop_back = Counter({e: n for e, n in loop_back.items() if n > 0})
    return Rendered(w.finish_delta(stale, edits), frozenset(active), w.written, cache, w.large, loop_back)


# --- applying ----------------------------------------------------------------------------


class IptablesBackend:
    """Applies :func:`render` output. The first sync (and any sync after a failure) is
    full; later ones rewrite only the chains of services that changed."""

    mode = "iptables"
    blocking = True

    def __init__(self, prefix: tuple[str, ...] = (), variant: str = "") -> None:
        self.prefix = list(prefix)  # e.g. ("ip", "netns", "exec", NS): tests and benchmarks
        self.variant = variant  # "" = the system's iptables; "legacy" / "nft" pick iptables-<variant>-restore
        self._previous: dict[int, Rendered] = {}
        self._loop_back = loopback.LoopBackSets(prefix)
        self._full_done: set[int] = set()
        self.last_input_bytes = 0

    def render_all(self, view: ProxyView) -> str:
        """What a first sync on a fresh node applies (``--dry-run``)."""
        parts = []
        for family in view.families():
            rendered = render(view, family)
            parts.append(loopback.dry_run(family, rendered.loop_back))
            parts.append(rendered.text if family == 4 else "# ip6tables-restore input\n" + rendered.text)
        return "\n".join(parts)

    def sync(self, view: ProxyView, changed: set[Key] | None) -> None:
        total = 0
        for family in view.families():
            tool = ("iptables" if family == 4 else "ip6tables") + (f"-{self.variant}" if self.variant else "")
            save, restore = f"{tool}-save", f"{tool}-restore"
            full = changed is None or family not in self._full_done
            if full:
                chains, present = existing_state(run_tool([*self.prefix, save], what=save, timeout=300))
                missing = [j for j in JUMPS if (j.table, j.chain, j.target) not in present]
                existing = chains
                rendered = render(view, family, existing=existing, jumps=missing)
            else:
                previous = self._previous[family]
                rendered = render(view, family, changed=changed, existing=previous.nat_chains, jumps=(), previous=previous)
            self._full_done.discard(family)
            # the set first: the rules refer to it, and new endpoints' entries must be
            # there before their DNAT rules
            ipset_bytes = self._loop_back.sync(family, rendered.loop_back, full=full)
            if rendered.text.strip():  # an untouched table is not replaced (legacy replaces whole tables)
                run_tool([*self.prefix, restore, "-w", "--noflush"], rendered.text, what=restore)
            self._previous[family] = rendered
            self._full_done.add(family)
            total += len(rendered.text) + ipset_bytes
            log.debug("%s: %s sync wrote %d service chains (%d bytes)", restore, "full" if full else "partial", rendered.written, len(rendered.text))
        self.last_input_bytes = total

    def close(self) -> None:
        """Rules stay in place when the proxy stops (as kube-proxy's do): connections keep
        flowing while it restarts."""
