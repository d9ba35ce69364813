"""Slim, typed records of the Kubernetes objects svcdns consumes.

API objects are shrunk at the door (as CoreDNS's ``object`` package does): a record keeps
only the fields some consumer (DNS, proxy, env, autopath) reads. Memory at 100,000
endpoints grows with every field here, so add fields deliberately.

Every ``from_raw`` takes the Kubernetes JSON/YAML shape (a dict) and either returns a
record or raises :class:`ObjectError` naming the offending field, so a bad object is
rejected alone and never takes anything else down.
"""

from __future__ import annotations

from typing import Any, Mapping

from .endpoints import Endpoint, EndpointPort, Endpoints, EndpointSlice, _endpoint_from_raw, _fast_endpoint
from .fields import (
    IP_FAMILIES,
    IP_FAMILY_POLICIES,
    MAX_LABEL_VALUE,
    PROTOCOLS,
    SERVICE_NAME_LABEL,
    SERVICE_TYPES,
    ZONE_LABEL,
    Meta,
    ObjectError,
    _family,
    normalize_ip,
)
from .pod import ContainerPort, Pod
from .service import Namespace, Node, Service, ServicePort

__all__ = [
    "IP_FAMILIES", "IP_FAMILY_POLICIES", "KINDS", "MAX_LABEL_VALUE", "PROTOCOLS", "SERVICE_NAME_LABEL", "SERVICE_TYPES",
    "ZONE_LABEL", "ContainerPort", "Endpoint", "EndpointPort", "EndpointSlice", "Endpoints", "Meta", "Namespace", "Node",
    "ObjectError", "Pod", "Record", "Service", "ServicePort", "ip_family", "normalize_ip", "record_from_raw",
    "selector_matches", "_endpoint_from_raw", "_fast_endpoint",
]

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
