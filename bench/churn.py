#!/usr/bin/env python3
"""Endpoint churn through a manifest file `svcdns serve` watches.

    bench/churn.py FILE [--rate 10] [--seconds 60] [--services 10] [--log LOG]

Writes FILE atomically (rename) RATE times a second: SERVICES headless Services
``churn-K.churn`` whose EndpointSlices take turns changing; each update replaces one
service's endpoint addresses with the next generation's (10.250.K.G / 10.251.K.G).
Serve with ``--manifests FILE --poll-interval 0.05`` to see every update.

--log appends one line per update: ``<unix time> <service> <addresses>``, so a
checker can tell which answers were current when (tests/test_soak.py does).
The rate is held against a monotonic clock (late ticks catch up, never pile up).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def addresses(k: int, generation: int) -> list[str]:
    """Two endpoints per generation; they change completely every generation."""
    g = generation % 250 + 1
    return [f"10.250.{k}.{g}", f"10.251.{k}.{g}"]


def cluster(services: int, generations: list[int]) -> dict:
    items: list[dict] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "churn"}}]
    for k in range(services):
        name = f"churn-{k}"
        items.append({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "churn"},
            "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]},
        })
        items.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-abc", "namespace": "churn", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 80}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses(k, generations[k])],
        })
    return {"apiVersion": "v1", "kind": "List", "items": items}


def write(path: str, doc: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def run(path: str, rate: float, seconds: float, services: int, log: str | None = None) -> int:
    generations = [0] * services
    write(path, cluster(services, generations))
    out = open(log, "a") if log else None
    started = time.monotonic()
    updates = 0
    while time.monotonic() - started < seconds:
        due = started + (updates + 1) / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        k = updates % services
        generations[k] += 1
        write(path, cluster(services, generations))
        updates += 1
        if out:
            out.write(f"{time.time():.3f} churn-{k} {','.join(addresses(k, generations[k]))}\n")
            out.flush()
    if out:
        out.close()
    return updates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file")
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--services", type=int, default=10)
    parser.add_argument("--log")
    parser.add_argument("--init-only", action="store_true", help="write the first generation and exit")
    args = parser.parse_args()
    if args.init_only:
        write(args.file, cluster(args.services, [0] * args.services))
        return
    n = run(args.file, args.rate, args.seconds, args.services, args.log)
    print(f"churn: {n} updates in {args.seconds:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
