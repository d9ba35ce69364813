"""Validated settings for the commands; parsing flags into them does no I/O."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass


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


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# One requirement of a Kubernetes label selector: key, !key, key=v, key==v, key!=v,
# key in (a,b), key notin (a,b). Keys may carry a DNS-subdomain prefix ("app.k8s.io/name").
_LABEL_KEY = r"(?:[a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_LABEL_VALUE = r"(?:[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_REQUIREMENT = re.compile(
    rf"^\s*(?:!\s*{_LABEL_KEY}|{_LABEL_KEY}\s*(?:(?:==|=|!=)\s*{_LABEL_VALUE}"
    rf"|\s(?:in|notin)\s*\(\s*{_LABEL_VALUE}(?:\s*,\s*{_LABEL_VALUE})*\s*\))?)\s*$"
)


def parse_namespaces(value: str, flag: str = "--namespaces") -> tuple[str, ...]:
    """``a,b`` -> ("a", "b"); every name must be a namespace name (a DNS label)."""
    names = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    if not names:
        raise ConfigError(f"{flag}: no namespace given")
    for name in names:
        if not _DNS_LABEL.match(name) or len(name) > 63:
            raise ConfigError(f"{flag}: {name!r} is not a namespace name")
    return names


def parse_label_selector(value: str, flag: str = "--labels") -> str:
    """Check a label selector's syntax here, so a typo fails at start instead of as an
    API error on every list. Returned unchanged: the API server does the matching."""
    parts = re.split(r",(?![^()]*\))", value)  # commas outside "in (a,b)"
    for part in parts:
        if not _REQUIREMENT.match(part):
            raise ConfigError(
                f"{flag}: {part.strip()!r} is not a label selector requirement (key=value, key!=value, key in (a,b), key, !key)"
            )
    return ",".join(p.strip() for p in parts)


@dataclass(frozen=True)
class WatchTiming:
    """How the live source talks to the API server. Defaults follow client-go's
    reflector; tests shorten them."""

    page_size: int = 500  # LIST limit: a relist holds one page of raw objects at a time
    watch_timeout: tuple[int, int] = (300, 600)  # server-side timeoutSeconds, drawn per watch
    idle_timeout: float = 150.0  # nothing (not even a bookmark, ~1/min) for this long: dead stream
    request_timeout: float = 60.0  # connecting, or reading one LIST page
    backoff_initial: float = 0.8
    backoff_cap: float = 30.0
    retry_after_cap: float = 120.0  # trust Retry-After, but not beyond this
    refetch_delay: float = 1.0  # see sources.legacy: wait before fetching an unshadowed Endpoints


IN_CLUSTER_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


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
    naive: bool = False  # benchmark baseline: dnslib-parse and resolve every query
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
    allow_explain: tuple[str, ...] = PRIVATE_NETWORKS  # who may ask CH TXT NAME.explain.svcdns
    log_queries: bool = False  # one log line per query (svcdns.query logger)
    metrics: tuple[str, int] | None = None  # extra /metrics listener
    kubeconfig: str | None = None  # live API through this kubeconfig
    namespaces: tuple[str, ...] = ()  # () = all namespaces
    labels: str | None = None  # label selector for Services (and their endpoints)
    serviceaccount_dir: str = IN_CLUSTER_DIR  # in-cluster token and CA
    watch: WatchTiming = WatchTiming()


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
    service_cidrs: tuple = ()  # svcdns.ipam ranges: allocate/validate manifest ClusterIPs, as serve does
    serviceaccount_dir: str = IN_CLUSTER_DIR
    watch: WatchTiming = WatchTiming()


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
