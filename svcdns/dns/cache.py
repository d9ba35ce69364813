"""The cache of forwarded answers, kept as wire templates so a hit costs what a cluster
answer costs: a dictionary lookup, then the handler stamps the client's ID onto it.

An upstream reply becomes a *template* (the shape :mod:`svcdns.dns.wire` describes: ID 0,
RD clear, no OPT, lowercase question) plus the offsets of its TTL fields. A hit rewrites
those TTLs to what is left of them at most once a second per entry, so a popular name
costs one bytes copy per second, not one per query.

Lifetimes follow RFC 2308 and CoreDNS's cache plugin: a positive answer lives for its
smallest TTL, a negative one (NXDOMAIN, NODATA) for min(SOA TTL, SOA MINIMUM) and only
when it carries the SOA; both are capped by ``max_ttl``. Expired entries stay for
``serve_stale`` seconds more, to be served (with a TTL of 30, RFC 8767) when every
upstream fails.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from typing import Callable

from cachetools import LRUCache

NOERROR, SERVFAIL, NXDOMAIN = 0, 2, 3
T_SOA, T_OPT = 6, 41
STALE_TTL = 30  # RFC 8767 section 4: the TTL of a stale answer
SUCCESS, DENIAL = 0, 1  # entry kinds, as CoreDNS's cache_hits_total{type}


class BadReply(ValueError):
    """An upstream reply we cannot take apart: it is not used."""


@dataclass(slots=True)
class Entry:
    """One cached answer. ``wire`` is a template with each TTL already capped to the
    entry's lifetime; ``ttls[i]`` is the value at ``offsets[i]`` when it was stored."""

    wire: bytes
    offsets: tuple[int, ...]
    ttls: tuple[int, ...]
    stored: float
    expires: float
    kind: int = SUCCESS
    namespace: str | None = None  # autopath answers hold only for pods of this namespace
    hot: bool = True  # False: never served by the handler's hot path (client-dependent names)
    _age: int = field(default=-1, repr=False)
    _current: bytes = field(default=b"", repr=False)

    def template(self, now: float) -> bytes:
        """The template with TTLs counted down to ``now``; rebuilt once a second."""
        age = int(now - self.stored)
        if age != self._age:
            self._current = self._with_ttls(lambda ttl: max(ttl - age, 0))
            self._age = age
        return self._current

    def stale(self) -> bytes:
        return self._with_ttls(lambda ttl: STALE_TTL)

    def _with_ttls(self, ttl_of: Callable[[int], int]) -> bytes:
        buf = bytearray(self.wire)
        for offset, ttl in zip(self.offsets, self.ttls, strict=True):
            struct.pack_into(">I", buf, offset, ttl_of(ttl))
        return bytes(buf)


# --- taking a reply apart ---------------------------------------------------------------


def _skip_name(wire: bytes, i: int) -> int:
    while True:
        n = wire[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        if n > 63:
            raise BadReply("bad label length")
        i += n + 1


@dataclass(frozen=True, slots=True)
class _Record:
    start: int
    end: int
    rtype: int
    ttl_at: int
    ttl: int
    section: int  # 0 answer, 1 authority, 2 additional


def records(wire: bytes, question_end: int) -> list[_Record]:
    """Where each resource record of a message sits (validates lengths as it goes)."""
    counts = struct.unpack_from(">HHH", wire, 6)
    out, i = [], question_end
    try:
        for section, count in enumerate(counts):
            for _ in range(count):
                start = i
                i = _skip_name(wire, i)
                rtype, _cls, ttl, rdlen = struct.unpack_from(">HHIH", wire, i)
                ttl_at = i + 4
                i += 10 + rdlen
                if i > len(wire):
                    raise BadReply("record runs past the end of the message")
                out.append(_Record(start, i, rtype, ttl_at, ttl & 0x7FFFFFFF, section))
    except (IndexError, struct.error):
        raise BadReply("message ends inside a record") from None
    return out


def to_template(reply: bytes, key: bytes) -> tuple[bytes, list[_Record]]:
    """An upstream reply (already matched to ``key``) as a template: ID 0, QR+RA, AA/TC/RD/
    AD/CD clear, the upstream's rcode, our lowercase question, and no OPT record (nor
    anything after it: only signatures and glue live there)."""
    qend = 12 + len(key)
    recs = records(reply, qend)
    kept = []
    for rec in recs:
        if rec.section == 2 and rec.rtype == T_OPT:
            break
        kept.append(rec)
    end = kept[-1].end if kept else qend
    counts = [sum(1 for r in kept if r.section == s) for s in range(3)]
    header = b"\x00\x00" + bytes((0x80, 0x80 | (reply[3] & 0x0F))) + struct.pack(">HHHH", 1, *counts)
    return header + key + reply[qend:end], kept


def lifetime(template: bytes, recs: list[_Record], max_ttl: int) -> tuple[int, int]:
    """(seconds, kind) an answer may be cached for; seconds 0 = do not cache."""
    rcode = template[3] & 0x0F
    answers = [r for r in recs if r.section == 0]
    if rcode == NOERROR and answers:
        return min(min(r.ttl for r in recs), max_ttl), SUCCESS
    if rcode in (NOERROR, NXDOMAIN):
        for r in recs:
            if r.section == 1 and r.rtype == T_SOA:
                minimum = struct.unpack_from(">I", template, r.end - 4)[0]
                return min(r.ttl, minimum, max_ttl), DENIAL
    return 0, SUCCESS  # SERVFAIL, REFUSED, negative without SOA (RFC 2308 section 5): not cached


def make_entry(template: bytes, recs: list[_Record], now: float, max_ttl: int) -> Entry | None:
    seconds, kind = lifetime(template, recs, max_ttl)
    if seconds <= 0:
        return None
    buf = bytearray(template)
    ttls = []
    for r in recs:
        ttl = min(r.ttl, seconds)
        struct.pack_into(">I", buf, r.ttl_at, ttl)
        ttls.append(ttl)
    return Entry(bytes(buf), tuple(r.ttl_at for r in recs), tuple(ttls), now, now + seconds, kind)


def servfail(key: bytes) -> bytes:
    """Our own SERVFAIL template for a question (recursion available, nothing resolved)."""
    return b"\x00\x00\x80\x82" + struct.pack(">HHHH", 1, 0, 0, 0) + key


# --- the cache --------------------------------------------------------------------------


class _Entries(LRUCache):
    """An LRU that counts what it evicts for want of room, with a plain-dict ``index`` of
    the same entries: the hot path reads the index (a dict lookup) and refreshes an
    entry's LRU place only when its TTLs are rebuilt, about once a second."""

    def __init__(self, maxsize: int):
        super().__init__(maxsize=maxsize)
        self.index: dict[bytes, Entry] = {}
        self.evictions = 0

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)  # may evict through popitem -> __delitem__
        self.index[key] = value

    def __delitem__(self, key) -> None:
        super().__delitem__(key)
        del self.index[key]

    def popitem(self):
        item = super().popitem()
        self.evictions += 1
        return item

    def clear(self) -> None:  # (older cachetools clear by popitem: those are not evictions)
        evictions = self.evictions
        super().clear()
        self.index.clear()
        self.evictions = evictions

    def touch(self, key) -> None:
        self.get(key)  # LRUCache's lookup moves the key to the most recently used end


class ForwardCache:
    """Forwarded answers by question key, plus *composed* answers (ExternalName targets and
    autopath walks), which depend on the cluster and are dropped whenever it changes."""

    def __init__(self, size: int, max_ttl: int, serve_stale: int, clock: Callable[[], float] = time.monotonic):
        self.entries = _Entries(maxsize=max(size, 1))
        self.composed = _Entries(maxsize=max(size // 4, 1))
        self.max_ttl = max_ttl
        self.serve_stale = serve_stale
        self.clock = clock
        self.enabled = size > 0
        self.hits = [0, 0]  # by kind: success, denial
        self.misses = 0
        self.stale_served = 0

    @property
    def evictions(self) -> int:
        return self.entries.evictions + self.composed.evictions

    def get(self, key: bytes) -> Entry | None:
        """An entry still fresh or within its serve-stale window (expired ones are dropped)."""
        entry = self.entries.get(key)
        if entry is not None and self.clock() >= entry.expires + self.serve_stale:
            del self.entries[key]
            return None
        return entry

    def store(self, key: bytes, reply: bytes, *, hot: bool = True) -> bytes:
        """Cache an upstream reply (when its kind and TTLs allow) and return its template."""
        template, recs = to_template(reply, key)
        if self.enabled:
            entry = make_entry(template, recs, self.clock(), self.max_ttl)
            if entry is not None:
                entry.hot = hot
                self.entries[key] = entry
                return entry.template(entry.stored)
        return template

    def store_composed(self, key: bytes, template: bytes, namespace: str | None) -> bytes:
        """Cache an answer we put together; returns it as served from the cache (every TTL
        capped to the entry's lifetime, so the first answer and later ones agree)."""
        if not self.enabled:
            return template
        entry = make_entry(template, records(template, 12 + len(key)), self.clock(), self.max_ttl)
        if entry is None:
            return template
        entry.namespace = namespace
        self.composed[key] = entry
        return entry.template(entry.stored)

    def forget(self, keys) -> None:
        for key in keys:
            self.entries.pop(key, None)

    def clear_composed(self) -> None:
        self.composed.clear()
