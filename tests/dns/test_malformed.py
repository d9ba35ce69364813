"""Hostile and broken packets: a well-formed error reply or a silent drop, never a crash,
and the server keeps answering real queries afterwards."""

from __future__ import annotations

import socket
import struct

import dns.message
import dns.rcode
import pytest

QUERY = dns.message.make_query("redis-master.default.svc.cluster.local.", "A")
GOOD = QUERY.to_wire()


def header(id_=0x1234, flags=0x0100, qd=1, an=0, ns=0, ar=0) -> bytes:
    return struct.pack(">HHHHHH", id_, flags, qd, an, ns, ar)


QNAME = b"\x0credis-master\x07default\x03svc\x07cluster\x05local\x00"
Q_A_IN = QNAME + b"\x00\x01\x00\x01"

# (case id, packet, expected rcode or None for "dropped")
CASES = [
    ("empty", b"", None),
    ("short header", b"\x12\x34\x01", None),
    ("header only, qdcount 1", header(), "FORMERR"),
    ("qdcount 0", header(qd=0), "FORMERR"),
    ("qdcount 2", header(qd=2) + Q_A_IN + Q_A_IN, "FORMERR"),
    ("qdcount 65535", header(qd=65535) + Q_A_IN, "FORMERR"),
    ("truncated question", header() + Q_A_IN[:-3], "FORMERR"),
    ("label runs past the end", header() + b"\x3fabc", "FORMERR"),
    ("compression pointer loop", header() + b"\xc0\x0c\x00\x01\x00\x01", "FORMERR"),
    ("forward compression pointer", header() + b"\xc0\x20\x00\x01\x00\x01" + b"\x00" * 30, "FORMERR"),
    ("answer section in a query", header(an=1) + Q_A_IN + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x05\x00\x04\x0a\x00\x00\x01", "FORMERR"),
    ("opcode STATUS", header(flags=0x1100) + Q_A_IN, "NOTIMP"),
    ("opcode UPDATE", header(flags=0x2900) + Q_A_IN, "NOTIMP"),
    ("class CHAOS", header() + QNAME + b"\x00\x10\x00\x03", "REFUSED"),
    ("class 4242", header() + QNAME + b"\x00\x01\x10\x92", "REFUSED"),
    ("unknown qtype 65000", header() + QNAME + b"\xfd\xe8\x00\x01", "NOERROR"),
    ("AXFR over UDP", header() + QNAME[:0] + b"\x07cluster\x05local\x00\x00\xfc\x00\x01", "REFUSED"),
    ("a response, not a query", header(flags=0x8180) + Q_A_IN, None),
    ("two OPT records", header(ar=2) + Q_A_IN + (b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00" * 2), "FORMERR"),
    ("OPT with a name", header(ar=1) + Q_A_IN + b"\x01a\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00", "FORMERR"),
    ("trailing garbage", GOOD + b"\xde\xad\xbe\xef", "NOERROR"),
    ("a dot inside a label", header() + b"\x04nope\x07defaul.\x03svc\x07cluster\x05local\x00\x00\x21\x00\x01", "FORMERR"),
    ("space in a label", header() + b"\x03a b\x07cluster\x05local\x00\x00\x01\x00\x01", "FORMERR"),
    ("raw bytes in a label", header() + b"\x03\x00\x00\xbb\x07cluster\x05local\x00\x00\x01\x00\x01", "FORMERR"),
    ("control bytes escape past 63 as text", header() + b"\x3d" + b"\x01" * 58 + b"abc" + b"\x07cluster\x05local\x00\x00\x01\x00\x01", "FORMERR"),
    ("oversize label length byte", header() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01", "FORMERR"),
]


@pytest.mark.parametrize("packet,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_udp(example_server, packet, expected):
    reply = example_server.send_raw(packet, timeout=0.5)
    if expected is None:
        assert reply is None, "dropped silently"
    else:
        assert reply is not None, "a malformed query still deserves an answer"
        assert reply[:2] == packet[:2], "the reply carries the query's ID"
        assert reply[2] & 0x80, "QR set"
        assert dns.rcode.to_text(reply[3] & 0x0F) == expected
    # ... and the server still answers a real query
    after = dns.message.from_wire(example_server.send_raw(GOOD))
    assert after.answer[0][0].address == "10.0.0.11"


def test_tcp_lying_length_prefix_and_garbage(example_server):
    """A prefix promising more than is sent, then a close: the server lives on."""
    with socket.create_connection(("127.0.0.1", example_server.port), timeout=2) as s:
        s.sendall(struct.pack(">H", 4000) + GOOD)
    with socket.create_connection(("127.0.0.1", example_server.port), timeout=2) as s:
        s.sendall(struct.pack(">H", 5) + b"\x00\x01\x02\x03\x04")  # header too short: dropped
        s.sendall(struct.pack(">H", len(GOOD)) + GOOD)  # the connection still works
        size = struct.unpack(">H", s.recv(2))[0]
        data = b""
        while len(data) < size:
            data += s.recv(size - len(data))
    assert dns.message.from_wire(data).answer[0][0].address == "10.0.0.11"


def test_random_packets_never_raise(example_server):
    """Generated packets straight into the handler: every one gets bytes or None."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    handler = example_server.server.handler

    @settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.binary(max_size=600), st.binary(max_size=40).map(lambda b: GOOD[:12] + b), st.binary(max_size=20).map(lambda b: GOOD + b)))
    def check(packet):
        reply = handler.handle(packet, "127.0.0.1", False)
        assert reply is None or isinstance(reply, bytes)
        if reply is not None:
            assert len(reply) >= 12 and reply[:2] == packet[:2]

    example_server.call(check)
    assert dns.message.from_wire(example_server.send_raw(GOOD)).answer[0][0].address == "10.0.0.11"
