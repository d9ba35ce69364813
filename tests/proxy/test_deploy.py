"""deploy/proxy/ validates against the Kubernetes OpenAPI schemas (offline, strict) and
says what the issue asks of it."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).parents[2] / "deploy" / "proxy"
DOCS = [(f.name, i, doc) for f in sorted(DEPLOY.glob("*.yaml")) for i, doc in enumerate(yaml.safe_load_all(f.read_text())) if doc]


@pytest.mark.parametrize("name,index,doc", DOCS, ids=[f"{n}#{i}-{d['kind']}" for n, i, d in DOCS])
def test_manifest_is_valid_kubernetes(name, index, doc):
    kubernetes_validate.validate(doc, "1.33.0", strict=True)


def by_kind(kind: str) -> dict:
    return next(d for _, _, d in DOCS if d["kind"] == kind)


def test_daemonset_runs_the_proxy_contract():
    pod = by_kind("DaemonSet")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["hostNetwork"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}
    assert container["securityContext"]["privileged"] is False
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in container["env"]
    assert container["args"][0] == "proxy" and "--node-name=$(NODE_NAME)" in container["args"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert any(a.startswith("--health=") and a.endswith(":10256") for a in container["args"])
    assert pod["serviceAccountName"] == by_kind("ServiceAccount")["metadata"]["name"]


def test_rbac_reads_services_endpointslices_nodes():
    rules = by_kind("ClusterRole")["rules"]
    granted = {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    want = {("", "services"), ("", "nodes"), ("discovery.k8s.io", "endpointslices")}
    assert {(g, r) for g, r, _ in granted} == want
    assert {v for _, _, v in granted} == {"list", "watch"}
    binding = by_kind("ClusterRoleBinding")
    assert binding["roleRef"]["name"] == by_kind("ClusterRole")["metadata"]["name"]
