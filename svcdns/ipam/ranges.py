"""Service IP ranges (``--service-cluster-ip-range``) with kube-apiserver's geometry:
which addresses are usable, which one is reserved, where the static band ends."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

KUBERNETES = ("default", "kubernetes")
FLAG = "--service-cluster-ip-range"

# kube-apiserver's calculateRangeOffset: min(max(STATIC_MIN, size/STATIC_STEP), STATIC_MAX).
STATIC_MIN, STATIC_MAX, STATIC_STEP = 16, 256, 16
# kube-apiserver refuses IPv4 ranges above 20 host bits (/12); IPv6 service CIDRs must be /64 or longer.
MIN_V4_PREFIX, MIN_V6_PREFIX = 12, 64


class RangeError(ValueError):
    """A --service-cluster-ip-range value that cannot work; the message says why."""


def family_name(family: int) -> str:
    return f"IPv{family}"


@dataclass(frozen=True, slots=True)
class ServiceCIDR:
    """One service range. Addresses are numbered by *index*: 0 is the first usable address
    (network + 1, reserved for default/kubernetes), ``size - 1`` the last."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    family: int
    first: int  # integer value of index 0
    size: int  # usable addresses
    static_size: int  # indexes [0, static_size) are the static band

    @classmethod
    def parse(cls, text: str) -> "ServiceCIDR":
        text = text.strip()
        if "/" not in text:
            try:
                ipaddress.ip_address(text)
            except ValueError:
                raise RangeError(f"{text!r} is not a CIDR (for example 10.96.0.0/12 or fd00:10:96::/112)") from None
            raise RangeError(f"{text!r} needs a prefix length (for example {text}/{112 if ':' in text else 16})")
        try:
            net = ipaddress.ip_network(text)
        except ValueError:
            try:
                loose = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise RangeError(f"{text!r} is not a CIDR (for example 10.96.0.0/12 or fd00:10:96::/112)") from None
            raise RangeError(f"{text!r} has host bits set; did you mean {loose}?") from None
        family = net.version
        if family == 4 and net.prefixlen < MIN_V4_PREFIX:
            raise RangeError(f"{net} is too large: IPv4 service ranges may hold at most 2^20 addresses (/{MIN_V4_PREFIX}), as in kube-apiserver")
        if family == 6 and net.prefixlen < MIN_V6_PREFIX:
            raise RangeError(f"{net} is too large: IPv6 service ranges must be /{MIN_V6_PREFIX} or longer")
        total = net.num_addresses
        size = total - (2 if family == 4 else 1)
        if size < 2:
            raise RangeError(f"{net} is too small: no address would be left besides the one reserved for default/kubernetes")
        static_size = 0 if total <= STATIC_MIN else min(max(STATIC_MIN, total // STATIC_STEP), STATIC_MAX)
        return cls(net, family, int(net.network_address) + 1, size, static_size)

    def __str__(self) -> str:
        return str(self.network)

    def address(self, index: int) -> str:
        cls = ipaddress.IPv4Address if self.family == 4 else ipaddress.IPv6Address
        return str(cls(self.first + index))

    def locate(self, ip: str) -> tuple[int, str]:
        """(index, "") for an address services may hold, else (-1, why not)."""
        addr = ipaddress.ip_address(ip)
        if addr not in self.network:
            return -1, f"not in {FLAG} {self.network}"
        if addr == self.network.network_address:
            return -1, f"the network address of {self.network}"
        if self.family == 4 and addr == self.network.broadcast_address:
            return -1, f"the broadcast address of {self.network}"
        return int(addr) - self.first, ""

    def band(self, index: int) -> str:
        return "static" if index < self.static_size else "dynamic"

    @property
    def dynamic_start(self) -> int:
        return self.static_size or 1  # index 0 is reserved either way


def parse_service_cidrs(value: str) -> tuple[ServiceCIDR, ...]:
    """``CIDR[,CIDR]``: one range, or one IPv4 and one IPv6 range (the first is primary)."""
    parts = [p for p in value.split(",")]
    if not value.strip() or any(not p.strip() for p in parts):
        raise RangeError(f"{value!r}: expected CIDR or CIDR,CIDR")
    cidrs = tuple(ServiceCIDR.parse(p) for p in parts)
    if len(cidrs) > 2 or (len(cidrs) == 2 and cidrs[0].family == cidrs[1].family):
        raise RangeError(f"{value!r}: give at most one IPv4 and one IPv6 range")
    return cidrs
