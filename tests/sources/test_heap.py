"""The garbage collector around LISTs (svcdns.heap): paused while a LIST runs,
on again after the last one ends however it ends, and the synced state frozen until the
source closes. The time this saves is measured by bench/scale_api.py."""

from __future__ import annotations

import asyncio
import gc

import pytest

from svcdns import heap
from tests.kubeapi import objects as o
from tests.sources.test_reflector import Harness, until


@pytest.fixture(autouse=True)
def collector_on():
    gc.enable()
    yield
    gc.enable()
    gc.unfreeze()


async def test_paused_until_the_last_of_overlapping_lists_ends():
    first_in, second_in, release_first, release_second = (asyncio.Event() for _ in range(4))
    seen = []

    async def listing(entered: asyncio.Event, release: asyncio.Event):
        with heap.loading():
            entered.set()
            await release.wait()
        seen.append(gc.isenabled())

    tasks = [asyncio.ensure_future(listing(first_in, release_first)), asyncio.ensure_future(listing(second_in, release_second))]
    await first_in.wait()
    await second_in.wait()
    assert not gc.isenabled()
    release_first.set()
    await tasks[0]
    assert seen == [False]  # the other LIST still runs
    release_second.set()
    await tasks[1]
    assert seen == [False, True] and gc.isenabled()


@pytest.mark.parametrize("case", ["error", "cancelled"])
async def test_a_failed_list_resumes_collection(case):
    started = asyncio.Event()

    async def listing():
        with heap.loading():
            started.set()
            if case == "error":
                raise ConnectionResetError("the API went away")
            await asyncio.sleep(3600)

    task = asyncio.ensure_future(listing())
    await started.wait()
    if case == "cancelled":
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert gc.isenabled()


def test_collection_switched_off_by_someone_else_stays_off():
    gc.disable()
    with heap.loading():
        pass
    assert not gc.isenabled()


async def test_synced_state_is_frozen_until_the_source_closes(kubeapi, tmp_path):
    kubeapi.put(o.namespace("web"), o.service("web", "a", "10.0.0.1"), o.endpoint_slice("web", "a", ["10.244.0.1"]))
    async with Harness(kubeapi, tmp_path) as h:
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0
        # every kind watching first: a watch opened after the expiry starts at the current
        # resourceVersion, which is valid, and would never relist
        await until(lambda: all(kubeapi.open_watches(p) for p in ("services", "endpointslices")))
        kubeapi.expire(close_watches=True)  # a relist: paused and resumed again
        await until(lambda: h.reflector("Service").stats.relists and h.reflector("EndpointSlice").stats.relists)
        assert gc.isenabled()
    assert gc.get_freeze_count() == 0
