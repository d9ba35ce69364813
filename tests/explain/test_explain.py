"""explain as data: the stub resolver's queries, svcdns's answer and rule for each, the
wasted queries and the Service behind the name. The cluster is manifest text loaded the
way serve loads it."""

from __future__ import annotations

import json

import pytest

from svcdns.dns.records import T_SRV, Resolver, ResolverConfig
from svcdns.explain import Forwarded, explain
from svcdns.explain.render import render_json, render_text
from svcdns.explain.stub import candidates
from tests.conftest import state_from_yaml

CLUSTER = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  selector: {app: web}
  ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {nodeName: node-a, containers: [{name: c, image: nginx}]}
status: {phase: Running, podIP: 10.244.1.5, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: pg, port: 5432, protocol: TCP}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: shop, labels: {app: db}}
spec: {nodeName: node-a, hostname: db-0, subdomain: db, containers: [{name: c, image: postgres}]}
status: {phase: Running, podIP: 10.244.1.10, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: shop, labels: {app: db}}
spec: {nodeName: node-b, hostname: db-1, subdomain: db, containers: [{name: c, image: postgres}]}
status: {phase: Running, podIP: 10.244.2.11, conditions: [{type: Ready, status: "False"}]}
---
apiVersion: v1
kind: Service
metadata: {name: mail, namespace: shop}
spec: {type: ExternalName, externalName: smtp.example.test}
---
apiVersion: v1
kind: Namespace
metadata: {name: empty}
"""


@pytest.fixture(scope="module")
def resolver(tmp_path_factory):
    return Resolver(state_from_yaml(CLUSTER, tmp_path_factory.mktemp("explain")), ResolverConfig())


def lines(steps):
    return [(s.qname, s.rcode) for s in steps]


def test_clusterip_service(resolver):
    ex = explain(resolver, "web", namespace="shop")
    assert lines(ex.queries) == [("web.shop.svc.cluster.local", "NOERROR")]
    assert ex.queries[0].records == ("web.shop.svc.cluster.local. 5 IN A 10.96.0.20",)
    assert "spec 2.3.1" in ex.queries[0].rule
    assert ex.wasted == 0 and ex.advice == ()
    svc = ex.service
    assert (svc.namespace, svc.name, svc.type, svc.cluster_ips) == ("shop", "web", "ClusterIP", ("10.96.0.20",))
    assert svc.selector == {"app": "web"} and svc.ports == ("http 80/TCP -> 8080",)
    [ep] = svc.endpoints
    assert (ep.address, ep.node, ep.ready, ep.in_dns) == ("10.244.1.5", "node-a", True, False)
    assert "DNS returns the ClusterIP" in ep.why


def test_named_port_srv(resolver):
    ex = explain(resolver, "_http._tcp.web", namespace="shop", qtype=T_SRV)
    assert ex.queries[0].records == ("_http._tcp.web.shop.svc.cluster.local. 5 IN SRV 0 100 80 web.shop.svc.cluster.local.",)
    assert "SRV for a named port" in ex.queries[0].rule and "spec 2.3.2" in ex.queries[0].rule


def test_headless_service_with_a_pod_not_ready(resolver):
    ex = explain(resolver, "db", namespace="shop")
    assert ex.queries[0].records == ("db.shop.svc.cluster.local. 5 IN A 10.244.1.10",)
    assert "spec 2.4.1" in ex.queries[0].rule
    svc = ex.service
    assert svc.type == "ClusterIP (headless)" and "ready endpoints" in svc.dns_returns
    by_host = {ep.hostname: ep for ep in svc.endpoints}
    assert by_host["db-0"].in_dns and by_host["db-0"].why == "ready"
    assert not by_host["db-1"].in_dns and by_host["db-1"].node == "node-b"
    assert by_host["db-1"].why == "not ready, and publishNotReadyAddresses is false"


def test_headless_endpoint_by_hostname(resolver):
    ex = explain(resolver, "db-0.db.shop.svc.cluster.local.", namespace="shop")
    assert lines(ex.queries) == [("db-0.db.shop.svc.cluster.local", "NOERROR")]
    assert "headless endpoint A/AAAA record by hostname" in ex.queries[0].rule
    by_host = {ep.hostname: ep for ep in ex.service.endpoints}
    assert by_host["db-0"].in_dns and "not the endpoint asked for" in by_host["db-1"].why


def test_externalname_without_upstream(resolver):
    ex = explain(resolver, "mail", namespace="shop")
    step = ex.queries[0]
    assert step.records == ("mail.shop.svc.cluster.local. 5 IN CNAME smtp.example.test.",)
    assert "ExternalName CNAME (spec 2.5.1)" in step.rule and "no upstream is configured" in step.rule
    assert ex.service.type == "ExternalName" and ex.service.external_name == "smtp.example.test"
    assert ex.service.endpoints == ()


def test_externalname_target_resolved_upstream(resolver):
    routes = (("", "127.0.0.1:53"),)
    first = explain(resolver, "mail", namespace="shop", routes=routes)
    assert first.unresolved == ("smtp.example.test",)
    ex = explain(resolver, "mail", namespace="shop", routes=routes,
                 forwarded={"smtp.example.test": Forwarded(0, ("smtp.example.test. 300 IN A 192.0.2.25",))})
    assert ex.queries[0].records[-1] == "smtp.example.test. 300 IN A 192.0.2.25"
    assert "resolved upstream (127.0.0.1:53)" in ex.queries[0].rule
    assert ex.unresolved == ()


def test_missing_service_in_an_existing_namespace(resolver):
    ex = explain(resolver, "nope", namespace="shop", autopath=False, autopath_off="test")
    assert lines(ex.queries) == [
        ("nope.shop.svc.cluster.local", "NXDOMAIN"),
        ("nope.svc.cluster.local", "NXDOMAIN"),
        ("nope.cluster.local", "NXDOMAIN"),
        ("nope", "REFUSED"),
    ]
    assert ex.queries[0].rule == "NXDOMAIN: no service 'nope' in namespace 'shop'"
    assert ex.queries[1].rule == "NXDOMAIN: namespace 'nope' does not exist"
    assert ex.wasted == 3 and ex.service is None
    assert ex.answer.startswith("REFUSED")


def test_name_in_a_missing_namespace(resolver):
    ex = explain(resolver, "web.nowhere.svc.cluster.local.", namespace="shop")
    assert lines(ex.queries) == [("web.nowhere.svc.cluster.local", "NXDOMAIN")]
    assert ex.queries[0].rule == "NXDOMAIN: namespace 'nowhere' does not exist"
    assert ex.wasted == 0


def test_name_in_a_namespace_without_services_is_nodata_not_nxdomain(resolver):
    ex = explain(resolver, "empty.svc.cluster.local.", namespace="shop")
    assert lines(ex.queries) == [("empty.svc.cluster.local", "NOERROR")]
    assert ex.answer.startswith("NODATA")


def test_other_namespace_short_form_wastes_one_query_and_says_how_to_avoid_it(resolver):
    ex = explain(resolver, "web.shop", namespace="empty", autopath=False, autopath_off="--no-autopath")
    assert lines(ex.queries) == [("web.shop.empty.svc.cluster.local", "NXDOMAIN"), ("web.shop.svc.cluster.local", "NOERROR")]
    assert ex.wasted == 1
    remedies = {a.remedy.split(" (")[0]: a.queries for a in ex.advice}
    assert remedies["ask for the absolute name web.shop.svc.cluster.local."] == 1
    assert remedies["lower ndots to 1 in the pod's dnsConfig.options"] == 1
    assert remedies["autopath: svcdns walks the search path itself"] == 1
    assert ex.service.name == "web"


def test_autopath_answers_the_first_query(resolver):
    ex = explain(resolver, "web.shop", namespace="empty")
    [step] = ex.queries
    assert (step.qname, step.rcode, step.via) == ("web.shop.empty.svc.cluster.local", "NOERROR", "autopath")
    assert step.records == (
        "web.shop.empty.svc.cluster.local. 5 IN CNAME web.shop.svc.cluster.local.",
        "web.shop.svc.cluster.local. 5 IN A 10.96.0.20",
    )
    assert ex.wasted == 0


@pytest.mark.parametrize(
    "name,ndots,want",
    [
        ("web", 5, ["web.ns.svc.z", "web.svc.z", "web.z", "web"]),
        ("a.b.c.d.e.f", 5, ["a.b.c.d.e.f", "a.b.c.d.e.f.ns.svc.z", "a.b.c.d.e.f.svc.z", "a.b.c.d.e.f.z"]),
        ("web.", 5, ["web"]),
        ("Web.Shop", 1, ["web.shop", "web.shop.ns.svc.z", "web.shop.svc.z", "web.shop.z"]),
    ],
    ids=["short name: search first", "ndots dots: as written first", "trailing dot: only as written", "ndots 1"],
)
def test_stub_candidates(name, ndots, want):
    assert candidates(name, ("ns.svc.z", "svc.z", "z"), ndots) == want


def test_pod_record(resolver):
    ex = explain(resolver, "10-244-1-5.shop.pod.cluster.local.", namespace="shop")
    assert ex.queries[0].records == ("10-244-1-5.shop.pod.cluster.local. 5 IN A 10.244.1.5",)
    assert ex.queries[0].rule == "pod record a-b-c-d.<ns>.pod (CoreDNS --pods insecure; not in the spec)"


def test_reverse_name_shows_the_owning_service(resolver):
    from svcdns.dns.records import T_PTR

    ex = explain(resolver, "20.0.96.10.in-addr.arpa.", namespace="shop", qtype=T_PTR)
    assert ex.queries[0].records == ("20.0.96.10.in-addr.arpa. 5 IN PTR web.shop.svc.cluster.local.",)
    assert ex.queries[0].rule == "PTR for a ClusterIP (spec 2.3.3)" and ex.service.name == "web"


def test_renderers_agree(resolver):
    ex = explain(resolver, "db", namespace="shop")
    text = render_text(ex)
    assert "1. db.shop.svc.cluster.local A -> NOERROR" in text
    assert "- 10.244.2.11 (db-1) - node node-b: not ready, and publishNotReadyAddresses is false" in text
    doc = json.loads(render_json(ex))
    assert doc["queries"][0]["qname"] == "db.shop.svc.cluster.local" and doc["queries"][0]["answered"] is True
    assert doc["service"]["endpoints"][1]["in_dns"] is False
