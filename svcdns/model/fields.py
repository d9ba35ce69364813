"""Reading raw Kubernetes objects: typed field readers that name the offending field
(:class:`ObjectError`), the validation rules and the metadata every record keys on."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from sys import intern
from typing import Any, Mapping

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


def _family(ip: str) -> int:
    return 6 if ":" in ip else 4
