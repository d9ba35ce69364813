"""The naive query path, kept as a benchmark baseline (``svcdns serve --naive``).

Every query is parsed with dnslib and resolved from the cluster state on the spot, the
way a straightforward server would do it: no precompiled answers, no caches. The fast
path (handler.py) must stay well ahead of this; bench/hot_path.py prints the ratio.
"""

from __future__ import annotations

from dnslib import EDNS0, DNSRecord

from ..store import ClusterState
from .records import FORMERR, REFUSED, SERVFAIL, Answer, Resolver
from .wire import OPT_PAYLOAD, header_only, pack, truncate

UDP_DEFAULT = 512


class NaiveHandler:
    """Same contract as DnsHandler.handle: bytes in, bytes (or None: drop) out."""

    def __init__(self, state: ClusterState, resolver: Resolver):
        self.state = state
        self.resolver = resolver
        self.counts: dict = {}
        self.dropped = 0

    def handle(self, data: bytes, client: str, tcp: bool) -> bytes | None:
        if len(data) < 12 or data[2] & 0x80:
            return None
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return header_only(data, FORMERR)
        if len(request.questions) != 1 or request.header.opcode != 0:
            return header_only(data, FORMERR)
        q = request.q
        qname = str(q.qname).rstrip(".").lower()
        pod = self.state.pod_by_ip.get(client)
        answer = None
        if not self.state.synced:
            answer = Answer(SERVFAIL)
        elif q.qclass == 1:
            answer = self.resolver.resolve(qname, q.qtype, pod.namespace if pod else None)
        if answer is None:
            reply = request.reply()
            reply.header.rcode = REFUSED
            return bytes(reply.pack())
        wire = pack(qname, q.qtype, answer)
        edns = any(r.rtype == 41 for r in request.ar)
        limit = 65535 if tcp else (max(UDP_DEFAULT, min(request.ar[0].rclass, OPT_PAYLOAD)) if edns else UDP_DEFAULT)
        if len(wire) > limit - (11 if edns else 0):
            wire = truncate(wire, limit - (11 if edns else 0))
        reply = DNSRecord.parse(wire)
        reply.header.id = request.header.id
        reply.header.rd = request.header.rd
        reply.questions = [request.q]  # the client's spelling
        if edns:
            reply.add_ar(EDNS0(udp_len=OPT_PAYLOAD))
        return bytes(reply.pack())
