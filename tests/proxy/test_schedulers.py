"""Schedulers behave as Linux IPVS defines them."""

from __future__ import annotations

from collections import Counter

import pytest

from svcdns.proxy import schedulers
from svcdns.proxy.schedulers import Real, ip_hash


def reals(*spec: tuple[str, int, int]) -> list[Real]:
    """(name-as-last-octet, weight, active)"""
    return [Real(f"10.0.0.{n}", 80, weight=w, active=a) for n, w, a in spec]


def names(seq) -> str:
    return "".join(chr(ord("A") + int(r.ip.rsplit(".", 1)[1]) - 1) if r else "-" for r in seq)


def test_rr_cycles_and_skips_weight_zero():
    rs = reals((1, 1, 0), (2, 0, 0), (3, 1, 0))
    rr = schedulers.make("rr")
    assert names(rr.pick(rs) for _ in range(4)) == "ACAC"


def test_wrr_follows_ipvs_sequence():
    # ip_vs_wrr with weights 4,3,2: A A B A B C A B C, repeating
    rs = reals((1, 4, 0), (2, 3, 0), (3, 2, 0))
    wrr = schedulers.make("wrr")
    assert names(wrr.pick(rs) for _ in range(18)) == "AABABCABC" * 2


# (scheduler, reals (n, weight, active), expected pick)
TABLE = [
    ("lc", [(1, 1, 3), (2, 1, 1), (3, 1, 2)], "B"),
    ("lc", [(1, 1, 0), (2, 0, 0)], "A"),  # weight 0 never chosen
    ("sed", [(1, 1, 1), (2, 3, 2)], "B"),  # (1+1)/1 = 2 > (2+1)/3 = 1
    ("sed", [(1, 2, 0), (2, 1, 0)], "A"),  # 1/2 < 1/1
    ("nq", [(1, 3, 1), (2, 1, 0)], "B"),  # idle server first, despite sed preferring A
    ("nq", [(1, 3, 1), (2, 1, 1)], "A"),  # nobody idle: sed
    ("lc", [(1, 0, 0)], "-"),
]


@pytest.mark.parametrize("name,spec,want", TABLE, ids=[f"{t[0]}-{i}" for i, t in enumerate(TABLE)])
def test_connection_based_schedulers(name, spec, want):
    assert names([schedulers.make(name).pick(reals(*spec))]) == want


@pytest.mark.parametrize("name,arg", [("sh", "client"), ("dh", "dest")])
def test_hashing_is_stable_and_spreads(name, arg):
    rs = reals((1, 1, 0), (2, 1, 0), (3, 1, 0))
    sched = schedulers.make(name)
    addrs = [f"192.168.{i // 250}.{i % 250}" for i in range(600)]
    first = [sched.pick(rs, **{arg: a}) for a in addrs]
    again = [sched.pick(rs, **{arg: a}) for a in addrs]
    assert first == again
    spread = Counter(r.ip for r in first)
    assert len(spread) == 3 and min(spread.values()) > 100, spread
    # the bucket is ip_vs_*_hashkey's: (addr * 2654435761) >> 24, dealt in turn
    assert sched.pick(rs, **{arg: "10.1.2.3"}) is rs[ip_hash("10.1.2.3") % 3]


def test_unknown_scheduler_is_named():
    with pytest.raises(ValueError, match="unknown scheduler 'wlc'"):
        schedulers.make("wlc")
