"""The forwarding cache: TTLs counted down by a clock the test moves (no sleeps),
negative caching per RFC 2308, the size bound, and serve-stale (RFC 8767) when the
upstream dies. Upstream is a real Knot on loopback."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from svcdns.dns.cache import DENIAL, SUCCESS, lifetime, make_entry, to_template
from svcdns.dns.wire import question_key
from tests.conftest import rrset_texts
from tests.dns.nameservers import FakeClock, Knot, metric, upstream_label


def ttls(reply, section="answer") -> list[int]:
    return [rrset.ttl for rrset in getattr(reply, section)]


def sent(srv, knot) -> float:
    return metric(srv, "svcdns_forward_requests_total", to=upstream_label(knot.address))


def test_positive_answer_ttl_counts_down_then_expires(serve, knot):
    clock = FakeClock()
    srv = serve(upstreams=(knot.address,), clock=clock)
    assert ttls(srv.query("www.example.test.")) == [300]
    before = sent(srv, knot)
    clock.advance(100.4)
    assert ttls(srv.query("www.example.test.")) == [200]
    clock.advance(199)
    assert ttls(srv.query("www.example.test.")) == [1]
    assert sent(srv, knot) == before, "served from the cache"
    clock.advance(1)
    assert ttls(srv.query("www.example.test.")) == [300], "expired: asked again"
    assert sent(srv, knot) == before + 1


def test_positive_ttl_is_capped_by_cache_max_ttl(serve, knot):
    clock = FakeClock()
    srv = serve(upstreams=(knot.address,), cache_max_ttl=120, clock=clock)
    assert ttls(srv.query("long.example.test.")) == [120], "86400 in the zone"
    assert ttls(srv.query("short.example.test.")) == [30], "below the cap: the record's own TTL"
    before = sent(srv, knot)
    clock.advance(121)
    srv.query("long.example.test.")
    assert sent(srv, knot) == before + 1


def test_negative_answer_lives_for_the_soa_minimum(serve, knot):
    clock = FakeClock()
    srv = serve(upstreams=(knot.address,), clock=clock)
    first = srv.query("missing.example.test.")
    assert first.rcode() == dns.rcode.NXDOMAIN
    assert ttls(first, "authority") == [60], "min(SOA TTL 300, MINIMUM 60)"
    before = sent(srv, knot)
    clock.advance(20)
    again = srv.query("missing.example.test.")
    assert again.rcode() == dns.rcode.NXDOMAIN and ttls(again, "authority") == [40]
    nodata = srv.query("www.example.test.", "TXT")
    clock.advance(10)
    assert ttls(srv.query("www.example.test.", "TXT"), "authority") == [50], "NODATA is cached the same way"
    assert sent(srv, knot) == before + 1, "only the NODATA question went upstream"
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert metric(srv, "svcdns_cache_hits_total", type="denial") == 2
    clock.advance(31)
    srv.query("missing.example.test.")
    assert sent(srv, knot) == before + 2, "expired after 60 s"


def test_serve_stale_when_the_upstream_dies(serve, tmp_path):
    clock = FakeClock()
    with Knot(tmp_path / "knot") as knot:
        srv = serve(upstreams=(knot.address,), serve_stale=3600, upstream_timeout=0.3, query_timeout=0.6, clock=clock)
        assert ttls(srv.query("www.example.test.")) == [300]
    clock.advance(301)  # expired, and Knot is gone
    stale = srv.query("www.example.test.")
    assert stale.rcode() == dns.rcode.NOERROR
    assert rrset_texts(stale.answer) == ["www.example.test. 30 IN A 192.0.2.10"], "RFC 8767: stale answers carry TTL 30"
    assert metric(srv, "svcdns_cache_served_stale_total") == 1
    never_seen = srv.query("other.example.test.")
    assert never_seen.rcode() == dns.rcode.SERVFAIL, "nothing stale to serve"
    clock.advance(3600)  # past the serve-stale window
    assert srv.query("www.example.test.").rcode() == dns.rcode.SERVFAIL


def test_serve_stale_zero_turns_it_off(serve, tmp_path):
    clock = FakeClock()
    with Knot(tmp_path / "knot") as knot:
        srv = serve(upstreams=(knot.address,), serve_stale=0, upstream_timeout=0.3, query_timeout=0.6, clock=clock)
        srv.query("www.example.test.")
    clock.advance(301)
    assert srv.query("www.example.test.").rcode() == dns.rcode.SERVFAIL


def test_cache_size_bounds_the_entries(serve, knot):
    srv = serve(upstreams=(knot.address,), cache_size=2)
    for name in ("www", "db", "short", "long"):
        srv.query(f"{name}.example.test.")
    assert metric(srv, "svcdns_cache_entries") == 2
    assert metric(srv, "svcdns_cache_evictions_total") == 2
    before = sent(srv, knot)
    srv.query("www.example.test.")  # least recently used: evicted
    assert sent(srv, knot) == before + 1


def test_cache_size_zero_sends_every_query_upstream(serve, knot):
    srv = serve(upstreams=(knot.address,), cache_size=0)
    before = sent(srv, knot)
    for _ in range(3):
        assert srv.query("www.example.test.").answer[0][0].address == "192.0.2.10"
    assert sent(srv, knot) == before + 3


# --- how an upstream reply becomes a cache entry (pure) --------------------------------------


def _reply(rcode="NOERROR", answer=(), authority=(), edns=True) -> bytes:
    q = dns.message.make_query("host.example.", "A", use_edns=0 if edns else None)
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.from_text(rcode))
    r.flags |= dns.flags.AA
    for text in answer:
        r.answer.append(dns.rrset.from_text(*text.split(" ", 4)))
    for text in authority:
        r.authority.append(dns.rrset.from_text(*text.split(" ", 4)))
    return r.to_wire()


SOA = "example. 300 IN SOA ns.example. admin.example. 1 3600 600 86400 {minimum}"
LIFETIMES = [
    ("positive: smallest TTL", _reply(answer=["host.example. 300 IN A 192.0.2.1", "host.example. 30 IN AAAA 2001:db8::1"]), 3600,
     (30, SUCCESS)),
    ("positive: capped", _reply(answer=["host.example. 86400 IN A 192.0.2.1"]), 3600, (3600, SUCCESS)),
    ("NXDOMAIN: SOA minimum", _reply("NXDOMAIN", authority=[SOA.format(minimum=60)]), 3600, (60, DENIAL)),
    ("NXDOMAIN: SOA TTL below minimum", _reply("NXDOMAIN", authority=[SOA.format(minimum=900)]), 3600, (300, DENIAL)),
    ("NODATA: SOA minimum", _reply(authority=[SOA.format(minimum=30)]), 3600, (30, DENIAL)),
    ("NXDOMAIN without SOA: not cached", _reply("NXDOMAIN"), 3600, (0, SUCCESS)),
    ("SERVFAIL: not cached", _reply("SERVFAIL"), 3600, (0, SUCCESS)),
    ("TTL 0: not cached", _reply(answer=["host.example. 0 IN A 192.0.2.1"]), 3600, (0, SUCCESS)),
]


@pytest.mark.parametrize("reply,max_ttl,want", [c[1:] for c in LIFETIMES], ids=[c[0] for c in LIFETIMES])
def test_lifetime(reply, max_ttl, want):
    template, recs = to_template(reply, question_key("host.example", 1))
    assert lifetime(template, recs, max_ttl) == want


def test_template_drops_opt_and_flags_and_counts_ttls_down():
    key = question_key("host.example", 1)
    template, recs = to_template(_reply(answer=["host.example. 300 IN A 192.0.2.1"]), key)
    msg = dns.message.from_wire(template)
    assert msg.id == 0 and msg.edns < 0, "ID 0 and no OPT: the handler adds the client's"
    assert msg.flags & dns.flags.RA and not msg.flags & (dns.flags.AA | dns.flags.RD)
    entry = make_entry(template, recs, now=50.0, max_ttl=3600)
    assert entry is not None and entry.expires == 350.0
    assert ttls(dns.message.from_wire(entry.template(50.0))) == [300]
    assert ttls(dns.message.from_wire(entry.template(170.9))) == [180]
    assert ttls(dns.message.from_wire(entry.stale())) == [30]


def test_lru_keeps_the_entries_the_hot_path_serves():
    from svcdns.dns.cache import ForwardCache

    clock = FakeClock()
    cache = ForwardCache(size=2, max_ttl=3600, serve_stale=0, clock=clock)
    keys = [question_key(f"h{i}.example", 1) for i in range(3)]
    wire = _reply(answer=["host.example. 300 IN A 192.0.2.1"])
    for key in keys[:2]:
        cache.store(key, wire[:12] + key + wire[12 + len(question_key("host.example", 1)):])
    clock.advance(1)
    assert cache.entries.index[keys[0]].template(clock()) is not None
    cache.entries.touch(keys[0])  # what a hot-path hit in a new second does
    cache.store(keys[2], wire[:12] + keys[2] + wire[12 + len(question_key("host.example", 1)):])
    assert set(cache.entries.index) == {keys[0], keys[2]}, "h1, not the recently served h0, was evicted"
    assert cache.evictions == 1
    cache.clear_composed()
    cache.entries.clear()
    assert cache.evictions == 1 and cache.entries.index == {}, "clearing is not evicting"
