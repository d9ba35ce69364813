"""Manifests on disk: every accepted shape, errors that name file/document/field, and
bad input that never costs good state."""

from __future__ import annotations

import json
import time

import dns.rcode
import pytest

from svcdns.sources.manifests import ManifestSource
from svcdns.store import ClusterState

SVC = """apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  clusterIP: {ip}
  ports: [{{port: 80}}]
"""


def svc(name="web", ns="default", ip="10.0.0.5") -> str:
    return SVC.format(name=name, ns=ns, ip=ip)


def load(tmp_path, files: dict[str, str]) -> tuple[ClusterState, ManifestSource]:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    state = ClusterState(derive_endpoints=True, implicit_namespaces=True)
    source = ManifestSource([str(tmp_path)], state)
    source.load()
    return state, source


def test_multi_document_list_and_json(tmp_path):
    as_list = {"apiVersion": "v1", "kind": "List", "items": [json.loads(json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "b", "namespace": "x"}, "spec": {"clusterIP": "10.0.0.2", "ports": [{"port": 80}]}}))]}
    typed_list = {"apiVersion": "v1", "kind": "ServiceList", "items": [{"metadata": {"name": "c", "namespace": "x"}, "spec": {"clusterIP": "10.0.0.3", "ports": [{"port": 80}]}}]}
    state, source = load(tmp_path, {
        "a.yaml": svc("a", "x", "10.0.0.1") + "---\n# comment only\n---\n" + svc("a2", "x", "10.0.0.9"),
        "b.json": json.dumps(as_list),
        "c.yml": json.dumps(typed_list),
    })
    assert sorted(state.services) == [("x", "a"), ("x", "a2"), ("x", "b"), ("x", "c")]
    assert source.errors == []


def test_other_kinds_are_ignored_with_one_log_line(tmp_path, caplog):
    caplog.set_level("INFO")
    state, source = load(tmp_path, {"a.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\n" + svc()})
    assert list(state.services) == [("default", "web")]
    lines = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert lines == [f"{tmp_path}/a.yaml: document 1: ignoring Deployment default/d (svcdns does not use this kind)"]


BAD = [
    ("port not a number", "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: {ports: [{port: eighty}]}\n",
     "document 2 (Service default/bad): spec.ports[0].port: must be an integer 1-65535, got 'eighty'"),
    ("invalid cluster IP", "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: {clusterIP: 10.0.0.300, ports: [{port: 80}]}\n",
     "document 2 (Service default/bad): spec.clusterIP: not a valid IP address: '10.0.0.300'"),
    ("missing name", "apiVersion: v1\nkind: Service\nmetadata: {namespace: x}\nspec: {ports: [{port: 80}]}\n",
     "document 2 (Service): metadata.name: is required"),
    ("spec is a list", "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: [1, 2]\n",
     "document 2 (Service default/bad): spec: must be a mapping, got list"),
    ("YAML syntax error", "apiVersion: v1\nkind: Service\nmetadata: {name: bad\n",
     "document 2: invalid YAML"),
    ("not an object", "- just\n- a list\n", "document 2: kind: missing: not a Kubernetes object"),
    ("huge label value", "apiVersion: v1\nkind: Service\nmetadata: {name: bad, labels: {a: " + "x" * 100 + "}}\nspec: {ports: [{port: 80}]}\n",
     "document 2 (Service default/bad): metadata.labels.a: label value longer than 63 characters"),
    ("endpoint slice bad address", "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nendpoints: [{addresses: [nope]}]\n",
     "document 2 (EndpointSlice default/s): endpoints[0].addresses[0]: not a valid IP address: 'nope'"),
    ("bad protocol", "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: {ports: [{port: 80, protocol: HTTP}]}\n",
     "document 2 (Service default/bad): spec.ports[0].protocol: must be one of TCP, UDP, SCTP, got 'HTTP'"),
    ("two unnamed ports", "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: {ports: [{port: 80}, {port: 81}]}\n",
     "document 2 (Service default/bad): spec.ports[0].name: is required when a service has more than one port"),
]


@pytest.mark.parametrize("text,message", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_document_is_reported_and_the_rest_is_served(tmp_path, text, message):
    state, source = load(tmp_path, {"m.yaml": svc() + "---\n" + text + "---\n" + svc("after", ip="10.0.0.6")})
    assert [str(e) for e in source.errors] and str(source.errors[0]).startswith(f"{tmp_path}/m.yaml: {message}")
    assert sorted(state.services) == [("default", "after"), ("default", "web")], "the rest of the file is served"


def test_bad_edit_keeps_the_last_good_version(tmp_path):
    state, source = load(tmp_path, {"m.yaml": svc("web", ip="10.0.0.5")})
    good = state.services[("default", "web")]
    (tmp_path / "m.yaml").write_text(svc("web", ip="not-an-ip"))
    assert source.poll() is False or state.services[("default", "web")] == good
    assert state.services[("default", "web")] == good, "an object that fails keeps its last good version"
    assert "not a valid IP address" in str(source.errors[0])
    (tmp_path / "m.yaml").write_text("kind: Service\nmetadata: {name: web\n")  # now a YAML error
    source.poll()
    assert state.services[("default", "web")] == good, "a document that does not parse loses nothing"
    (tmp_path / "m.yaml").write_text(svc("web", ip="10.0.0.7"))
    source.poll()
    assert state.services[("default", "web")].cluster_ips == ("10.0.0.7",)
    assert source.errors == []


def test_duplicate_objects_first_file_wins(tmp_path, caplog):
    state, source = load(tmp_path, {"a.yaml": svc("web", ip="10.0.0.5"), "b.yaml": svc("web", ip="10.0.0.6")})
    assert state.services[("default", "web")].cluster_ips == ("10.0.0.5",)
    assert any("is defined in" in r.getMessage() for r in caplog.records)
    (tmp_path / "a.yaml").unlink()
    source.poll()
    assert state.services[("default", "web")].cluster_ips == ("10.0.0.6",), "the other definition takes over"


def test_legacy_endpoints_are_mirrored_for_a_service_without_selector(tmp_path):
    state, _ = load(tmp_path, {"m.yaml": svc("my-service") + """---
apiVersion: v1
kind: Endpoints
metadata: {name: my-service}
subsets:
  - addresses: [{ip: 192.0.2.42}]
    notReadyAddresses: [{ip: 192.0.2.43}]
    ports: [{port: 9376}]
"""})
    (sl,) = state.service_slices(("default", "my-service"))
    assert [(e.addresses, e.ready) for e in sl.endpoints] == [(("192.0.2.42",), True), (("192.0.2.43",), False)]
    assert [p.port for p in sl.ports] == [9376]


def test_endpoint_slices_win_over_legacy_endpoints(tmp_path):
    state, _ = load(tmp_path, {"m.yaml": svc("s") + """---
apiVersion: v1
kind: Endpoints
metadata: {name: s}
subsets: [{addresses: [{ip: 192.0.2.1}], ports: [{port: 80}]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-abc, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
endpoints: [{addresses: [192.0.2.2]}]
"""})
    assert [e.addresses for sl in state.service_slices(("default", "s")) for e in sl.endpoints] == [("192.0.2.2",)]


def test_server_follows_file_changes_within_two_seconds(tmp_path, serve):
    path = tmp_path / "cluster.yaml"
    path.write_text(svc("web", ip="10.0.0.5"))
    srv = serve(manifests=(str(path),), poll_interval=1.0)
    assert srv.query("web.default.svc.cluster.local.").answer[0][0].address == "10.0.0.5"

    def wait_for(check):
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(0.05)
        return False

    path.write_text(svc("web", ip="10.0.0.6") + "---\n" + svc("api", ip="10.0.0.7"))
    assert wait_for(lambda: [r.address for r in srv.query("web.default.svc.cluster.local.").answer[0]] == ["10.0.0.6"])
    assert srv.query("api.default.svc.cluster.local.").answer[0][0].address == "10.0.0.7"
    # a broken edit: reported, and the last good answers keep being served
    path.write_text(svc("web", ip="10.0.0.6") + "---\nkind: Service\nmetadata: {name: api\n")
    time.sleep(1.5)
    assert srv.query("api.default.svc.cluster.local.").answer[0][0].address == "10.0.0.7"
    # a deletion
    path.write_text(svc("web", ip="10.0.0.6"))
    assert wait_for(lambda: srv.query("api.default.svc.cluster.local.").rcode() == dns.rcode.NXDOMAIN)
