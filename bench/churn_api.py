#!/usr/bin/env python3
"""The test API server (tests/kubeapi) serving a bench data set, with endpoint churn.

    bench/churn_api.py CLUSTER_JSON WORKDIR [--rate 10] [--seconds 60]

Loads the objects of CLUSTER_JSON (bench/dataset.py output) into a KubeApi on 127.0.0.1,
writes WORKDIR/kubeconfig, then WORKDIR/ready. When WORKDIR/start appears it changes
RATE EndpointSlices a second for SECONDS (headless services' endpoints get the next
generation's addresses, one service after another), logging each write to
WORKDIR/churn.log (``<unix time> <ns>/<name> <addresses>``), then writes WORKDIR/done
and serves until SIGTERM. Used by bench/soak.sh (SOURCE=api, the default).
"""

from __future__ import annotations

import argparse
import copy
import json
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.kubeapi.server import KubeApi  # noqa: E402


def headless_slices(items: list[dict]) -> list[dict]:
    """The EndpointSlices of headless services (their changes show in A answers)."""
    headless = {(i["metadata"].get("namespace", "default"), i["metadata"]["name"])
                for i in items if i["kind"] == "Service" and i["spec"].get("clusterIP") == "None"}
    return [i for i in items if i["kind"] == "EndpointSlice"
            and (i["metadata"].get("namespace", "default"), i["metadata"]["labels"]["kubernetes.io/service-name"]) in headless]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cluster")
    parser.add_argument("workdir")
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    for name in ("ready", "start", "done", "churn.log"):
        (work / name).unlink(missing_ok=True)
    items = json.loads(Path(args.cluster).read_text())["items"]
    targets = headless_slices(items)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with KubeApi(bookmark_interval=5.0) as api:
        for i in range(0, len(items), 2000):
            api.put(*items[i : i + 2000])
        del items
        api.write_kubeconfig(work / "kubeconfig")
        (work / "ready").touch()
        while not (work / "start").exists() and not stop:
            time.sleep(0.05)
        started, n = time.monotonic(), 0
        with open(work / "churn.log", "w") as log:
            while time.monotonic() - started < args.seconds and not stop:
                delay = started + (n + 1) / args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                target = copy.deepcopy(targets[n % len(targets)])
                gen = n // len(targets) + 1
                addrs = [f"10.{200 + gen % 50}.{(n * 16 + j) >> 8 & 255}.{(n * 16 + j) & 255}" for j in range(len(target["endpoints"]))]
                for endpoint, addr in zip(target["endpoints"], addrs):
                    endpoint["addresses"] = [addr]
                api.put(target)
                meta = target["metadata"]
                log.write(f"{time.time():.3f} {meta.get('namespace', 'default')}/{meta['name']} {','.join(addrs)}\n")
                n += 1
        (work / "done").write_text(str(n))
        while not stop:
            time.sleep(0.1)


if __name__ == "__main__":
    main()
