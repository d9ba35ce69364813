"""Following changes: a running proxy picks up manifest edits, rewrites only what
changed, and reports its health; in-process syncs check which chains a partial sync
writes, against the real kernel."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from svcdns.model import EndpointSlice
from svcdns.proxy.backends.iptables import IptablesBackend
from svcdns.proxy.backends.iptables_rules import endpoint_chain, port_proto_hash
from svcdns.proxy.backends.nftables import NftablesBackend
from svcdns.proxy.proxier import Proxier
from svcdns.sources.manifests import ManifestSource
from svcdns.store import ClusterState

from .netlab import CLUSTER_CIDR, Lab
from .test_traffic import PODS, STICKY, TESTDATA, WEB, proxy_argv

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="network namespaces need root and iproute2 (CI runs as root)")


def drop_endpoint(path: Path, slice_name: str, ip: str) -> None:
    """Edit the manifest file: remove one endpoint from one slice."""
    docs = list(yaml.safe_load_all(path.read_text()))
    for doc in docs:
        if doc.get("kind") == "EndpointSlice" and doc["metadata"]["name"] == slice_name:
            doc["endpoints"] = [e for e in doc["endpoints"] if e["addresses"] != [ip]]
    path.write_text(yaml.safe_dump_all(docs))


def http_get(lab: Lab, port: int, path: str) -> tuple[int, str]:
    sock = lab.worker(lab.node).socket()
    sock.settimeout(5)
    try:
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    except OSError:
        return 0, ""
    finally:
        sock.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_running_proxy_follows_endpoint_changes(mode, tmp_path):
    manifests = tmp_path / "cluster.yaml"
    shutil.copy(TESTDATA / "lab.yaml", manifests)
    log_path = tmp_path / "proxy.log"
    with Lab(PODS, dead=("dead",)) as lab, open(log_path, "w") as log:
        lab.start(proxy_argv(mode, manifests, "--min-sync-period", "0.1", "--health", "127.0.0.1:10256"), stdout=log, stderr=subprocess.STDOUT)
        lab.wait_for(lambda: http_get(lab, 10256, "/ready")[0] == 200, what="the first sync (/ready)")
        assert set(lab.tally(WEB, 80, 60)) == {"p1", "p2", "p3"}
        pinned = lab.ask(STICKY, 80)

        drop_endpoint(manifests, "web-1", "10.244.1.3")
        lab.wait_for(lambda: "partial sync" in log_path.read_text(), what="a partial sync")
        assert set(lab.tally(WEB, 80, 60)) == {"p1", "p2"}
        assert lab.tally(STICKY, 80, 10) == {pinned: 10}  # untouched service, affinity kept

        status, body = http_get(lab, 10256, "/health")
        assert status == 200
        status, metrics = http_get(lab, 10256, "/metrics")
        assert 'svcdns_proxy_sync_duration_seconds_count{kind="partial",mode="%s"}' % mode in metrics
        assert "svcdns_proxy_service_ports 11.0" in metrics


def load_state(tmp_path: Path) -> ClusterState:
    state = ClusterState(derive_endpoints=True, implicit_namespaces=True)
    ManifestSource([str(TESTDATA / "lab.yaml")], state).load()
    return state


def without(state: ClusterState, slice_key: tuple[str, str], ip: str) -> None:
    old: EndpointSlice = state.slices[slice_key]
    from dataclasses import replace

    state.apply(replace(old, endpoints=tuple(e for e in old.endpoints if e.addresses != (ip,))))
    state.commit()


def test_iptables_partial_sync_writes_only_changed_chains(tmp_path):
    with Lab(PODS, dead=("dead",)) as lab:
        state = load_state(tmp_path)
        backend = IptablesBackend(prefix=("ip", "netns", "exec", lab.node))
        proxier = Proxier(state, backend, "node-a", (CLUSTER_CIDR,))
        assert asyncio.run(proxier.sync())
        web_svc = "KUBE-SVC-" + port_proto_hash("lab/web:http", "tcp")
        sticky_svc = "KUBE-SVC-" + port_proto_hash("lab/sticky:http", "tcp")
        sticky_sep = endpoint_chain("lab/sticky:http", "tcp", "10.244.1.3:8080")
        def web_dnats(save: str) -> list[str]:
            return [ln.rpartition(" ")[2] for ln in save.splitlines() if ln.startswith(f"-A {web_svc} ") and "-j DNAT" in ln]

        before = lab.node_exec("iptables-save", "-t", "nat").stdout
        assert web_dnats(before) == ["10.244.1.1:8080", "10.244.1.2:8080", "10.244.1.3:8080"] and sticky_sep in before

        inputs = []
        real_sync = backend.sync

        def spy(view, changed):
            inputs.append(changed)
            return real_sync(view, changed)

        backend.sync = spy
        without(state, ("lab", "web-1"), "10.244.1.3")
        assert asyncio.run(proxier.sync())
        assert inputs == [{("lab", "web")}]
        after = lab.node_exec("iptables-save", "-t", "nat").stdout
        assert web_dnats(after) == ["10.244.1.1:8080", "10.244.1.2:8080"]
        assert web_svc in after and sticky_svc in after and sticky_sep in after  # unchanged services' chains kept
        assert set(lab.tally(WEB, 80, 40)) == {"p1", "p2"}
        assert lab.ask(STICKY, 80) in {"p1", "p2", "p3"}

        # p1 (this node's pod) leaves one of its services: its hairpin entry stays, the
        # other services still send it back to itself
        hairpin = "10.244.1.1,tcp:8080,10.244.1.1"
        assert hairpin in lab.node_exec("ipset", "list", "KUBE-LOOP-BACK").stdout
        without(state, ("lab", "self-1"), "10.244.1.1")
        assert asyncio.run(proxier.sync())
        assert hairpin in lab.node_exec("ipset", "list", "KUBE-LOOP-BACK").stdout
        assert lab.tally(WEB, 80, 40, source="p1").get("p1")  # hairpin still masqueraded

        # a service moves to another ClusterIP: its KUBE-SERVICES rule is swapped alone
        old = state.services[("lab", "web")]
        state.apply(replace(old, cluster_ips=("10.96.0.99",)))
        state.commit()
        assert asyncio.run(proxier.sync())
        assert lab.ask(WEB, 80) == "timeout"  # the old address is nothing now (routed away)
        assert set(lab.tally("10.96.0.99", 80, 30)) == {"p1", "p2"}
        assert lab.ask(STICKY, 80) in {"p1", "p2", "p3"}
        # and is deleted: its rule and chains go, nothing else
        state.remove("Service", ("lab", "web"))
        state.commit()
        assert asyncio.run(proxier.sync())
        final = lab.node_exec("iptables-save", "-t", "nat").stdout
        assert web_svc not in final and "10.96.0.99" not in final and sticky_svc in final
        assert lab.ask(STICKY, 80) in {"p1", "p2", "p3"}


def test_nftables_partial_sync_keeps_affinity(tmp_path):
    with Lab(PODS, dead=("dead",)) as lab:
        state = load_state(tmp_path)
        backend = NftablesBackend(prefix=("ip", "netns", "exec", lab.node))
        proxier = Proxier(state, backend, "node-a", (CLUSTER_CIDR,))
        assert asyncio.run(proxier.sync())
        pinned = lab.ask(STICKY, 80)
        without(state, ("lab", "web-1"), "10.244.1.3")
        assert asyncio.run(proxier.sync())
        table = lab.node_exec("nft", "list", "table", "ip", "svcdns").stdout
        assert "10.96.0.10 . 80 . 1 : 10.244.1.2 . 8080" in table  # web's elements, now in the map of TCP services with 2 endpoints
        assert "10.96.0.10 . 80 . 2" not in table  # its third element deleted
        assert set(lab.tally(WEB, 80, 40)) == {"p1", "p2"}
        assert lab.tally(STICKY, 80, 10) == {pinned: 10}


def test_failed_apply_is_retried_as_a_full_sync(tmp_path):
    """iptables-restore fails (no such namespace): the next sync is full, not partial."""
    state = load_state(tmp_path)
    backend = IptablesBackend(prefix=("ip", "netns", "exec", "svcdns-no-such-ns-%d" % os.getpid()))
    proxier = Proxier(state, backend, "node-a", (CLUSTER_CIDR,))
    assert not asyncio.run(proxier.sync())
    assert proxier.need_full_sync
    assert proxier.checkout() is None
