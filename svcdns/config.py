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
    extra: dict = field(default_factory=dict)


PROXY_MODES = ("userspace", "iptables", "ipvs", "nftables")
PROXY_SCHEDULERS = ("rr", "lc", "dh", "sh", "sed", "nq")


@dataclass(frozen=True)
class ProxyConfig:
    """``svcdns proxy`` settings (flags are a contract: see the README)."""

    mode: str
    node_name: str
    manifests: tuple[str, ...] = ()
    kubeconfig: str | None = None  # neither this nor manifests: in-cluster
    cluster_cidrs: tuple[str, ...] = ()
    scheduler: str = "rr"
    once: bool = False
    dry_run: bool = False
    min_sync_period: float = 1.0
    sync_period: float = 30.0  # periodic full resync, as kube-proxy's --sync-period
    health: tuple[str, int] | None = None
    poll_interval: float = 1.0


def parse_cidrs(value: str, flag: str) -> tuple[str, ...]:
    """One CIDR, or an IPv4 and an IPv6 one separated by a comma (kube-proxy's form)."""
    out = []
    for part in value.split(","):
        try:
            out.append(str(ipaddress.ip_network(part.strip(), strict=False)))
        except ValueError:
            raise ConfigError(f"{flag}: {part.strip()!r} is not a CIDR such as 10.244.0.0/16") from None
    if len(out) > 2 or len({":" in c for c in out}) != len(out):
        raise ConfigError(f"{flag}: give at most one IPv4 and one IPv6 CIDR, got {value!r}")
    return tuple(out)
