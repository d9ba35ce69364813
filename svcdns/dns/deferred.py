"""Answers that had to wait (forwarding, autopath, ExternalName targets), sent when ready.

Shared by the UDP transports; a failure is logged and the query goes unanswered (the
client retries), never an exception into the event loop."""

from __future__ import annotations

import logging
import time
from typing import Awaitable, Callable

log = logging.getLogger(__name__)


async def send_when_ready(pending: Awaitable[bytes | None], send: Callable[[bytes], None], latency, started: float, peer: str) -> None:
    try:
        reply = await pending
    except Exception:
        log.exception("deferred answer to %s failed", peer)
        return
    if reply is None:
        return
    try:
        send(reply)
    except OSError:  # the socket closed meanwhile, or its buffer is full: like a lost datagram
        return
    latency.observe(time.perf_counter() - started)
