"""The slow path: every query the precompiled tables and the walked question bytes
cannot answer (see handler.py for the hot path).

dnslib parses the message; malformed input gets FORMERR / NOTIMP / REFUSED or is
dropped; the Resolver answers cluster names, autopath walks a pod's search path, zone
transfers are served to allowed clients, and other names are forwarded (an awaitable
the transports wait on). A mixin of :class:`~svcdns.dns.handler.DnsHandler`: it shares
the handler's tables, counters and stamping, and none of it runs on the hot path.
"""

from __future__ import annotations

import logging
import struct
from typing import Awaitable

from dnslib import EDNS0, DNSError, DNSRecord

from .cache import servfail
from .records import FORMERR, NOTIMP, NXDOMAIN, REFUSED, SERVFAIL, T_ANY, Answer
from .transfer import soa_only, transfer_messages
from .wire import OPT_PAYLOAD, compact, header_only, pack_stored, question_key

log = logging.getLogger("svcdns.dns.handler")

BADVERS = 16
UDP_DEFAULT = 512
T_AXFR, T_IXFR, T_OPT = 252, 251, 41
# Label bytes dnslib's text keeps as they are (it escapes the rest as \DDD), minus '.'
# and '\\', which it does not escape: text with them would spell another name.
TEXT_SAFE = frozenset(range(0x21, 0x7F)) - {ord("."), ord("\\")}


class SlowPath:
    """Answers through dnslib; mixed into DnsHandler."""

    def slow(self, data: bytes, client: str, tcp: bool) -> bytes | None | Awaitable[bytes | None]:
        try:
            return self._slow(data, client, tcp)
        except Exception:
            log.exception("answering a query from %s failed", client)
            return self._count(header_only(data, SERVFAIL), 0, SERVFAIL, client)

    def _slow(self, data: bytes, client: str, tcp: bool) -> bytes | None | Awaitable[bytes | None]:
        if len(data) < 12 or data[2] & 0x80:  # too short to answer, or a response: drop
            self.dropped += 1
            return None
        opcode = (data[2] >> 3) & 0x0F
        try:
            request = DNSRecord.parse(data)
        except (DNSError, IndexError, ValueError, struct.error, UnicodeError):
            return self._count(header_only(data, FORMERR), 0, FORMERR, client)
        if opcode != 0:
            return self._count(header_only(data, NOTIMP), 0, NOTIMP, client)
        if len(request.questions) != 1 or request.rr or request.auth:
            return self._count(header_only(data, FORMERR), 0, FORMERR, client)
        q = request.q
        labels = q.qname.label
        if any(len(label) > 63 for label in labels) or sum(len(label) + 1 for label in labels) + 1 > 255:
            return self._count(header_only(data, FORMERR), 0, FORMERR, client)  # RFC 1035 limits
        if not all(TEXT_SAFE.issuperset(label) for label in labels):
            # Bytes a name's text cannot carry as they are: dnslib writes '.' bare (the name
            # would become another) and escapes control bytes (a label would outgrow 63).
            return self._count(header_only(data, FORMERR), 0, FORMERR, client)
        opts = [r for r in request.ar if r.rtype == T_OPT]
        if len(opts) > 1 or any(r.rtype == T_OPT and str(r.rname) not in (".", "") for r in request.ar):
            return self._count(header_only(data, FORMERR), q.qtype, FORMERR, client)
        edns = bool(opts)
        if edns and (opts[0].ttl >> 16) & 0xFF != 0:  # EDNS version we do not speak
            reply = request.reply()
            reply.add_ar(EDNS0(ext_rcode=BADVERS >> 4, udp_len=OPT_PAYLOAD))
            reply.header.rcode = BADVERS & 0x0F
            return self._count(reply.pack(), q.qtype, BADVERS, client)
        limit = 65535 if tcp else (max(UDP_DEFAULT, min(opts[0].rclass, OPT_PAYLOAD)) if edns else UDP_DEFAULT)
        return self._answer(request, data, client, tcp, edns, limit)

    def _answer(self, request: DNSRecord, data: bytes, client: str, tcp: bool, edns: bool, limit: int):
        """A well-formed query: transfers, cluster names (autopath for pods), the rest
        forwarded."""
        q = request.q
        qname = str(q.qname).rstrip(".").lower()
        if q.qclass != 1:
            if self.explainer is not None and self.explainer.handles(qname, q.qclass) and self.explainer.allowed(client):
                return self._count_later(self.explainer.answer(request, client, edns, limit), request, client)
            return self._refuse(request, edns, client)
        if q.qtype in (T_AXFR, T_IXFR):
            return self._transfer(request, qname, client, tcp, edns)
        if self.recursor is not None and self.recursor.is_probe(qname):  # our loop probe came back
            return self._refuse(request, edns, client)
        pod = self.state.pod_by_ip.get(client)
        client_ns = pod.namespace if pod is not None else None
        in_zone = self.resolver.zone_of(qname) is not None
        reverse = qname.endswith((".in-addr.arpa", ".ip6.arpa"))
        if (in_zone or reverse) and not self.state.synced:  # never NXDOMAIN before the first full sync
            return self._reply(request, Answer(SERVFAIL, rule="not synced yet"), qname, data, edns, limit, client, cache=False)
        answer = self.resolver.resolve(qname, q.qtype, client_ns)
        if answer is None:
            return self._recurse(request, qname, data, client, edns, limit)
        if answer.rcode == NXDOMAIN and self.autopath is not None and in_zone:
            if client_ns is not None and (found := self.autopath.base(qname, client_ns)) is not None:
                if not self._admit():
                    return self.over_limit(data, "inflight", client)
                walk = self.autopath.walk(qname, q.qtype, *found, client_ns, client)
                return self._later(walk, request, answer, qname, data, edns, limit, client)
            cache = not self.autopath.may_apply(qname)  # it may autopath for a pod: keep it off the hot path
        elif answer.chase and self.recursor is not None and self.recursor.allowed(client):
            if not self._admit():
                return self.over_limit(data, "inflight", client)
            return self._later(self.recursor.chase(qname, q.qtype, answer), request, answer, qname, data, edns, limit, client)
        else:
            cache = in_zone or reverse or qname.count(".") >= 1 and not qname.startswith("_")
            cache = cache and not (answer.chase and self.recursor is not None)
        return self._reply(request, answer, qname, data, edns, limit, client, cache=cache)

    def _recurse(self, request: DNSRecord, qname: str, data: bytes, client: str, edns: bool, limit: int):
        """A name outside the cluster: REFUSED unless the client may recurse and some
        upstream (or stub domain) covers the name; ANY answered here (RFC 8482); anything
        else resolved upstream."""
        recursor = self.recursor
        if recursor is None or not recursor.allowed(client) or recursor.group_for(qname) is None:
            if recursor is not None:
                recursor.refused += 1
            return self._refuse(request, edns, client)
        qtype = request.q.qtype
        key = question_key(qname, qtype)
        data, end = self._question(data, key)
        if qtype == T_ANY:
            return self.stamp(data, key, compact(recursor.any_template(qname), key), end, edns, limit, client)
        if not self._admit():
            return self.over_limit(data, "inflight", client)
        return self._stamp_later(recursor.resolve(key, qname), data, key, end, edns, limit, client)

    def _later(self, pending: Awaitable[bytes | None], request, fallback: Answer, qname: str, data: bytes, edns: bool, limit: int, client: str):
        """Stamp a template computed asynchronously (autopath, ExternalName targets); when it
        comes back None, the Resolver's own answer stands."""
        key = question_key(qname, request.q.qtype)
        data, end = self._question(data, key)

        async def finish() -> bytes:
            try:
                template = await pending
            except Exception:
                log.exception("completing the answer for %s failed", qname)
                template = None
            finally:
                self.inflight -= 1
            if template is None:
                stored = pack_stored(qname, request.q.qtype, fallback, recursion_available=self.table.recursion_available)
            else:
                stored = compact(template, key)
            return self.stamp(data, key, stored, end, edns, limit, client)

        return finish()

    async def _stamp_later(self, pending: Awaitable[bytes], data: bytes, key: bytes, end: int, edns: bool, limit: int, client: str) -> bytes:
        try:
            template = await pending
        except Exception:
            log.exception("forwarding failed")
            template = servfail(key)
        finally:
            self.inflight -= 1
        return self.stamp(data, key, compact(template, key), end, edns, limit, client)

    @staticmethod
    def _question(data: bytes, key: bytes) -> tuple[bytes, int]:
        """The query with its question as ``key`` spells it when the client's is compressed
        (the stamp copies the client's question bytes into the response), and where the
        question ends."""
        end = 12 + len(key)
        if data[12:end].lower() != key:
            data = data[:12] + key
        return data, end

    def _transfer(self, request: DNSRecord, qname: str, client: str, tcp: bool, edns: bool):
        """AXFR/IXFR of a cluster zone's apex for --allow-transfer clients; REFUSED otherwise."""
        zone = self.resolver.zone_of(qname)
        if self.allow_transfer is None or zone != qname or not self.allow_transfer(client) or not self.state.synced:
            return self._refuse(request, edns, client)
        qtype = request.q.qtype
        if not tcp:  # AXFR is TCP only (RFC 5936); a UDP IXFR learns the serial and comes back
            return self._count(soa_only(request, self.table, zone), qtype, 0, client) if qtype == T_IXFR else self._refuse(request, edns, client)
        messages = transfer_messages(request, self.table, zone)
        self._count(b"", qtype, 0, client)
        log.info("zone transfer of %s to %s: %d messages", zone, client, len(messages))
        return messages

    def _reply(self, request: DNSRecord, answer: Answer, qname: str, data: bytes, edns: bool, limit: int, client: str, cache: bool) -> bytes:
        qtype = request.q.qtype
        stored = pack_stored(qname, qtype, answer, recursion_available=self.table.recursion_available)
        key = question_key(qname, qtype)
        if cache and len(qname) <= 253:
            self.table.slow[key] = stored
        data, end = self._question(data, key)
        return self.stamp(data, key, stored, end, edns, limit, client)

    def _refuse(self, request: DNSRecord, edns: bool, client: str) -> bytes:
        reply = request.reply()
        reply.header.aa = 0
        reply.header.ra = int(self.table.recursion_available)
        reply.header.rcode = REFUSED
        if edns:
            reply.add_ar(EDNS0(udp_len=OPT_PAYLOAD))
        return self._count(reply.pack(), request.q.qtype, REFUSED, client)

    async def _count_later(self, pending: Awaitable[bytes], request: DNSRecord, client: str) -> bytes:
        try:
            wire = await pending
        except Exception:
            log.exception("explaining %s failed", request.q.qname)
            reply = request.reply()
            reply.header.rcode = SERVFAIL
            wire = bytes(reply.pack())
        return self._count(wire, request.q.qtype, wire[3] & 0x0F, client)
