"""CPython's cyclic garbage collector around bulk loads: the live source's LISTs, the
first load of `svcdns serve`, a proxy's full render.

Listing 10,000 Services, their EndpointSlices and Endpoints decodes ~770,000 dicts and
lists and leaves ~250,000 long-lived container objects behind (records, then compiled
answers). The collector runs a full collection every time the long-lived heap has
grown by a quarter, and each one walks every container object in the process: at
10,000 services that was 11 full collections and ~0.8 s of the ~3.9 s of CPU before
/ready (``gc.callbacks``; bench/scale_api.py). They find next to nothing (35 objects):
decoded JSON and the frozen records hold no reference cycles, and reference counting
frees them.

So a LIST runs with automatic collection paused (every page, and the compile that
follows the first full sync), and once the first full sync is built it moves to the
permanent generation (``gc.freeze``): later full collections, triggered by watch
events and relists, walk only what was allocated since.
Collection stays paused no longer than a LIST takes (a failing request ends it).
"""

from __future__ import annotations

import contextlib
import gc
import threading
from typing import Iterator

_lock = threading.Lock()  # sources on event loops in other threads (tests, one-shot commands)
_pauses = 0  # LISTs in progress (reflectors list concurrently)
_resume = False  # whether the first pause found automatic collection enabled


@contextlib.contextmanager
def loading() -> Iterator[None]:
    """Pause automatic collection for the block; nests, and across concurrent tasks:
    collection resumes when the last block ends, unless it was off before the first."""
    global _pauses, _resume
    with _lock:
        if _pauses == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _resume:
                gc.enable()


def settle() -> None:
    """The state just loaded is long-lived: keep the collector's full passes off it.

    No collection first: one would walk everything once more (~0.2 s at 10,000
    services) to find a few dozen objects (35 measured), which stay until
    :func:`unsettle`."""
    gc.freeze()


def unsettle() -> None:
    """Undo :func:`settle` (the source is closed: its state may become garbage)."""
    gc.unfreeze()
