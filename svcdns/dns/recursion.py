"""Recursion for names outside the cluster: who may ask, where a name goes, the cache in
front of it, and the few answers we give ourselves.

The handler asks :meth:`Recursor.cached` on its hot path (a fresh cached answer for a
client allowed to recurse, or None) and awaits :meth:`Recursor.resolve` otherwise.
Identical questions in flight are sent upstream once. When every upstream fails, an
expired answer within the serve-stale window is served (RFC 8767); a name never seen gets
SERVFAIL within the query timeout.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Iterable

from dnslib import CNAME, RR, DNSRecord

from ..store import ClusterState, Delta
from .acl import AccessList
from .cache import NOERROR, ForwardCache, servfail
from .records import RR as Record
from .records import T_ANY, T_CNAME, T_HINFO, Answer
from .upstream import UpstreamError, UpstreamGroup, udp_exchange
from .wire import pack, question_key, rr_from_dnslib

log = logging.getLogger(__name__)

ANY_TTL = 8482  # what CoreDNS's any plugin uses for its HINFO
_SHORT_NAME_TYPES = (1, 2, 5, 6, 12, 15, 16, 28, 33, 35, 64, 65, 255)


class ForwardingLoop(RuntimeError):
    """svcdns would forward queries to itself."""


class Recursor:
    def __init__(
        self,
        state: ClusterState,
        groups: list[UpstreamGroup],
        cache: ForwardCache,
        *,
        allow: Iterable[str],
        query_timeout: float,
    ):
        self.state = state
        self.groups = sorted(groups, key=lambda g: len(g.domain), reverse=True)  # longest suffix first
        self.cache = cache
        self.acl = AccessList(allow)
        self.query_timeout = query_timeout
        self.refused = 0
        self._inflight: dict[bytes, asyncio.Future] = {}
        self._probe_name = ""
        self.probe_hits = 0
        state.subscribe(self.on_change)

    # --- who may recurse ----------------------------------------------------------------

    def allowed(self, client: str) -> bool:
        return self.acl(client)

    # --- the hot path ---------------------------------------------------------------------

    def cached(self, key: bytes, client: str) -> bytes | None:
        """A fresh cached template for this client, or None (the slow path decides)."""
        cache = self.cache
        entries = cache.entries
        entry = entries.index.get(key)
        if entry is None:
            entries = cache.composed
            entry = entries.index.get(key)
            if entry is None:
                return None
            if entry.namespace is not None:
                pod = self.state.pod_by_ip.get(client)
                if pod is None or pod.namespace != entry.namespace:
                    return None
        if not entry.hot or not self.acl(client):
            return None
        now = cache.clock()
        if now >= entry.expires:
            return None
        cache.hits[entry.kind] += 1
        if int(now - entry.stored) != entry._age:  # a new second: new TTLs, and a fresh LRU place
            entries.touch(key)
        return entry.template(now)

    # --- resolving ------------------------------------------------------------------------

    def group_for(self, qname: str) -> UpstreamGroup | None:
        for group in self.groups:
            if group.domain == "" or qname == group.domain or qname.endswith("." + group.domain):
                return group
        return None

    async def resolve(self, key: bytes, qname: str) -> bytes:
        """The template answering ``key`` (never raises: SERVFAIL when nothing works)."""
        cache = self.cache
        entry = cache.get(key)
        if entry is not None and cache.clock() < entry.expires:
            cache.hits[entry.kind] += 1
            return entry.template(cache.clock())
        pending = self._inflight.get(key)
        if pending is None:
            cache.misses += 1
            pending = asyncio.ensure_future(self._fetch(key, qname))
            self._inflight[key] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(pending)

    async def _fetch(self, key: bytes, qname: str) -> bytes:
        group = self.group_for(qname)
        if group is None:
            return servfail(key)
        stale = self.cache.get(key)  # expired but within the serve-stale window, if any
        if stale is not None and group.all_down():
            return self._stale(stale, qname, "every upstream is down")
        deadline = asyncio.get_running_loop().time() + self.query_timeout
        try:
            reply = await group.exchange(key, deadline)
        except UpstreamError as e:
            if stale is not None:
                return self._stale(stale, qname, str(e))
            log.debug("no answer for %s: %s", qname, e)
            return servfail(key)
        return self.cache.store(key, reply, hot=qname.count(".") > 0)

    def _stale(self, entry, qname: str, why: str) -> bytes:
        self.cache.stale_served += 1
        log.debug("serving a stale answer for %s: %s", qname, why)
        return entry.stale()

    # --- answers we give ourselves --------------------------------------------------------

    def any_template(self, qname: str) -> bytes:
        """RFC 8482: ANY gets one HINFO, never a trip upstream."""
        rr = Record(qname, T_HINFO, ANY_TTL, ("RFC8482", ""))
        return pack(qname, T_ANY, Answer(NOERROR, (rr,), authoritative=False), recursion_available=True)

    async def chase(self, qname: str, qtype: int, answer: Answer, namespace: str | None = None) -> bytes:
        """An answer ending in a CNAME to a name outside the cluster (an ExternalName), with
        the target's records resolved upstream appended, as CoreDNS does."""
        target = answer.chase
        tmpl = await self.resolve(question_key(target, qtype), target)
        records: tuple = ()
        if tmpl[3] & 0x0F == NOERROR:
            records = tuple(rr_from_dnslib(rr) for rr in DNSRecord.parse(tmpl).rr)
        full = Answer(
            NOERROR, answer.answer + records, answer.authority, answer.additional, rule=answer.rule, authoritative=answer.authoritative
        )
        template = pack(qname, qtype, full, recursion_available=True)
        if records and qname.count(".") > 0:
            return self.cache.store_composed(question_key(qname, qtype), template, namespace)
        return template

    # --- keeping the cache honest ---------------------------------------------------------

    def on_change(self, delta: Delta) -> None:
        """Composed answers depend on the cluster: drop them. A new service can turn a
        forwarded ``svc.ns`` name into a cluster name: forget what we forwarded for it."""
        self.cache.clear_composed()
        names = []
        for ns, name in delta.services:  # a full sync lists every service
            names.append(f"{name}.{ns}")
            svc = self.state.services.get((ns, name))
            names.extend(f"_{p.name}._{p.protocol.lower()}.{name}.{ns}" for p in (svc.ports if svc else ()) if p.name)
        self.cache.forget(question_key(n, t) for n in names for t in _SHORT_NAME_TYPES)

    # --- loop detection -------------------------------------------------------------------

    def is_probe(self, qname: str) -> bool:
        """Is this our start-up probe (``<random>.<random>.`` plus a stub domain, if any)?"""
        probe = self._probe_name
        if probe and (qname == probe or qname.startswith(probe + ".")):
            self.probe_hits += 1
            return True
        return False

    async def check_loops(self, timeout: float) -> None:
        """Ask every upstream a random name (CoreDNS's loop plugin); if that query reaches
        us, forwarding goes round in a circle: refuse to run."""
        self._probe_name = f"{secrets.randbits(62)}.{secrets.randbits(62)}"
        tries = []
        for group in self.groups:
            name = f"{self._probe_name}.{group.domain}".rstrip(".")
            key = question_key(name, T_HINFO)
            for up in group.upstreams:
                tries.append((up, udp_exchange(up, key, timeout)))
        results = await asyncio.gather(*(t[1] for t in tries), return_exceptions=True)
        looped = self.probe_hits
        self.probe_hits, probe = 0, self._probe_name
        self._probe_name = ""
        for (up, _), result in zip(tries, results, strict=True):
            if isinstance(result, BaseException) and not looped:
                log.warning("upstream %s did not answer the start-up probe (%s)", up.name, type(result).__name__)
        if looped:
            ups = ", ".join(up.name for up, _ in tries)
            raise ForwardingLoop(
                f"forwarding loop detected: the probe query '{probe}. HINFO' sent to the upstreams ({ups}) came back to "
                "svcdns itself. An upstream (or something it forwards to) points at svcdns; give --upstream a resolver "
                "that does not forward to svcdns (in a pod, not the node's /etc/resolv.conf when that names cluster DNS)."
            )

    def close(self) -> None:
        for group in self.groups:
            group.close()
        for pending in self._inflight.values():
            pending.cancel()


def prepend_cname(qname: str, qtype: int, template: bytes) -> bytes:
    """Autopath's answer: the reply for the name that resolved, asked as ``qname``, with a
    CNAME from ``qname`` to that name (TTL of its first record), as CoreDNS's cnamer."""
    msg = DNSRecord.parse(template)
    for rr in msg.rr:
        owner = str(rr.rname).rstrip(".")
        if owner.lower() != qname:
            msg.rr.insert(0, RR(qname, T_CNAME, rdata=CNAME(owner + "."), ttl=rr.ttl))
            break
    msg.q.qname = qname
    msg.q.qtype = qtype
    return bytes(msg.pack())

