"""What ``svcdns explain`` finds out, as data: the renderers turn it into text, JSON or
TXT strings, tests assert on it directly."""

from __future__ import annotations

from dataclasses import dataclass, field

RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
UNKNOWN = "?"  # an upstream answer the caller has not fetched yet


@dataclass(frozen=True, slots=True)
class Forwarded:
    """An upstream's reply to one question, fetched by the caller (the I/O edge)."""

    rcode: int
    records: tuple[str, ...] = ()  # answer section, zone-file text


@dataclass(frozen=True, slots=True)
class Step:
    """One query the pod's stub resolver sends, and what svcdns answers."""

    qname: str
    rcode: str  # NOERROR, NXDOMAIN, ... or "?" (upstream answer not fetched)
    records: tuple[str, ...]  # answer section, zone-file text
    rule: str  # why: the spec section, the NXDOMAIN reason, or where it was forwarded
    via: str  # svcdns | autopath | upstream

    @property
    def answered(self) -> bool:
        """The stub stops here: records came back (NODATA and NXDOMAIN go on)."""
        return self.rcode == "NOERROR" and bool(self.records)

    @property
    def stops(self) -> bool:
        """glibc searches on past NXDOMAIN, NODATA and SERVFAIL; anything else ends it."""
        return self.answered or self.rcode not in ("NXDOMAIN", "SERVFAIL", "NOERROR")


@dataclass(frozen=True, slots=True)
class Advice:
    """A way to need fewer queries, and how many the lookup would take with it."""

    remedy: str
    queries: int


@dataclass(frozen=True, slots=True)
class EndpointView:
    address: str
    hostname: str
    node: str
    zone: str
    ready: bool
    serving: bool
    terminating: bool
    in_dns: bool  # DNS returns this address for the name asked
    why: str  # why it is returned or left out


@dataclass(frozen=True, slots=True)
class ServiceView:
    namespace: str
    name: str
    type: str  # ClusterIP | NodePort | LoadBalancer | ExternalName, "(headless)" added
    cluster_ips: tuple[str, ...]
    external_name: str
    selector: dict[str, str]
    ports: tuple[str, ...]  # "http 80/TCP -> 9376"
    publish_not_ready: bool
    dns_returns: str  # what an A query for the service name returns, in words
    endpoints: tuple[EndpointView, ...]


@dataclass(frozen=True, slots=True)
class Destination:
    """One place traffic to a ClusterIP:port may go, with its share."""

    target: str  # "10.244.1.10:9376", or DROP / REJECT
    probability: float
    why: str = ""


@dataclass(frozen=True, slots=True)
class Traffic:
    """Where traffic to one service port goes in one proxy mode."""

    vip: str  # "10.0.0.11:6379/TCP"
    mode: str
    destinations: tuple[Destination, ...]
    scheduler: str = ""
    affinity: str = ""
    note: str = ""


@dataclass(frozen=True)
class Explanation:
    name: str  # as the application asked for it
    qtype: str
    namespace: str
    pod: str  # "ns/name", or "" (any pod of the namespace)
    search: tuple[str, ...]
    ndots: int
    autopath: bool  # svcdns walks this client's search path server-side
    queries: tuple[Step, ...]
    answer: str  # what the application gets, in words
    wasted: int  # queries that did not produce the answer
    advice: tuple[Advice, ...]
    service: ServiceView | None
    traffic: tuple[Traffic, ...] = ()
    notes: tuple[str, ...] = ()
    unresolved: tuple[str, ...] = field(default=(), compare=False)  # upstream answers still needed
