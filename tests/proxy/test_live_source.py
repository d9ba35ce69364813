"""`svcdns proxy` fed by the Kubernetes API (the test API server of tests/kubeapi): the
rules it would apply follow the cluster as the API serves it."""

from __future__ import annotations

import subprocess
import sys

from tests.kubeapi import objects as o
from tests.kubeapi.server import KubeApi


def proxy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "svcdns", "proxy", *args], capture_output=True, text=True, timeout=60)


def test_dry_run_from_the_api_renders_its_services(tmp_path):
    with KubeApi() as api:
        api.put(
            o.service("web", "frontend", "10.0.10.1"),
            o.endpoint_slice("web", "frontend", ["10.244.1.10", "10.244.2.11"]),
            o.service("web", "empty", "10.0.10.2"),
        )
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        result = proxy("--mode", "iptables", "--kubeconfig", kubeconfig, "--node-name", "node-a", "--dry-run")
    assert result.returncode == 0, result.stderr
    rules = result.stdout
    assert "-d 10.0.10.1 --dport 80" in rules and "--to-destination 10.244.1.10:" in rules and "--to-destination 10.244.2.11:" in rules
    assert "web/empty" in rules and "REJECT" in rules, "a service without endpoints rejects"


def test_unreachable_kubeconfig_fails_clearly(tmp_path):
    result = proxy("--mode", "nftables", "--kubeconfig", str(tmp_path / "missing"), "--node-name", "n", "--dry-run")
    assert result.returncode != 0
    assert "missing: no such file" in result.stderr and "Traceback" not in result.stderr


def test_service_cluster_ip_range_allocates_for_the_proxy_as_for_serve(tmp_path):
    """A manifest Service without clusterIP gets the address `svcdns ipam` reports, and
    the proxy renders rules for it."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: cache, namespace: default}\nspec:\n  selector: {app: cache}\n  ports: [{port: 11211}]\n"
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: cache-0, namespace: default, labels: {app: cache}}\nstatus: {podIP: 10.244.0.5}\n"
    )
    table = subprocess.run([sys.executable, "-m", "svcdns", "ipam", "--manifests", str(path), "--service-cluster-ip-range", "10.96.0.0/16"],
                           capture_output=True, text=True, timeout=60).stdout
    address = next(line.split()[2] for line in table.splitlines() if line.startswith("default/cache "))
    without = proxy("--mode", "iptables", "--manifests", str(path), "--node-name", "n", "--dry-run")
    assert "default/cache" not in without.stdout, "no ClusterIP, no rules"
    result = proxy("--mode", "iptables", "--manifests", str(path), "--node-name", "n", "--dry-run", "--service-cluster-ip-range", "10.96.0.0/16")
    assert result.returncode == 0, result.stderr
    assert f"-d {address} --dport 11211" in result.stdout and "--to-destination 10.244.0.5:11211" in result.stdout
