"""Memory under a flood: RSS of `svcdns serve` after each of N floods of never-seen names.

    .venv/bin/python bench/flood.py [NAMES_PER_FLOOD=40000] [FLOODS=8] [extra serve flags...]

Each flood sends NAMES_PER_FLOOD unique names under the cluster zone with dnsperf (their
NXDOMAINs go into the 50,000-entry answer cache); the figures show RSS rising while the
cache fills and churns once, then staying flat (docs/reliability.md).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.dns.nameservers import free_port  # noqa: E402
from tests.test_shutdown import Replica, dnsperf, dnsperf_result  # noqa: E402


def main() -> None:
    names = int(sys.argv[1]) if len(sys.argv) > 1 else 40000
    floods = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    server = Replica(free_port(), *sys.argv[3:])
    try:
        rss = [server.rss_kib()]
        with tempfile.TemporaryDirectory() as tmp:
            for k in range(floods):
                path = Path(tmp) / f"flood{k}.txt"
                path.write_text("".join(f"n{k}x{i}.cluster.local. A\n" for i in range(names)))
                result = dnsperf_result(dnsperf(server.port, path, "-n", "1", "-c", "4", "-q", "500"))
                rss.append(server.rss_kib())
                print(f"flood {k + 1}: {int(result['completed'])}/{int(result['sent'])} answered, RSS {rss[-1] // 1024} MB", flush=True)
        print("RSS MB: start " + " ".join(str(r // 1024) for r in rss))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
