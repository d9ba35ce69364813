"""Validated settings for the commands; parsing flags into them does no I/O."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A flag value that cannot work; the message names the flag."""


def parse_hostport(value: str, flag: str, default_port: int | None = None) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT`` or (with a default port) ``HOST``."""
    host, sep, port = value.rpartition(":")
    if value.startswith("["):
        host, _, port = value[1:].partition("]:")
    elif not sep or ":" in host:  # bare host or bare IPv6 address
        if default_port is None:
            raise ConfigError(f"{flag}: {value!r} is not HOST:PORT")
        host, port = value, str(default_port)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host not in ("localhost",):
            raise ConfigError(f"{flag}: {host!r} is not an IP address") from None
        host = "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{flag}: port {port!r} is not 0-65535")
    return host, int(port)


@dataclass(frozen=True)
class ServeConfig:
    manifests: tuple[str, ...] = ()
    listen: tuple[str, int] = ("0.0.0.0", 53)
    zones: tuple[str, ...] = ("cluster.local",)
    ttl: int = 5
    health: tuple[str, int] | None = None
    pods: str = "insecure"
    endpoint_pod_names: bool = False
    poll_interval: float = 1.0
    example: bool = False  # serve the embedded example cluster
    service_cidrs: tuple = ()  # svcdns.ipam.ServiceCIDR ranges: allocate/validate manifest ClusterIPs
    extra: dict = field(default_factory=dict)
