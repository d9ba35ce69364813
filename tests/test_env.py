"""`svcdns env`: exactly the variables kubelet injects (pkg/kubelet/envvars), checked as
the KEY=VALUE text a user sees, then handed to real child processes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from svcdns.env import budget_warning, render, service_env
from tests.conftest import state_from_yaml

CLUSTER = """
apiVersion: v1
kind: Service
metadata: {name: kubernetes, namespace: default}
spec:
  clusterIP: 10.0.0.1
  ports: [{name: https, port: 443, targetPort: 6443}]
---
apiVersion: v1
kind: Service
metadata: {name: redis-master, namespace: default}
spec:
  clusterIP: 10.0.0.11
  ports: [{port: 6379}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: multi}
spec:
  clusterIP: 10.0.0.20
  ports: [{name: http, port: 80, targetPort: 8080}, {name: https, port: 443, targetPort: 8443}]
---
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: proto}
spec:
  clusterIP: 10.0.0.21
  ports: [{name: dns, protocol: UDP, port: 53}]
---
apiVersion: v1
kind: Service
metadata: {name: sig, namespace: proto}
spec:
  clusterIP: 10.0.0.22
  ports: [{protocol: SCTP, port: 9999}]
---
apiVersion: v1
kind: Service
metadata: {name: pets, namespace: skip}
spec:
  clusterIP: None
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: skip}
spec:
  type: ExternalName
  externalName: db.example.com
  ports: [{port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: kubernetes, namespace: clash}
spec:
  clusterIP: 10.0.0.30
  ports: [{port: 8443}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: v6}
spec:
  clusterIP: fd00::10
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: both, namespace: v6}
spec:
  clusterIPs: [fd00::20, 10.0.0.50]
  ports: [{port: 8080}]
"""

KUBERNETES = """
KUBERNETES_PORT=tcp://10.0.0.1:443
KUBERNETES_PORT_443_TCP=tcp://10.0.0.1:443
KUBERNETES_PORT_443_TCP_ADDR=10.0.0.1
KUBERNETES_PORT_443_TCP_PORT=443
KUBERNETES_PORT_443_TCP_PROTO=tcp
KUBERNETES_SERVICE_HOST=10.0.0.1
KUBERNETES_SERVICE_PORT=443
KUBERNETES_SERVICE_PORT_HTTPS=443
"""


def text(*blocks: str) -> str:
    """Expected output from blocks of lines."""
    return "".join(b.strip("\n") + "\n" for b in blocks)


# (case, namespace, service links, expected output of `svcdns env` as blocks of lines)
_CASES = [
    ("single unnamed port, dash in name", "default", True, KUBERNETES, """
REDIS_MASTER_PORT=tcp://10.0.0.11:6379
REDIS_MASTER_PORT_6379_TCP=tcp://10.0.0.11:6379
REDIS_MASTER_PORT_6379_TCP_ADDR=10.0.0.11
REDIS_MASTER_PORT_6379_TCP_PORT=6379
REDIS_MASTER_PORT_6379_TCP_PROTO=tcp
REDIS_MASTER_SERVICE_HOST=10.0.0.11
REDIS_MASTER_SERVICE_PORT=6379
"""),
    ("multi-port named, other namespaces invisible", "multi", True, KUBERNETES, """
WEB_PORT=tcp://10.0.0.20:80
WEB_PORT_443_TCP=tcp://10.0.0.20:443
WEB_PORT_443_TCP_ADDR=10.0.0.20
WEB_PORT_443_TCP_PORT=443
WEB_PORT_443_TCP_PROTO=tcp
WEB_PORT_80_TCP=tcp://10.0.0.20:80
WEB_PORT_80_TCP_ADDR=10.0.0.20
WEB_PORT_80_TCP_PORT=80
WEB_PORT_80_TCP_PROTO=tcp
WEB_SERVICE_HOST=10.0.0.20
WEB_SERVICE_PORT=80
WEB_SERVICE_PORT_HTTP=80
WEB_SERVICE_PORT_HTTPS=443
"""),
    ("UDP and SCTP", "proto", True, """
DNS_PORT=udp://10.0.0.21:53
DNS_PORT_53_UDP=udp://10.0.0.21:53
DNS_PORT_53_UDP_ADDR=10.0.0.21
DNS_PORT_53_UDP_PORT=53
DNS_PORT_53_UDP_PROTO=udp
DNS_SERVICE_HOST=10.0.0.21
DNS_SERVICE_PORT=53
DNS_SERVICE_PORT_DNS=53
""", KUBERNETES, """
SIG_PORT=sctp://10.0.0.22:9999
SIG_PORT_9999_SCTP=sctp://10.0.0.22:9999
SIG_PORT_9999_SCTP_ADDR=10.0.0.22
SIG_PORT_9999_SCTP_PORT=9999
SIG_PORT_9999_SCTP_PROTO=sctp
SIG_SERVICE_HOST=10.0.0.22
SIG_SERVICE_PORT=9999
"""),
    ("headless and ExternalName give nothing", "skip", True, KUBERNETES),
    ("namespace without services", "nothing-here", True, KUBERNETES),
    ("own kubernetes service wins over default's", "clash", True, """
KUBERNETES_PORT=tcp://10.0.0.30:8443
KUBERNETES_PORT_8443_TCP=tcp://10.0.0.30:8443
KUBERNETES_PORT_8443_TCP_ADDR=10.0.0.30
KUBERNETES_PORT_8443_TCP_PORT=8443
KUBERNETES_PORT_8443_TCP_PROTO=tcp
KUBERNETES_SERVICE_HOST=10.0.0.30
KUBERNETES_SERVICE_PORT=8443
"""),
    ("--no-service-links keeps default/kubernetes only", "multi", False, KUBERNETES),
    ("--no-service-links: default/kubernetes even over the own one", "clash", False, KUBERNETES),
    ("--no-service-links in default", "default", False, KUBERNETES),
    ("IPv6 bracketed in URLs; dual-stack uses the primary address", "v6", True, """
API_PORT=tcp://[fd00::10]:80
API_PORT_80_TCP=tcp://[fd00::10]:80
API_PORT_80_TCP_ADDR=fd00::10
API_PORT_80_TCP_PORT=80
API_PORT_80_TCP_PROTO=tcp
API_SERVICE_HOST=fd00::10
API_SERVICE_PORT=80
API_SERVICE_PORT_HTTP=80
BOTH_PORT=tcp://[fd00::20]:8080
BOTH_PORT_8080_TCP=tcp://[fd00::20]:8080
BOTH_PORT_8080_TCP_ADDR=fd00::20
BOTH_PORT_8080_TCP_PORT=8080
BOTH_PORT_8080_TCP_PROTO=tcp
BOTH_SERVICE_HOST=fd00::20
BOTH_SERVICE_PORT=8080
""", KUBERNETES),
]
CASES = [(name, ns, links, text(*blocks)) for name, ns, links, *blocks in _CASES]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    return state_from_yaml(CLUSTER, tmp_path_factory.mktemp("env"))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("env-cli") / "cluster.yaml"
    path.write_text(CLUSTER)
    return path


def svcdns(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "svcdns", *args], capture_output=True, text=True, timeout=60, check=False, **kwargs)


@pytest.mark.parametrize("namespace,links,want", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_kubelet_variables(cluster, namespace, links, want):
    env = service_env(cluster.services.values(), namespace, enable_service_links=links)
    assert render(env, "env") == want


@pytest.mark.parametrize("namespace,links,want", [c[1:] for c in CASES[:2] + CASES[6:7]], ids=[c[0] for c in CASES[:2] + CASES[6:7]])
def test_cli_prints_the_same(manifest, namespace, links, want):
    result = svcdns("env", "--manifests", str(manifest), "--namespace", namespace, *([] if links else ["--no-service-links"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout == want
    services = len({line.split("_PORT")[0].split("_SERVICE")[0] for line in want.split()})
    assert f"namespace {namespace}: {len(want.split())} variables from {services} services" in result.stderr


def parse_env_lines(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_child_process_sees_the_variables(cluster):
    """Start a real process with the generated environment, as a container runtime would."""
    env = service_env(cluster.services.values(), "default")
    seen = subprocess.run(["env"], env=env.variables, capture_output=True, text=True, check=True).stdout
    assert parse_env_lines(seen) == env.variables
    assert env.variables["REDIS_MASTER_SERVICE_HOST"] == "10.0.0.11"


@pytest.mark.parametrize("namespace", ["default", "v6", "proto"])
def test_shell_format_sourced_by_sh(manifest, tmp_path, namespace):
    """--format shell --output FILE: sh sources the file and sees every value unchanged."""
    out = tmp_path / "svc.env"
    result = svcdns("env", "--manifests", str(manifest), "--namespace", namespace, "--format", "shell", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert out.read_text().startswith("export ")
    seen = subprocess.run(["sh", "-c", f". '{out}' && env"], env={}, capture_output=True, text=True, check=True).stdout
    want = parse_env_lines(svcdns("env", "--manifests", str(manifest), "--namespace", namespace).stdout)
    assert {k: v for k, v in parse_env_lines(seen).items() if k in want} == want


def test_json_format(manifest):
    result = svcdns("env", "--manifests", str(manifest), "--namespace", "default", "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["REDIS_MASTER_PORT"] == "tcp://10.0.0.11:6379"
    assert list(data) == sorted(data)


def test_shell_quotes_what_sh_would_misread():
    from svcdns.env import ServiceEnv

    tricky = {"A": "tcp://[fd00::1]:80", "B": "it's $HOME `x` \"q\" ; rm -rf /", "C": ""}
    text = render(ServiceEnv("ns", tricky, {k: ("ns", "x") for k in tricky}), "shell")
    seen = subprocess.run(["sh", "-c", text + 'printf "%s\\n%s\\n%s" "$A" "$B" "$C"'], env={}, capture_output=True, text=True, check=True).stdout
    assert seen.split("\n") == [tricky["A"], tricky["B"], tricky["C"]]


def test_output_replaces_the_file_atomically(manifest, tmp_path):
    out = tmp_path / "svc.env"
    out.write_text("OLD=1\n")
    before = out.stat().st_ino
    result = svcdns("env", "--manifests", str(manifest), "--namespace", "multi", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert "WEB_SERVICE_HOST=10.0.0.20\n" in out.read_text() and "OLD" not in out.read_text()
    assert out.stat().st_ino != before  # a new file renamed over the old one, never rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["svc.env"]  # no temporary left behind
    assert stat.S_IMODE(out.stat().st_mode) & 0o044 == 0o044  # readable by the app's user too (umask 022)


def test_output_to_missing_directory_fails_clearly(manifest, tmp_path):
    result = svcdns("env", "--manifests", str(manifest), "--namespace", "multi", "--output", str(tmp_path / "no" / "f"))
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: --output {tmp_path / 'no' / 'f'}: No such file or directory")


def big_namespace(count: int) -> str:
    docs = [CLUSTER.split("---")[0]]
    for i in range(count):
        docs.append(
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i:04d}, namespace: big}}\n"
            f"spec:\n  clusterIP: 10.1.{i // 250}.{i % 250 + 1}\n  ports: [{{name: http, port: 80}}]\n"
        )
    docs.append(
        "apiVersion: v1\nkind: Service\nmetadata: {name: many-ports-service, namespace: big}\nspec:\n  clusterIP: 10.2.0.1\n  ports:\n"
        + "".join(f"  - {{name: p{p}, port: {p}}}\n" for p in range(1000, 1040))
    )
    return "---\n".join(docs)


def test_budget_warning_names_the_largest_services(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(big_namespace(1200))
    result = svcdns("env", "--manifests", str(path), "--namespace", "big")
    assert result.returncode == 0
    size = sum(len(line) + 1 for line in result.stdout.splitlines())
    assert size > 128 * 1024
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1, result.stderr
    assert f"is {size / 1024:.1f} KiB" in warning[0] and "over the budget of 128.0 KiB" in warning[0]
    assert "largest: big/many-ports-service (" in warning[0]
    assert "enableServiceLinks: false" in warning[0]
    # the environment is still printed in full: the warning is advice, not a failure
    assert "SVC_1199_SERVICE_HOST=10.1.4.200" in result.stdout


@pytest.mark.parametrize("flag,warns", [("1MiB", False), ("128KiB", True), ("4096", True)])
def test_warn_bytes_budget(flag, warns, tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(big_namespace(1200))
    result = svcdns("env", "--manifests", str(path), "--namespace", "big", "--warn-bytes", flag)
    assert ("warning: the service environment of namespace big" in result.stderr) == warns


def test_small_namespace_does_not_warn(cluster):
    assert budget_warning(service_env(cluster.services.values(), "multi"), 128 * 1024) is None


def test_variable_clash_is_reported_and_deterministic(tmp_path):
    """`foo` with port name `bar-port` and service `foo-service-port-bar` both make
    FOO_SERVICE_PORT_BAR_PORT; kubelet's pick depends on Go map order, ours on name order."""
    path = tmp_path / "clash.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: foo, namespace: x}\nspec:\n  clusterIP: 10.0.0.5\n"
        "  ports: [{name: bar-port, port: 81}]\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: foo-service-port-bar, namespace: x}\nspec:\n  clusterIP: 10.0.0.6\n  ports: [{port: 82}]\n"
    )
    result = svcdns("env", "--manifests", str(path), "--namespace", "x")
    assert "FOO_SERVICE_PORT_BAR_PORT=tcp://10.0.0.6:82\n" in result.stdout
    assert "warning: FOO_SERVICE_PORT_BAR_PORT is set by both x/foo and x/foo-service-port-bar; using x/foo-service-port-bar" in result.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["--kubeconfig", "/nonexistent/kubeconfig"], "error: --kubeconfig /nonexistent/kubeconfig: "),
        ([], "error: no cluster to read: give --manifests PATH or --kubeconfig PATH"),
        (["--manifests", "/nonexistent.yaml"], "error: --manifests /nonexistent.yaml: no such file or directory"),
    ],
    ids=["missing kubeconfig", "no source", "missing manifest"],
)
def test_source_errors(args, message):
    result = svcdns("env", "--namespace", "default", *args, env={k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"})
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(message)


def test_unknown_namespace_warns(manifest):
    result = svcdns("env", "--manifests", str(manifest), "--namespace", "typo")
    assert result.stdout == text(KUBERNETES)
    assert "warning: namespace typo has no objects in the manifests" in result.stderr


def test_allocated_addresses_reach_the_environment(tmp_path):
    """With --service-cluster-ip-range a Service without clusterIP gets one, and the
    environment shows the address `svcdns ipam` reports for it."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: kubernetes, namespace: default}\nspec:\n  ports: [{name: https, port: 443}]\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: cache, namespace: default}\nspec:\n  ports: [{port: 11211}]\n"
    )
    without = svcdns("env", "--manifests", str(path), "--namespace", "default")
    assert without.stdout == ""  # kubelet skips services without a ClusterIP
    result = svcdns("env", "--manifests", str(path), "--namespace", "default", "--service-cluster-ip-range", "10.96.0.0/16")
    env = parse_env_lines(result.stdout)
    table = svcdns("ipam", "--manifests", str(path), "--service-cluster-ip-range", "10.96.0.0/16").stdout
    rows = {line.split()[0]: line.split()[2] for line in table.splitlines() if not line.startswith("usage:")}
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1" == rows["default/kubernetes"]
    assert env["CACHE_SERVICE_HOST"] == rows["default/cache"]
    assert env["CACHE_PORT_11211_TCP"] == f"tcp://{rows['default/cache']}:11211"


def test_in_cluster_reads_the_live_api(tmp_path, monkeypatch, capsys):
    """Inside a pod (kubelet's KUBERNETES_SERVICE_HOST and a service-account token) no
    source flag is needed: the pod's own cluster is read."""
    from svcdns import cli, oneshot
    from svcdns.store import ClusterState

    token = tmp_path / "token"
    token.write_text("t")
    monkeypatch.setattr(oneshot, "SERVICE_ACCOUNT_TOKEN", str(token))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    asked = []
    monkeypatch.setattr(oneshot, "load_live", lambda kubeconfig: asked.append(kubeconfig) or ClusterState())
    args = cli.build_parser().parse_args(["env", "--namespace", "default"])
    assert args.run(args) == 0  # (not cli.main: it would reconfigure logging for the whole test run)
    assert asked == [None], "in a pod, the service account (no kubeconfig) is used"


def test_env_from_the_kubernetes_api(tmp_path):
    """`svcdns env --kubeconfig` lists the cluster once and prints kubelet's variables,
    the same as from manifests holding the same objects."""
    from tests.kubeapi import objects as o
    from tests.kubeapi.server import KubeApi

    with KubeApi() as api:
        api.put(
            o.namespace("default"),
            o.namespace("web"),
            o.service("default", "kubernetes", "10.0.0.1", ports=(("https", 443),)),
            o.service("web", "frontend", "10.0.10.1"),
            o.service("web", "db", "None", ports=(("pg", 5432),)),
            o.service("other", "hidden", "10.0.20.1"),
        )
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        result = svcdns("env", "--kubeconfig", kubeconfig, "--namespace", "web")
    assert result.returncode == 0, result.stderr
    env = parse_env_lines(result.stdout)
    assert env["KUBERNETES_SERVICE_HOST"] == "10.0.0.1" and env["KUBERNETES_SERVICE_PORT_HTTPS"] == "443"
    assert env["FRONTEND_SERVICE_HOST"] == "10.0.10.1"
    assert not any(k.startswith(("DB_", "HIDDEN_")) for k in env), "headless and other namespaces give nothing"


def test_range_flag_reaches_serve_config():
    from svcdns import cli

    args = cli.build_parser().parse_args(["serve", "--service-cluster-ip-range", "10.96.0.0/12,fd00:10:96::/112"])
    assert [str(c) for c in cli.serve_config(args).service_cidrs] == ["10.96.0.0/12", "fd00:10:96::/112"]
    assert cli.serve_config(cli.build_parser().parse_args(["serve"])).service_cidrs == ()
