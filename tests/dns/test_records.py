"""Every record kind of the Kubernetes DNS spec, asked over real UDP and TCP of the
embedded example cluster, compared as zone-file text (CoreDNS test.Case style)."""

from __future__ import annotations

import dns.flags
import dns.rcode
import dns.rdatatype
import pytest

from tests.conftest import rrset_texts

Z = "cluster.local."
SOA_AUTH = "soa"  # NODATA / NXDOMAIN carry the zone's SOA in the authority section

# (qname, qtype, rcode, answer, additional)
CASES = [
    # ClusterIP services
    ("my-service.default.svc.cluster.local.", "A", "NOERROR", ["my-service.default.svc.cluster.local. 5 IN A 10.0.23.45"], []),
    ("redis-master.default.svc.cluster.local.", "A", "NOERROR", ["redis-master.default.svc.cluster.local. 5 IN A 10.0.0.11"], []),
    ("kubernetes.default.svc.cluster.local.", "A", "NOERROR", ["kubernetes.default.svc.cluster.local. 5 IN A 10.0.0.1"], []),
    ("my-service.web.svc.cluster.local.", "A", "NOERROR", ["my-service.web.svc.cluster.local. 5 IN A 10.0.100.10"], []),
    ("my-service.default.svc.cluster.local.", "AAAA", "NOERROR", [], SOA_AUTH),
    ("dual-stack.web.svc.cluster.local.", "A", "NOERROR", ["dual-stack.web.svc.cluster.local. 5 IN A 10.0.200.7"], []),
    ("dual-stack.web.svc.cluster.local.", "AAAA", "NOERROR", ["dual-stack.web.svc.cluster.local. 5 IN AAAA fd00:10::c8:7"], []),
    # SRV: every port of a service; named ports; weight floor(100/N)
    ("my-service.default.svc.cluster.local.", "SRV", "NOERROR",
     ["my-service.default.svc.cluster.local. 5 IN SRV 0 100 80 my-service.default.svc.cluster.local."],
     ["my-service.default.svc.cluster.local. 5 IN A 10.0.23.45"]),
    ("my-service.web.svc.cluster.local.", "SRV", "NOERROR",
     ["my-service.web.svc.cluster.local. 5 IN SRV 0 50 443 my-service.web.svc.cluster.local.",
      "my-service.web.svc.cluster.local. 5 IN SRV 0 50 80 my-service.web.svc.cluster.local."],
     ["my-service.web.svc.cluster.local. 5 IN A 10.0.100.10"]),
    ("_http._tcp.my-service.web.svc.cluster.local.", "SRV", "NOERROR",
     ["_http._tcp.my-service.web.svc.cluster.local. 5 IN SRV 0 100 80 my-service.web.svc.cluster.local."],
     ["my-service.web.svc.cluster.local. 5 IN A 10.0.100.10"]),
    ("_https._tcp.my-service.web.svc.cluster.local.", "SRV", "NOERROR",
     ["_https._tcp.my-service.web.svc.cluster.local. 5 IN SRV 0 100 443 my-service.web.svc.cluster.local."],
     ["my-service.web.svc.cluster.local. 5 IN A 10.0.100.10"]),
    ("_dns._udp.kube-dns.kube-system.svc.cluster.local.", "SRV", "NOERROR",
     ["_dns._udp.kube-dns.kube-system.svc.cluster.local. 5 IN SRV 0 100 53 kube-dns.kube-system.svc.cluster.local."],
     ["kube-dns.kube-system.svc.cluster.local. 5 IN A 10.0.0.10"]),
    ("dual-stack.web.svc.cluster.local.", "SRV", "NOERROR",  # one entry per address family
     ["dual-stack.web.svc.cluster.local. 5 IN SRV 0 50 8080 dual-stack.web.svc.cluster.local."],
     ["dual-stack.web.svc.cluster.local. 5 IN A 10.0.200.7", "dual-stack.web.svc.cluster.local. 5 IN AAAA fd00:10::c8:7"]),
    ("_http._tcp.my-service.web.svc.cluster.local.", "A", "NOERROR",  # CoreDNS answers A on the port name too
     ["_http._tcp.my-service.web.svc.cluster.local. 5 IN A 10.0.100.10"], []),
    ("_http._udp.my-service.web.svc.cluster.local.", "SRV", "NXDOMAIN", [], SOA_AUTH),
    ("_ftp._tcp.my-service.web.svc.cluster.local.", "SRV", "NXDOMAIN", [], SOA_AUTH),
    # Headless: one record per ready endpoint, per-pod names; web-2 is not ready
    ("nginx.default.svc.cluster.local.", "A", "NOERROR",
     ["nginx.default.svc.cluster.local. 5 IN A 10.244.1.20", "nginx.default.svc.cluster.local. 5 IN A 10.244.2.21"], []),
    ("nginx.default.svc.cluster.local.", "AAAA", "NOERROR", [], SOA_AUTH),
    ("web-0.nginx.default.svc.cluster.local.", "A", "NOERROR", ["web-0.nginx.default.svc.cluster.local. 5 IN A 10.244.1.20"], []),
    ("web-1.nginx.default.svc.cluster.local.", "A", "NOERROR", ["web-1.nginx.default.svc.cluster.local. 5 IN A 10.244.2.21"], []),
    ("web-2.nginx.default.svc.cluster.local.", "A", "NXDOMAIN", [], SOA_AUTH),
    ("_web._tcp.nginx.default.svc.cluster.local.", "SRV", "NOERROR",
     ["_web._tcp.nginx.default.svc.cluster.local. 5 IN SRV 0 50 80 web-0.nginx.default.svc.cluster.local.",
      "_web._tcp.nginx.default.svc.cluster.local. 5 IN SRV 0 50 80 web-1.nginx.default.svc.cluster.local."],
     ["web-0.nginx.default.svc.cluster.local. 5 IN A 10.244.1.20", "web-1.nginx.default.svc.cluster.local. 5 IN A 10.244.2.21"]),
    # Endpoint names work on ClusterIP services too (CoreDNS), dashed IP when no hostname
    ("192-0-2-42.my-service.default.svc.cluster.local.", "A", "NOERROR",
     ["192-0-2-42.my-service.default.svc.cluster.local. 5 IN A 192.0.2.42"], []),
    # ExternalName
    ("my-database.default.svc.cluster.local.", "CNAME", "NOERROR", ["my-database.default.svc.cluster.local. 5 IN CNAME db.example.com."], []),
    ("my-database.default.svc.cluster.local.", "A", "NOERROR", ["my-database.default.svc.cluster.local. 5 IN CNAME db.example.com."], []),
    ("my-database.default.svc.cluster.local.", "SRV", "NOERROR", [], SOA_AUTH),
    ("x.my-database.default.svc.cluster.local.", "A", "NXDOMAIN", [], SOA_AUTH),
    # PTR for ClusterIPs (v4 and v6) and endpoints
    ("11.0.0.10.in-addr.arpa.", "PTR", "NOERROR", ["11.0.0.10.in-addr.arpa. 5 IN PTR redis-master.default.svc.cluster.local."], []),
    ("7.0.0.0.8.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.d.f.ip6.arpa.", "PTR", "NOERROR",
     ["7.0.0.0.8.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.d.f.ip6.arpa. 5 IN PTR dual-stack.web.svc.cluster.local."], []),
    ("20.1.244.10.in-addr.arpa.", "PTR", "NOERROR", ["20.1.244.10.in-addr.arpa. 5 IN PTR web-0.nginx.default.svc.cluster.local."], []),
    ("42.2.0.192.in-addr.arpa.", "PTR", "NOERROR", ["42.2.0.192.in-addr.arpa. 5 IN PTR 192-0-2-42.my-service.default.svc.cluster.local."], []),
    # Pod records (--pods insecure, the default)
    ("10-244-1-10.web.pod.cluster.local.", "A", "NOERROR", ["10-244-1-10.web.pod.cluster.local. 5 IN A 10.244.1.10"], []),
    ("10-244-1-10.web.pod.cluster.local.", "AAAA", "NOERROR", [], SOA_AUTH),
    ("10-244-1-10.no-such-ns.pod.cluster.local.", "A", "NXDOMAIN", [], SOA_AUTH),
    ("not-an-ip.web.pod.cluster.local.", "A", "NXDOMAIN", [], SOA_AUTH),
    # Zone structure: apex, dns-version, existing/missing namespaces and services
    ("cluster.local.", "SOA", "NOERROR", [SOA_AUTH], []),
    ("cluster.local.", "NS", "NOERROR", ["cluster.local. 5 IN NS ns.dns.cluster.local."], ["ns.dns.cluster.local. 5 IN A 10.0.0.10"]),
    ("ns.dns.cluster.local.", "A", "NOERROR", ["ns.dns.cluster.local. 5 IN A 10.0.0.10"], []),
    ("cluster.local.", "A", "NOERROR", [], SOA_AUTH),
    ("dns-version.cluster.local.", "TXT", "NOERROR", ['dns-version.cluster.local. 28800 IN TXT "1.1.0"'], []),
    ("svc.cluster.local.", "A", "NOERROR", [], SOA_AUTH),
    ("default.svc.cluster.local.", "A", "NOERROR", [], SOA_AUTH),
    ("no-such-ns.svc.cluster.local.", "A", "NXDOMAIN", [], SOA_AUTH),
    ("nope.default.svc.cluster.local.", "A", "NXDOMAIN", [], SOA_AUTH),
    ("nope.no-such-ns.svc.cluster.local.", "A", "NXDOMAIN", [], SOA_AUTH),
    ("foo.bar.cluster.local.", "A", "NXDOMAIN", [], SOA_AUTH),
    ("a.b.c.my-service.web.svc.cluster.local.", "A", "NXDOMAIN", [], SOA_AUTH),
    ("my-service.default.svc.cluster.local.", "TXT", "NOERROR", [], SOA_AUTH),
    ("my-service.default.svc.cluster.local.", "MX", "NOERROR", [], SOA_AUTH),
    ("nope.default.svc.cluster.local.", "MX", "NXDOMAIN", [], SOA_AUTH),
    ("my-service.default.svc.cluster.local.", "ANY", "NOERROR", ['my-service.default.svc.cluster.local. 5 IN HINFO "RFC8482" ""'], []),
    # Short names as people and pods ask them: a CNAME to the full name, plus its records
    ("my-service.default.", "A", "NOERROR",
     ["my-service.default. 5 IN CNAME my-service.default.svc.cluster.local.", "my-service.default.svc.cluster.local. 5 IN A 10.0.23.45"], []),
    ("my-service.web.", "A", "NOERROR",
     ["my-service.web. 5 IN CNAME my-service.web.svc.cluster.local.", "my-service.web.svc.cluster.local. 5 IN A 10.0.100.10"], []),
    ("_http._tcp.my-service.web.", "SRV", "NOERROR",
     ["_http._tcp.my-service.web. 5 IN CNAME _http._tcp.my-service.web.svc.cluster.local.",
      "_http._tcp.my-service.web.svc.cluster.local. 5 IN SRV 0 100 80 my-service.web.svc.cluster.local."],
     ["my-service.web.svc.cluster.local. 5 IN A 10.0.100.10"]),
    ("redis-master.", "A", "NOERROR",  # one label: the client's namespace (not a pod here), else default
     ["redis-master. 5 IN CNAME redis-master.default.svc.cluster.local.", "redis-master.default.svc.cluster.local. 5 IN A 10.0.0.11"], []),
    ("my-service.default.", "AAAA", "NOERROR", ["my-service.default. 5 IN CNAME my-service.default.svc.cluster.local."], []),
    ("no-such-service.default.", "A", "REFUSED", [], []),  # not a cluster name, and no forwarding yet
    ("example.com.", "A", "REFUSED", [], []),
]


def _ids(case):
    return f"{case[0].rstrip('.')}-{case[1]}"


@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize("qname,qtype,rcode,answer,additional", CASES, ids=[_ids(c) for c in CASES])
def test_answer(example_server, proto, qname, qtype, rcode, answer, additional):
    reply = example_server.query(qname, qtype, tcp=proto == "tcp")
    assert dns.rcode.to_text(reply.rcode()) == rcode
    got = rrset_texts(reply.answer)
    if answer == [SOA_AUTH]:
        assert [dns.rdatatype.to_text(r.rdtype) for r in reply.answer] == ["SOA"]
    else:
        assert got == sorted(answer)
    if additional == SOA_AUTH:
        assert [(r.name.to_text(), dns.rdatatype.to_text(r.rdtype)) for r in reply.authority] == [(Z, "SOA")]
    else:
        assert rrset_texts(reply.additional) == sorted(additional)
    if rcode == "REFUSED":
        assert not reply.flags & dns.flags.AA
    else:
        assert reply.flags & dns.flags.AA, "cluster answers are authoritative"


def test_soa_fields(example_server):
    soa = example_server.query("cluster.local.", "SOA").answer[0][0]
    assert (soa.mname.to_text(), soa.rname.to_text()) == ("ns.dns.cluster.local.", "hostmaster.cluster.local.")
    assert (soa.refresh, soa.retry, soa.expire, soa.minimum) == (7200, 1800, 86400, 5)


def test_names_are_case_insensitive_and_case_preserved(example_server):
    reply = example_server.query("My-Service.DEFAULT.svc.Cluster.Local.", "A")
    assert reply.rcode() == dns.rcode.NOERROR
    rrset = reply.answer[0]
    assert rrset.name.to_text() == "My-Service.DEFAULT.svc.Cluster.Local.", "answers echo the client's spelling (0x20)"
    assert [r.address for r in rrset] == ["10.0.23.45"]


def test_reference_notes_examples_resolve(example_server):
    """The three examples of the notes the project started from."""
    assert example_server.query("my-service.default.svc.cluster.local.").answer[0][0].address == "10.0.23.45"
    srv = {(r.port, r.target.to_text()) for r in example_server.query("my-service.web.svc.cluster.local.", "SRV").answer[0]}
    assert srv == {(80, "my-service.web.svc.cluster.local."), (443, "my-service.web.svc.cluster.local.")}
    assert example_server.query("redis-master.default.svc.cluster.local.").answer[0][0].address == "10.0.0.11"
