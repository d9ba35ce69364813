"""From query bytes to response bytes: the hot path here, the slow path in slowpath.py.

Hot path: a well-formed IN query (one question, no compression, at most an OPT record)
is looked up by its lowercased question bytes, in the cluster's precompiled answers and
then (for clients allowed to recurse) in the forwarding cache; a hit is stamped from its
stored answer (see wire.compact). A well-formed cluster query the tables do not hold is
resolved from the bytes already walked (no dnslib parse) and cached. Every other packet
takes the slow path: dnslib parses it, malformed input gets
FORMERR / NOTIMP / REFUSED or is dropped, the Resolver answers cluster names, autopath
walks a pod's search path, and other names are forwarded (an awaitable the transports
wait on). Nothing raised here ever reaches the transport.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Awaitable

from dnslib import QTYPE

from ..store import ClusterState
from .acl import AccessList
from .compiler import AnswerTable, decode_key
from .overload import RateLimiter, refused
from .records import NXDOMAIN, REFUSED, SERVFAIL, Answer, Resolver
from .slowpath import TEXT_SAFE, UDP_DEFAULT, SlowPath
from .wire import OPT_PAYLOAD, OPT_RR, compact, encode_name, expand, pack_stored, truncate

if TYPE_CHECKING:  # pragma: no cover - recursion imports the transports, which import us
    from .autopath import AutoPath
    from .chaos import ExplainResponder
    from .recursion import Recursor

log = logging.getLogger(__name__)

_QUERY_COUNTS = b"\x00\x01\x00\x00\x00\x00"  # QDCOUNT 1, ANCOUNT 0, NSCOUNT 0
_ARCOUNT_PLUS_ONE = tuple((i + 1).to_bytes(2, "big") for i in range(256))  # ARCOUNT with our OPT record added
_SLOW_TYPES = {b"\x00\xfc", b"\x00\xfb", b"\x00\x29"}  # AXFR, IXFR, OPT: the slow path decides


class NamespaceCounts:
    """What the pods of one namespace asked: responses by rcode, and NXDOMAINs for
    ``<name>.<namespace>.svc.<zone>`` -- search-path misses, the first of the queries
    ndots:5 makes a pod send before the name it means (autopath turns them around)."""

    __slots__ = ("rcodes", "search_misses", "first_search")

    def __init__(self, first_search: tuple[bytes, ...]):
        self.rcodes = [0] * 32  # 0-15 from the header, 16 BADVERS
        self.search_misses = 0
        self.first_search = first_search  # wire suffixes <namespace>.svc.<zone>, one per zone


class DnsHandler(SlowPath):
    """Turns one query into one response (or None: drop)."""

    def __init__(
        self,
        state: ClusterState,
        resolver: Resolver,
        table: AnswerTable,
        *,
        recursor: "Recursor | None" = None,
        autopath: "AutoPath | None" = None,
        allow_transfer: AccessList | None = None,
        explainer: "ExplainResponder | None" = None,
        log_queries: bool = False,
        limiter: RateLimiter | None = None,
        overload_action: str = "refuse",
        max_inflight: int = 1000,
    ):
        self.state = state
        self.resolver = resolver
        self.table = table
        self.answers = table.answers  # the hot-path dict; AnswerTable mutates it in place
        self.recursor = recursor  # None: names outside the cluster are REFUSED
        self.cached = recursor.cached if recursor is not None else None
        self.autopath = autopath
        self.allow_transfer = allow_transfer
        self.explainer = explainer  # CH TXT NAME.explain.svcdns (slow path only)
        # qtype << 5 | rcode -> count. Plain ints: a labelled prometheus call per query would
        # cost more than the whole hot path; the metrics collector reads these at scrape.
        self.counts: defaultdict[int, int] = defaultdict(int)
        # Responses by the client pod's namespace (metrics; bounded by the namespaces pods
        # ask from): one list of counts per rcode, plus search-path misses.
        self.pod_by_ip = state.pod_by_ip  # mutated in place by the store
        self.namespaces: dict[str, NamespaceCounts] = {}
        self.unknown = NamespaceCounts(())  # clients that are not pods
        self.dropped = 0
        if log_queries:  # an instance attribute: with the log off, handle() is untouched
            from .querylog import logging_handle

            self.handle = logging_handle(self)
        self._big: dict[tuple[bytes, int], tuple[bytes, bytes]] = {}  # (key, limit) -> (stored, fitted)
        # Overload (see overload.py): the rate limit is checked first, before any work; the
        # in-flight cap bounds answers that wait on upstreams (forwarding, autopath, chasing).
        self.limiter = limiter
        self.refuse_over_limit = overload_action == "refuse"
        self.max_inflight = max_inflight
        self.inflight = 0
        self.overload: dict[str, int] = {"rate": 0, "inflight": 0}

    # --- hot path ---------------------------------------------------------------------

    def handle(self, data: bytes, client: str, tcp: bool) -> bytes | None | Awaitable[bytes | None]:
        if self.limiter is not None and not self.limiter.allow(client):
            return self.over_limit(data, "rate", client)
        try:
            n = len(data)
            # QR=0, opcode QUERY, one question and no answer/authority records?
            if n < 17 or data[2] & 0xF8 or data[4:10] != _QUERY_COUNTS:
                return self.slow(data, client, tcp)
            # Where the question ends, without searching for the end of its name: at the
            # end of the packet when nothing follows it; before the last 11 bytes when
            # they are an EDNS OPT record of version 0 without options (Go's resolver and
            # dnsperf -e send that; dig adds a cookie and takes the general path below).
            # Either way a key found in a table is a well-formed question by construction.
            if not data[10] and not data[11]:
                qlast = n
            elif (
                data[11] == 1 and not data[10] and n >= 28  # one additional record, room for an OPT:
                and not data[n - 11] and not data[n - 10] and data[n - 9] == 0x29  # root name, type OPT,
                and not data[n - 5] and not data[n - 2] and not data[n - 1]  # version 0, no options
            ):
                qlast = n - 11
            else:
                qlast = 0
            stored = None
            if qlast:
                # Looked up as sent: the tables' names are lowercase, as clients nearly
                # always send them (a name in mixed case, 0x20, is lowercased below).
                key = data[12:qlast]
                stored = self.answers.get(key) or self.table.slow.get(key)
                # The common query is answered right here: RD set and CD clear (the
                # stored flags are then the reply's) and an answer that fits (the reply
                # is len(stored) + n - 10 bytes, with or without the OPT record).
                size = 0 if stored is None else len(stored) + n - 10
                if (
                    size
                    and data[2] & 0x01
                    and not data[3] & 0x10
                    and not stored[8]
                    and (
                        size <= UDP_DEFAULT
                        or tcp and size <= 65535
                        or qlast < n and size <= OPT_PAYLOAD and size <= data[n - 8] << 8 | data[n - 7]  # the client's EDNS size
                    )
                ):
                    # stamp()'s counting, inline: a call would cost ~10 % of this path
                    rcode = stored[1] & 0x0F
                    self.counts[data[qlast - 4] << 13 | data[qlast - 3] << 5 | rcode] += 1  # qtype << 5 | rcode
                    pod = self.pod_by_ip.get(client)
                    if pod is None:
                        self.unknown.rcodes[rcode] += 1
                    else:
                        self._tally_pod(pod, rcode, key)
                    if qlast == n:
                        return data[:2] + stored[:10] + key + stored[10:]
                    # with EDNS: one more additional record, our OPT, at the end
                    return data[:2] + stored[:8] + _ARCOUNT_PLUS_ONE[stored[9]] + key + stored[10:] + OPT_RR
            # The question name ends at the first zero byte (found in C, not a Python loop
            # over labels). A miss is checked label by label before anything reads it
            # (_well_formed).
            qend = data.index(0, 12) + 1
            end = qend + 4
            if end > n:
                return self.slow(data, client, tcp)
            if stored is None:
                if not qlast:  # not yet looked up as sent
                    key = data[12:end]
                    stored = self.answers.get(key) or self.table.slow.get(key)
                if stored is None:
                    lowered = data[12:qend].lower() + data[qend:end]
                    if lowered != key:
                        key = lowered
                        stored = self.answers.get(key) or self.table.slow.get(key)
            arcount = data[10] << 8 | data[11]
            if arcount == 0:
                if end != n:
                    return self.slow(data, client, tcp)
                edns = False
                limit = 65535 if tcp else UDP_DEFAULT
            elif arcount == 1 and data[end] == 0 and data[end + 1 : end + 3] == b"\x00\x29" and data[end + 6] == 0:
                edns = True
                limit = 65535 if tcp else max(UDP_DEFAULT, min(data[end + 3] << 8 | data[end + 4], OPT_PAYLOAD))
            else:
                return self.slow(data, client, tcp)
            if stored is None:
                cached = self.cached
                template = cached(key, client) if cached is not None else None
                if template is not None:
                    stored = compact(template, key)
                else:
                    stored = self._resolve_parsed(key, client)
                    if stored is None:
                        return self.slow(data, client, tcp)
            return self.stamp(data, key, stored, end, edns, limit, client)
        except Exception:  # IndexError/ValueError for short packets; anything else is a bug the slow path contains
            return self.slow(data, client, tcp)

    def over_limit(self, data: bytes, reason: str, client: str) -> bytes | None:
        """REFUSED (or nothing, with --overload-action drop) for a query over a limit."""
        self.overload[reason] += 1
        reply = refused(data) if self.refuse_over_limit else None
        return self._count(reply, 0, REFUSED, client)

    def _admit(self) -> bool:
        """Room for one more answer that waits on an upstream? Counts it if so."""
        if self.inflight >= self.max_inflight:
            return False
        self.inflight += 1
        return True

    def _resolve_parsed(self, key: bytes, client: str) -> bytes | None:
        """A well-formed IN query the tables do not hold (a search-path miss, a pod
        record, ...): resolve it from the question bytes we already walked, without a
        dnslib parse. None sends it down the slow path: names that are not the cluster's
        (forwarding), odd types, NXDOMAINs autopath may turn around for a pod, and
        ExternalName targets to chase upstream."""
        pod = self.state.pod_by_ip.get(client)
        if pod is None:
            stored = self.table.not_for_pods.get(key)
            if stored is not None:
                return stored
        if key[-2:] != b"\x00\x01" or key[-4:-2] in _SLOW_TYPES or not _well_formed(key):
            return None  # (a name its text cannot spell goes to the slow path: FORMERR)
        qname, qtype = decode_key(key)
        reverse = qname.endswith((".in-addr.arpa", ".ip6.arpa"))
        in_zone = self.resolver.zone_of(qname) is not None
        if not self.state.synced and (in_zone or reverse):  # never NXDOMAIN before the first full sync
            return pack_stored(qname, qtype, Answer(SERVFAIL, rule="not synced yet"), recursion_available=self.table.recursion_available)
        answer = self.resolver.resolve(qname, qtype, pod.namespace if pod is not None else None)
        if answer is None or (answer.chase and self.recursor is not None):
            return None
        if answer.rcode == NXDOMAIN and in_zone and self.autopath is not None and self.autopath.may_apply(qname):
            if pod is not None:
                return None  # the slow path walks this pod's search path
            # A search-path miss from a client that is no pod: plain NXDOMAIN, cached where
            # only such clients look (pods asking the same name may get an autopath CNAME).
            stored = pack_stored(qname, qtype, answer, recursion_available=self.table.recursion_available)
            self.table.not_for_pods[key] = stored
            return stored
        stored = pack_stored(qname, qtype, answer, recursion_available=self.table.recursion_available)
        # One-label names and "_port._proto.svc" depend on the asking pod's namespace: not cached.
        if in_zone or reverse or (qname.count(".") >= 1 and not qname.startswith("_")):
            self.table.slow[key] = stored
        return stored

    def stamp(self, data: bytes, key: bytes, stored: bytes, end: int, edns: bool, limit: int, client: str) -> bytes:
        """Response = client's ID + stored flags (RD set) and counts + the client's
        question bytes (its spelling, 0x20) + stored records (+ OPT). A client that did
        not set RD, or set CD, gets its own bits back. Counted by type and rcode, and by
        the client pod's namespace."""
        if len(stored) + end - 10 + (11 if edns else 0) > limit:
            stored = self._fit(key, stored, limit - (11 if edns else 0))
        rcode = stored[1] & 0x0F
        self.counts[data[end - 4] << 13 | data[end - 3] << 5 | rcode] += 1  # qtype << 5 | rcode
        pod = self.pod_by_ip.get(client)
        if pod is None:
            self.unknown.rcodes[rcode] += 1
        else:
            self._tally_pod(pod, rcode, key)
        if data[2] & 0x01 and not data[3] & 0x10:
            if not edns:
                return data[:2] + stored[:10] + data[12:end] + stored[10:]
            head = stored[:8]
        else:
            head = bytes((stored[0] & 0xFE | data[2] & 0x01, stored[1] | data[3] & 0x10)) + stored[2:8]
            if not edns:
                return data[:2] + head + stored[8:10] + data[12:end] + stored[10:]
        arcount = (stored[8] << 8 | stored[9]) + 1
        return data[:2] + head + arcount.to_bytes(2, "big") + data[12:end] + stored[10:] + OPT_RR

    def _tally_pod(self, pod, rcode: int, key: bytes) -> None:
        """A response to a pod, counted by its namespace (and a search-path miss as one)."""
        per = self.namespaces.get(pod.namespace) or self._namespace(pod.namespace)
        per.rcodes[rcode] += 1
        if rcode == NXDOMAIN and key.endswith(per.first_search, 0, len(key) - 4):
            per.search_misses += 1

    def _namespace(self, namespace: str) -> "NamespaceCounts":
        per = self.namespaces[namespace] = NamespaceCounts(
            tuple(encode_name(f"{namespace}.svc.{zone}") for zone in self.resolver.zones)
        )
        return per

    def _fit(self, key: bytes, stored: bytes, limit: int) -> bytes:
        """The form of an oversize answer that fits ``limit`` (large headless services
        over UDP). Computed once per answer and size; an entry is reused only while it
        was made from the very answer the table holds now."""
        entry = self._big.get((key, limit))
        if entry is not None and entry[0] is stored:
            return entry[1]
        fitted = compact(truncate(expand(stored, key), limit), key)
        if len(self._big) > 100000:
            self._big.clear()
        self._big[(key, limit)] = (stored, fitted)
        return fitted

    def _count(self, wire: bytes | None, qtype: int, rcode: int, client: str) -> bytes | None:
        if wire is None:
            self.dropped += 1
        else:
            self.counts[qtype << 5 | rcode] += 1  # rcode < 32 (BADVERS is 16)
            pod = self.pod_by_ip.get(client)
            per = self.unknown if pod is None else self.namespaces.get(pod.namespace) or self._namespace(pod.namespace)
            per.rcodes[rcode & 0x1F] += 1
            wire = bytes(wire)  # dnslib packs into a bytearray; transports want bytes
        return wire



def _well_formed(key: bytes) -> bool:
    """Labels of 1-63 bytes (no compression pointer) ending exactly at the question's
    type and class, a name of at most 255 bytes, and no byte a hostname never holds
    (only TEXT_SAFE bytes: the name's text must spell the same name)."""
    i, end = 0, len(key) - 5
    while i < end:
        n = key[i]
        if not 0 < n < 64 or not TEXT_SAFE.issuperset(key[i + 1 : i + 1 + n]):
            return False
        i += n + 1
    return i == end and end < 255 and b"\x00" not in key[:end]


_COMMON = {0, 1, 2, 5, 6, 12, 15, 16, 28, 33, 35, 64, 65, 251, 252, 255}


def qtype_name(qtype: int) -> str:
    """A bounded metric label: common types by name, the rest as 'other'."""
    return str(QTYPE.get(qtype)) if qtype in _COMMON else "other"
