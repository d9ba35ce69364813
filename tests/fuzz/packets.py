"""Hostile DNS packets, generated and mutated, and what a reply to one must look like.

Shared by the hypothesis tests (CI-sized) and the atheris harness (``make fuzz``). The
generators aim at what breaks DNS parsers: truncated headers, compression pointers that
loop or point forward, labels over 63 bytes and names over 255, QDCOUNT 0/2/65535, OPT
records with bogus options, lying lengths or in the wrong section, unknown types,
classes and opcodes, and random mutations of real queries.
"""

from __future__ import annotations

import struct

import dns.exception
import dns.message
import dns.name
import dns.opcode
from hypothesis import strategies as st

QNAMES = [
    "redis-master.default.svc.cluster.local.",  # a service
    "nginx.default.svc.cluster.local.",  # headless
    "_http._tcp.my-service.web.svc.cluster.local.",  # SRV
    "nope.default.svc.cluster.local.",  # NXDOMAIN
    "10-244-1-20.default.pod.cluster.local.",  # a pod
    "11.0.0.10.in-addr.arpa.",  # PTR
    "cluster.local.",  # the apex
    "example.test.",  # outside the cluster: forwarded or REFUSED
]
VALID = [dns.message.make_query(n, t).to_wire() for n in QNAMES for t in ("A", "AAAA", "SRV", "ANY")]
VALID += [dns.message.make_query(n, "A", use_edns=0, payload=4096).to_wire() for n in QNAMES]

RCODES = {0, 1, 2, 3, 4, 5}  # NOERROR FORMERR SERVFAIL NXDOMAIN NOTIMP REFUSED (+ BADVERS via OPT)
TYPES = [1, 2, 5, 6, 12, 15, 16, 28, 33, 35, 41, 251, 252, 255, 0, 65535]
CLASSES = [1, 3, 4, 254, 255, 0]


def _u16(draw, interesting=(0, 1, 2, 255, 256, 65535)) -> int:
    return draw(st.one_of(st.sampled_from(interesting), st.integers(0, 65535)))


@st.composite
def labels(draw) -> bytes:
    """Wire labels: ordinary, oversize (64-255: a length byte that is really a pointer
    or reserved bits), empty, or a name over 255 bytes."""
    kind = draw(st.sampled_from(["normal", "oversize", "long-name", "binary"]))
    if kind == "normal":
        parts = draw(st.lists(st.binary(min_size=1, max_size=20), max_size=5))
    elif kind == "oversize":
        parts = [b"a" * draw(st.integers(64, 70))]
    elif kind == "long-name":
        parts = [b"b" * 63] * draw(st.integers(4, 6))
    else:
        return draw(st.binary(max_size=40))
    return b"".join(bytes([len(p) & 0xFF]) + p for p in parts)


@st.composite
def names(draw) -> bytes:
    """A wire name, possibly ending in a compression pointer (loops to itself or the
    header, points forward or past the end)."""
    body = draw(labels())
    end = draw(st.sampled_from(["root", "pointer", "none"]))
    if end == "root":
        return body + b"\x00"
    if end == "pointer":
        target = draw(st.sampled_from([0, 12, 12 + len(body), 0x3FFF, len(body) + 20]) | st.integers(0, 0x3FFF))
        return body + struct.pack(">H", 0xC000 | target)
    return body


@st.composite
def opt_records(draw, owner: bytes = b"\x00") -> bytes:
    """An OPT record: payload size, extended rcode/version/flags and options, any of
    which may be nonsense (unknown codes, lengths that lie, version 1)."""
    payload = _u16(draw, (0, 511, 512, 1232, 4096, 65535))
    ttl = draw(st.sampled_from([0, 0x8000, 0x00010000, 0xFF000000]) | st.integers(0, 2**32 - 1))
    options = b""
    for _ in range(draw(st.integers(0, 3))):
        code = _u16(draw, (3, 8, 10, 12, 15, 65001))
        data = draw(st.binary(max_size=20))
        claimed = draw(st.sampled_from([len(data), len(data) + 5, 0, 65535]))
        options += struct.pack(">HH", code, claimed) + data
    rdlen = draw(st.sampled_from([len(options), len(options) + 3, 0]))
    return owner + struct.pack(">HHIH", 41, payload, ttl, rdlen) + options


@st.composite
def generated(draw) -> bytes:
    """A packet built field by field."""
    flags = draw(st.sampled_from([0x0100, 0x0000, 0x0110, 0x8180, 0x1100, 0x2800, 0x7800]) | st.integers(0, 65535))
    qd = draw(st.sampled_from([0, 1, 1, 1, 2, 65535]))
    questions = b"".join(
        draw(names()) + struct.pack(">HH", draw(st.sampled_from(TYPES) | st.integers(0, 65535)), draw(st.sampled_from(CLASSES)))
        for _ in range(min(qd, draw(st.integers(0, 3))))
    )
    # OPT where it belongs (additional), in the wrong section, twice, or not at all.
    placement = draw(st.sampled_from(["none", "additional", "answer", "authority", "twice", "named"]))
    opt = draw(opt_records(b"\x01x\x00" if placement == "named" else b"\x00"))
    an = ns = ar = 0
    rest = b""
    if placement in ("additional", "named"):
        ar, rest = 1, opt
    elif placement == "answer":
        an, rest = 1, opt
    elif placement == "authority":
        ns, rest = 1, opt
    elif placement == "twice":
        ar, rest = 2, opt + opt
    if draw(st.booleans()):  # counts that lie
        an, ns, ar = (_u16(draw) for _ in range(3))
    header = struct.pack(">HHHHHH", draw(st.integers(0, 65535)), flags, qd, an, ns, ar)
    packet = header + questions + rest + draw(st.binary(max_size=8))
    return packet[: draw(st.integers(0, len(packet)))] if draw(st.integers(0, 9)) == 0 else packet


@st.composite
def mutated(draw) -> bytes:
    """A real query with a few random edits: byte flips, truncation, insertion, a
    compression pointer written over a label, a duplicated slice."""
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "pointer", "duplicate", "count"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "pointer" and len(data) > 13:
            at = max(pos, 12)
            data[at : at + 2] = struct.pack(">H", 0xC000 | draw(st.integers(0, len(data) + 4)))
        elif op == "duplicate":
            data += data[pos : pos + draw(st.integers(1, 30))]
        elif op == "count" and len(data) >= 12:
            slot = draw(st.sampled_from([4, 6, 8, 10]))
            data[slot : slot + 2] = struct.pack(">H", draw(st.sampled_from([0, 2, 65535])))
    return bytes(data)


packets = st.one_of(generated(), mutated(), st.binary(max_size=600))


class BadReply(AssertionError):
    """A reply that breaks the contract (the fuzzers' failure)."""


def check_reply(query: bytes, reply, *, tcp: bool) -> None:
    """A reply to ``query`` is None (dropped), or a well-formed DNS response with the
    query's ID and opcode, a standard rcode and (over UDP) at most 1232 bytes. A
    response (QR=1) is never answered: that is how reflection loops start."""
    if reply is None:
        return
    if isinstance(reply, list):
        if not tcp:
            raise BadReply("several messages over UDP")
        for message in reply:
            check_reply(query, message, tcp=True)
        return
    if not isinstance(reply, bytes):
        raise BadReply(f"reply of type {type(reply).__name__}")
    if len(query) >= 3 and query[2] & 0x80:
        raise BadReply("answered a response")
    if len(reply) < 12 or reply[:2] != query[:2]:
        raise BadReply("reply does not carry the query's ID")
    if not tcp and len(reply) > 1232:
        raise BadReply(f"{len(reply)}-byte UDP reply")
    try:
        message = dns.message.from_wire(reply, question_only=False)
    except dns.exception.DNSException as e:
        raise BadReply(f"reply does not parse: {e!r}") from None
    if not message.flags & 0x8000:
        raise BadReply("QR not set")
    if message.opcode() != dns.opcode.from_flags(query[2] << 8):
        raise BadReply("opcode changed")
    if message.rcode() not in RCODES | {16}:
        raise BadReply(f"rcode {message.rcode()}")
