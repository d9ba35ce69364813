"""serve options that change answers: --pods, --endpoint-pod-names, --zone, --ttl,
publishNotReadyAddresses, and the client's namespace for one-label names."""

from __future__ import annotations


import dns.message
import dns.query
import dns.rcode
import pytest

from tests.conftest import rrset_texts

CLUSTER = """
apiVersion: v1
kind: Service
metadata: {name: db, namespace: team}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {app: db}
  ports: [{name: pg, port: 5432}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: team, labels: {app: db}}
status: {podIP: 10.8.0.1, conditions: [{type: Ready, status: "False"}]}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: team}
spec: {clusterIP: 10.0.9.9, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: default}
spec: {clusterIP: 10.0.9.1, ports: [{port: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: team}
status: {podIP: 127.0.0.77}
"""


@pytest.fixture
def cluster(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CLUSTER)
    return str(path)


def test_publish_not_ready_addresses(serve, cluster):
    srv = serve(manifests=(cluster,))
    assert rrset_texts(srv.query("db.team.svc.cluster.local.").answer) == ["db.team.svc.cluster.local. 5 IN A 10.8.0.1"]


@pytest.mark.parametrize("mode,name,rcode", [
    ("insecure", "10-8-0-99.team.pod.cluster.local.", "NOERROR"),  # any address in an existing namespace
    ("verified", "10-8-0-1.team.pod.cluster.local.", "NOERROR"),   # a pod with that IP in that namespace
    ("verified", "10-8-0-99.team.pod.cluster.local.", "NXDOMAIN"),  # no such pod
    ("verified", "10-8-0-1.default.pod.cluster.local.", "NXDOMAIN"),  # pod exists, other namespace
    ("disabled", "10-8-0-1.team.pod.cluster.local.", "NXDOMAIN"),
])
def test_pod_modes(serve, cluster, mode, name, rcode):
    srv = serve(manifests=(cluster,), pods=mode)
    assert dns.rcode.to_text(srv.query(name).rcode()) == rcode


def test_endpoint_pod_names(serve, cluster):
    srv = serve(manifests=(cluster,), endpoint_pod_names=True)
    srv_reply = srv.query("_pg._tcp.db.team.svc.cluster.local.", "SRV")
    assert rrset_texts(srv_reply.answer) == ["_pg._tcp.db.team.svc.cluster.local. 5 IN SRV 0 100 5432 db-0.db.team.svc.cluster.local."]
    assert rrset_texts(srv.query("db-0.db.team.svc.cluster.local.").answer) == ["db-0.db.team.svc.cluster.local. 5 IN A 10.8.0.1"]


def test_several_zones_and_ttl(serve, cluster):
    srv = serve(manifests=(cluster,), zones=("cluster.local", "corp.example"), ttl=30)
    assert rrset_texts(srv.query("api.team.svc.corp.example.").answer) == ["api.team.svc.corp.example. 30 IN A 10.0.9.9"]
    assert rrset_texts(srv.query("api.team.svc.cluster.local.").answer) == ["api.team.svc.cluster.local. 30 IN A 10.0.9.9"]
    soa = srv.query("nope.team.svc.corp.example.").authority[0]
    assert soa.name.to_text() == "corp.example." and soa.ttl == 30


def test_one_label_name_uses_the_asking_pods_namespace(serve, cluster):
    srv = serve(manifests=(cluster,))
    q = dns.message.make_query("api.", "A")
    as_pod = dns.query.udp(q, "127.0.0.1", port=srv.port, timeout=5, source="127.0.0.77")
    assert rrset_texts(as_pod.answer) == ["api. 5 IN CNAME api.team.svc.cluster.local.", "api.team.svc.cluster.local. 5 IN A 10.0.9.9"]
    as_stranger = dns.query.udp(q, "127.0.0.1", port=srv.port, timeout=5)
    assert rrset_texts(as_stranger.answer) == ["api. 5 IN CNAME api.default.svc.cluster.local.", "api.default.svc.cluster.local. 5 IN A 10.0.9.1"]


def test_cluster_names_get_servfail_before_the_first_sync(tmp_path):
    """Never NXDOMAIN before the state is loaded (kubernetes/dns#186)."""
    from svcdns.dns.compiler import AnswerTable
    from svcdns.dns.handler import DnsHandler
    from svcdns.dns.records import Resolver, ResolverConfig
    from svcdns.store import ClusterState

    state = ClusterState()
    resolver = Resolver(state, ResolverConfig())
    handler = DnsHandler(state, resolver, AnswerTable(state, resolver))
    wire = dns.message.make_query("anything.default.svc.cluster.local.", "A").to_wire()
    assert dns.message.from_wire(handler.handle(wire, "127.0.0.1", False)).rcode() == dns.rcode.SERVFAIL
    state.mark_synced()
    state.commit()
    assert dns.message.from_wire(handler.handle(wire, "127.0.0.1", False)).rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize("name,qtype,want", [
    ("my-service.default.svc.cluster.local.", "A", ["my-service.default.svc.cluster.local. 5 IN A 10.0.23.45"]),
    ("_http._tcp.my-service.web.svc.cluster.local.", "SRV", ["_http._tcp.my-service.web.svc.cluster.local. 5 IN SRV 0 100 80 my-service.web.svc.cluster.local."]),
    ("nope.default.svc.cluster.local.", "A", []),
])
def test_naive_baseline_answers_the_same(serve, name, qtype, want):
    """--naive (the benchmark baseline) gives the answers the fast path gives."""
    naive, fast = serve(naive=True), serve()
    for srv in (naive, fast):
        reply = srv.query(name, qtype)
        assert rrset_texts(reply.answer) == want
    assert naive.query(name, qtype).rcode() == fast.query(name, qtype).rcode()
