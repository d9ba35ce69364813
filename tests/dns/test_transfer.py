"""Zone transfers: REFUSED by default; for --allow-transfer clients, AXFR over TCP of the
cluster zone holds exactly what queries answer."""

from __future__ import annotations

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.xfr
import dns.zone
import pytest

from tests.conftest import RunningServer, base_config, rrset_texts


@pytest.fixture(scope="module")
def transfers():
    with RunningServer(base_config(allow_transfer=("127.0.0.1/32",))) as srv:
        yield srv


def axfr(srv, zone="cluster.local", source=None) -> dns.zone.Zone:
    return dns.zone.from_xfr(dns.query.xfr("127.0.0.1", zone, port=srv.port, source=source, lifetime=10))


def zone_texts(zone: dns.zone.Zone) -> set[str]:
    out = set()
    for name, ttl, rdata in zone.iterate_rdatas():
        owner = name.derelativize(zone.origin).to_text()
        out.add(f"{owner} {ttl} IN {dns.rdatatype.to_text(rdata.rdtype)} {rdata.to_text(origin=zone.origin, relativize=False)}")
    return out


def test_axfr_holds_what_queries_answer(transfers):
    zone = axfr(transfers)
    records = zone_texts(zone)
    for qname, qtype in [
        ("my-service.default.svc.cluster.local.", "A"),
        ("dual-stack.web.svc.cluster.local.", "AAAA"),
        ("_http._tcp.my-service.web.svc.cluster.local.", "SRV"),
        ("nginx.default.svc.cluster.local.", "A"),
        ("web-0.nginx.default.svc.cluster.local.", "A"),
        ("my-database.default.svc.cluster.local.", "CNAME"),
        ("cluster.local.", "NS"),
        ("ns.dns.cluster.local.", "A"),
        ("dns-version.cluster.local.", "TXT"),
    ]:
        for record in rrset_texts(transfers.query(qname, qtype).answer):
            assert record in records, f"{record} missing from the transfer"
    soa = zone.get_rdataset("@", "SOA")[0]
    assert soa.mname.derelativize(zone.origin).to_text() == "ns.dns.cluster.local."
    assert not any(".in-addr.arpa" in r or r.startswith("my-service.default. ") for r in records), "only names in the zone"


def test_transfer_refused_to_others(transfers):
    with pytest.raises(dns.xfr.TransferError) as e:
        axfr(transfers, source="127.0.0.3")
    assert e.value.rcode == dns.rcode.REFUSED


def test_transfer_refused_by_default(example_server):
    with pytest.raises(dns.xfr.TransferError):
        axfr(example_server)


def test_axfr_of_a_name_that_is_not_the_apex_is_refused(transfers):
    with pytest.raises(dns.xfr.TransferError):
        axfr(transfers, zone="svc.cluster.local")


def test_axfr_over_udp_is_refused_and_ixfr_gets_the_soa(transfers):
    assert transfers.query("cluster.local.", "AXFR").rcode() == dns.rcode.REFUSED
    ixfr = transfers.query("cluster.local.", "IXFR")
    assert ixfr.rcode() == dns.rcode.NOERROR
    assert [dns.rdatatype.to_text(r.rdtype) for r in ixfr.answer] == ["SOA"]
