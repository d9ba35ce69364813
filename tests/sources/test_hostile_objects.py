"""Hostile manifests, table-driven: missing fields, wrong types, huge values, duplicate
names, invalid IPs. Each bad object is rejected with an error naming file, document and
field, counted in svcdns_source_errors_total, and nothing else is affected: the good
objects around it are served and an object's last good version survives a bad edit."""

from __future__ import annotations

import time
import urllib.request

import dns.rcode
import pytest

from svcdns.sources.manifests import ManifestSource
from svcdns.store import ClusterState

GOOD = """apiVersion: v1
kind: Service
metadata: {name: good, namespace: default}
spec: {clusterIP: 10.0.0.5, ports: [{port: 80}]}
"""

SVC = "apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: default}\n"
SLICE = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: bad-x, namespace: default, labels: {kubernetes.io/service-name: good}}\n"
POD = "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: default}\n"

# (case id, document, field the error must name)
HOSTILE = [
    # missing fields
    ("service without metadata", "apiVersion: v1\nkind: Service\nspec: {ports: [{port: 80}]}\n", "metadata.name"),
    ("slice endpoint without addresses", SLICE + "addressType: IPv4\nendpoints: [{conditions: {ready: true}}]\n", "endpoints[0].addresses"),
    ("port without a number", SVC + "spec: {ports: [{name: http}]}\n", "spec.ports[0].port"),
    # wrong types
    ("metadata is a string", "apiVersion: v1\nkind: Service\nmetadata: bad\nspec: {ports: [{port: 80}]}\n", "metadata"),
    ("labels is a list", "apiVersion: v1\nkind: Service\nmetadata: {name: bad, labels: [a, b]}\nspec: {ports: [{port: 80}]}\n", "metadata.labels"),
    ("ports is a mapping", SVC + "spec: {ports: {port: 80}}\n", "spec.ports"),
    ("port is a boolean", SVC + "spec: {ports: [{port: true}]}\n", "spec.ports[0].port"),
    ("selector is a list", SVC + "spec: {selector: [app], ports: [{port: 80}]}\n", "spec.selector"),
    ("clusterIPs is a string", SVC + "spec: {clusterIPs: 10.0.0.9, ports: [{port: 80}]}\n", "spec.clusterIPs"),
    ("addresses is a string", SLICE + "addressType: IPv4\nendpoints: [{addresses: 10.1.0.1}]\n", "endpoints[0].addresses"),
    ("ready is a string", SLICE + "addressType: IPv4\nendpoints: [{addresses: [10.1.0.1], conditions: {ready: yes-please}}]\n", "endpoints[0].conditions.ready"),
    ("endpoints is a mapping", SLICE + "addressType: IPv4\nendpoints: {addresses: [10.1.0.1]}\n", "endpoints"),
    # out of range / huge
    ("port 70000", SVC + "spec: {ports: [{port: 70000}]}\n", "spec.ports[0].port"),
    ("nodePort 0x10000", SVC + "spec: {type: NodePort, ports: [{port: 80, nodePort: 65536}]}\n", "spec.ports[0].nodePort"),
    ("huge label value", "apiVersion: v1\nkind: Service\nmetadata: {name: bad, labels: {a: " + "x" * 5000 + "}}\nspec: {ports: [{port: 80}]}\n", "metadata.labels.a"),
    ("service name over 63", "apiVersion: v1\nkind: Service\nmetadata: {name: " + "s" * 64 + "}\nspec: {ports: [{port: 80}]}\n", "metadata.name"),
    ("service name not a DNS label", "apiVersion: v1\nkind: Service\nmetadata: {name: Bad_Name}\nspec: {ports: [{port: 80}]}\n", "metadata.name"),
    ("namespace not a DNS label", "apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: 'a.b'}\nspec: {ports: [{port: 80}]}\n", "metadata.namespace"),
    ("endpoint hostname over 63", SLICE + "addressType: IPv4\nendpoints: [{addresses: [10.1.0.1], hostname: " + "h" * 64 + "}]\n", "endpoints[0].hostname"),
    ("legacy Endpoints hostname over 63", "apiVersion: v1\nkind: Endpoints\nmetadata: {name: good}\nsubsets: [{addresses: [{ip: 10.1.0.1, hostname: " + "h" * 64 + "}], ports: [{port: 80}]}]\n", "subsets[0].addresses[0].hostname"),
    ("hostname not a DNS label", SLICE + "addressType: IPv4\nendpoints: [{addresses: [10.1.0.1], hostname: 'web_0'}]\n", "endpoints[0].hostname"),
    ("unknown addressType", SLICE + "addressType: IPv5\nendpoints: [{addresses: [10.1.0.1]}]\n", "addressType"),
    ("duplicate port names", SVC + "spec: {ports: [{name: a, port: 80}, {name: a, port: 81}]}\n", "spec.ports[1].name"),
    ("unknown service type", SVC + "spec: {type: Magic, ports: [{port: 80}]}\n", "spec.type"),
    # invalid IPs
    ("clusterIP with a prefix", SVC + "spec: {clusterIP: 10.0.0.0/24, ports: [{port: 80}]}\n", "spec.clusterIP"),
    ("IPv6 address in an IPv4 slice", SLICE + "addressType: IPv4\nendpoints: [{addresses: ['fd00::1']}]\n", "endpoints[0].addresses[0]"),
    ("pod IP garbage", POD + "status: {podIP: 10.0.0.999}\n", "status.podIPs[0]"),
    ("externalIPs garbage", SVC + "spec: {externalIPs: [nope], ports: [{port: 80}]}\n", "spec.externalIPs[0]"),
]


def write(tmp_path, *docs: str) -> str:
    path = tmp_path / "m.yaml"
    path.write_text("---\n".join(docs))
    return str(path)


@pytest.mark.parametrize("doc,field", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_object_is_rejected_naming_its_field(tmp_path, doc, field):
    path = write(tmp_path, GOOD, doc, GOOD.replace("good", "after").replace("10.0.0.5", "10.0.0.6"))
    state = ClusterState(derive_endpoints=True, implicit_namespaces=True)
    counted = []
    source = ManifestSource([path], state, on_error=counted.append)
    source.load()
    assert len(source.errors) == 1, [str(e) for e in source.errors]
    message = str(source.errors[0])
    assert message.startswith(f"{path}: document 2"), message
    assert f": {field}: " in message or message.endswith(f": {field}"), message
    assert counted == source.errors, "every error reaches the metric"
    assert sorted(state.services) == [("default", "after"), ("default", "good")], "the rest is served"


def test_duplicate_names_in_one_file_keep_the_first(tmp_path):
    path = write(tmp_path, GOOD, GOOD.replace("10.0.0.5", "10.0.0.9"))
    state = ClusterState(derive_endpoints=True, implicit_namespaces=True)
    source = ManifestSource([path], state)
    source.load()
    assert state.services[("default", "good")].cluster_ips == ("10.0.0.5",)
    assert "metadata.name: duplicate" in str(source.errors[0])


def test_server_counts_each_bad_object_and_serves_the_rest(serve, tmp_path):
    """All the hostile documents in one file next to a good one, against a running
    server: one error each in /metrics, the good service answers."""
    path = write(tmp_path, GOOD, *[c[1] for c in HOSTILE])
    srv = serve(manifests=(path,))
    assert srv.query("good.default.svc.cluster.local.").answer[0][0].address == "10.0.0.5"
    assert srv.query("bad.default.svc.cluster.local.").rcode() == dns.rcode.NXDOMAIN
    text = urllib.request.urlopen(srv.health_url + "/metrics", timeout=5).read().decode()
    assert f'svcdns_source_errors_total{{source="manifests"}} {float(len(HOSTILE))}' in text
    # a later bad edit of the good object keeps its last good version
    (tmp_path / "m.yaml").write_text(GOOD.replace("10.0.0.5", "10.0.0.300"))
    time.sleep(0.6)
    assert srv.query("good.default.svc.cluster.local.").answer[0][0].address == "10.0.0.5"


def test_hostile_api_objects_are_counted_and_cost_nothing_else(kubeapi, live):
    """The same table through the live API source: every object the API server can
    store (it needs a metadata.name) arrives as a watch event and is rejected, counted
    under source="kube"; the services around it keep answering and later events flow."""
    import yaml

    from tests.kubeapi import objects as o
    from tests.sources.conftest import converges, eventually, metrics_text, sample

    kubeapi.put(o.namespace("default"), o.service("default", "good", "10.0.0.5"))
    srv = live()
    storable = []
    for case, doc, _ in HOSTILE:
        obj = yaml.safe_load(doc)
        meta = obj.get("metadata")
        if isinstance(meta, dict) and isinstance(meta.get("name"), str) and obj["kind"] != "Pod":
            storable.append((case, obj))
    assert len(storable) >= 20
    for i, (case, obj) in enumerate(storable):
        obj["metadata"]["name"] = obj["metadata"]["name"] if "name" in case else f"bad-{i}"
        kubeapi.put(obj)
    kubeapi.put(o.service("default", "after", "10.0.0.6"))
    converges(srv, "after.default.svc.cluster.local.", "A", ("NOERROR", ["10.0.0.6"]), timeout=2.0)
    assert srv.query("good.default.svc.cluster.local.").answer[0][0].address == "10.0.0.5"
    eventually(lambda: sample(metrics_text(srv), 'svcdns_source_errors_total{source="kube"}') == len(storable), 2.0,
               f"{len(storable)} rejects counted")
