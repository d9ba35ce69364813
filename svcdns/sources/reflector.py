"""List+watch of one kind, with the semantics of client-go's reflector.

    LIST (paginated: limit/continue) -> records, resourceVersion R
    WATCH from R (allowWatchBookmarks) -> ADDED / MODIFIED / DELETED / BOOKMARK
    the server ends the watch (timeoutSeconds)  -> WATCH again from the last R: normal
    410 Gone (ERROR event or status)            -> LIST again and reconcile
    any other failure                           -> capped exponential backoff with
                                                   jitter; Retry-After when given

Requests go through kubernetes-asyncio's generic ``ApiClient.call_api`` with
``_preload_content=False``: the library authenticates (token rotation, TLS, exec
plugins), we build the path, read status, headers and body ourselves. Its typed API
classes and ``Watch`` helper are not used: they would import ~1,000 generated classes
(see sources.kubelib), and ``Watch`` hides the status and the Retry-After header of a
failed watch. Bodies are decoded with ``json`` straight into slim records
(``svcdns.model``): one LIST page of raw objects exists at a time, never a second full
copy of the cluster.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Protocol
from urllib.parse import quote

import aiohttp

from .. import heap
from ..config import WatchTiming
from ..model import KINDS, ObjectError, Record
from .health import Backoff, Outage, Stats
from .kubeauth import AuthError

if TYPE_CHECKING:
    from .kubelib import ApiClient

log = logging.getLogger(__name__)

Key = tuple[str, str]


@dataclass(frozen=True)
class KindApi:
    """Where the API serves a kind: ``{prefix}[/namespaces/{ns}]/{plural}``."""

    prefix: str  # /api/v1 for the core group, /apis/{group}/{version} otherwise
    plural: str
    namespaced: bool

    def path(self, namespace: str | None) -> str:
        if namespace is None:
            return f"{self.prefix}/{self.plural}"
        return f"{self.prefix}/namespaces/{quote(namespace, safe='')}/{self.plural}"


KIND_APIS: dict[str, KindApi] = {
    "Service": KindApi("/api/v1", "services", True),
    "EndpointSlice": KindApi("/apis/discovery.k8s.io/v1", "endpointslices", True),
    "Endpoints": KindApi("/api/v1", "endpoints", True),
    "Pod": KindApi("/api/v1", "pods", True),
    "Namespace": KindApi("/api/v1", "namespaces", False),
    "Node": KindApi("/api/v1", "nodes", False),
}


class ApiError(Exception):
    """A failed request, from the status code and the Status object the API returned."""

    def __init__(self, code: int, message: str, retry_after: float | None = None):
        super().__init__(f"HTTP {code}: {message}" if code else message)
        self.code = code
        self.retry_after = retry_after


def status_error(code: int, body: Any, retry_after: float | None = None) -> ApiError:
    """An ApiError from a ``kind: Status`` body (or whatever the server sent)."""
    if isinstance(body, dict):
        code = body.get("code") if isinstance(body.get("code"), int) else code
        message = body.get("message") or body.get("reason") or "error"
    else:
        message = "error"
    return ApiError(code, str(message)[:300], retry_after)


class Sink(Protocol):
    """Where a reflector's records go (see sources.kube)."""

    def wants(self, key: Key) -> bool: ...  # False: record the object's existence, skip parsing
    def upsert(self, rec: Record) -> None: ...
    def skip(self, key: Key) -> None: ...
    def delete(self, key: Key) -> None: ...
    def flush(self) -> None: ...  # end of a batch: the state may commit


class Reflector:
    """Keeps a Sink in step with one kind (optionally in one namespace)."""

    def __init__(
        self,
        api_client: ApiClient,
        kind: str,
        sink: Sink,
        *,
        timing: WatchTiming,
        outage: Outage,
        namespace: str | None = None,
        label_selector: str | None = None,
        optional: bool = False,
        on_synced: Callable[["Reflector"], None] = lambda r: None,
        on_reject: Callable[[], None] | None = None,
    ):
        spec = KIND_APIS[kind]
        self.api_client = api_client
        self.kind, self.sink, self.timing, self.outage = kind, sink, timing, outage
        self.namespace, self.label_selector, self.optional = namespace, label_selector, optional
        self.name = plural(kind) + (f" in {namespace}" if namespace else "")
        self._spec = spec
        self._parse = KINDS[kind].from_raw
        self._namespaced = spec.namespaced
        self.on_synced = on_synced
        self.on_reject = on_reject
        self.rv: str | None = None  # None: the next step is a LIST
        self.known: dict[Key, str] = {}  # key -> resourceVersion of every object the API has
        self.backoff = Backoff(timing.backoff_initial, timing.backoff_cap)
        self.stats = Stats()
        self.served = True  # False when an optional kind is not served by this API server

    # --- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Forever: list, watch, recover. Never returns except for an optional kind the
        API server does not serve; never raises except CancelledError."""
        while True:
            try:
                if self.rv is None:
                    with heap.loading():  # see svcdns.heap
                        await self._list()
                await self._watch()
            except ApiError as e:
                if e.code == 410:
                    log.info("%s: resourceVersion %s expired (410 Gone): listing again", self.name, self.rv)
                    self.rv = None
                    continue
                if e.code == 404 and self.optional and not self.stats.synced:
                    log.warning("%s: not served by this API server (404); going on without them", self.name)
                    self.served = False
                    self._synced()
                    return
                await self._failed(e, e.retry_after)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError, AuthError) as e:
                await self._failed(e)
            except Exception as e:  # a source degrades, it never takes the server down
                log.exception("%s: unexpected error; retrying", self.name)
                await self._failed(e)

    async def _failed(self, error: BaseException | str, retry_after: float | None = None) -> None:
        self.stats.api_errors += 1
        if isinstance(error, asyncio.TimeoutError) and not str(error):
            error = f"no answer within {self.timing.request_timeout:g}s"
        elif isinstance(error, BaseException) and not str(error):
            error = type(error).__name__
        self.outage.failed(self.name, error)
        if retry_after is not None:
            delay = min(retry_after, self.timing.retry_after_cap)
        else:
            delay = self.backoff.next()
        log.debug("%s: retrying in %.2fs", self.name, delay)
        await asyncio.sleep(delay)

    def _synced(self) -> None:
        if not self.stats.synced:
            self.stats.synced = True
            self.on_synced(self)

    def _contact(self) -> None:
        self.stats.last_contact = time.monotonic()

    # --- requests ---------------------------------------------------------------------

    async def _request(self, params: list[tuple[str, Any]]) -> aiohttp.ClientResponse:
        """Issue a LIST or WATCH; returns the open response after checking its status."""
        if self.label_selector:
            params.append(("labelSelector", self.label_selector))
        return await self._open(self._spec.path(self.namespace), params)

    async def _open(self, path: str, params: list[tuple[str, Any]]) -> aiohttp.ClientResponse:
        t = self.timing.request_timeout
        timeout = aiohttp.ClientTimeout(total=None, connect=t, sock_connect=t, sock_read=None)
        call = self.api_client.call_api(
            path, "GET", query_params=params, header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"], _preload_content=False, _request_timeout=timeout,
        )
        resp = await asyncio.wait_for(call, t)
        if resp.status != 200:
            try:
                body = await asyncio.wait_for(resp.read(), t)
                decoded = json.loads(body)
            except (ValueError, aiohttp.ClientError, asyncio.TimeoutError):
                decoded = None
            finally:
                resp.close()
            raise status_error(resp.status, decoded, _retry_after(resp.headers.get("Retry-After")))
        return resp

    async def _read_json(self, resp: aiohttp.ClientResponse) -> dict:
        try:
            body = await asyncio.wait_for(resp.read(), self.timing.request_timeout)
        finally:
            resp.release()
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("response is not a JSON object")
        return data

    async def fetch(self, namespace: str, name: str) -> dict | None:
        """One object by name (a LIST with a field selector: RBAC grants list, not get)."""
        params = [("fieldSelector", f"metadata.name={name}")]
        resp = await self._open(self._spec.path(namespace if self._namespaced else None), params)
        items = (await self._read_json(resp)).get("items") or []
        return items[0] if items else None

    # --- LIST -------------------------------------------------------------------------

    async def _list(self) -> None:
        """A paginated LIST, streamed: each page becomes records and is dropped before
        the next is read. Objects whose resourceVersion we already hold are not parsed
        again; objects the API no longer has are deleted at the end (reconcile)."""
        relist = self.stats.synced
        started = time.monotonic()
        seen: set[Key] = set()
        token: str | None = None
        pages = 0
        while True:
            params: list[tuple[str, Any]] = [("limit", self.timing.page_size)]
            if token:
                params.append(("continue", token))
            page = await self._read_json(await self._request(params))
            self._contact()
            meta = page.get("metadata") or {}
            for item in page.get("items") or ():
                key, rv = self._identity(item)
                if key is None:
                    continue
                seen.add(key)
                if rv and self.known.get(key) == rv:
                    continue
                self.known[key] = rv
                self._upsert(key, item)
            del page
            pages += 1
            self.sink.flush()
            token = meta.get("continue")
            if not token:
                break
        for key in [k for k in self.known if k not in seen]:
            del self.known[key]
            self.sink.delete(key)
        self.sink.flush()
        self.rv = str(meta.get("resourceVersion") or "") or None
        if self.rv is None:
            raise ValueError("LIST response carries no metadata.resourceVersion")
        if relist:
            self.stats.relists += 1
        log.log(logging.INFO if relist else logging.DEBUG, "%s: listed %d objects in %d pages (%.2fs), resourceVersion %s",
                self.name, len(seen), pages, time.monotonic() - started, self.rv)
        self.backoff.reset()
        self.outage.ok(self.name)
        self._synced()

    def _identity(self, obj: Any) -> tuple[Key | None, str]:
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            log.error("%s: object without metadata.name ignored", self.name)
            self.stats.rejected += 1
            return None, ""
        ns = meta.get("namespace") if self._namespaced else ""
        return (ns if isinstance(ns, str) else "", meta["name"]), str(meta.get("resourceVersion") or "")

    def _upsert(self, key: Key, obj: dict) -> None:
        if not self.sink.wants(key):
            self.sink.skip(key)
            return
        try:
            rec = self._parse(obj)
        except ObjectError as e:
            self.stats.rejected += 1
            if self.on_reject is not None:
                self.on_reject()
            who = "/".join(k for k in key if k)
            log.error("%s %s (resourceVersion %s): %s; keeping its last good version", self.kind, who, self.known.get(key), e)
            return
        self.sink.upsert(rec)

    # --- WATCH ------------------------------------------------------------------------

    async def _watch(self) -> None:
        lo, hi = self.timing.watch_timeout
        resp = await self._request([
            ("watch", "true"), ("resourceVersion", self.rv), ("allowWatchBookmarks", "true"), ("timeoutSeconds", random.randint(lo, hi)),
        ])
        self.stats.watching = True
        self._contact()
        self.outage.ok(self.name)
        opened, lines, reason = time.monotonic(), 0, "error"
        try:
            async for batch in self._batches(resp):
                for line in batch:
                    self._event(json.loads(line))
                lines += len(batch)
                self.sink.flush()
                self.backoff.reset()  # the stream works, bookmarks included
            reason = "closed"
        except asyncio.TimeoutError:
            reason = "idle"
            raise asyncio.TimeoutError(f"watch silent for {self.timing.idle_timeout:g}s") from None
        except ApiError as e:
            reason = "gone" if e.code == 410 else "error"
            raise
        finally:
            self.stats.watching = False
            self.stats.restarted(reason)
            self.sink.flush()
            resp.close()
        if not lines and time.monotonic() - opened < 1.0:
            # A server that ends every watch at once must not make us spin.
            await self._failed("watch closed immediately")

    async def _batches(self, resp: aiohttp.ClientResponse) -> AsyncIterator[list[bytes]]:
        """Complete lines of the chunked stream, grouped by arrival: a burst of events
        is applied as one batch. A stream silent for idle_timeout raises TimeoutError."""
        rest = b""
        idle = self.timing.idle_timeout
        while True:
            chunk = await asyncio.wait_for(resp.content.readany(), idle)
            if not chunk:
                if rest.strip():
                    yield [rest]
                return
            self._contact()
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            lines = [ln for ln in lines if ln.strip()]
            if lines:
                yield lines

    def _event(self, event: Any) -> None:
        """Apply one watch event."""
        if not isinstance(event, dict):
            raise ValueError("watch event is not a JSON object")
        kind, obj = event.get("type"), event.get("object")
        if kind == "ERROR":
            raise status_error(500, obj)
        if not isinstance(obj, dict):
            raise ValueError(f"watch event {kind!r} without an object")
        rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if kind == "BOOKMARK":  # only metadata.resourceVersion is meaningful
            self.rv = rv or self.rv
            return
        key, rv = self._identity(obj)
        if key is None:
            return
        if kind in ("ADDED", "MODIFIED"):
            self.known[key] = rv
            self._upsert(key, obj)
        elif kind == "DELETED":
            self.known.pop(key, None)
            self.sink.delete(key)
        else:
            raise ValueError(f"unknown watch event type {kind!r}")
        self.rv = rv or self.rv


def plural(kind: str) -> str:
    """For log lines: Services, EndpointSlices, Endpoints (already plural)."""
    return kind if kind.endswith("s") else kind + "s"


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the API server never sends the HTTP-date form)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
