"""`svcdns serve` loads with the cyclic collector resting and freezes what it loaded;
the collector must run again afterwards, whatever happened. Each case runs in its own
interpreter: freezing is process-wide and would otherwise freeze the test session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROGRAM = """
import gc
from svcdns.serve import load_frozen

class Cycle:  # garbage a collection would find
    def __init__(self):
        self.me = self

gc.{before}()
kept = []
try:
    with load_frozen():
        assert not gc.isenabled(), "no collection during the load"
        kept.extend(Cycle() for _ in range(1000))
        {body}
except RuntimeError:
    pass
print(gc.isenabled(), gc.get_freeze_count() >= 1000)
"""

CASES = [
    # name, collector before, what the load does, printed: collector on after, the load's objects frozen
    ("load-succeeds", "enable", "pass", "True True"),
    ("load-fails", "enable", "raise RuntimeError('bad manifest')", "True True"),
    ("collector-was-off", "disable", "pass", "False True"),
]


@pytest.mark.parametrize("before, body, printed", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_collector_state_after_the_first_load(before, body, printed):
    out = subprocess.run([sys.executable, "-c", PROGRAM.format(before=before, body=body)], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == printed
