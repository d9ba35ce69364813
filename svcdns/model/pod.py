"""Pod records (pod A records, autopath, endpoint names)."""

from __future__ import annotations

from dataclasses import dataclass
from sys import intern
from typing import Any, Mapping

from .fields import Meta, _get, _ip, _labels, _list, _map, _port_number, _protocol, _str

# --- Pod -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContainerPort:
    name: str
    protocol: str
    port: int


@dataclass(frozen=True, slots=True)
class Pod:
    """A pod: its IPs (pod records, autopath's client namespace) and, for manifests
    without EndpointSlices, what the EndpointSlice controller reads to build them."""

    namespace: str
    name: str
    ips: tuple[str, ...]
    node_name: str
    labels: tuple[tuple[str, str], ...]
    hostname: str
    subdomain: str
    ready: bool
    terminal: bool  # Succeeded/Failed: never an endpoint
    terminating: bool  # deletionTimestamp set
    ports: tuple[ContainerPort, ...]

    kind = "Pod"

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @classmethod
    def from_raw(cls, obj: Mapping[str, Any]) -> "Pod":
        meta = Meta.from_raw(obj)
        spec = _map(obj, "spec", "")
        status = _map(obj, "status", "")
        raw_ips = [p.get("ip") for p in _list(status, "podIPs", "status") if isinstance(p, dict)]
        if not raw_ips and status.get("podIP"):
            raw_ips = [status["podIP"]]
        ips = tuple(_ip(ip, f"status.podIPs[{i}]") for i, ip in enumerate(raw_ips))
        conditions = {c.get("type"): c.get("status") for c in _list(status, "conditions", "status") if isinstance(c, dict)}
        # A hand-written manifest pod with an IP and no conditions is taken as running and ready.
        ready = conditions.get("Ready", "True") == "True"
        phase = _str(status, "phase", "status", "Running")
        ports = []
        for ci, container in enumerate(_list(spec, "containers", "spec")):
            for pi, raw in enumerate(_list(container, "ports", f"spec.containers[{ci}]")):
                path = f"spec.containers[{ci}].ports[{pi}]"
                name = _str(raw, "name", path, "") or ""
                ports.append(ContainerPort(intern(name), _protocol(raw, path), _port_number(_get(raw, "containerPort", path), f"{path}.containerPort")))
        hostname = (_str(spec, "hostname", "spec", "") or "").lower()
        subdomain = (_str(spec, "subdomain", "spec", "") or "").lower()
        return cls(
            namespace=meta.namespace,
            name=meta.name,
            ips=ips,
            node_name=intern(_str(spec, "nodeName", "spec", "") or ""),
            labels=_labels(_map(obj, "metadata", ""), "labels", "metadata"),
            hostname=intern(hostname),
            subdomain=intern(subdomain),
            ready=ready,
            terminal=phase in ("Succeeded", "Failed"),
            terminating=bool(_map(obj, "metadata", "").get("deletionTimestamp")),
            ports=tuple(ports),
        )
