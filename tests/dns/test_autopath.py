"""Autopath: a pod's search path walked server-side. Pod clients are real: the query's
source address is a 127.x address that a manifest pod has as its IP."""

from __future__ import annotations

import dns.flags
import dns.rcode
import pytest

from tests.conftest import RunningServer, base_config, rrset_texts
from tests.dns.nameservers import metric

POD_SHOP = "127.0.5.5"  # pod shop/client
POD_TEAM = "127.0.6.6"  # pod team/worker
NOT_A_POD = "127.0.0.1"

CLUSTER = f"""
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  clusterIP: 10.96.0.20
  ports: [{{port: 80, protocol: TCP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: api, namespace: team}}
spec:
  clusterIP: 10.96.0.30
  ports: [{{port: 8080, protocol: TCP}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: shop}}
spec: {{containers: [{{name: c, image: busybox}}]}}
status: {{phase: Running, podIP: {POD_SHOP}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: worker, namespace: team}}
spec: {{containers: [{{name: c, image: busybox}}]}}
status: {{phase: Running, podIP: {POD_TEAM}}}
"""


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    path = tmp_path_factory.mktemp("manifests") / "cluster.yaml"
    path.write_text(CLUSTER)
    return (str(path),)


@pytest.fixture(scope="module")
def autopath(knot, manifests):
    with RunningServer(base_config(upstreams=(knot.address,), manifests=manifests, search=("example.test",))) as srv:
        yield srv


# (case, source, qname, qtype, rcode, answer)
CASES = [
    ("pod: external name via the search path", POD_SHOP, "www.example.test.shop.svc.cluster.local.", "A", "NOERROR",
     ["www.example.test. 300 IN A 192.0.2.10", "www.example.test.shop.svc.cluster.local. 300 IN CNAME www.example.test."]),
    ("pod: AAAA too", POD_SHOP, "www.example.test.shop.svc.cluster.local.", "AAAA", "NOERROR",
     ["www.example.test. 300 IN AAAA 2001:db8::10", "www.example.test.shop.svc.cluster.local. 300 IN CNAME www.example.test."]),
    ("pod: service in another namespace", POD_SHOP, "api.team.shop.svc.cluster.local.", "A", "NOERROR",
     ["api.team.shop.svc.cluster.local. 5 IN CNAME api.team.svc.cluster.local.", "api.team.svc.cluster.local. 5 IN A 10.96.0.30"]),
    ("pod: host search domain from resolv.conf", POD_SHOP, "db.shop.svc.cluster.local.", "A", "NOERROR",
     ["db.example.test. 300 IN A 192.0.2.20", "db.shop.svc.cluster.local. 300 IN CNAME db.example.test."]),
    ("pod: a name that exists is answered as is", POD_SHOP, "web.shop.svc.cluster.local.", "A", "NOERROR",
     ["web.shop.svc.cluster.local. 5 IN A 10.96.0.20"]),
    ("pod: nothing on the path exists", POD_SHOP, "nothing.example.test.shop.svc.cluster.local.", "A", "NXDOMAIN", []),
    ("pod of another namespace: not its first search domain", POD_TEAM, "www.example.test.shop.svc.cluster.local.", "A", "NXDOMAIN", []),
    ("pod of another namespace: its own first search domain", POD_TEAM, "www.example.test.team.svc.cluster.local.", "A", "NOERROR",
     ["www.example.test. 300 IN A 192.0.2.10", "www.example.test.team.svc.cluster.local. 300 IN CNAME www.example.test."]),
    ("not a pod: ordinary answer", NOT_A_POD, "www.example.test.shop.svc.cluster.local.", "A", "NXDOMAIN", []),
    ("not a pod: ordinary answer (cluster)", NOT_A_POD, "api.team.shop.svc.cluster.local.", "A", "NXDOMAIN", []),
]


@pytest.mark.parametrize("source,qname,qtype,rcode,answer", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_autopath(autopath, source, qname, qtype, rcode, answer):
    for attempt in ("walk", "cached"):
        reply = autopath.query(qname, qtype, source=source)
        assert dns.rcode.to_text(reply.rcode()) == rcode, attempt
        got = rrset_texts(reply.answer)
        if attempt == "cached":
            got = [" ".join(r.split(" ")[:1] + r.split(" ")[2:]) for r in got]
            want = sorted(" ".join(r.split(" ")[:1] + r.split(" ")[2:]) for r in answer)
        else:
            want = sorted(answer)
        assert got == want, attempt
        if rcode == "NXDOMAIN":
            assert [r.name.to_text() for r in reply.authority] == ["cluster.local."], "the original NXDOMAIN, with the zone's SOA"


def test_autopath_answers_do_not_leak_to_other_clients(autopath):
    name = "alias.example.test.shop.svc.cluster.local."
    assert autopath.query(name, source=POD_SHOP).rcode() == dns.rcode.NOERROR
    assert autopath.query(name, source=POD_SHOP).rcode() == dns.rcode.NOERROR  # now cached
    assert autopath.query(name, source=NOT_A_POD).rcode() == dns.rcode.NXDOMAIN
    assert autopath.query(name, source=POD_TEAM).rcode() == dns.rcode.NXDOMAIN


def test_autopath_counts_hits(autopath):
    before = metric(autopath, "svcdns_autopath_success_total")
    autopath.query("short.example.test.shop.svc.cluster.local.", source=POD_SHOP)
    assert metric(autopath, "svcdns_autopath_success_total") == before + 1


def test_no_autopath_answers_pods_like_anyone(serve, knot, manifests):
    srv = serve(upstreams=(knot.address,), manifests=manifests, autopath=False)
    reply = srv.query("www.example.test.shop.svc.cluster.local.", source=POD_SHOP)
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert srv.query("www.example.test.", source=POD_SHOP).answer[0][0].address == "192.0.2.10", "the pod's last try"


def test_autopath_without_forwarding_walks_cluster_names_only(serve, manifests):
    srv = serve(manifests=manifests)
    reply = srv.query("api.team.shop.svc.cluster.local.", source=POD_SHOP)
    assert rrset_texts(reply.answer) == [
        "api.team.shop.svc.cluster.local. 5 IN CNAME api.team.svc.cluster.local.", "api.team.svc.cluster.local. 5 IN A 10.96.0.30"
    ]
    assert not reply.flags & dns.flags.RA
    assert srv.query("www.example.test.shop.svc.cluster.local.", source=POD_SHOP).rcode() == dns.rcode.NXDOMAIN


SEARCH_CASES = [
    # (qname, the pod's namespace, (base, zone) or None, may be some pod's first search query)
    ("github.com.shop.svc.cluster.local", "shop", ("github.com", "cluster.local"), True),
    ("api.team.shop.svc.cluster.local", "shop", ("api.team", "cluster.local"), True),
    ("github.com.team.svc.cluster.local", "shop", None, True),  # another namespace's first search domain
    ("shop.svc.cluster.local", "shop", None, False),  # the search domain itself
    ("github.svc.cluster.local", "shop", None, False),  # a later step of the path
    ("github.cluster.local", "shop", None, False),
    ("github.com", "shop", None, False),
]


@pytest.mark.parametrize("qname,namespace,base,may_apply", SEARCH_CASES, ids=[c[0] for c in SEARCH_CASES])
def test_first_search_domain(qname, namespace, base, may_apply):
    from svcdns.dns.autopath import AutoPath
    from svcdns.dns.records import Resolver, ResolverConfig
    from tests.conftest import example_state

    ap = AutoPath(Resolver(example_state(), ResolverConfig()), None, search=("corp.example", "cluster.local"))
    assert ap.base(qname, namespace) == base
    assert ap.may_apply(qname) == may_apply
    assert ap.path("github.com", "cluster.local") == [
        "github.com.svc.cluster.local", "github.com.cluster.local", "github.com.corp.example", "github.com"
    ], "the pod's order; cluster zones are not repeated as host search domains"
