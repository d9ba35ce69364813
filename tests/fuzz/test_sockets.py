"""Hostile packets over real sockets: UDP datagrams and TCP streams (lying length
prefixes, one byte at a time, random chunking), against a server that also forwards to
a real upstream on loopback. Every datagram gets a well-formed reply or none; the server
answers real queries afterwards."""

from __future__ import annotations

import random
import socket
import struct
import time

import dns.message
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.dns.nameservers import SlowServer
from tests.fuzz.packets import VALID, check_reply, packets

GOOD = dns.message.make_query("redis-master.default.svc.cluster.local.", "A").to_wire()
FORWARDED = dns.message.make_query("www.example.test.", "A").to_wire()


@pytest.fixture(scope="module")
def fuzz_server():
    from tests.conftest import RunningServer, base_config

    with SlowServer(0.0) as upstream:
        with RunningServer(base_config(upstreams=(upstream.address,), upstream_timeout=0.5, query_timeout=1.0)) as srv:
            yield srv


def still_answers(srv) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        for wire, want in ((GOOD, "10.0.0.11"), (FORWARDED, "192.0.2.77")):
            s.sendto(wire, ("127.0.0.1", srv.port))
            assert dns.message.from_wire(s.recv(4096)).answer[0][0].address == want


def numbered(packets: list[bytes]) -> list[bytes]:
    """Give every packet long enough to have an ID a distinct one, so replies can be
    matched to queries when a burst is in flight."""
    return [struct.pack(">H", i + 1) + p[2:] if len(p) >= 2 else p for i, p in enumerate(packets)]


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(packets, min_size=50, max_size=100).map(numbered))
def test_udp_datagrams(fuzz_server, burst):
    """Bursts of generated datagrams over UDP: each reply checks out against the query
    with its ID; the rest are silently dropped."""
    by_id = {p[:2]: p for p in burst if len(p) >= 2}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        for packet in burst:
            sock.sendto(packet, ("127.0.0.1", fuzz_server.port))
        sock.settimeout(0.3)
        try:
            while True:
                reply = sock.recv(65535)
                assert reply[:2] in by_id, f"a reply to no query: {reply[:16]!r}"
                check_reply(by_id[reply[:2]], reply, tcp=False)
        except socket.timeout:
            pass
    still_answers(fuzz_server)


def frame(wire: bytes) -> bytes:
    return struct.pack(">H", len(wire)) + wire


def read_messages(s: socket.socket, want: int = 1000, timeout: float = 3.0, until: bytes | None = None) -> list[bytes]:
    """Framed messages from ``s``: ``want`` of them, or until one with ID ``until`` and
    then whatever else arrives within 0.15 s (forwarded answers may come later)."""
    s.settimeout(timeout)
    data, out = b"", []
    try:
        while len(out) < want:
            if until is not None and any(m[:2] == until for m in out):
                s.settimeout(0.15)
            chunk = s.recv(65535)
            if not chunk:
                break
            data += chunk
            while len(data) >= 2 and len(data) >= 2 + (size := struct.unpack(">H", data[:2])[0]):
                out.append(data[2 : 2 + size])
                data = data[2 + size :]
    except (socket.timeout, ConnectionResetError):
        pass
    return out


REAL_ID = b"\xbe\xef"


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(packets.filter(lambda p: len(p) >= 2 and p[:2] != REAL_ID), min_size=1, max_size=4), st.randoms(use_true_random=False))
def test_tcp_stream_of_hostile_messages_in_random_chunks(fuzz_server, messages, rnd):
    """Several framed hostile messages, then a real query, cut into random chunks: the
    real query is answered, and every reply checks out against some query. (An empty
    message would mean "close": RFC 7766 framing has no such message, so none is sent.)"""
    real = REAL_ID + GOOD[2:]
    stream = b"".join(frame(m) for m in messages) + frame(real)
    with socket.create_connection(("127.0.0.1", fuzz_server.port), timeout=3) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        i = 0
        while i < len(stream):
            n = rnd.randint(1, 64)
            s.sendall(stream[i : i + n])
            i += n
        replies = read_messages(s, until=REAL_ID)
    by_id: dict[bytes, list[bytes]] = {}
    for m in messages:
        by_id.setdefault(m[:2], []).append(m)
    for reply in replies:
        if reply[:2] == REAL_ID:
            assert dns.message.from_wire(reply).answer[0][0].address == "10.0.0.11"
            continue
        errors = []
        for query in by_id.get(reply[:2], []):
            try:
                check_reply(query, reply, tcp=True)
                break
            except AssertionError as e:
                errors.append(e)
        else:
            raise AssertionError(f"reply {reply[:16]!r} matches no query: {errors}")
    assert any(r[:2] == REAL_ID for r in replies), "the real query was answered"


LIES = [
    ("prefix longer than the message, then close", frame(GOOD)[:2].replace(b"\x00", b"\x0f", 1) + GOOD, True),
    ("prefix shorter than the message", struct.pack(">H", 12) + GOOD, False),
    ("zero-length prefix", b"\x00\x00", True),
    ("prefix of 65535 and nothing else", b"\xff\xff", True),
    ("half a prefix", b"\x00", True),
]


@pytest.mark.parametrize("stream,closes", [c[1:] for c in LIES], ids=[c[0] for c in LIES])
def test_tcp_length_prefixes_that_lie(fuzz_server, stream, closes):
    with socket.create_connection(("127.0.0.1", fuzz_server.port), timeout=3) as s:
        s.sendall(stream)
        if closes:
            s.shutdown(socket.SHUT_WR)
        replies = read_messages(s, want=1, timeout=0.5)
        for reply in replies:
            check_reply(stream[2:], reply, tcp=True)
    with socket.create_connection(("127.0.0.1", fuzz_server.port), timeout=3) as s:
        s.sendall(frame(GOOD))
        (reply,) = read_messages(s, want=1)
        assert dns.message.from_wire(reply).answer[0][0].address == "10.0.0.11"


def test_every_seed_one_byte_at_a_time(fuzz_server):
    """Valid queries (cluster and forwarded), each sent one byte per segment on one
    connection: all answered, in full."""
    stream = b"".join(frame(w) for w in VALID[:12])
    with socket.create_connection(("127.0.0.1", fuzz_server.port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in stream:
            s.send(bytes([byte]))
        replies = read_messages(s, want=12, timeout=5)
    assert len(replies) == 12
    for reply in replies:
        assert any(reply[:2] == q[:2] for q in VALID[:12])


def test_many_connections_with_garbage(fuzz_server):
    """Two hundred connections sending random bytes and hanging up: no effect."""
    rnd = random.Random(7)
    for _ in range(200):
        with socket.create_connection(("127.0.0.1", fuzz_server.port), timeout=3) as s:
            s.sendall(rnd.randbytes(rnd.randint(1, 300)))
    time.sleep(0.1)
    still_answers(fuzz_server)
