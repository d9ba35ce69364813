"""Memory during a relist stays below 1.5x the steady state (CI size: 1,000 services /
10,000 endpoints; bench/relist_memory.py runs 10,000 / 100,000). See relist.py."""

from __future__ import annotations

from tests.dns.nameservers import free_port
from tests.sources.relist import measure


def test_relist_peak_stays_below_one_and_a_half_times_steady(tmp_path):
    m = measure(1000, 10, tmp_path, free_port(), timeout=60)
    print(f"RSS KiB: base {m.base_kib}, steady {m.steady_kib}, relist peak {m.peak_kib}; relists took {m.relist_s:.2f}s")
    assert m.steady_kib > m.base_kib + 2048, "the cluster is big enough to see in RSS"
    assert m.ratio <= 1.5, m
    # Never two full copies: the new records of a relist that changed everything replace
    # the old ones as they come (steady + one more copy of the data would be 1.0).
    assert m.overhead < 1.0, f"a relist costs {m.overhead:.0%} of the data's memory: {m}"
