"""Forwarding names outside the cluster to real upstream nameservers on loopback: Knot
serving a test zone, dead addresses, a slow server and a lying one."""

from __future__ import annotations

import socket
import threading
import time

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.conftest import rrset_texts
from tests.dns.nameservers import CORP_ZONE, Knot, SlowServer, free_port, metric, upstream_label

SHOP = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: payments, namespace: shop}
spec:
  type: ExternalName
  externalName: db.example.test
"""


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    path = tmp_path_factory.mktemp("manifests") / "shop.yaml"
    path.write_text(SHOP)
    return (str(path),)


@pytest.fixture(scope="module")
def forwarding(knot, manifests):
    """svcdns forwarding to Knot, serving the shop manifests."""
    from tests.conftest import RunningServer, base_config

    with RunningServer(base_config(upstreams=(knot.address,), manifests=manifests)) as srv:
        yield srv


# (qname, qtype, rcode, answer) asked of svcdns; Knot holds the answers.
CASES = [
    ("www.example.test.", "A", "NOERROR", ["www.example.test. 300 IN A 192.0.2.10"]),
    ("www.example.test.", "AAAA", "NOERROR", ["www.example.test. 300 IN AAAA 2001:db8::10"]),
    ("alias.example.test.", "A", "NOERROR",
     ["alias.example.test. 300 IN CNAME www.example.test.", "www.example.test. 300 IN A 192.0.2.10"]),
    ("nope.example.test.", "A", "NXDOMAIN", []),
    ("www.example.test.", "MX", "NOERROR", []),  # NODATA
    ("10.2.0.192.in-addr.arpa.", "PTR", "NOERROR", ["10.2.0.192.in-addr.arpa. 300 IN PTR www.example.test."]),  # not a cluster address
    ("example.test.", "NS", "NOERROR", ["example.test. 300 IN NS ns.example.test."]),  # svc.ns shape, no such service
    ("www.example.test.", "ANY", "NOERROR", ['www.example.test. 8482 IN HINFO "RFC8482" ""']),  # RFC 8482, never forwarded
    # ExternalName pointing outside the cluster: the CNAME plus the target's records.
    ("payments.shop.svc.cluster.local.", "A", "NOERROR",
    # (The composed answer lives as long as its shortest TTL, the CNAME's; so do its records.)
     ["payments.shop.svc.cluster.local. 5 IN CNAME db.example.test.", "db.example.test. 5 IN A 192.0.2.20"]),
    ("payments.shop.", "A", "NOERROR",
     ["payments.shop. 5 IN CNAME payments.shop.svc.cluster.local.", "payments.shop.svc.cluster.local. 5 IN CNAME db.example.test.",
      "db.example.test. 5 IN A 192.0.2.20"]),
    ("payments.shop.svc.cluster.local.", "CNAME", "NOERROR", ["payments.shop.svc.cluster.local. 5 IN CNAME db.example.test."]),
    # Cluster names are still ours, and now say recursion is available.
    ("web.shop.svc.cluster.local.", "A", "NOERROR", ["web.shop.svc.cluster.local. 5 IN A 10.96.0.20"]),
]


@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize("qname,qtype,rcode,answer", CASES, ids=[f"{c[0].rstrip('.')}-{c[1]}" for c in CASES])
def test_forwarded_answers(forwarding, proto, qname, qtype, rcode, answer):
    for attempt in ("upstream", "cache"):
        reply = forwarding.query(qname, qtype, tcp=proto == "tcp")
        assert dns.rcode.to_text(reply.rcode()) == rcode, attempt
        got = rrset_texts(reply.answer)
        if attempt == "cache":  # a cached answer's TTLs count down; compare the rest
            got = [_ttl_free(r) for r in got]
            assert got == sorted(_ttl_free(r) for r in answer)
        else:
            assert got == sorted(answer)
        assert reply.flags & dns.flags.RA, "forwarding on: recursion available"
        if rcode == "NXDOMAIN" or (rcode == "NOERROR" and not answer):
            assert [r.rdtype for r in reply.authority] == [dns.rdatatype.SOA], "negative answers carry the SOA"


def _ttl_free(record: str) -> str:
    name, _ttl, rest = record.split(" ", 2)
    return f"{name} {rest}"


def test_forwarded_answers_are_not_authoritative_and_echo_the_id(forwarding):
    q = dns.message.make_query("WWW.Example.TEST.", "A")
    reply = dns.query.udp(q, "127.0.0.1", port=forwarding.port, timeout=5)
    assert reply.id == q.id
    assert not reply.flags & dns.flags.AA
    assert reply.question[0].name.to_text() == "WWW.Example.TEST.", "the client's spelling comes back"
    assert [r.address for r in reply.answer[0]] == ["192.0.2.10"]


def test_cache_hits_do_not_go_upstream(forwarding, knot):
    forwarding.query("db.example.test.", "A")
    sent = metric(forwarding, "svcdns_forward_requests_total", to=upstream_label(knot.address))
    hits = metric(forwarding, "svcdns_cache_hits_total", type="success")
    for _ in range(5):
        assert forwarding.query("db.example.test.", "A").answer[0][0].address == "192.0.2.20"
    assert metric(forwarding, "svcdns_forward_requests_total", to=upstream_label(knot.address)) == sent
    assert metric(forwarding, "svcdns_cache_hits_total", type="success") == hits + 5


def test_truncated_upstream_answer_is_asked_again_over_tcp(forwarding, knot):
    retries = metric(forwarding, "svcdns_forward_tcp_retries_total", to=upstream_label(knot.address))
    reply = forwarding.query("big.example.test.", "TXT", tcp=True)
    assert len(reply.answer[0]) == 20, "Knot truncates this over UDP; svcdns must fetch it over TCP"
    assert metric(forwarding, "svcdns_forward_tcp_retries_total", to=upstream_label(knot.address)) == retries + 1
    udp = forwarding.query("big.example.test.", "TXT", use_edns=0, payload=1232)
    assert udp.flags & dns.flags.TC and not udp.answer, "too big for the client's UDP size: TC, so it retries over TCP"


def test_failover_skips_a_dead_upstream_until_it_answers_again(serve, tmp_path):
    dead = ("127.0.0.1", free_port())
    with Knot(tmp_path / "live") as live:
        srv = serve(upstreams=(dead, live.address), upstream_timeout=0.5)
        for i in range(4):  # distinct names: every one goes upstream
            reply = srv.query(f"www{i}.example.test.", "A")
            assert reply.rcode() == dns.rcode.NXDOMAIN, "answered by the live upstream"
        assert metric(srv, "svcdns_forward_healthy", to=upstream_label(dead)) == 0
        tried = metric(srv, "svcdns_forward_requests_total", to=upstream_label(dead))
        assert tried == 2, "marked down after two failures in a row"
        srv.query("www.example.test.", "A")
        assert metric(srv, "svcdns_forward_requests_total", to=upstream_label(dead)) == tried, "a down upstream is skipped"
        # The dead address comes to life: the health probe notices and it is used again.
        with Knot(tmp_path / "revived") as revived:
            revived.stop()
            revived.port = dead[1]
            revived.start()
            deadline = time.monotonic() + 10
            while metric(srv, "svcdns_forward_healthy", to=upstream_label(dead)) != 1:
                assert time.monotonic() < deadline, "the revived upstream was never probed healthy"
                time.sleep(0.1)
            srv.query("alias.example.test.", "A")
            assert metric(srv, "svcdns_forward_requests_total", to=upstream_label(dead)) == tried + 1, "first in order again"


def test_slow_upstream_times_out_and_the_next_one_answers(serve, knot):
    with SlowServer(delay=None) as blackhole:
        srv = serve(upstreams=(blackhole.address, knot.address), upstream_timeout=0.3, query_timeout=3.0)
        started = time.monotonic()
        reply = srv.query("www.example.test.", "AAAA")
        assert 0.3 <= time.monotonic() - started < 2.5, "one upstream timeout, then the next upstream"
        assert [r.address for r in reply.answer[0]] == ["2001:db8::10"]
        assert metric(srv, "svcdns_forward_failures_total", to=upstream_label(blackhole.address)) == 1


def test_never_seen_name_gets_servfail_within_the_query_timeout(serve):
    with SlowServer(delay=None) as blackhole:
        srv = serve(upstreams=(blackhole.address,), upstream_timeout=0.4, query_timeout=0.6)
        started = time.monotonic()
        reply = srv.query("www.example.test.", "A")
        elapsed = time.monotonic() - started
        assert reply.rcode() == dns.rcode.SERVFAIL
        assert 0.55 <= elapsed < 2.0, f"SERVFAIL after {elapsed:.2f}s; the query timeout is 0.6s"
        asked = [q for q in blackhole.questions if q.startswith("www.")]
        assert asked == ["www.example.test."] * 2, "a second try fits in the query timeout"


def test_identical_questions_in_flight_go_upstream_once(serve):
    with SlowServer(delay=0.4) as slow:
        srv = serve(upstreams=(slow.address,), upstream_timeout=2.0)
        replies = []

        def ask():
            replies.append(srv.query("same.example.test.", "A"))

        threads = [threading.Thread(target=ask) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [r.answer[0][0].address for r in replies] == ["192.0.2.77"] * 6
        asked = [q for q in slow.questions if q.endswith(".example.test.")]  # not the start-up loop probe
        assert asked == ["same.example.test."], "one upstream query for six clients"


def test_replies_with_the_wrong_id_or_question_are_discarded(serve):
    with SlowServer(delay=0.05, lies=True) as liar:
        srv = serve(upstreams=(liar.address,))
        reply = srv.query("bank.example.test.", "A")
        assert rrset_texts(reply.answer) == ["bank.example.test. 120 IN A 192.0.2.77"]


def test_an_upstream_without_edns_is_asked_again_without_it(serve):
    with SlowServer(delay=0.0, old=True) as old:
        srv = serve(upstreams=(old.address,))
        assert rrset_texts(srv.query("legacy.example.test.").answer) == ["legacy.example.test. 120 IN A 192.0.2.77"]
        assert [q for q in old.questions if q.startswith("legacy")] == ["legacy.example.test."] * 2


def test_a_garbled_upstream_reply_is_not_used(serve, knot):
    with SlowServer(delay=0.0, garbled=True) as garbled:
        srv = serve(upstreams=(garbled.address, knot.address))
        assert rrset_texts(srv.query("www.example.test.").answer) == ["www.example.test. 300 IN A 192.0.2.10"]
        assert metric(srv, "svcdns_forward_failures_total", to=upstream_label(garbled.address)) == 1
        alone = serve(upstreams=(garbled.address,))
        assert alone.query("www.example.test.").rcode() == dns.rcode.SERVFAIL


def test_upstream_queries_use_random_ids_and_source_ports(serve):
    """Each upstream query comes from a fresh socket with a fresh ID."""
    seen = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve_udp():
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except OSError:
                continue
            q = dns.message.from_wire(data)
            seen.append((q.id, peer[1]))
            sock.sendto(dns.message.make_response(q).to_wire(), peer)

    thread = threading.Thread(target=serve_udp, daemon=True)
    thread.start()
    try:
        srv = serve(upstreams=(sock.getsockname(),))
        for i in range(8):
            srv.query(f"n{i}.example.test.", "A")
    finally:
        stop.set()
        thread.join()
        sock.close()
    queries = seen[-8:]
    assert len({qid for qid, _ in queries}) >= 7, "IDs are random"
    assert len({port for _, port in queries}) >= 7, "source ports are random"


def test_stub_domain_goes_to_its_own_upstream(serve, knot, tmp_path):
    with Knot(tmp_path / "corp", {"corp.internal": CORP_ZONE}) as corp:
        srv = serve(upstreams=(knot.address,), stub_domains=(("corp.internal", (corp.address,)),))
        assert rrset_texts(srv.query("db.corp.internal.", "A").answer) == ["db.corp.internal. 300 IN A 192.0.2.99"]
        assert rrset_texts(srv.query("www.example.test.", "A").answer) == ["www.example.test. 300 IN A 192.0.2.10"]
        assert metric(srv, "svcdns_forward_requests_total", to=upstream_label(corp.address), domain="corp.internal") >= 1
        assert metric(srv, "svcdns_forward_requests_total", to=upstream_label(knot.address), domain="corp.internal") == 0


def test_recursion_is_refused_to_clients_outside_the_allow_list(serve, knot, manifests):
    srv = serve(upstreams=(knot.address,), manifests=manifests, allow_recursion=("127.0.0.2/32",))
    refused = srv.query("www.example.test.", "A")  # from 127.0.0.1
    assert refused.rcode() == dns.rcode.REFUSED and not refused.answer
    assert srv.query("www.example.test.", "ANY").rcode() == dns.rcode.REFUSED
    assert srv.query("web.shop.svc.cluster.local.", "A").answer[0][0].address == "10.96.0.20", "cluster names stay open"
    ext = srv.query("payments.shop.svc.cluster.local.", "A")
    assert rrset_texts(ext.answer) == ["payments.shop.svc.cluster.local. 5 IN CNAME db.example.test."], "no recursion for the target"
    allowed = srv.query("www.example.test.", "A", source="127.0.0.2")
    assert [r.address for r in allowed.answer[0]] == ["192.0.2.10"]
    # A cached answer is not a way around the list.
    assert srv.query("www.example.test.", "A").rcode() == dns.rcode.REFUSED
    assert metric(srv, "svcdns_recursion_refused_total") == 3


def test_without_upstreams_nothing_is_forwarded(example_server):
    reply = example_server.query("www.example.test.", "A")
    assert reply.rcode() == dns.rcode.REFUSED
    assert not reply.flags & dns.flags.RA


def test_an_upstream_that_refuses_is_passed_over(serve, knot, tmp_path):
    """Knot serving only corp.internal REFUSES example.test: the next upstream answers."""
    with Knot(tmp_path / "corp", {"corp.internal": CORP_ZONE}) as corp:
        srv = serve(upstreams=(corp.address, knot.address))
        assert srv.query("www.example.test.").answer[0][0].address == "192.0.2.10"
        assert srv.query("db.corp.internal.").answer[0][0].address == "192.0.2.99"
        assert metric(srv, "svcdns_forward_healthy", to=upstream_label(corp.address)) == 1, "refusing is not being down"


def test_only_stub_domains_configured_refuses_other_names(serve, tmp_path):
    with Knot(tmp_path / "corp", {"corp.internal": CORP_ZONE}) as corp:
        srv = serve(stub_domains=(("corp.internal", (corp.address,)),))
        assert srv.query("db.corp.internal.").answer[0][0].address == "192.0.2.99"
        assert srv.query("www.example.test.").rcode() == dns.rcode.REFUSED


def test_forwarding_metrics(serve, knot):
    srv = serve(upstreams=(knot.address,))
    to = upstream_label(knot.address)
    srv.query("www.example.test.")
    srv.query("www.example.test.")
    assert metric(srv, "svcdns_cache_misses_total") == 1
    assert metric(srv, "svcdns_cache_hits_total", type="success") == 1
    assert metric(srv, "svcdns_forward_requests_total", to=to, domain=".") == 1, "the cache hit stayed home"
    assert metric(srv, "svcdns_forward_request_duration_seconds_count", to=to) == 1
    assert metric(srv, "svcdns_forward_failures_total", to=to) == 0
    assert metric(srv, "svcdns_cache_entries") == 1


def test_one_udp_batch_mixing_answers_drops_and_forwarding(forwarding):
    """Datagrams that arrive together are read in one recvmmsg batch: cluster answers go
    out at once in place of their queries, the dropped ones (a response, a runt) leave
    gaps in the batch, and a forwarded name is answered when the upstream replies."""

    def query(name: str, rdtype: str, qid: int) -> bytes:
        q = dns.message.make_query(name, rdtype)
        q.id = qid
        return q.to_wire()

    response = bytearray(query("web.shop.svc.cluster.local.", "A", 2))
    response[2] |= 0x80  # QR: a response, which a server drops
    burst = [
        query("web.shop.svc.cluster.local.", "A", 1),
        bytes(response),
        query("burst.example.test.", "A", 3),  # not cached: goes to Knot (NXDOMAIN there)
        query("web.shop.svc.cluster.local.", "AAAA", 4),
        b"\x00\x05runt",
        query("web.shop.svc.cluster.local.", "A", 6),
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        forwarding.loop.call_soon_threadsafe(time.sleep, 0.3)  # hold the server: the burst queues up
        for wire in burst:
            sock.sendto(wire, ("127.0.0.1", forwarding.port))
        got = {}
        try:
            while len(got) < 5:
                reply = dns.message.from_wire(sock.recv(4096))
                got[reply.id] = reply
        except socket.timeout:
            pass
        assert sorted(got) == [1, 3, 4, 6]
        assert [rr.address for rr in got[1].answer[0]] == ["10.96.0.20"] == [rr.address for rr in got[6].answer[0]]
        assert got[4].answer == [] and got[4].rcode() == dns.rcode.NOERROR
        assert got[3].rcode() == dns.rcode.NXDOMAIN and got[3].flags & dns.flags.RA
        sock.sendto(query("web.shop.svc.cluster.local.", "A", 7), ("127.0.0.1", forwarding.port))  # the slots were reset
        assert dns.message.from_wire(sock.recv(4096)).id == 7
