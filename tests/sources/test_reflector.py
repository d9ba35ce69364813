"""The reflector against the test API server, below the DNS layer: the requests it
makes (pagination, watch parameters), how it waits (backoff, Retry-After), and how it
reconciles."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from svcdns.sources.kube import KubeOptions, KubeSource
from svcdns.sources.kubeauth import api_client
from svcdns.sources.health import Backoff
from svcdns.store import ClusterState
from tests.kubeapi import objects as o
from tests.sources.conftest import FAST

# (initial, cap, rng value, delays of attempts 1..6)
BACKOFF = [
    ("doubles from the initial delay", 0.8, 30.0, 0.5, [0.8, 1.6, 3.2, 6.4, 12.8, 25.6]),
    ("capped", 1.0, 5.0, 0.5, [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]),
    ("jitter low end is half", 1.0, 30.0, 0.0, [0.5, 1.0, 2.0, 4.0, 8.0, 15.0]),
    ("jitter high end never beyond the cap", 1.0, 5.0, 0.999999, [1.5, 3.0, 5.0, 5.0, 5.0, 5.0]),
]


@pytest.mark.parametrize("initial,cap,rng,want", [c[1:] for c in BACKOFF], ids=[c[0] for c in BACKOFF])
def test_backoff(initial, cap, rng, want):
    b = Backoff(initial, cap, rng=lambda: rng)
    assert [round(b.next(), 3) for _ in want] == want
    b.reset()
    assert round(b.next(), 3) == want[0]


class Harness:
    """A KubeSource over its own state, on the test's event loop."""

    def __init__(self, api, tmp_path, timing=FAST, options=KubeOptions()):
        self.api, self.tmp_path, self.timing, self.options = api, tmp_path, timing, options
        self.state = ClusterState()

    async def __aenter__(self):
        client = await api_client(self.api.write_kubeconfig(self.tmp_path / "kubeconfig"), "/nonexistent")
        self.source = KubeSource(client, self.state, self.options, self.timing)
        self.task = asyncio.ensure_future(self.source.run())
        await asyncio.wait_for(self.source.synced.wait(), 5)
        return self

    async def __aexit__(self, *exc):
        await self.source.close()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    def reflector(self, kind):
        return next(r for r in self.source.reflectors if r.kind == kind)


async def until(check, timeout=3.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_paginated_list_then_watch_from_its_resource_version(kubeapi, tmp_path):
    kubeapi.put(o.namespace("web"), *[o.service("web", f"svc-{i}", f"10.0.0.{i + 1}") for i in range(10)])
    async with Harness(kubeapi, tmp_path) as h:
        assert len(h.state.services) == 10
        lists = [r for r in kubeapi.requests("services") if "watch" not in r.query]
        assert [r.query.get("limit") for r in lists] == ["3"] * 4  # 10 services, pages of 3
        assert "continue" not in lists[0].query and all(r.query.get("continue") for r in lists[1:])
        await until(lambda: any("watch" in r.query for r in kubeapi.requests("services")))
        watch = next(r for r in kubeapi.requests("services") if "watch" in r.query)
        assert watch.query["resourceVersion"] == str(kubeapi.storage.rv)
        assert watch.query["allowWatchBookmarks"].lower() == "true"
        assert 5 <= int(watch.query["timeoutSeconds"]) <= 10
        rv_before = h.reflector("Service").rv
        kubeapi.put(o.namespace("other"))  # moves the global resourceVersion; services see only bookmarks
        await until(lambda: h.reflector("Service").rv != rv_before)
        assert h.reflector("Service").rv == str(kubeapi.storage.rv)


async def test_server_ending_watches_is_normal(kubeapi, tmp_path):
    kubeapi.put(o.namespace("web"), o.service("web", "a", "10.0.0.1"))
    async with Harness(kubeapi, tmp_path, timing=replace(FAST, watch_timeout=(1, 1))) as h:
        r = h.reflector("Service")
        await until(lambda: r.stats.restarts.get("closed", 0) >= 2, timeout=4)
        assert r.stats.api_errors == 0 and r.stats.relists == 0
        assert h.source.outage.since is None
        assert sum(1 for q in kubeapi.requests("services") if "watch" not in q.query) == 1


@pytest.mark.parametrize("status,retry_after,min_wait,max_wait", [
    (429, 1, 1.0, 1.6),      # Retry-After is honoured...
    (503, 1, 1.0, 1.6),      # ...whatever the status
    (500, None, 0.0, 0.4),   # no Retry-After: backoff (FAST starts at 0.05s)
], ids=["429", "503", "500"])
async def test_retry_after_is_honoured(kubeapi, tmp_path, status, retry_after, min_wait, max_wait):
    kubeapi.put(o.namespace("web"))
    kubeapi.fail(1, status, retry_after=retry_after, plurals=("services",), watch=False)
    async with Harness(kubeapi, tmp_path) as h:
        first, second = [r for r in kubeapi.requests("services") if "watch" not in r.query][:2]
        assert first.status == status and second.status == 200
        assert min_wait <= second.at - first.at <= max_wait
        assert h.reflector("Service").stats.api_errors == 1


async def test_relist_reconciles_and_reparses_only_what_changed(kubeapi, tmp_path, monkeypatch):
    kubeapi.put(o.namespace("web"), *[o.service("web", f"svc-{i}", f"10.0.0.{i + 1}") for i in range(6)])
    async with Harness(kubeapi, tmp_path) as h:
        r = h.reflector("Service")
        parsed = []
        original = r._parse
        monkeypatch.setattr(r, "_parse", lambda obj: parsed.append(obj["metadata"]["name"]) or original(obj))
        kubeapi.fail(10**6, 500)
        kubeapi.drop_watches()
        kubeapi.delete("Service", "web", "svc-0")
        kubeapi.put(o.service("web", "svc-1", "10.0.1.1"), o.service("web", "svc-9", "10.0.1.9"))
        kubeapi.expire()
        kubeapi.clear_faults()
        await until(lambda: r.stats.relists == 1)
        assert sorted(parsed) == ["svc-1", "svc-9"]  # the four unchanged were not parsed again
        assert sorted(k[1] for k in h.state.services) == ["svc-1", "svc-2", "svc-3", "svc-4", "svc-5", "svc-9"]
        assert h.state.services[("web", "svc-1")].cluster_ips == ("10.0.1.1",)


async def test_nodes_and_pods_are_watched_only_when_asked_for(kubeapi, tmp_path):
    kubeapi.put(o.namespace("web"), o.node("node-1", zone="zone-a"), o.pod("web", "p", "10.244.0.5"))
    async with Harness(kubeapi, tmp_path) as h:
        assert h.source.kinds() == ["Namespace", "Service", "EndpointSlice", "Endpoints"]
        assert not h.state.nodes and not h.state.pods
    async with Harness(kubeapi, tmp_path, options=KubeOptions(pods=True, nodes=True)) as h:
        assert h.state.nodes[("", "node-1")].zone == "zone-a"  # the proxy's topology
        assert h.state.pod_by_ip["10.244.0.5"].name == "p"
        kubeapi.put(o.node("node-2", zone="zone-b"))
        await until(lambda: ("", "node-2") in h.state.nodes)
