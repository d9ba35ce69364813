"""Overload: the per-prefix rate limit, the in-flight cap and the TCP limits, against a
real server on loopback. Over a limit a client gets REFUSED (or nothing, with drop);
everyone else keeps being answered."""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import replace

import dns.message
import dns.query
import dns.rcode
import pytest

from svcdns.config import OverloadConfig
from svcdns.dns.overload import RateLimiter, client_prefix, refused
from tests.dns.nameservers import FakeClock, SlowServer, metric

NAME = "redis-master.default.svc.cluster.local."
GOOD = dns.message.make_query(NAME, "A").to_wire()


def overload(**kw) -> OverloadConfig:
    return replace(OverloadConfig(), **kw)


# --- the limiter itself -------------------------------------------------------------------

PREFIXES = [
    ("IPv4 /24", "10.1.2.3", "10.1.2.200", "10.1.3.3"),
    ("IPv6 /56", "2001:db8:0:1200::1", "2001:db8:0:12ff::9", "2001:db8:0:1300::1"),
    ("IPv6 scoped", "fe80::1%eth0", "fe80::2", "fe80:0:0:100::1"),
]


@pytest.mark.parametrize("client,same,other", [c[1:] for c in PREFIXES], ids=[c[0] for c in PREFIXES])
def test_clients_share_a_bucket_per_prefix(client, same, other):
    assert client_prefix(client) == client_prefix(same)
    assert client_prefix(client) != client_prefix(other)
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock)
    assert [limiter.allow(client) for _ in range(10)] == [True] * 10, "a burst of one second's worth"
    assert not limiter.allow(same), "the neighbour in the same prefix shares the bucket"
    assert limiter.allow(other), "another prefix has its own"
    clock.advance(0.25)
    assert [limiter.allow(same) for _ in range(3)] == [True, True, False], "refills at the rate"
    assert limiter.limited == 2


def test_bucket_table_stays_bounded_under_a_flood_of_prefixes():
    clock = FakeClock()
    limiter = RateLimiter(100, max_prefixes=1000, clock=clock)
    for i in range(50000):
        limiter.allow(f"10.{i >> 8 & 255}.{i & 255}.1")
        if i % 500 == 0:
            clock.advance(0.001)
        assert len(limiter.buckets) <= 1000
    # a busy prefix keeps being limited while idle ones are evicted
    clock.advance(60)
    busy = "192.0.2.1"
    assert sum(limiter.allow(busy) for _ in range(300)) == 100


REFUSED_CASES = [
    ("plain query echoes its question", GOOD, True),
    ("no question", GOOD[:4] + b"\x00\x00" + GOOD[6:12], False),
    ("compressed question", GOOD[:12] + b"\xc0\x0c\x00\x01\x00\x01", False),
    ("truncated question", GOOD[:20], False),
]


@pytest.mark.parametrize("packet,with_question", [c[1:] for c in REFUSED_CASES], ids=[c[0] for c in REFUSED_CASES])
def test_refused_is_a_well_formed_reply(packet, with_question):
    reply = dns.message.from_wire(refused(packet))
    assert reply.rcode() == dns.rcode.REFUSED and reply.id == struct.unpack(">H", packet[:2])[0]
    assert [q.name.to_text() for q in reply.question] == ([NAME] if with_question else [])
    assert refused(packet[:11]) is None and refused(b"\x00\x00\x80" + packet[3:]) is None


# --- the rate limit on a running server ---------------------------------------------------


def blast(port: int, count: int, source: str = "127.0.0.1", wire: bytes = GOOD) -> list[int | None]:
    """Send ``count`` queries back to back, then collect rcodes (None: no answer)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(0.5)
        for i in range(count):
            s.sendto(struct.pack(">H", i) + wire[2:], ("127.0.0.1", port))
        rcodes: dict[int, int] = {}
        try:
            while len(rcodes) < count:
                data = s.recv(4096)
                rcodes[struct.unpack(">H", data[:2])[0]] = data[3] & 0x0F
        except socket.timeout:
            pass
    return [rcodes.get(i) for i in range(count)]


@pytest.mark.parametrize("action", ["refuse", "drop"])
def test_rate_limit_per_prefix(serve, action):
    srv = serve(overload=overload(rate_limit=50, action=action))
    got = blast(srv.port, 200)
    answered = [r for r in got if r == dns.rcode.NOERROR]
    assert 50 <= len(answered) <= 60, "the burst, plus what refilled meanwhile"
    over = got.count(dns.rcode.REFUSED) if action == "refuse" else got.count(None)
    assert over == 200 - len(answered)
    assert srv.query(NAME, source="127.0.1.1").rcode() == dns.rcode.NOERROR, "another /24 is not limited"
    assert metric(srv, "svcdns_dns_overload_total", limit="rate") == over
    time.sleep(0.1)
    assert srv.query(NAME).rcode() == dns.rcode.NOERROR, "the bucket refills"


# --- the in-flight cap --------------------------------------------------------------------


def test_inflight_cap_refuses_forwarded_queries_beyond_it_and_cluster_names_still_answer(serve):
    with SlowServer(None) as blackhole:  # an upstream that never answers
        srv = serve(upstreams=(blackhole.address,), upstream_timeout=1.5, query_timeout=2.0, overload=overload(max_inflight=5))
        queries = [dns.message.make_query(f"q{i}.example.test.", "A").to_wire() for i in range(20)]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            for wire in queries:
                s.sendto(wire, ("127.0.0.1", srv.port))
            refused_now = 0
            try:
                while True:
                    refused_now += dns.message.from_wire(s.recv(4096)).rcode() == dns.rcode.REFUSED
            except socket.timeout:
                pass
            assert refused_now == 15, "five wait on the upstream; the rest are turned away at once"
            assert metric(srv, "svcdns_dns_inflight") == 5
            assert srv.query(NAME).answer[0][0].address == "10.0.0.11", "cluster names never wait on the cap"
            assert srv.query(NAME, tcp=True).answer[0][0].address == "10.0.0.11"
            time.sleep(2.2)  # the five time out (SERVFAIL) and free their places
        assert metric(srv, "svcdns_dns_inflight") == 0
        assert metric(srv, "svcdns_dns_overload_total", limit="inflight") == 15


# --- TCP ----------------------------------------------------------------------------------


def tcp_query(s: socket.socket, wire: bytes = GOOD) -> dns.message.Message:
    s.sendall(struct.pack(">H", len(wire)) + wire)
    return read_tcp(s)


def read_tcp(s: socket.socket) -> dns.message.Message:
    size = struct.unpack(">H", recv_exact(s, 2))[0]
    return dns.message.from_wire(recv_exact(s, size))


def recv_exact(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def closed_within(s: socket.socket, seconds: float) -> bool:
    s.settimeout(seconds)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_slowloris_is_cut_off_by_the_idle_timeout(serve):
    """One byte every 0.1 s never completes a message in time: the connection is closed
    0.5 s after it opened, not kept alive by the trickle."""
    srv = serve(overload=overload(tcp_idle_timeout=0.5))
    message = struct.pack(">H", len(GOOD)) + GOOD
    with socket.create_connection(("127.0.0.1", srv.port)) as s:
        started = time.monotonic()
        try:
            for byte in message:
                s.send(bytes([byte]))
                time.sleep(0.1)
        except OSError:
            pass
        assert closed_within(s, 2.0)
        assert time.monotonic() - started < 1.5
    assert metric(srv, "svcdns_dns_tcp_closed_total", reason="timeout") >= 1


def test_one_byte_at_a_time_within_the_timeout_is_answered(serve):
    srv = serve()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in struct.pack(">H", len(GOOD)) + GOOD:
            s.send(bytes([byte]))
        assert read_tcp(s).answer[0][0].address == "10.0.0.11"


def test_connection_cap_evicts_the_quietest_connection(serve):
    srv = serve(overload=overload(tcp_max_connections=4))
    idle = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(4)]
    try:
        tcp_query(idle[1])  # the rest stay quiet
        time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as fresh:
            assert tcp_query(fresh).answer[0][0].address == "10.0.0.11", "a new client gets in at the cap"
        assert closed_within(idle[0], 2.0), "the longest-quiet connection made room"
        assert tcp_query(idle[1]).answer[0][0].address == "10.0.0.11", "the active one was kept"
        assert metric(srv, "svcdns_dns_tcp_closed_total", reason="evicted") == 1
    finally:
        for s in idle:
            s.close()


def test_slowloris_flood_cannot_lock_out_a_real_client(serve):
    """Twice the connection cap of half-sent messages: real clients are still answered."""
    srv = serve(overload=overload(tcp_max_connections=20))
    loris = []
    try:
        for _ in range(40):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            s.send(b"\x00\x40\x12")  # a length prefix, then a trickle that never completes
            loris.append(s)
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as real:
                assert tcp_query(real).answer[0][0].address == "10.0.0.11"
        assert metric(srv, "svcdns_dns_tcp_connections") <= 20
    finally:
        for s in loris:
            s.close()


def test_max_queries_per_connection(serve):
    srv = serve(overload=overload(tcp_max_queries=3))
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall((struct.pack(">H", len(GOOD)) + GOOD) * 5)  # pipelined
        answers = [read_tcp(s) for _ in range(3)]
        assert all(a.answer[0][0].address == "10.0.0.11" for a in answers)
        assert closed_within(s, 2.0), "closed after the third answer"


def test_client_that_never_reads_is_paused_not_buffered(serve):
    """Queries keep coming, answers are never read: the server stops reading that
    connection instead of queueing answers without bound, and serves everyone else."""
    srv = serve()
    big = dns.message.make_query("nginx.default.svc.cluster.local.", "ANY").to_wire()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as hog:
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.setblocking(False)
        chunk = (struct.pack(">H", len(big)) + big) * 64
        sent, stalled_since = 0, None
        while sent < 50 << 20:  # 50 MB of queries would mean nothing pushes back
            try:
                sent += hog.send(chunk)
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 0.5:
                    break
                time.sleep(0.01)
        assert sent < 50 << 20, "the server stopped reading"
        (conn,) = srv.call(lambda: list(srv.server.dns.connections))
        assert srv.call(lambda: conn.transport.get_write_buffer_size()) < 1 << 20, "answers are not queued without bound"
        assert srv.call(lambda: len(conn.buffer)) < 1 << 20, "nor is unparsed input"
        assert srv.query(NAME, tcp=True).answer[0][0].address == "10.0.0.11"


# --- flags --------------------------------------------------------------------------------

def test_flags_reach_the_config():
    from svcdns.cli import build_parser, serve_config

    args = build_parser().parse_args([
        "serve", "--rate-limit", "250", "--overload-action", "drop", "--max-inflight", "64", "--tcp-idle-timeout", "3",
        "--tcp-max-connections", "50", "--tcp-max-queries", "100", "--lameduck", "5", "--reuse-port", "--poll-interval", "0.2",
    ])
    config = serve_config(args)
    assert config.overload == OverloadConfig(
        max_inflight=64, rate_limit=250.0, action="drop", tcp_idle_timeout=3.0, tcp_max_connections=50,
        tcp_max_queries=100, lameduck=5.0, reuse_port=True,
    )
    assert config.poll_interval == 0.2
    assert serve_config(build_parser().parse_args(["serve"])).overload == OverloadConfig(), "defaults: limits on, rate limit off"


BAD_FLAGS = [
    ("--rate-limit", "0", "is not a positive number"),
    ("--max-inflight", "-5", "is not a positive number"),
    ("--overload-action", "ignore", "invalid choice"),
    ("--lameduck", "forever", "is not a number of seconds (0-300)"),
    ("--tcp-idle-timeout", "0", "is not a number of seconds"),
]


@pytest.mark.parametrize("flag,value,message", BAD_FLAGS, ids=[f"{c[0]} {c[1]}" for c in BAD_FLAGS])
def test_bad_flag_values_are_named(capsys, flag, value, message):
    from svcdns.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", flag, value])
    err = capsys.readouterr().err
    assert flag in err and message in err
