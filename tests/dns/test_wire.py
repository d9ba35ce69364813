"""Wire behaviour a client sees: EDNS, truncation and TCP fallback, pipelining, flags."""

from __future__ import annotations

import socket
import struct

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.conftest import rrset_texts

BIG = """
apiVersion: v1
kind: Service
metadata: {name: big, namespace: default}
spec:
  clusterIP: None
  ports: [{name: web, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: big-1, namespace: default, labels: {kubernetes.io/service-name: big}}
addressType: IPv4
ports: [{name: web, port: 80, protocol: TCP}]
endpoints:
""" + "".join(f"  - addresses: [10.1.{i // 250}.{i % 250 + 1}]\n" for i in range(120))


@pytest.fixture(scope="module")
def big_server(tmp_path_factory):
    from tests.conftest import RunningServer, base_config

    path = tmp_path_factory.mktemp("big") / "big.yaml"
    path.write_text(BIG)
    with RunningServer(base_config(manifests=(str(path),))) as srv:
        yield srv


def test_udp_without_edns_truncates_and_tcp_serves_all(big_server):
    q = dns.message.make_query("big.default.svc.cluster.local.", "A")
    udp = dns.query.udp(q, "127.0.0.1", port=big_server.port, timeout=5)
    assert udp.flags & dns.flags.TC, "120 A records do not fit 512 bytes"
    assert udp.question[0].name.to_text() == "big.default.svc.cluster.local.", "a truncated reply keeps its question"
    tcp = dns.query.tcp(q, "127.0.0.1", port=big_server.port, timeout=5)
    assert not tcp.flags & dns.flags.TC
    assert len(tcp.answer[0]) == 120


def test_edns_payload_size_is_honoured(big_server):
    small = dns.message.make_query("big.default.svc.cluster.local.", "A", use_edns=0, payload=1232)
    reply = dns.query.udp(small, "127.0.0.1", port=big_server.port, timeout=5)
    assert reply.flags & dns.flags.TC, "120 records (~1.9 KB) exceed 1232 bytes"
    assert reply.edns == 0 and reply.payload == 1232, "the OPT record comes back"
    # dnspython's resolver retries over TCP on TC; the answer is complete there
    full = dns.query.udp_with_fallback(small, "127.0.0.1", port=big_server.port, timeout=5)[0]
    assert len(full.answer[0]) == 120


def test_srv_drops_glue_before_setting_tc(big_server):
    """SRV with 120 targets: the additional section goes first; the answer still does not fit UDP."""
    q = dns.message.make_query("_web._tcp.big.default.svc.cluster.local.", "SRV", use_edns=0, payload=4096)
    reply = dns.query.udp(q, "127.0.0.1", port=big_server.port, timeout=5)
    assert reply.flags & dns.flags.TC and not reply.answer
    tcp = dns.query.tcp(q, "127.0.0.1", port=big_server.port, timeout=5)
    assert len(tcp.answer[0]) == 120 and len(tcp.additional) == 120


def test_edns_reply_carries_opt_and_fits(example_server):
    q = dns.message.make_query("my-service.web.svc.cluster.local.", "A", use_edns=0, payload=4096)
    reply = dns.query.udp(q, "127.0.0.1", port=example_server.port, timeout=5)
    assert reply.edns == 0 and reply.payload == 1232
    assert rrset_texts(reply.answer) == ["my-service.web.svc.cluster.local. 5 IN A 10.0.100.10"]


def test_unknown_edns_version_gets_badvers(example_server):
    q = dns.message.make_query("my-service.web.svc.cluster.local.", "A", use_edns=1)
    reply = dns.query.udp(q, "127.0.0.1", port=example_server.port, timeout=5)
    assert reply.rcode() == dns.rcode.BADVERS


@pytest.mark.parametrize("rd", [True, False])
def test_flags_follow_the_query(example_server, rd):
    q = dns.message.make_query("redis-master.default.svc.cluster.local.", "A")
    if not rd:
        q.flags &= ~dns.flags.RD
    q.flags |= dns.flags.CD
    reply = dns.query.udp(q, "127.0.0.1", port=example_server.port, timeout=5)
    assert reply.id == q.id
    assert bool(reply.flags & dns.flags.RD) == rd, "RD is copied from the query"
    assert reply.flags & dns.flags.CD and reply.flags & dns.flags.QR and reply.flags & dns.flags.AA


# Every shape of an ordinary query gets the same answer, whichever path answers it:
# the common ones (lowercase, RD, no CD, no EDNS or an option-less OPT) are stamped
# inside handle(), the others in stamp() after a lowercased lookup.
# (name as sent, EDNS: none / plain OPT / OPT with a cookie as dig sends, RD, CD)
SHAPES = [
    (name, edns, rd, cd)
    for name in ("my-service.web.svc.cluster.local.", "My-Service.WEB.svc.cluster.LOCAL.")
    for edns in ("none", "plain", "cookie")
    for rd, cd in ((True, False), (False, False), (True, True))
]
COOKIE = [dns.edns.GenericOption(10, b"\x01\x02\x03\x04\x05\x06\x07\x08")]


@pytest.mark.parametrize("name,edns,rd,cd", SHAPES, ids=[f"{n.split('.')[0]}-edns_{e}-rd{int(r)}-cd{int(c)}" for n, e, r, c in SHAPES])
def test_every_query_shape_gets_the_same_answer(example_server, name, edns, rd, cd):
    for qname, want in ((name, ["10.0.100.10"]), ("nope." + name, None)):
        q = dns.message.make_query(qname, "A", use_edns=False if edns == "none" else 0, options=COOKIE if edns == "cookie" else None)
        q.flags = (q.flags | dns.flags.RD if rd else q.flags & ~dns.flags.RD) | (dns.flags.CD if cd else 0)
        reply = dns.query.udp(q, "127.0.0.1", port=example_server.port, timeout=5)
        assert reply.id == q.id and reply.flags & dns.flags.QR and reply.flags & dns.flags.AA
        assert bool(reply.flags & dns.flags.RD) == rd and bool(reply.flags & dns.flags.CD) == cd
        assert (reply.edns == 0) == (edns != "none"), "OPT in the reply exactly when the query had one"
        assert reply.question[0].name.to_text() == qname, "the question as the client spelled it (0x20)"
        if want is None:
            assert reply.rcode() == dns.rcode.NXDOMAIN and not reply.answer
        else:
            assert reply.rcode() == dns.rcode.NOERROR
            assert [r.address for r in reply.answer[0]] == want and reply.answer[0].name.to_text() == qname


def _tcp_frame(msg: dns.message.Message) -> bytes:
    wire = msg.to_wire()
    return struct.pack(">H", len(wire)) + wire


def _read_frames(sock: socket.socket, count: int) -> list[dns.message.Message]:
    buf = b""
    out = []
    while len(out) < count:
        chunk = sock.recv(65535)
        assert chunk, "server closed the connection early"
        buf += chunk
        while len(buf) >= 2 and len(buf) >= 2 + struct.unpack(">H", buf[:2])[0]:
            size = struct.unpack(">H", buf[:2])[0]
            out.append(dns.message.from_wire(buf[2 : 2 + size]))
            buf = buf[2 + size :]
    return out


def test_tcp_pipelined_queries_on_one_connection(example_server):
    names = ["my-service.default.svc.cluster.local.", "redis-master.default.svc.cluster.local.", "nope.default.svc.cluster.local.",
             "kubernetes.default.svc.cluster.local."]
    queries = [dns.message.make_query(n, "A") for n in names]
    with socket.create_connection(("127.0.0.1", example_server.port), timeout=5) as s:
        s.sendall(b"".join(_tcp_frame(q) for q in queries))  # all at once, before any reply
        replies = _read_frames(s, len(queries))
    by_id = {r.id: r for r in replies}
    assert [by_id[q.id].question[0].name.to_text() for q in queries] == names
    assert [dns.rcode.to_text(by_id[q.id].rcode()) for q in queries] == ["NOERROR", "NOERROR", "NXDOMAIN", "NOERROR"]


def test_tcp_query_split_across_segments(example_server):
    wire = _tcp_frame(dns.message.make_query("redis-master.default.svc.cluster.local.", "A"))
    with socket.create_connection(("127.0.0.1", example_server.port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(wire)):
            s.send(wire[i : i + 1])
        (reply,) = _read_frames(s, 1)
    assert rrset_texts(reply.answer) == ["redis-master.default.svc.cluster.local. 5 IN A 10.0.0.11"]


def test_ipv6_listener_answers_over_udp_and_tcp(serve):
    """--listen [::1]:PORT: the batched UDP reader parses IPv6 peers, TCP works too."""
    srv = serve(listen=("::1", 0))
    q = dns.message.make_query("redis-master.default.svc.cluster.local.", "A")
    for reply in (dns.query.udp(q, "::1", port=srv.port, timeout=5), dns.query.tcp(q, "::1", port=srv.port, timeout=5)):
        assert rrset_texts(reply.answer) == ["redis-master.default.svc.cluster.local. 5 IN A 10.0.0.11"]
