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


# Who may use svcdns as a recursive resolver by default: loopback and the private
# ranges pods and nodes live in (RFC 1918, RFC 6598 shared space, IPv6 ULA and link-local).
PRIVATE_NETWORKS = (
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
    "::1/128", "fc00::/7", "fe80::/10",
)


def parse_networks(values: list[str] | tuple[str, ...], flag: str) -> tuple[str, ...]:
    """CIDRs (or bare addresses) for an access list, normalised; a bad one names the flag."""
    nets = []
    for value in values:
        for part in value.split(","):
            try:
                nets.append(str(ipaddress.ip_network(part.strip(), strict=False)))
            except ValueError:
                raise ConfigError(f"{flag}: {part.strip()!r} is not an address or CIDR") from None
    return tuple(dict.fromkeys(nets))


@dataclass(frozen=True)
class OverloadConfig:
    """Limits that keep svcdns answering under floods and bad clients (issue 7)."""

    max_inflight: int = 1000  # answers waiting on upstreams (forwarding, autopath), UDP and TCP
    rate_limit: float = 0.0  # queries/s per client /24 (IPv4) or /56 (IPv6); 0 = off
    action: str = "refuse"  # over a limit: "refuse" (REFUSED) or "drop"
    tcp_idle_timeout: float = 10.0
    tcp_max_connections: int = 1000
    tcp_max_queries: int = 0  # per connection; 0 = unlimited
    lameduck: float = 0.0  # on SIGTERM: seconds to keep answering while /ready says 503
    reuse_port: bool = False  # SO_REUSEPORT: a replacement process may bind the same address


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
    # Forwarding (issue 4): empty upstreams and stub_domains mean no recursion at all.
    upstreams: tuple[tuple[str, int], ...] = ()
    stub_domains: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = ()
    search: tuple[str, ...] = ()  # the host's search domains (from a resolv.conf upstream), for autopath
    upstream_timeout: float = 2.0  # one try at one upstream
    query_timeout: float = 4.0  # a forwarded query's whole budget: SERVFAIL (or stale) after it
    cache_size: int = 10000
    cache_max_ttl: int = 3600
    serve_stale: int = 3600  # seconds past expiry an answer may still be served when upstreams fail
    autopath: bool = True
    allow_recursion: tuple[str, ...] = PRIVATE_NETWORKS
    allow_transfer: tuple[str, ...] = ()
    overload: OverloadConfig = OverloadConfig()
    extra: dict = field(default_factory=dict)
