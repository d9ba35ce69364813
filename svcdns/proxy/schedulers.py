"""Backend schedulers with Linux IPVS semantics, shared by the userspace proxy (which
schedules connections itself) and the ipvs backend (which names them to the kernel).

Each follows its ``net/netfilter/ipvs/ip_vs_<name>.c`` definition:

  rr   round robin over servers with weight > 0
  wrr  weighted round robin (step down from the largest weight by the weights' gcd)
  lc   least connections: smallest active*256 + inactive
  dh   destination hashing: a 256-bucket table over the servers, indexed by the
       destination address
  sh   source hashing: the same, indexed by the client address
  sed  shortest expected delay: smallest (active + 1) / weight
  nq   never queue: an idle server if there is one, else sed

A ``Real`` is IPVS's "real server": an endpoint with a weight and connection counters
that the userspace proxy keeps up to date.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from math import gcd

NAMES = ("rr", "wrr", "lc", "dh", "sh", "sed", "nq")
HASH_BUCKETS = 256  # IP_VS_DH_TAB_SIZE / IP_VS_SH_TAB_SIZE (8 bits)
_GOLDEN = 2654435761  # Knuth's multiplicative hash constant, as IPVS uses it


@dataclass(eq=False)
class Real:
    """One backend as a scheduler sees it (mutable counters)."""

    ip: str
    port: int
    weight: int = 1
    active: int = 0  # connections carrying data
    inactive: int = 0  # connections closing / UDP flows idle

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


def ip_hash(ip: str) -> int:
    """Bucket of an address, as ip_vs_dh_hashkey/ip_vs_sh_hashkey compute it."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        key = int(addr)
    else:
        packed = int(addr)
        key = 0
        for shift in (96, 64, 32, 0):  # IPv6: XOR of the four 32-bit words
            key ^= (packed >> shift) & 0xFFFFFFFF
    return ((key * _GOLDEN) & 0xFFFFFFFF) >> 24


class Scheduler:
    """Picks a real server for a new connection; ``None`` when none can take it."""

    name = ""

    def pick(self, reals: Sequence[Real], client: str = "", dest: str = "") -> Real | None:
        raise NotImplementedError


class RoundRobin(Scheduler):
    name = "rr"

    def __init__(self) -> None:
        self._last = -1

    def pick(self, reals, client="", dest=""):
        n = len(reals)
        for step in range(1, n + 1):
            i = (self._last + step) % n
            if reals[i].weight > 0:
                self._last = i
                return reals[i]
        return None


class WeightedRoundRobin(Scheduler):
    name = "wrr"

    def __init__(self) -> None:
        self._i = -1
        self._cw = 0

    def pick(self, reals, client="", dest=""):
        weights = [r.weight for r in reals]
        mw = max(weights, default=0)
        if mw <= 0:
            return None
        di = 0
        for w in weights:
            di = gcd(di, w)
        n = len(reals)
        while True:
            self._i = (self._i + 1) % n
            if self._i == 0:
                self._cw -= di
                if self._cw <= 0:
                    self._cw = mw
            if reals[self._i].weight >= self._cw:
                return reals[self._i]


class LeastConnection(Scheduler):
    name = "lc"

    def pick(self, reals, client="", dest=""):
        best, best_overhead = None, 0
        for r in reals:
            if r.weight <= 0:
                continue
            overhead = (r.active << 8) + r.inactive
            if best is None or overhead < best_overhead:
                best, best_overhead = r, overhead
        return best


class ShortestExpectedDelay(Scheduler):
    name = "sed"

    def pick(self, reals, client="", dest=""):
        best = None
        for r in reals:
            if r.weight <= 0:
                continue
            # (active+1)/weight < (best.active+1)/best.weight, without division
            if best is None or (r.active + 1) * best.weight < (best.active + 1) * r.weight:
                best = r
        return best


class NeverQueue(ShortestExpectedDelay):
    name = "nq"

    def pick(self, reals, client="", dest=""):
        for r in reals:
            if r.weight > 0 and r.active == 0:
                return r
        return super().pick(reals, client, dest)


class _Hashing(Scheduler):
    """The 256 buckets are dealt to the servers in turn, each server taking as many
    consecutive turns as its weight (weight 0 servers take none)."""

    def _table_pick(self, reals: Sequence[Real], addr: str) -> Real | None:
        dealt = [r for r in reals for _ in range(max(r.weight, 0))]
        if not dealt or not addr:
            return None
        return dealt[ip_hash(addr) % len(dealt)]  # bucket b holds dealt[b % len]; b < HASH_BUCKETS


class DestinationHashing(_Hashing):
    name = "dh"

    def pick(self, reals, client="", dest=""):
        return self._table_pick(reals, dest)


class SourceHashing(_Hashing):
    name = "sh"

    def pick(self, reals, client="", dest=""):
        return self._table_pick(reals, client)


_CLASSES = {c.name: c for c in (RoundRobin, WeightedRoundRobin, LeastConnection, DestinationHashing, SourceHashing, ShortestExpectedDelay, NeverQueue)}


def make(name: str) -> Scheduler:
    """A fresh scheduler (each service port keeps its own state)."""
    try:
        return _CLASSES[name]()
    except KeyError:
        raise ValueError(f"unknown scheduler {name!r}; one of {', '.join(NAMES)}") from None
