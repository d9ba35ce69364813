"""Slim, typed records of the Kubernetes objects svcdns consumes.

API objects are shrunk at the door (as CoreDNS's ``object`` package does): a record keeps
only the fields some consumer (DNS, proxy, env, autopath) reads. Memory at 100,000
endpoints grows with every field here, so add fields deliberately.

Every ``from_raw`` takes the Kubernetes JSON/YAML shape (a dict) and either returns a
record or raises :class:`ObjectError` naming the offending field, so a bad object is
rejected alone and never takes anything else down.
"""

from __future__ import annotations

import re
import socket
import sys
from dataclasses import dataclass
from typing import Any, Mapping

intern = sys.intern

PROTOCOLS = ("TCP", "UDP", "SCTP")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
IP_FAMILY_POLICIES = ("SingleStack", "PreferDualStack", "RequireDualStack")
IP_FAMILIES = ("IPv4", "IPv6")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_LABEL_VALUE = 63

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
ZONE_LABEL = "topology.kubernetes.io/zone"


class ObjectError(ValueError):
    """An API object that cannot be used; ``field`` is the JSON path of the culprit."""

    def __init__(self, field: str, message: str, value: Any = None):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.value = value  # the offending raw value, when one is to blame


# --- small typed readers: every access to raw data goes through one of these ---------


def _get(obj: Mapping[str, Any], key: str, path: str) -> Any:
    if not isinstance(obj, dict):
        raise ObjectError(path, f"must be a mapping, got {type(obj).__name__}")
    return obj.get(key)


def _map(obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = _get(obj, key, path)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ObjectError(_join(path, key), f"must be a mapping, got {type(value).__name__}")
    return value


def _list(obj: Mapping[str, Any], key: str, path: str) -> list[Any]:
    value = _get(obj, key, path)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ObjectError(_join(path, key), f"must be a list, got {type(value).__name__}")
    return value


def _str(obj: Mapping[str, Any], key: str, path: str, default: str | None = None) -> str | None:
    value = _get(obj, key, path)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ObjectError(_join(path, key), f"must be a string, got {value!r}")
    return value


def _bool(obj: Mapping[str, Any], key: str, path: str, default: bool | None) -> bool | None:
    value = _get(obj, key, path)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ObjectError(_join(path, key), f"must be true or false, got {value!r}")
    return value


def _port_number(value: Any, path: str, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (0 if allow_zero else 1) <= value <= 65535:
        raise ObjectError(path, f"must be an integer 1-65535, got {value!r}")
    return value


def _protocol(obj: Mapping[str, Any], path: str) -> str:
    proto = _str(obj, "protocol", path, "TCP")
    if proto not in PROTOCOLS:
        raise ObjectError(_join(path, "protocol"), f"must be one of {', '.join(PROTOCOLS)}, got {proto!r}")
    return intern(proto)


def normalize_ip(value: Any) -> str | None:
    """The canonical text of an IP address, or None. inet_pton is ~10x faster than the
    ipaddress module, which matters at 100,000 endpoints."""
    if not isinstance(value, str):
        return None
    try:
        if ":" in value:
            return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, value))
        socket.inet_pton(socket.AF_INET, value)  # strict dotted quad: no "010.1", no "1.2.3"
        return value
    except (OSError, ValueError):
        return None


def _ip(value: Any, path: str) -> str:
    ip = normalize_ip(value)
    if ip is None:
        raise ObjectError(path, f"not a valid IP address: {value!r}", value)
    return ip  # not interned: an address is unique per endpoint, interning would only add a table entry


def _labels(obj: Mapping[str, Any], key: str, path: str) -> tuple[tuple[str, str], ...]:
    raw = _map(obj, key, path)
    out = []
    for k, v in raw.items():
        if not isinstance(k, str) or not isinstance(v, (str, type(None))):
            raise ObjectError(_join(path, key), f"label {k!r} must map a string to a string, got {v!r}")
        v = v or ""
        if len(v) > MAX_LABEL_VALUE:
            raise ObjectError(_join(_join(path, key), k), f"label value longer than {MAX_LABEL_VALUE} characters")
        out.append((intern(k), intern(v)))
    return tuple(sorted(out))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


@dataclass(frozen=True, slots=True)
class Meta:
    """namespace/name of an object; every record is keyed by it."""

    namespace: str
    name: str
    creation: str  # RFC 3339 creationTimestamp or "": orders who keeps a clashing address

    @classmethod
    def from_raw(cls, obj: Mapping[str, Any], *, namespaced: bool = True, name_rule=_DNS_SUBDOMAIN) -> "Meta":
        meta = _map(obj, "metadata", "")
        name = _str(meta, "name", "metadata")
        if not name:
            raise ObjectError("metadata.name", "is required")
        if not name_rule.match(name) or len(name) > (63 if name_rule is _DNS_LABEL else 253):  # a label: at most 63
            raise ObjectError("metadata.name", f"{name!r} is not a valid DNS name")
        namespace = _str(meta, "namespace", "metadata", "default" if namespaced else "") or ""
        if namespaced and (not _DNS_LABEL.match(namespace) or len(namespace) > 63):
            raise ObjectError("metadata.namespace", f"{namespace!r} is not a valid DNS label")
        creation = _str(meta, "creationTimestamp", "metadata", "") or ""
        return cls(intern(namespace), intern(name), str(creation))


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


def _family(ip: str) -> int:
    return 6 if ":" in ip else 4


# --- EndpointSlice (and legacy Endpoints, mirrored into slices) ------------------------


@dataclass(frozen=True, slots=True)
class EndpointPort:
    name: str
    protocol: str
    port: int


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint of a slice. ready/serving/terminating follow discovery.k8s.io/v1."""

    addresses: tuple[str, ...]
    ready: bool
    serving: bool
    terminating: bool
    hostname: str
    node_name: str
    zone: str
    hint_zones: tuple[str, ...]  # () = no hints
    hint_nodes: tuple[str, ...]
    target_name: str  # targetRef.name of a Pod, for --endpoint-pod-names


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    """An EndpointSlice, or a legacy Endpoints subset mirrored into one."""

    namespace: str
    name: str
    service: str  # kubernetes.io/service-name
    address_type: str  # IPv4 | IPv6 | FQDN
    ports: tuple[EndpointPort, ...]
    endpoints: tuple[Endpoint, ...]

    kind = "EndpointSlice"

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @classmethod
    def from_raw(cls, obj: Mapping[str, Any]) -> "EndpointSlice":
        meta = Meta.from_raw(obj)
        labels = dict(_labels(_map(obj, "metadata", ""), "labels", "metadata"))
        service = labels.get(SERVICE_NAME_LABEL, "")
        address_type = _str(obj, "addressType", "", "IPv4")
        if address_type not in ("IPv4", "IPv6", "FQDN"):
            raise ObjectError("addressType", f"must be IPv4, IPv6 or FQDN, got {address_type!r}")
        ports = []
        for i, raw in enumerate(_list(obj, "ports", "")):
            path = f"ports[{i}]"
            port = _get(raw, "port", path)
            ports.append(
                EndpointPort(
                    intern(_str(raw, "name", path, "") or ""),
                    _protocol(raw, path),
                    0 if port is None else _port_number(port, f"{path}.port"),
                )
            )
        family = 4 if address_type == "IPv4" else 6 if address_type == "IPv6" else 0
        endpoints = []
        for i, raw in enumerate(_list(obj, "endpoints", "")):
            ep = _fast_endpoint(raw, family) if family else None
            endpoints.append(ep if ep is not None else _endpoint_from_raw(raw, f"endpoints[{i}]", address_type))
        return cls(meta.namespace, meta.name, intern(service), intern(address_type), tuple(ports), tuple(endpoints))


def _endpoint_from_raw(raw: Any, path: str, address_type: str) -> Endpoint:
    """One endpoint of a slice, every field checked; raises ObjectError naming the field."""
    addresses = _list(raw, "addresses", path)
    if not addresses:
        raise ObjectError(f"{path}.addresses", "must hold at least one address")
    if address_type == "FQDN":
        addrs = tuple(intern(str(a)) for a in addresses)
    else:
        addrs = tuple(_ip(a, f"{path}.addresses[{j}]") for j, a in enumerate(addresses))
        want = 4 if address_type == "IPv4" else 6
        for j, a in enumerate(addrs):
            if _family(a) != want:
                raise ObjectError(f"{path}.addresses[{j}]", f"{a} is not an {address_type} address")
    cond = _map(raw, "conditions", path)
    cpath = f"{path}.conditions"
    ready = _bool(cond, "ready", cpath, None)
    terminating = bool(_bool(cond, "terminating", cpath, False))
    # discovery.k8s.io/v1: nil ready means ready unless terminating; nil serving mirrors ready.
    ready = (not terminating) if ready is None else ready
    serving = _bool(cond, "serving", cpath, None)
    serving = ready if serving is None else serving
    hints = _map(raw, "hints", path)
    hostname = (_str(raw, "hostname", path, "") or "").lower()
    if hostname and (not _DNS_LABEL.match(hostname) or len(hostname) > 63):
        raise ObjectError(f"{path}.hostname", f"{hostname!r} is not a valid DNS label")
    target = _map(raw, "targetRef", path)
    return Endpoint(
        addresses=addrs,
        ready=ready,
        serving=serving,
        terminating=terminating,
        hostname=hostname,
        node_name=intern(_str(raw, "nodeName", path, "") or ""),
        zone=intern(_str(raw, "zone", path, "") or ""),
        hint_zones=tuple(intern(str(z.get("name", ""))) for z in _list(hints, "forZones", f"{path}.hints") if isinstance(z, dict)),
        hint_nodes=tuple(intern(str(z.get("name", ""))) for z in _list(hints, "forNodes", f"{path}.hints") if isinstance(z, dict)),
        target_name=(_str(target, "name", f"{path}.targetRef", "") or "") if target.get("kind", "Pod") == "Pod" else "",
    )


def _fast_endpoint(raw: Any, family: int) -> Endpoint | None:
    """The common, well-formed endpoint without the per-field bookkeeping of
    _endpoint_from_raw (~3x faster: 100,000 endpoints are most of a cluster's parse
    time). Anything unusual returns None, and the careful path decides and reports;
    for input both accept they build equal records (tests/test_model.py checks)."""
    if type(raw) is not dict or raw.get("hints") is not None:
        return None
    addresses = raw.get("addresses")
    if type(addresses) is not list or not addresses:
        return None
    addrs = []
    for a in addresses:
        ip = normalize_ip(a)
        if ip is None or (6 if ":" in ip else 4) != family:
            return None
        addrs.append(ip)
    cond = raw.get("conditions")
    if cond is None:
        ready = serving = True
        terminating = False
    elif type(cond) is dict:
        ready, serving, terminating = cond.get("ready"), cond.get("serving"), cond.get("terminating")
        if terminating is None:
            terminating = False
        if type(terminating) is not bool or (ready is not None and type(ready) is not bool) or (serving is not None and type(serving) is not bool):
            return None
        if ready is None:
            ready = not terminating
        if serving is None:
            serving = ready
    else:
        return None
    text = []
    for key in ("hostname", "nodeName", "zone"):
        value = raw.get(key)
        if value is None:
            value = ""
        elif type(value) is not str:
            return None
        text.append(value)
    hostname = text[0].lower()
    if hostname and (len(hostname) > 63 or not _DNS_LABEL.match(hostname)):
        return None
    target = raw.get("targetRef")
    target_name = ""
    if target is not None:
        if type(target) is not dict:
            return None
        if target.get("kind", "Pod") == "Pod":
            target_name = target.get("name")
            if target_name is None:
                target_name = ""
            elif type(target_name) is not str:
                return None
    return Endpoint(tuple(addrs), ready, serving, terminating, hostname, intern(text[1]), intern(text[2]), (), (), target_name)


@dataclass(frozen=True, slots=True)
class Endpoints:
    """A legacy core/v1 Endpoints object, already mirrored into slices (one per subset
    and address family), the way the EndpointSlice mirroring controller does it."""

    namespace: str
    name: str
    slices: tuple[EndpointSlice, ...]

    kind = "Endpoints"

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @classmethod
    def from_raw(cls, obj: Mapping[str, Any]) -> "Endpoints":
        meta = Meta.from_raw(obj)
        slices = []
        for i, subset in enumerate(_list(obj, "subsets", "")):
            path = f"subsets[{i}]"
            ports = []
            for j, raw in enumerate(_list(subset, "ports", path)):
                ppath = f"{path}.ports[{j}]"
                ports.append(
                    EndpointPort(intern(_str(raw, "name", ppath, "") or ""), _protocol(raw, ppath), _port_number(_get(raw, "port", ppath), f"{ppath}.port"))
                )
            by_family: dict[str, list[Endpoint]] = {"IPv4": [], "IPv6": []}
            for field_name, ready in (("addresses", True), ("notReadyAddresses", False)):
                for j, raw in enumerate(_list(subset, field_name, path)):
                    apath = f"{path}.{field_name}[{j}]"
                    ip = _ip(_get(raw, "ip", apath), f"{apath}.ip")
                    hostname = (_str(raw, "hostname", apath, "") or "").lower()
                    if hostname and (not _DNS_LABEL.match(hostname) or len(hostname) > 63):
                        raise ObjectError(f"{apath}.hostname", f"{hostname!r} is not a valid DNS label")
                    target = _map(raw, "targetRef", apath)
                    by_family["IPv4" if _family(ip) == 4 else "IPv6"].append(
                        Endpoint(
                            addresses=(ip,),
                            ready=ready,
                            serving=ready,
                            terminating=False,
                            hostname=hostname,
                            node_name=intern(_str(raw, "nodeName", apath, "") or ""),
                            zone="",
                            hint_zones=(),
                            hint_nodes=(),
                            target_name=_str(target, "name", f"{apath}.targetRef", "") or "",
                        )
                    )
            for family, eps in by_family.items():
                if eps:
                    name = f"{meta.name}-mirror-{i}-{family.lower()}"
                    slices.append(EndpointSlice(meta.namespace, name, meta.name, family, tuple(ports), tuple(eps)))
        return cls(meta.namespace, meta.name, tuple(slices))


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


Record = Namespace | Node | Service | EndpointSlice | Endpoints | Pod

KINDS: dict[str, type] = {
    "Namespace": Namespace,
    "Node": Node,
    "Service": Service,
    "EndpointSlice": EndpointSlice,
    "Endpoints": Endpoints,
    "Pod": Pod,
}


def record_from_raw(obj: Mapping[str, Any]) -> Record:
    """Parse any supported kind; raises ObjectError (bad object) or KeyError (other kind)."""
    return KINDS[obj["kind"]].from_raw(obj)


def selector_matches(selector: tuple[tuple[str, str], ...], labels: tuple[tuple[str, str], ...]) -> bool:
    """Equality-based selector match, as Service.spec.selector is defined."""
    if not selector:
        return False
    have = dict(labels)
    return all(have.get(k) == v for k, v in selector)


def ip_family(ip: str) -> int:
    """4 or 6."""
    return _family(ip)

