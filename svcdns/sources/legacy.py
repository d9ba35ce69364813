"""core/v1 Endpoints, kept only where no EndpointSlice stands for them.

On a current cluster every Endpoints object has EndpointSlices beside it (written by the
EndpointSlice controller, or mirrored from hand-written Endpoints), and holding both
would double the memory of the largest table. The Endpoints that matter are the rest:
those marked ``endpointslice.kubernetes.io/skip-mirror``, and all of them on an API
server without discovery.k8s.io/v1. So an Endpoints object is parsed and kept only
while its service has no slices; otherwise just its name is remembered ("shadowed").
When a service's last slice goes away and its Endpoints was shadowed, the object is
fetched again (after a short delay: when a service is deleted its slices usually go
a moment before its Endpoints, and then there is nothing to fetch).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

import aiohttp

from ..model import Endpoints, ObjectError, Record
from ..store import ClusterState
from .reflector import ApiError

log = logging.getLogger(__name__)

Key = tuple[str, str]
Fetch = Callable[[str, str], Awaitable[dict | None]]


class LegacyEndpoints:
    """The Sink of the Endpoints reflector(s); told about slices by the slice sink."""

    kind = "Endpoints"

    def __init__(self, state: ClusterState, flush: Callable[[], None], *, delay: float = 1.0, attempts: int = 5):
        self.state = state
        self.flush = flush
        self.delay = delay
        self.attempts = attempts
        self.fetch: Fetch | None = None  # set by the source once a reflector exists
        self.forget: Callable[[Key], None] = lambda key: None  # make the next relist parse it
        self.shadowed: set[Key] = set()  # in the API, hidden behind EndpointSlices
        self._pending: dict[Key, object] = {}  # key -> token of the scheduled fetch
        self._tasks: set[asyncio.Task] = set()

    # --- Sink -------------------------------------------------------------------------

    def wants(self, key: Key) -> bool:
        return not self.state.has_slices(key)

    def skip(self, key: Key) -> None:
        self._cancel(key)
        self.shadowed.add(key)
        self.state.remove(self.kind, key)

    def upsert(self, rec: Record) -> None:
        self._cancel(rec.key)
        self.shadowed.discard(rec.key)
        self.state.apply(rec)

    def delete(self, key: Key) -> None:
        self._cancel(key)
        self.shadowed.discard(key)
        self.state.remove(self.kind, key)

    # --- told by the EndpointSlice sink -------------------------------------------------

    def slices_changed(self, key: Key) -> None:
        if self.state.has_slices(key):
            if key in self.state.endpoints:
                self.state.remove(self.kind, key)
                self.shadowed.add(key)
            self._cancel(key)
        elif key in self.shadowed and key not in self._pending and self.fetch is not None:
            token = object()
            self._pending[key] = token
            task = asyncio.ensure_future(self._refetch(key, token))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    # --- fetching -----------------------------------------------------------------------

    def _cancel(self, key: Key) -> None:
        self._pending.pop(key, None)

    def _current(self, key: Key, token: object) -> bool:
        """The fetch is still wanted: not cancelled by an event, no slices came back."""
        return self._pending.get(key) is token and key in self.shadowed and not self.state.has_slices(key)

    async def _refetch(self, key: Key, token: object) -> None:
        try:
            delay = self.delay
            for _ in range(self.attempts):
                await asyncio.sleep(delay)
                if not self._current(key, token):
                    return
                try:
                    obj = await self.fetch(*key)
                except (ApiError, aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as e:
                    log.debug("fetching Endpoints %s/%s failed: %s", *key, e)
                    delay *= 2
                    continue
                if not self._current(key, token):
                    return
                self.shadowed.discard(key)
                if obj is None:
                    return
                try:
                    self.state.apply(Endpoints.from_raw(obj))
                except ObjectError as e:
                    log.error("Endpoints %s/%s: %s; not used", *key, e)
                    return
                self.flush()
                return
            log.warning("could not fetch Endpoints %s/%s after its EndpointSlices went away; the next relist will", *key)
            self.forget(key)
        finally:
            if self._pending.get(key) is token:
                del self._pending[key]
