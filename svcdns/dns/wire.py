"""Wire-format templates: answers packed once, then stamped per query.

A *template* is a complete response with ID 0, RD/CD clear, no OPT record, and the
question name in lowercase. Serving a query from a template only patches the ID and the
flags the client set, copies the client's spelling of the question name over the
lowercase one (answer owner names are compression pointers to it, so they follow the
client's case, as 0x20-randomising resolvers expect), and appends an OPT record when the
query carried EDNS.
"""

from __future__ import annotations

import struct

from dnslib import DNSHeader, DNSQuestion, DNSRecord

from .records import Answer

OPT_PAYLOAD = 1232  # what we advertise and the most we send over UDP (DNS flag day 2020)
# OPT RR: root name, TYPE 41, CLASS = payload size, TTL 0 (ext-rcode 0, version 0, DO 0), RDLEN 0
OPT_RR = b"\x00\x00\x29" + struct.pack(">H", OPT_PAYLOAD) + b"\x00\x00\x00\x00\x00\x00"
CLASS_IN = 1


def encode_name(name: str) -> bytes:
    """Uncompressed wire form of a lowercase name without trailing dot."""
    out = bytearray()
    if name:
        for label in name.split("."):
            raw = label.encode("idna") if not label.isascii() else label.encode()
            out.append(len(raw))
            out += raw
    out.append(0)
    return bytes(out)


def question_key(name: str, qtype: int) -> bytes:
    """The lookup key of a question: lowercase wire name + QTYPE + QCLASS IN."""
    return encode_name(name) + struct.pack(">HH", qtype, CLASS_IN)


def pack(qname: str, qtype: int, answer: Answer, *, recursion_available: bool = False) -> bytes:
    """Pack an Answer into a template."""
    header = DNSHeader(id=0, qr=1, rd=0, aa=int(answer.authoritative), ra=int(recursion_available), rcode=answer.rcode)
    msg = DNSRecord(header, q=DNSQuestion(qname or ".", qtype), rr=list(answer.answer), auth=list(answer.authority), ar=list(answer.additional))
    return bytes(msg.pack())


def truncate(template: bytes, limit: int) -> bytes:
    """Make a template fit ``limit`` bytes: drop the additional section first (glue is
    optional, no TC); if the answer still does not fit, keep the question only and set TC
    so the client retries over TCP. Never the header-only reply of DNSRecord.truncate()."""
    msg = DNSRecord.parse(template)
    if msg.ar:
        msg.ar = []
        wire = msg.pack()
        if len(wire) <= limit:
            return bytes(wire)
    msg.rr, msg.auth, msg.ar = [], [], []
    msg.header.tc = 1
    return bytes(msg.pack())


def header_only(data: bytes, rcode: int) -> bytes | None:
    """A reply carrying only the header (FORMERR for what we cannot parse); None when the
    packet is too short to have an ID worth answering."""
    if len(data) < 12:
        return None
    flags = 0x8000 | (data[2] & 0x79) << 8 | rcode  # QR, keep opcode and RD
    return data[:2] + struct.pack(">HHHHH", flags, 0, 0, 0, 0)
