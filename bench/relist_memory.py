"""Memory of `svcdns serve --kubeconfig` during full relists at scale.

    .venv/bin/python bench/relist_memory.py [--services 10000] [--endpoints 10]

Steps and measures: see tests/sources/relist.py. Prints base, steady and relist-peak
RSS, the peak / steady ratio (the issue asks <= 1.5) and the relist overhead as a share
of the data's own memory.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.dns.nameservers import free_port  # noqa: E402
from tests.sources.relist import measure  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--endpoints", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        m = measure(args.services, args.endpoints, Path(tmp), free_port(), timeout=600)
    mib = lambda kib: f"{kib / 1024:.0f} MiB"  # noqa: E731
    print(f"| {args.services:,} | {args.services * args.endpoints:,} | {mib(m.base_kib)} | {mib(m.steady_kib)} | "
          f"{mib(m.peak_kib)} | {m.ratio:.2f} | {m.overhead:.0%} | {m.relist_s:.1f} s |")


if __name__ == "__main__":
    main()
