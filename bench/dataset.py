#!/usr/bin/env python3
"""A Kubernetes-shaped cluster of N services for benchmarks.

    bench/dataset.py N [--out DIR] [--endpoints-per-service 10] [--queries 100000]

Writes into DIR (default bench/out/N):
  cluster.json   the cluster as `kubectl get -o json` would print it (a List of
                 Namespaces, Services and EndpointSlices): N services in N/100 namespaces,
                 80 % ClusterIP (two named ports) and 20 % headless, 10 endpoints each
                 (so 10,000 services ≈ 100,000 endpoints)
  *.zone         the same data as zone files for an authoritative C server (Knot DNS)
  queries.txt    a dnsperf query file with a realistic mix: A hits, AAAA NODATA,
                 headless A, SRV, PTR, NXDOMAIN for unknown services and ~20 % ndots:5
                 search-path misses
Deterministic for a given N (seeded), so runs are comparable.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random


def build(n: int, per_service: int) -> tuple[dict, list[dict]]:
    namespaces = max(1, n // 100)
    items: list[dict] = []
    services: list[dict] = []
    for i in range(namespaces):
        items.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns-{i}"}})
    svc_net = ipaddress.IPv4Network("10.96.0.0/12")
    pod_net = ipaddress.IPv4Network("10.128.0.0/9")
    pod_ip = 0
    for i in range(n):
        ns = f"ns-{i % namespaces}"
        name = f"svc-{i}"
        headless = i % 5 == 4
        cluster_ip = "None" if headless else str(svc_net[i + 16])
        ports = [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]
        if not headless:
            ports.append({"name": "metrics", "protocol": "TCP", "port": 9090, "targetPort": 9090})
        items.append({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": {"clusterIP": cluster_ip, "selector": {"app": name}, "ports": ports, "type": "ClusterIP"},
        })
        endpoints = []
        for j in range(per_service):
            pod_ip += 1
            ip = str(pod_net[pod_ip])
            ep = {"addresses": [ip], "conditions": {"ready": True, "serving": True, "terminating": False},
                  "nodeName": f"node-{pod_ip % 100}", "zone": f"zone-{pod_ip % 3}",
                  "targetRef": {"kind": "Pod", "namespace": ns, "name": f"{name}-{j}"}}
            if headless:
                ep["hostname"] = f"{name}-{j}"
            endpoints.append(ep)
        items.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-abcde", "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": p["name"], "protocol": "TCP", "port": p["targetPort"]} for p in ports],
            "endpoints": endpoints,
        })
        services.append({"ns": ns, "name": name, "headless": headless, "ip": cluster_ip, "endpoints": endpoints})
    return {"apiVersion": "v1", "kind": "List", "items": items}, services


def zone_files(services: list[dict], zone: str = "cluster.local", ttl: int = 5) -> dict[str, str]:
    """The same data as zone files for an authoritative C server (Knot DNS): what svcdns
    answers for these services, record for record (SOA/NS as svcdns serves them)."""
    soa = f"@ {ttl} IN SOA ns.dns.{zone}. hostmaster.{zone}. 1 7200 1800 86400 {ttl}"
    fwd = [f"$ORIGIN {zone}.", soa, f"@ {ttl} IN NS ns.dns.{zone}.", f"ns.dns {ttl} IN A 127.0.0.1",
           'dns-version 28800 IN TXT "1.1.0"']
    rev = ["$ORIGIN in-addr.arpa.", soa.replace("@", "@", 1), f"@ {ttl} IN NS ns.dns.{zone}."]
    for s in services:
        name = f"{s['name']}.{s['ns']}.svc"
        ports = [("http", 80)] if s["headless"] else [("http", 80), ("metrics", 9090)]
        if s["headless"]:
            hosts = [(ep["hostname"], ep["addresses"][0]) for ep in s["endpoints"]]
            weight = max(1, 100 // len(hosts))
            for host, ip in hosts:
                fwd.append(f"{name} {ttl} IN A {ip}")
                fwd.append(f"{host}.{name} {ttl} IN A {ip}")
                fwd.append(f"_http._tcp.{name} {ttl} IN SRV 0 {weight} 8080 {host}.{name}.{zone}.")
                fwd.append(f"{name} {ttl} IN SRV 0 {weight} 8080 {host}.{name}.{zone}.")
                rev.append(f"{ipaddress.ip_address(ip).reverse_pointer}. {ttl} IN PTR {host}.{name}.{zone}.")
        else:
            fwd.append(f"{name} {ttl} IN A {s['ip']}")
            for port_name, port in ports:
                fwd.append(f"_{port_name}._tcp.{name} {ttl} IN SRV 0 100 {port} {name}.{zone}.")
                fwd.append(f"{name} {ttl} IN SRV 0 {100 // len(ports)} {port} {name}.{zone}.")
            rev.append(f"{ipaddress.ip_address(s['ip']).reverse_pointer}. {ttl} IN PTR {name}.{zone}.")
            for ep in s["endpoints"]:
                ip = ep["addresses"][0]
                rev.append(f"{ipaddress.ip_address(ip).reverse_pointer}. {ttl} IN PTR {ip.replace('.', '-')}.{name}.{zone}.")
    return {f"{zone}.zone": "\n".join(fwd) + "\n", "in-addr.arpa.zone": "\n".join(rev) + "\n"}


def queries(services: list[dict], count: int, rng: random.Random) -> list[str]:
    zone = "cluster.local"
    out = []
    for _ in range(count):
        s = rng.choice(services)
        fqdn = f"{s['name']}.{s['ns']}.svc.{zone}"
        roll = rng.random()
        if roll < 0.40:
            out.append(f"{fqdn} A")
        elif roll < 0.50:
            out.append(f"{fqdn} AAAA")  # NODATA: the cluster is IPv4-only
        elif roll < 0.58:
            h = rng.choice([x for x in services[:200] if x["headless"]] or [s])
            out.append(f"{h['name']}.{h['ns']}.svc.{zone} A")
        elif roll < 0.66:
            out.append(f"_http._tcp.{fqdn} SRV")
        elif roll < 0.73:
            ep = rng.choice(s["endpoints"])["addresses"][0]
            out.append(f"{ipaddress.ip_address(ep).reverse_pointer} PTR")
        elif roll < 0.80:
            out.append(f"no-such-svc-{rng.randrange(1000)}.{s['ns']}.svc.{zone} A")  # NXDOMAIN
        else:
            # ndots:5 search-path miss: a pod in namespace X looks up an external or
            # cross-namespace name and its first search suffixes miss.
            other = rng.choice(services)
            target = rng.choice([f"{other['name']}.{other['ns']}", "github.com", "api.example.org"])
            suffix = rng.choice([f"{s['ns']}.svc.{zone}", f"svc.{zone}", zone])
            out.append(f"{target}.{suffix} A")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", type=int, help="number of services")
    parser.add_argument("--out", help="output directory (default bench/out/N)")
    parser.add_argument("--endpoints-per-service", type=int, default=10)
    parser.add_argument("--queries", type=int, default=100000)
    args = parser.parse_args()
    out = args.out or os.path.join(os.path.dirname(__file__), "out", str(args.n))
    os.makedirs(out, exist_ok=True)
    cluster, services = build(args.n, args.endpoints_per_service)
    with open(os.path.join(out, "cluster.json"), "w") as f:
        json.dump(cluster, f)
    for name, text in zone_files(services).items():
        with open(os.path.join(out, name), "w") as f:
            f.write(text)
    with open(os.path.join(out, "queries.txt"), "w") as f:
        f.write("\n".join(queries(services, args.queries, random.Random(args.n))) + "\n")
    print(f"{out}: {args.n} services, {args.n * args.endpoints_per_service} endpoints, {args.queries} queries")


if __name__ == "__main__":
    main()
