"""Namespace, Node and Service records."""

from __future__ import annotations

from dataclasses import dataclass
from sys import intern
from typing import Any, Mapping

from .fields import (
    _DNS_LABEL,
    _DNS_SUBDOMAIN,
    _PORT_NAME,
    IP_FAMILIES,
    IP_FAMILY_POLICIES,
    SERVICE_TYPES,
    ZONE_LABEL,
    Meta,
    ObjectError,
    _bool,
    _family,
    _get,
    _ip,
    _labels,
    _list,
    _map,
    _port_number,
    _protocol,
    _str,
)

# --- Namespace, Node -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Namespace:
    """A namespace exists; DNS says NODATA (not NXDOMAIN) for names under it."""

    name: str

    kind = "Namespace"

    @property
    def key(self) -> tuple[str, str]:
        return ("", self.name)

    @classmethod
    def from_raw(cls, obj: Mapping[str, Any]) -> "Namespace":
        meta = Meta.from_raw(obj, namespaced=False, name_rule=_DNS_LABEL)
        return cls(meta.name)


@dataclass(frozen=True, slots=True)
class Node:
    """A node; the proxy needs its zone for topology hints."""

    name: str
    zone: str

    kind = "Node"

    @property
    def key(self) -> tuple[str, str]:
        return ("", self.name)

    @classmethod
    def from_raw(cls, obj: Mapping[str, Any]) -> "Node":
        meta = Meta.from_raw(obj, namespaced=False)
        labels = dict(_labels(_map(obj, "metadata", ""), "labels", "metadata"))
        return cls(meta.name, intern(labels.get(ZONE_LABEL, "")))


# --- Service -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One entry of spec.ports."""

    name: str  # "" for the single unnamed port
    protocol: str
    port: int
    target_port: int | str  # number or a container port name
    node_port: int  # 0 when none


@dataclass(frozen=True, slots=True)
class Service:
    """The Service fields DNS, proxy and env need. Add fields deliberately."""

    namespace: str
    name: str
    type: str
    cluster_ips: tuple[str, ...]  # () for headless and ExternalName; "None" is normalised away
    headless: bool
    external_name: str  # "" unless type ExternalName
    ports: tuple[ServicePort, ...]
    selector: tuple[tuple[str, str], ...]  # () = no selector (endpoints written by hand)
    publish_not_ready: bool
    session_affinity_timeout: int  # 0 = no ClientIP affinity, else seconds
    internal_local: bool  # internalTrafficPolicy: Local
    external_local: bool  # externalTrafficPolicy: Local
    external_ips: tuple[str, ...]
    load_balancer_ips: tuple[str, ...]
    labels: tuple[tuple[str, str], ...]
    creation: str
    cluster_ip_requested: bool = True  # False when the manifest left clusterIP empty
    # spec.ipFamilies / spec.ipFamilyPolicy ("" = unset): which families a ClusterIP
    # allocator (svcdns.ipam, for manifests) gives a service that asks for none.
    ip_families: tuple[str, ...] = ()
    ip_family_policy: str = ""

    kind = "Service"

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @classmethod
    def from_raw(cls, obj: Mapping[str, Any]) -> "Service":
        meta = Meta.from_raw(obj, name_rule=_DNS_LABEL)
        spec = _map(obj, "spec", "")
        type_ = _str(spec, "type", "spec", "ClusterIP")
        if type_ not in SERVICE_TYPES:
            raise ObjectError("spec.type", f"must be one of {', '.join(SERVICE_TYPES)}, got {type_!r}")
        external_name = ""
        if type_ == "ExternalName":
            external_name = (_str(spec, "externalName", "spec") or "").rstrip(".").lower()
            if not external_name or not _DNS_SUBDOMAIN.match(external_name) or len(external_name) > 253:
                raise ObjectError("spec.externalName", f"must be a DNS name, got {spec.get('externalName')!r}")

        ips = _list(spec, "clusterIPs", "spec") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
        headless = False
        cluster_ips: list[str] = []
        for i, raw_ip in enumerate(ips):
            if raw_ip == "None":
                headless = True
                continue
            cluster_ips.append(_ip(raw_ip, f"spec.clusterIPs[{i}]" if "clusterIPs" in spec else "spec.clusterIP"))
        if headless and cluster_ips:
            raise ObjectError("spec.clusterIP", "cannot be both None and an address")
        if type_ == "ExternalName":
            cluster_ips, headless = [], False
        if len(cluster_ips) == 2 and _family(cluster_ips[0]) == _family(cluster_ips[1]):
            raise ObjectError("spec.clusterIPs", "two addresses must be of different IP families")

        ip_family_policy = _str(spec, "ipFamilyPolicy", "spec", "") or ""
        if ip_family_policy and ip_family_policy not in IP_FAMILY_POLICIES:
            raise ObjectError("spec.ipFamilyPolicy", f"must be one of {', '.join(IP_FAMILY_POLICIES)}, got {ip_family_policy!r}")
        ip_families = tuple(_list(spec, "ipFamilies", "spec"))
        if any(f not in IP_FAMILIES for f in ip_families) or len(set(ip_families)) != len(ip_families):
            raise ObjectError("spec.ipFamilies", f"must be IPv4 and/or IPv6, each at most once, got {list(ip_families)!r}")

        ports = []
        seen_names: set[str] = set()
        raw_ports = _list(spec, "ports", "spec")
        for i, raw in enumerate(raw_ports):
            path = f"spec.ports[{i}]"
            name = _str(raw, "name", path, "") or ""
            if name and (not _PORT_NAME.match(name) or len(name) > 63):
                raise ObjectError(f"{path}.name", f"{name!r} is not a valid port name")
            if not name and len(raw_ports) > 1:
                raise ObjectError(f"{path}.name", "is required when a service has more than one port")
            if name in seen_names:
                raise ObjectError(f"{path}.name", f"duplicate port name {name!r}")
            seen_names.add(name)
            port = _port_number(_get(raw, "port", path), f"{path}.port")
            target = _get(raw, "targetPort", path)
            if target is None:
                target = port
            elif isinstance(target, str) and not target.isdigit():
                if not _PORT_NAME.match(target):
                    raise ObjectError(f"{path}.targetPort", f"{target!r} is not a port number or name")
                target = intern(target)
            else:
                target = _port_number(int(target) if isinstance(target, str) else target, f"{path}.targetPort")
            node_port = _get(raw, "nodePort", path)
            node_port = 0 if node_port is None else _port_number(node_port, f"{path}.nodePort")
            ports.append(ServicePort(intern(name), _protocol(raw, path), port, target, node_port))

        affinity = _str(spec, "sessionAffinity", "spec", "None")
        if affinity not in ("None", "ClientIP"):
            raise ObjectError("spec.sessionAffinity", f"must be None or ClientIP, got {affinity!r}")
        timeout = 0
        if affinity == "ClientIP":
            cfg = _map(_map(spec, "sessionAffinityConfig", "spec"), "clientIP", "spec.sessionAffinityConfig")
            timeout = cfg.get("timeoutSeconds", 10800)
            if isinstance(timeout, bool) or not isinstance(timeout, int) or not 0 < timeout <= 86400:
                raise ObjectError("spec.sessionAffinityConfig.clientIP.timeoutSeconds", f"must be 1-86400, got {timeout!r}")
        policies = {}
        for key in ("internalTrafficPolicy", "externalTrafficPolicy"):
            value = _str(spec, key, "spec", "Cluster")
            if value not in ("Cluster", "Local"):
                raise ObjectError(f"spec.{key}", f"must be Cluster or Local, got {value!r}")
            policies[key] = value == "Local"
        external_ips = tuple(_ip(v, f"spec.externalIPs[{i}]") for i, v in enumerate(_list(spec, "externalIPs", "spec")))
        ingress = _list(_map(_map(obj, "status", ""), "loadBalancer", "status"), "ingress", "status.loadBalancer")
        lb_ips = tuple(
            _ip(v["ip"], f"status.loadBalancer.ingress[{i}].ip")
            for i, v in enumerate(ingress)
            if isinstance(v, dict) and v.get("ip")
        )
        return cls(
            namespace=meta.namespace,
            name=meta.name,
            type=intern(type_),
            cluster_ips=tuple(cluster_ips),
            headless=headless,
            external_name=external_name,
            ports=tuple(ports),
            selector=_labels(spec, "selector", "spec"),
            publish_not_ready=bool(_bool(spec, "publishNotReadyAddresses", "spec", False)),
            session_affinity_timeout=timeout,
            internal_local=policies["internalTrafficPolicy"],
            external_local=policies["externalTrafficPolicy"] and type_ in ("NodePort", "LoadBalancer"),
            external_ips=external_ips,
            load_balancer_ips=lb_ips,
            labels=_labels(_map(obj, "metadata", ""), "labels", "metadata"),
            creation=meta.creation,
            cluster_ip_requested=bool(ips) or type_ == "ExternalName",
            ip_families=tuple(intern(f) for f in ip_families),
            ip_family_policy=intern(ip_family_policy),
        )

