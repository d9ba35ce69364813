"""The one in-memory cluster state every consumer reads.

Sources write records into it (``apply``/``remove``/``replace_kind``) and then ``commit``;
a commit hands every subscriber a :class:`Delta` naming what changed, so consumers (the
DNS compiler, the proxy, ...) recompute only the services a change touched.

The state also plays the two controllers a manifest directory lacks: legacy Endpoints are
mirrored into EndpointSlices (in :mod:`svcdns.model`), and, when enabled, pods matched by a
selector become the service's endpoints (the EndpointSlice controller).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .model import (
    Endpoint,
    EndpointPort,
    EndpointSlice,
    Endpoints,
    Namespace,
    Node,
    Pod,
    Record,
    Service,
    ip_family,
    selector_matches,
)

log = logging.getLogger(__name__)

Key = tuple[str, str]


@dataclass
class Delta:
    """What a commit changed. ``services`` lists service keys whose DNS/proxy view may differ."""

    services: set[Key] = field(default_factory=set)
    namespaces: set[str] = field(default_factory=set)
    pods: bool = False
    nodes: bool = False
    full: bool = False  # everything may have changed (first load)

    def __bool__(self) -> bool:
        return bool(self.services or self.namespaces or self.pods or self.nodes or self.full)


class ClusterState:
    """Indexed cluster objects. Single-threaded: all calls come from the event loop."""

    def __init__(self, *, derive_endpoints: bool = False, implicit_namespaces: bool = False):
        # derive_endpoints: build endpoints from pods for selector services without slices
        #   (manifests have no EndpointSlice controller behind them).
        # implicit_namespaces: a namespace exists if any object lives in it (manifests need
        #   not carry Namespace objects); the live API has real Namespace objects.
        self.derive_endpoints = derive_endpoints
        self.implicit_namespaces = implicit_namespaces
        self.services: dict[Key, Service] = {}
        self.slices: dict[Key, EndpointSlice] = {}
        self.endpoints: dict[Key, Endpoints] = {}
        self.pods: dict[Key, Pod] = {}
        self.nodes: dict[Key, Node] = {}  # keyed ("", name) like every table
        self.namespaces: dict[Key, Namespace] = {}
        self.synced = False
        self.generation = 0
        self._slices_by_service: dict[Key, set[Key]] = defaultdict(set)
        self._objects_in_ns: dict[str, int] = defaultdict(int)
        self.pod_by_ip: dict[str, Pod] = {}
        self.service_by_ip: dict[str, Key] = {}
        # endpoint IP -> the service key (one service: the common case) or a tuple of keys.
        # 100,000 endpoints make this the largest index: no per-entry container when one will do.
        self._endpoint_ip_services: dict[str, Key | tuple[Key, ...]] = {}
        self._service_endpoint_ips: dict[Key, tuple[str, ...]] = {}
        self._keys: dict[Key, Key] = {}  # one shared tuple per service key
        self._derived: dict[Key, tuple[EndpointSlice, ...]] = {}
        self._pending = Delta()
        self._subscribers: list[Callable[[Delta], None]] = []

    # --- writing ----------------------------------------------------------------------

    def subscribe(self, fn: Callable[[Delta], None]) -> None:
        self._subscribers.append(fn)

    def apply(self, rec: Record) -> None:
        """Insert or replace one record (no-op when nothing changed)."""
        table = self._table(rec.kind)
        old = table.get(rec.key)
        if old == rec:
            return
        table[rec.key] = rec
        self._changed(old, rec)

    def remove(self, kind: str, key: Key) -> None:
        old = self._table(kind).pop(key, None)
        if old is not None:
            self._changed(old, None)

    def replace_kind(self, kind: str, records: Iterable[Record]) -> None:
        """Make ``kind`` hold exactly ``records``: a relist or a full reload."""
        wanted = {rec.key: rec for rec in records}
        for key in [k for k in self._table(kind) if k not in wanted]:
            self.remove(kind, key)
        for rec in wanted.values():
            self.apply(rec)

    def mark_synced(self) -> None:
        if not self.synced:
            self.synced = True
            self._pending.full = True

    def commit(self) -> Delta:
        """Finish a batch: refresh derived indexes, tell subscribers what changed.

        Before the first full sync nothing is published: changes accumulate, and the
        commit after ``mark_synced`` hands consumers everything once (a list of every
        kind, or a manifest load, is compiled once, not once per kind)."""
        if not self.synced or not self._pending:
            return Delta()
        delta, self._pending = self._pending, Delta()
        self.generation += 1
        if delta.full:
            delta.services |= set(self.services) | set(self._service_endpoint_ips)
        for key in delta.services:
            self._refresh_service(key)
        for fn in self._subscribers:
            fn(delta)
        return delta

    def _table(self, kind: str) -> dict:
        return {
            "Service": self.services,
            "EndpointSlice": self.slices,
            "Endpoints": self.endpoints,
            "Pod": self.pods,
            "Node": self.nodes,
            "Namespace": self.namespaces,
        }[kind]

    def _changed(self, old: Record | None, new: Record | None) -> None:
        rec = new or old
        pending = self._pending
        kind = rec.kind
        if kind == "Namespace":
            pending.namespaces.add(rec.name)
            return
        if kind == "Node":
            pending.nodes = True
            return
        ns = rec.namespace
        if old is None:
            self._objects_in_ns[ns] += 1
        elif new is None:
            self._objects_in_ns[ns] -= 1
            if self._objects_in_ns[ns] <= 0:
                del self._objects_in_ns[ns]
        if (old is None) != (new is None):
            pending.namespaces.add(ns)
        if kind == "Service":
            pending.services.add(rec.key)
            if old is not None:
                for ip in old.cluster_ips:
                    if self.service_by_ip.get(ip) == old.key:
                        del self.service_by_ip[ip]
            if new is not None:
                for ip in new.cluster_ips:
                    self.service_by_ip[ip] = new.key
        elif kind == "EndpointSlice":
            for s in (old, new):
                if s is not None and s.service:
                    pending.services.add((s.namespace, s.service))
            if old is not None and old.service:
                self._slices_by_service[(ns, old.service)].discard(old.key)
                if not self._slices_by_service[(ns, old.service)]:
                    del self._slices_by_service[(ns, old.service)]
            if new is not None and new.service:
                self._slices_by_service[(ns, new.service)].add(new.key)
        elif kind == "Endpoints":
            pending.services.add(rec.key)
        elif kind == "Pod":
            pending.pods = True
            if old is not None:
                for ip in old.ips:
                    if self.pod_by_ip.get(ip) is old:
                        del self.pod_by_ip[ip]
            if new is not None:
                for ip in new.ips:
                    self.pod_by_ip[ip] = new
            if self.derive_endpoints:
                for svc in self.services.values():
                    if svc.namespace == ns and svc.selector and any(
                        p is not None and selector_matches(svc.selector, p.labels) for p in (old, new)
                    ):
                        pending.services.add(svc.key)

    # --- reading ----------------------------------------------------------------------

    def namespace_exists(self, ns: str) -> bool:
        """CoreDNS answers NODATA, not NXDOMAIN, for names in an existing namespace."""
        return ("", ns) in self.namespaces or (self.implicit_namespaces and ns in self._objects_in_ns)

    def all_namespaces(self) -> set[str]:
        names = {name for _, name in self.namespaces}
        if self.implicit_namespaces:
            names |= set(self._objects_in_ns)
        return names

    def has_slices(self, key: Key) -> bool:
        """True when EndpointSlices name this service (its Endpoints, if any, are then unused)."""
        return bool(self._slices_by_service.get(key))

    def service_slices(self, key: Key) -> tuple[EndpointSlice, ...]:
        """The slices that are a service's endpoints: its EndpointSlices; else its legacy
        Endpoints (mirrored); else, where enabled, slices derived from selected pods."""
        names = self._slices_by_service.get(key)
        if names:
            return tuple(self.slices[n] for n in sorted(names))
        eps = self.endpoints.get(key)
        if eps is not None:
            return eps.slices
        return self._derived.get(key, ())

    def _refresh_service(self, key: Key) -> None:
        """Recompute derived endpoints and the endpoint-IP reverse index for one service."""
        svc = self.services.get(key)
        if self.derive_endpoints:
            if svc is not None and svc.selector and not self._slices_by_service.get(key) and key not in self.endpoints:
                self._derived[key] = derive_slices(svc, (p for p in self.pods.values() if p.namespace == svc.namespace))
            else:
                self._derived.pop(key, None)
        new_ips = {
            a for s in self.service_slices(key) if s.address_type != "FQDN" for e in s.endpoints for a in e.addresses
        } if svc is not None else set()
        old_ips = set(self._service_endpoint_ips.get(key, ()))
        index = self._endpoint_ip_services
        if new_ips:
            key = self._keys.setdefault(key, key)
        for ip in old_ips - new_ips:
            rest = tuple(k for k in self.services_with_endpoint_ip(ip) if k != key)
            if len(rest) > 1:
                index[ip] = rest
            elif rest:
                index[ip] = rest[0]
            else:
                index.pop(ip, None)
        for ip in new_ips - old_ips:
            have = index.get(ip)
            index[ip] = key if have is None else (*self.services_with_endpoint_ip(ip), key)
        if new_ips:
            self._service_endpoint_ips[key] = tuple(new_ips)
        else:
            self._service_endpoint_ips.pop(key, None)
            self._keys.pop(key, None)

    def services_with_endpoint_ip(self, ip: str) -> tuple[Key, ...]:
        """The services that have ``ip`` among their endpoints (for PTR answers)."""
        have = self._endpoint_ip_services.get(ip)
        if have is None:
            return ()
        return (have,) if type(have[0]) is str else have


def derive_slices(svc: Service, pods: Iterable[Pod]) -> tuple[EndpointSlice, ...]:
    """What the EndpointSlice controller would write for ``svc``: one slice per address
    family; a pod's hostname is published only when its subdomain names the service;
    named target ports are resolved against the pod's container ports."""
    by_family: dict[str, list[Endpoint]] = {"IPv4": [], "IPv6": []}
    ports: dict[str, EndpointPort] = {}
    for pod in sorted(pods, key=lambda p: p.name):
        if not pod.ips or pod.terminal or not selector_matches(svc.selector, pod.labels):
            continue
        for sp in svc.ports:
            if isinstance(sp.target_port, int):
                number = sp.target_port
            else:
                number = next((c.port for c in pod.ports if c.name == sp.target_port and c.protocol == sp.protocol), 0)
            if number:
                ports.setdefault(sp.name, EndpointPort(sp.name, sp.protocol, number))
        ready = (pod.ready or svc.publish_not_ready) and not pod.terminating
        hostname = pod.hostname if pod.hostname and pod.subdomain == svc.name else ""
        for ip in pod.ips:
            by_family["IPv4" if ip_family(ip) == 4 else "IPv6"].append(
                Endpoint(
                    addresses=(ip,),
                    ready=ready,
                    serving=pod.ready and not pod.terminal,
                    terminating=pod.terminating,
                    hostname=hostname,
                    node_name=pod.node_name,
                    zone="",
                    hint_zones=(),
                    hint_nodes=(),
                    target_name=pod.name,
                )
            )
    return tuple(
        EndpointSlice(svc.namespace, f"{svc.name}-{family.lower()}", svc.name, family, tuple(ports.values()), tuple(eps))
        for family, eps in by_family.items()
        if eps
    )
