"""The sync loop: kube-proxy's ``BoundedFrequencyRunner`` for asyncio.

Changes ask for a sync (``request``); syncs happen at most once per ``min_interval``
(changes arriving in between are batched into the next one), at least once per
``max_interval`` (a periodic resync that repairs rules someone else flushed), and a
failed sync is retried after ``retry_interval``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class SyncRunner:
    """Runs ``fn`` (async, returns True on success) under the bounds above."""

    def __init__(self, fn: Callable[[], Awaitable[bool]], *, min_interval: float, max_interval: float, retry_interval: float):
        self.fn = fn
        self.min_interval = max(min_interval, 0.0)
        self.max_interval = max_interval
        self.retry_interval = retry_interval
        self.last_run = 0.0  # monotonic time of the last attempt
        self.last_success = 0.0  # wall-clock time of the last good sync (health checks)
        self.pending_since: float | None = None  # monotonic time of the oldest unserved request
        self._wake = asyncio.Event()
        self._retry_at: float | None = None
        self._stopped = False

    def request(self) -> None:
        """Ask for a sync as soon as the bounds allow."""
        if self.pending_since is None:
            self.pending_since = time.monotonic()
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    async def run_once(self) -> bool:
        self._wake.clear()
        self.pending_since = None
        self.last_run = time.monotonic()
        try:
            ok = await self.fn()
        except Exception:  # a sync bug must not end the loop; the next attempt is a full sync
            log.exception("proxy sync failed")
            ok = False
        if ok:
            self.last_success = time.time()
            self._retry_at = None
        else:
            self._retry_at = time.monotonic() + self.retry_interval
            log.info("retrying the sync in %.1f s", self.retry_interval)
        return ok

    async def loop(self) -> None:
        """Sync forever (until ``stop``)."""
        while not self._stopped:
            now = time.monotonic()
            deadline = self.last_run + self.max_interval
            if self._retry_at is not None:
                deadline = min(deadline, self._retry_at)
            if not self._wake.is_set():
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=max(deadline - now, 0.0))
                except TimeoutError:
                    pass
            if self._stopped:
                return
            wait = self.last_run + self.min_interval - time.monotonic()
            if wait > 0:  # bounded frequency: batch whatever arrives meanwhile
                await asyncio.sleep(wait)
            await self.run_once()

    def healthy(self, grace: float) -> bool:
        """kube-proxy's /healthz rule: unhealthy when a requested sync has waited longer
        than ``grace`` seconds (rules are going stale)."""
        return self.pending_since is None or time.monotonic() - self.pending_since < grace
