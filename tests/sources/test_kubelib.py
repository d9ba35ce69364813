"""kubernetes-asyncio without its generated models (svcdns.sources.kubelib): the live
source syncs from the test API server while none of the ~1,000 generated API and model
classes is loaded, and the library stays whole for any other code in the process.

Each case runs in a fresh interpreter: what is imported is per process, and the
pytest process may have imported the library already."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SYNC_THEN_USE_THE_FULL_LIBRARY = """
import asyncio, json, sys
from svcdns.oneshot import sync_live
from tests.kubeapi import objects as o
from tests.kubeapi.server import KubeApi

def loaded(prefix):
    return sorted(m for m in sys.modules if m.startswith(prefix))

with KubeApi() as api:
    api.put(o.namespace("web"), o.service("web", "a", "10.0.0.1"), o.endpoint_slice("web", "a", ["10.244.0.1"]))
    kubeconfig = api.write_kubeconfig(sys.argv[1])
    state = asyncio.run(sync_live(kubeconfig, endpoints=True))
    out = {"services": sorted("/".join(k) for k in state.services),
           "library": loaded("kubernetes_asyncio"),
           "generated": loaded("kubernetes_asyncio.client.models.") + loaded("kubernetes_asyncio.client.api.")}

    # Other code in the same process imports the library the usual way, typed models and all
    from kubernetes_asyncio import client, config, watch

    async def typed_list():
        async with await config.new_client_from_config(kubeconfig) as api_client:
            namespaces = await client.CoreV1Api(api_client).list_namespace()
            return type(namespaces).__name__, [ns.metadata.name for ns in namespaces.items]

    out["typed"] = asyncio.run(typed_list())
    out["watch"] = watch.Watch.__name__
    print(json.dumps(out))
"""

ALREADY_IMPORTED = """
import json
import kubernetes_asyncio
from svcdns.sources import kubelib
print(json.dumps({"same": kubelib.ApiClient is kubernetes_asyncio.client.ApiClient
                  and kubelib.Configuration is kubernetes_asyncio.client.Configuration}))
"""


def run(script: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_live_source_loads_no_generated_classes(tmp_path):
    out = run(SYNC_THEN_USE_THE_FULL_LIBRARY, str(tmp_path / "kubeconfig"))
    assert out["services"] == ["web/a"]
    assert out["generated"] == []
    assert len(out["library"]) < 25, out["library"]  # configuration, rest, api_client, config.*
    # ... and the library is still whole for code that wants its typed API
    assert out["typed"] == ["V1NamespaceList", ["web"]]
    assert out["watch"] == "Watch"


def test_library_imported_before_is_used_as_it_is():
    assert run(ALREADY_IMPORTED) == {"same": True}
