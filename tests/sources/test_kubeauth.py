"""Credentials: in-cluster service account over TLS with token rotation, kubeconfig,
and the choice of source `svcdns serve` makes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import ssl
import sys

import pytest
import trustme
import yaml

from svcdns.config import ServeConfig
from svcdns.serve import choose_source
from svcdns.sources.kube import KubeSource
from svcdns.sources.kubeauth import AuthError, api_client
from svcdns.store import ClusterState
from tests.kubeapi import objects as o
from tests.kubeapi.server import KubeApi
from tests.sources.conftest import FAST
from tests.sources.test_reflector import until


@pytest.fixture
def tls_api(tmp_path):
    """The test API server behind TLS, with a CA mounted like a pod's service account."""
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    ctx.verify_mode = ssl.CERT_OPTIONAL  # client certificates from this CA authenticate too
    ca.configure_trust(ctx)
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    ca.cert_pem.write_to_path(str(sa / "ca.crt"))
    (sa / "token").write_text("token-1\n")
    with KubeApi(tokens=("token-1",), ssl_context=ctx, bookmark_interval=0.2) as api:
        api.ca = ca
        yield api, sa


def tls_kubeconfig(path, api: KubeApi, user: dict) -> str:
    """A kubeconfig for the TLS test API server with the given ``user`` entry."""
    ca_data = base64.b64encode(api.ca.cert_pem.bytes()).decode()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": api.url, "certificate-authority-data": ca_data}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "u"}}],
    }))
    return str(path)


@contextlib.asynccontextmanager
async def running(client):
    """A KubeSource over ``client``, running; yields it and its task, closes both."""
    source = KubeSource(client, ClusterState(), timing=FAST)
    task = asyncio.ensure_future(source.run())
    try:
        yield source, task
    finally:
        await source.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def synced_services(client) -> set:
    """Sync a KubeSource over ``client``; the service keys it saw."""
    async with running(client) as (source, _):
        await asyncio.wait_for(source.synced.wait(), 5)
        return set(source.state.services)


async def test_kubeconfig_client_certificate(tls_api, tmp_path):
    api, _ = tls_api
    api.put(o.namespace("web"), o.service("web", "a", "10.0.0.1"))
    api.tokens, api.cert_users = set(), {"svcdns"}  # no token would do: only the certificate
    leaf = api.ca.issue_cert("svcdns", common_name="svcdns")
    user = {"client-certificate-data": base64.b64encode(leaf.cert_chain_pems[0].bytes()).decode(),
            "client-key-data": base64.b64encode(leaf.private_key_pem.bytes()).decode()}
    client = await api_client(tls_kubeconfig(tmp_path / "kubeconfig", api, user), "/nonexistent", {})
    assert await synced_services(client) == {("web", "a")}
    assert [r.path for r in api.requests() if r.status == 401] == []


async def test_kubeconfig_exec_plugin(tls_api, tmp_path):
    """A credential plugin (as aws eks get-token, gke-gcloud-auth-plugin): the token is
    what the command prints."""
    api, _ = tls_api
    api.put(o.namespace("web"), o.service("web", "a", "10.0.0.1"))
    api.tokens = {"from-the-plugin"}
    plugin = tmp_path / "plugin.py"
    plugin.write_text("import json\nprint(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1', "
                      "'kind': 'ExecCredential', 'status': {'token': 'from-the-plugin'}}))\n")
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable, "args": [str(plugin)],
                     "interactiveMode": "Never"}}
    client = await api_client(tls_kubeconfig(tmp_path / "kubeconfig", api, user), "/nonexistent", {})
    assert await synced_services(client) == {("web", "a")}
    assert [r.path for r in api.requests() if r.status == 401] == []


async def test_in_cluster_tls_and_token_rotation(tls_api):
    api, sa = tls_api
    api.put(o.namespace("web"), o.service("web", "a", "10.0.0.1"))
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api.port)}
    client = await api_client(None, str(sa), env)
    async with running(client) as (source, task):
        state = source.state
        await asyncio.wait_for(source.synced.wait(), 5)
        assert ("web", "a") in state.services
        await until(lambda: api.open_watches() == len(source.reflectors))  # nothing in flight
        # kubelet rotates the projected token (atomically, by rename); then the old
        # one is revoked and every connection has to authenticate again
        api.tokens = {"token-1", "token-2"}
        (sa / "token.new").write_text("token-2\n")
        os.replace(sa / "token.new", sa / "token")
        api.tokens = {"token-2"}
        api.drop_watches()
        api.put(o.service("web", "b", "10.0.0.2"))
        await until(lambda: ("web", "b") in state.services)
        assert [r.path for r in api.requests() if r.status == 401] == []


async def test_wrong_token_is_an_outage_not_a_crash(tls_api):
    api, sa = tls_api
    api.put(o.namespace("web"))
    api.tokens = {"someone-else"}
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api.port)}
    async with running(await api_client(None, str(sa), env)) as (source, task):
        await until(lambda: source.outage.failures >= 3)
        assert not task.done() and not source.synced.is_set()
        api.tokens = {"token-1"}
        await asyncio.wait_for(source.synced.wait(), 3)


def _sa(tmp_path, token=True, ca=True):
    sa = tmp_path / "sa"
    sa.mkdir(exist_ok=True)
    if token:
        (sa / "token").write_text("t")
    if ca:
        (sa / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    return str(sa)


IN_POD = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}

# (case, manifests, kubeconfig, environment, token mounted, expected source)
SOURCES = [
    ("manifests win", ("m.yaml",), "kc", IN_POD, True, "manifests"),
    ("kubeconfig", (), "kc", {}, False, "kube"),
    ("in a pod", (), None, IN_POD, True, "kube"),
    ("env but no token", (), None, IN_POD, False, "example"),
    ("token but no env", (), None, {}, True, "example"),
    ("nothing", (), None, {}, False, "example"),
]


@pytest.mark.parametrize("manifests,kubeconfig,env,token,want", [c[1:] for c in SOURCES], ids=[c[0] for c in SOURCES])
def test_choose_source(tmp_path, manifests, kubeconfig, env, token, want):
    cfg = ServeConfig(manifests=manifests, kubeconfig=kubeconfig, serviceaccount_dir=_sa(tmp_path, token=token))
    assert choose_source(cfg, env) == want


@pytest.mark.parametrize("case,kubeconfig,token,ca,env,message", [
    ("missing kubeconfig", "/nonexistent/kubeconfig", True, True, {}, "--kubeconfig /nonexistent/kubeconfig: no such file"),
    ("no CA mounted", None, True, False, IN_POD, "ca.crt: the service account CA certificate is missing"),
    ("not in a pod", None, False, True, {}, "not in a cluster"),
], ids=lambda v: v if isinstance(v, str) and " " in v else "")
async def test_auth_errors_name_the_problem(tmp_path, case, kubeconfig, token, ca, env, message):
    with pytest.raises(AuthError, match=message):
        await api_client(kubeconfig, _sa(tmp_path, token=token, ca=ca), env)


async def test_bad_kubeconfig_names_the_file(tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n")
    with pytest.raises(AuthError, match=f"--kubeconfig {path}"):
        await api_client(str(path), "/nonexistent", {})


# An exec credential plugin whose token is the content of a file; it logs each run and
# says the token expires after the given number of seconds.
EXPIRING_PLUGIN = """
import datetime, json, sys
token = open(sys.argv[1]).read().strip()
if token == "none":
    sys.exit("error: you must be logged in to the server")
with open(sys.argv[2], "a") as runs:
    runs.write(token + "\\n")
expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=float(sys.argv[3]))
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {"token": token, "expirationTimestamp": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")}}))
"""


def expiring_plugin_user(tmp_path, lifetime: float) -> dict:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(EXPIRING_PLUGIN)
    (tmp_path / "token").write_text("token-1")
    args = [str(plugin), str(tmp_path / "token"), str(tmp_path / "runs"), str(lifetime)]
    return {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable, "args": args,
                     "interactiveMode": "Never"}}


async def test_exec_plugin_token_is_renewed_when_it_expires(tls_api, tmp_path):
    """aws eks get-token hands out 15-minute tokens: a long-running watch must get a
    new one from the plugin, not retry the expired one forever. (A lifetime under the
    library's 5-minute safety margin counts as expired at once: the plugin runs before
    every request.)"""
    api, _ = tls_api
    api.put(o.namespace("web"), o.service("web", "a", "10.0.0.1"))
    api.tokens = {"token-1"}
    client = await api_client(tls_kubeconfig(tmp_path / "kubeconfig", api, expiring_plugin_user(tmp_path, 60)), "/nonexistent", {})
    async with running(client) as (source, task):
        state = source.state
        await asyncio.wait_for(source.synced.wait(), 5)
        await until(lambda: api.open_watches() == len(source.reflectors))
        (tmp_path / "token").write_text("token-2")  # the cloud now issues token-2 ...
        api.tokens = {"token-2"}  # ... and token-1 has expired
        api.drop_watches()
        api.put(o.service("web", "b", "10.0.0.2"))
        await until(lambda: ("web", "b") in state.services, timeout=5)
        await until(lambda: api.open_watches() == len(source.reflectors))  # no plugin still running at close


async def test_exec_plugin_runs_once_while_its_token_is_valid(tls_api, tmp_path):
    api, _ = tls_api
    api.put(o.namespace("web"), o.service("web", "a", "10.0.0.1"))
    client = await api_client(tls_kubeconfig(tmp_path / "kubeconfig", api, expiring_plugin_user(tmp_path, 3600)), "/nonexistent", {})
    assert await synced_services(client) == {("web", "a")}
    assert len([r for r in api.requests() if r.status == 200]) >= 4  # a LIST per kind at least
    assert (tmp_path / "runs").read_text().split() == ["token-1"]


async def test_failing_exec_plugin_is_an_outage_not_a_crash(tls_api, tmp_path, caplog):
    api, _ = tls_api
    api.put(o.namespace("web"), o.service("web", "a", "10.0.0.1"))
    api.tokens = {"token-1"}
    caplog.set_level(logging.DEBUG, logger="svcdns")  # retries after the first failure log at debug
    client = await api_client(tls_kubeconfig(tmp_path / "kubeconfig", api, expiring_plugin_user(tmp_path, 60)), "/nonexistent", {})
    async with running(client) as (source, task):
        state = source.state
        await asyncio.wait_for(source.synced.wait(), 5)
        (tmp_path / "token").write_text("none")  # the user's cloud login lapsed
        api.drop_watches()
        plugin_failed = lambda: sum("exec credential plugin" in r.getMessage() and "must be logged in" in r.getMessage()  # noqa: E731
                                    for r in caplog.records)
        await until(lambda: plugin_failed() >= 3)  # retried with backoff
        assert not task.done()
        (tmp_path / "token").write_text("token-1")  # logged in again
        api.put(o.service("web", "b", "10.0.0.2"))
        await until(lambda: ("web", "b") in state.services, timeout=5)
        await until(lambda: api.open_watches() == len(source.reflectors))  # no plugin still running at close
