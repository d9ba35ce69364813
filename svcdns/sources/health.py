"""How a live source waits and what it tells about its health: backoff between
retries, one log line per outage, and the per-reflector numbers /metrics reports."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger("svcdns.sources.reflector")


class Backoff:
    """Capped exponential backoff with +-50% jitter, so replicas do not retry in step."""

    def __init__(self, initial: float, cap: float, rng: Callable[[], float] = random.random):
        self.initial, self.cap, self.rng = initial, cap, rng
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.cap, self.initial * 2 ** self.attempt)
        self.attempt = min(self.attempt + 1, 30)
        return min(self.cap, delay * (0.5 + self.rng()))

    def reset(self) -> None:
        self.attempt = 0


class Outage:
    """Shared by a source's reflectors: an outage is logged when it starts and when it
    ends, not once per retry (the retries are at debug level)."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.since: float | None = None
        self.failures = 0

    def failed(self, who: str, error: BaseException | str) -> None:
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            log.warning("Kubernetes API: %s: %s; serving the last good state and retrying with backoff", who, error)
        else:
            log.debug("Kubernetes API: %s: %s (still failing)", who, error)
        self.failing.add(who)

    def ok(self, who: str) -> None:
        self.failing.discard(who)
        if self.since is not None and not self.failing:
            log.warning("Kubernetes API: reachable again after %.1fs (%d failed requests)", time.monotonic() - self.since, self.failures)
            self.since, self.failures = None, 0


@dataclass
class Stats:
    """What /metrics shows about one reflector (plain numbers, read at scrape time)."""

    synced: bool = False
    watching: bool = False
    last_contact: float = field(default_factory=time.monotonic)
    relists: int = 0
    api_errors: int = 0
    rejected: int = 0
    restarts: dict[str, int] = field(default_factory=dict)  # watch restarts by reason

    def restarted(self, reason: str) -> None:
        self.restarts[reason] = self.restarts.get(reason, 0) + 1

    def sync_age(self) -> float:
        """0 while a watch is open and alive, else seconds since the API was last heard."""
        return 0.0 if self.watching else time.monotonic() - self.last_contact
