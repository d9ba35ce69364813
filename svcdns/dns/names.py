"""Query names inside a cluster zone, parsed the way CoreDNS's kubernetes plugin does."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from ..model import normalize_ip

SVC = "svc"
POD = "pod"


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed cluster name. Empty fields were not in the name."""

    kind: str  # "svc" | "pod" | "" (apex, "svc." or "pod." alone: NODATA)
    namespace: str = ""
    service: str = ""  # service name, or the pod's dashed IP for pod names
    endpoint: str = ""
    port: str = ""  # without the leading underscore
    protocol: str = ""


class InvalidName(Exception):
    """A name inside the zone that can never exist: NXDOMAIN."""


def parse_qname(base: str) -> Query:
    """Parse ``base`` (the name with the zone removed, lowercase, no trailing dot).

    Accepted shapes, leftmost label first (as CoreDNS parse.go):
      1. _port._proto.service.namespace.svc     2. endpoint.service.namespace.svc
      3. service.namespace.svc                  4. a-b-c-d.namespace.pod
      5. namespace.svc, svc, pod, "" (apex)     -> exist, hold no records (NODATA)
    Anything else raises InvalidName.
    """
    if base in ("", SVC, POD):
        return Query(kind="")
    segs = base.split(".")
    kind = segs.pop()
    if kind not in (SVC, POD):
        raise InvalidName(base)
    namespace = segs.pop() if segs else ""
    service = segs.pop() if segs else ""
    if not segs:
        return Query(kind, namespace, service)
    if len(segs) == 1:
        return Query(kind, namespace, service, endpoint=segs[0])
    if len(segs) == 2:
        return Query(kind, namespace, service, port=segs[0].removeprefix("_"), protocol=segs[1].removeprefix("_"))
    raise InvalidName(base)


def pod_name_ip(label: str) -> str | None:
    """``10-0-0-1`` -> ``10.0.0.1``; ``fd00--1`` -> ``fd00::1``; None if not an address."""
    if label.count("-") == 3 and "--" not in label:
        text = label.replace("-", ".")
    else:
        text = label.replace("-", ":")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def reverse_ip(name: str) -> str | None:
    """The address a reverse name stands for, or None (not a complete reverse name)."""
    if name.endswith(".in-addr.arpa"):
        parts = name[: -len(".in-addr.arpa")].split(".")
        if len(parts) != 4:
            return None
        return normalize_ip(".".join(reversed(parts)))
    if name.endswith(".ip6.arpa"):
        nibbles = name[: -len(".ip6.arpa")].split(".")
        if len(nibbles) != 32 or any(len(n) != 1 for n in nibbles):
            return None
        try:
            return socket.inet_ntop(socket.AF_INET6, bytes.fromhex("".join(reversed(nibbles))))
        except ValueError:
            return None
    return None


def reverse_name(ip: str) -> str:
    """``10.0.0.1`` -> ``1.0.0.10.in-addr.arpa`` (no trailing dot); ip is canonical text."""
    if ":" not in ip:
        return ".".join(reversed(ip.split("."))) + ".in-addr.arpa"
    return ".".join(reversed(socket.inet_pton(socket.AF_INET6, ip).hex())) + ".ip6.arpa"


def endpoint_hostname(address: str, hostname: str, target_name: str, endpoint_pod_names: bool) -> str:
    """The label an endpoint is known by (CoreDNS endpointHostname)."""
    if hostname:
        return hostname
    if endpoint_pod_names and target_name:
        return target_name
    return address.replace(".", "-").replace(":", "-")
