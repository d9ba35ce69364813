"""Zone transfers (AXFR, and IXFR answered with the full zone, RFC 1995 section 4) of a
cluster zone, for clients in ``--allow-transfer``.

The zone's records are exactly what the server answers: every precompiled question of
every service in that zone is resolved by the same Resolver, so a transfer never
disagrees with a query. The SOA opens and closes the transfer (RFC 5936).
"""

from __future__ import annotations

from dnslib import DNSRecord

from .compiler import AnswerTable
from .records import NOERROR, RR, T_A, T_AAAA, T_NS, T_SOA, T_TXT
from .wire import pack_message

RECORDS_PER_MESSAGE = 100  # keeps each TCP message far below 64 KiB


def zone_records(table: AnswerTable, zone: str) -> list[RR]:
    """Every record of ``zone`` between the two SOAs, in a stable order."""
    resolver = table.resolver
    out: list[RR] = []
    seen: set[tuple[str, int, str]] = set()

    def add(answer) -> None:
        if answer is None or answer.rcode != NOERROR:
            return
        for rr in answer.answer:
            mark = (rr.name, rr.rtype, rr.data)
            if resolver.zone_of(rr.name) == zone and rr.rtype != T_SOA and mark not in seen:
                seen.add(mark)
                out.append(rr)

    add(resolver.resolve(zone, T_NS))
    add(resolver.resolve(f"ns.dns.{zone}", T_A))
    add(resolver.resolve(f"ns.dns.{zone}", T_AAAA))
    add(resolver.resolve(f"dns-version.{zone}", T_TXT))
    for key in sorted(table.state.services):
        for name, qtype in table.questions(table.state.services[key]):
            if resolver.zone_of(name) == zone:
                add(resolver.resolve(name, qtype))
    return out


def transfer_messages(request: DNSRecord, table: AnswerTable, zone: str) -> list[bytes]:
    """The AXFR response stream: SOA, the records, SOA, in messages of bounded size."""
    soa = table.resolver.soa(zone)
    rrs = [soa, *zone_records(table, zone), soa]
    messages = []
    flags = 0x8400 | (0x0100 if request.header.rd else 0)  # QR, AA, the client's RD
    qname = str(request.q.qname).rstrip(".").lower()
    for i in range(0, len(rrs), RECORDS_PER_MESSAGE):
        question = (qname, request.q.qtype) if i == 0 else None  # only the first carries it
        messages.append(pack_message(request.header.id, flags, question, rrs[i : i + RECORDS_PER_MESSAGE]))
    return messages


def soa_only(request: DNSRecord, table: AnswerTable, zone: str) -> bytes:
    """IXFR over UDP: just the current SOA, which tells the client to come back over TCP
    (RFC 1995 section 2)."""
    flags = 0x8400 | (0x0100 if request.header.rd else 0)
    return pack_message(request.header.id, flags, (str(request.q.qname).rstrip(".").lower(), request.q.qtype), [table.resolver.soa(zone)])

