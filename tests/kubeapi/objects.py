"""Builders for API objects as a real cluster holds them (what `kubectl get -o json`
shows), with a mutator hook in the style of kube-proxy's makeTestService."""

from __future__ import annotations

from typing import Callable

Mutate = Callable[[dict], None] | None


def _done(obj: dict, mutate: Mutate) -> dict:
    if mutate is not None:
        mutate(obj)
    return obj


def namespace(name: str, mutate: Mutate = None) -> dict:
    return _done({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": name}, "spec": {"finalizers": ["kubernetes"]},
                  "status": {"phase": "Active"}}, mutate)


def node(name: str, zone: str = "", mutate: Mutate = None) -> dict:
    labels = {"kubernetes.io/hostname": name}
    if zone:
        labels["topology.kubernetes.io/zone"] = zone
    return _done({"kind": "Node", "apiVersion": "v1", "metadata": {"name": name, "labels": labels}, "spec": {}}, mutate)


def service(ns: str, name: str, cluster_ip: str = "", ports=(("http", 80),), labels: dict | None = None,
            selector: dict | None = None, mutate: Mutate = None) -> dict:
    """ClusterIP service; ``cluster_ip="None"`` makes it headless."""
    spec = {
        "type": "ClusterIP",
        "clusterIP": cluster_ip,
        "clusterIPs": [cluster_ip],
        "ports": [{"name": n, "protocol": "TCP", "port": p, "targetPort": p} for n, p in ports],
        "sessionAffinity": "None",
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "internalTrafficPolicy": "Cluster",
    }
    if selector is not None:
        spec["selector"] = selector
    meta = {"name": name, "namespace": ns}
    if labels:
        meta["labels"] = dict(labels)
    return _done({"kind": "Service", "apiVersion": "v1", "metadata": meta, "spec": spec, "status": {"loadBalancer": {}}}, mutate)


def endpoint_slice(ns: str, service_name: str, addresses, name: str | None = None, ports=(("http", 80),),
                   ready: bool = True, hostnames: dict | None = None, labels: dict | None = None, mutate: Mutate = None) -> dict:
    """An EndpointSlice as the EndpointSlice controller writes it; one endpoint per address."""
    all_labels = {"kubernetes.io/service-name": service_name, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
    all_labels.update(labels or {})
    endpoints = []
    for i, addr in enumerate(addresses):
        ep = {
            "addresses": [addr],
            "conditions": {"ready": ready, "serving": ready, "terminating": False},
            "nodeName": "node-1",
            "targetRef": {"kind": "Pod", "namespace": ns, "name": f"{service_name}-pod-{i}"},
        }
        if hostnames and addr in hostnames:
            ep["hostname"] = hostnames[addr]
        endpoints.append(ep)
    return _done({
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"name": name or f"{service_name}-abcde", "namespace": ns, "labels": all_labels,
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service_name, "uid": "x", "controller": True}]},
        "addressType": "IPv4",
        "endpoints": endpoints or None,
        "ports": [{"name": n, "protocol": "TCP", "port": p} for n, p in ports],
    }, mutate)


def endpoints(ns: str, name: str, addresses, ports=(("http", 80),), labels: dict | None = None, mutate: Mutate = None) -> dict:
    """Legacy core/v1 Endpoints (one subset)."""
    meta = {"name": name, "namespace": ns}
    if labels:
        meta["labels"] = dict(labels)
    subsets = [{"addresses": [{"ip": a} for a in addresses], "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports]}]
    return _done({"kind": "Endpoints", "apiVersion": "v1", "metadata": meta, "subsets": subsets if addresses else None}, mutate)


def pod(ns: str, name: str, ip: str, labels: dict | None = None, ready: bool = True, mutate: Mutate = None) -> dict:
    return _done({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": ns, "labels": dict(labels or {})},
        "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }, mutate)
