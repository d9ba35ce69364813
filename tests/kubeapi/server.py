"""A Kubernetes API server for tests: LIST and WATCH of the kinds svcdns reads, spoken
over real HTTP the way kube-apiserver speaks it, so kubernetes-asyncio (and svcdns's
reflectors) cannot tell the difference.

    GET /api/v1/{services,endpoints,pods,namespaces,nodes}
    GET /api/v1/namespaces/{ns}/{services,endpoints,pods}
    GET /apis/discovery.k8s.io/v1[/namespaces/{ns}]/endpointslices
        ?limit=&continue=               pagination over a consistent snapshot
        ?labelSelector=&fieldSelector=  as the API server evaluates them
        ?watch=true&resourceVersion=&allowWatchBookmarks=true&timeoutSeconds=
                                        chunked stream of JSON events, one per line
    Authorization: Bearer <token>       or a client certificate the TLS context verified
                                        whose CN is in ``cert_users``; else 401

Errors are ``kind: Status`` objects. A too-old resourceVersion gets 410: on LIST (an
expired continue token) as a status response; on WATCH as an ERROR event in a 200
stream, as kube-apiserver does, or as a status response (``gone_as_status``).

The server runs on its own event loop in a thread. Tests change objects and inject
faults through the thread-safe methods of :class:`KubeApi`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import yaml
from aiohttp import web

from .storage import RESOURCES, BadRequest, Expired, Selector, Storage

DROP, GONE = object(), object()  # sentinels for a watcher's queue
compact_json = functools.partial(json.dumps, separators=(",", ":"))  # as kube-apiserver writes JSON


@dataclass
class Fault:
    """Answer the next ``count`` matching requests with ``status`` (or hang: status 0)."""

    count: int
    status: int
    retry_after: int | None = None
    plurals: tuple[str, ...] = ()  # () = any resource
    watch: bool | None = None  # True: only watches, False: only lists, None: both

    def matches(self, plural: str, is_watch: bool) -> bool:
        return (not self.plurals or plural in self.plurals) and (self.watch is None or self.watch == is_watch)


@dataclass(eq=False)
class OpenWatch:
    request: web.Request
    watcher: Any
    stalled: bool = False


@dataclass
class Logged:
    path: str
    query: dict[str, str]
    status: int = 0
    at: float = field(default_factory=time.monotonic)


def parse_bool(value: str | None) -> bool:
    """Query booleans as Go's strconv.ParseBool reads them (clients send "true" or "True")."""
    return value in ("1", "t", "T", "true", "TRUE", "True")


def status_body(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}


def status_response(code: int, reason: str, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response(status_body(code, reason, message), status=code, headers=headers, dumps=compact_json)


class KubeApi:
    """The test API server. ``with KubeApi() as api: api.put(obj); api.url``."""

    def __init__(self, *, tokens: tuple[str, ...] = ("test-token",), ssl_context: ssl.SSLContext | None = None,
                 bookmark_interval: float = 0.5, host: str = "127.0.0.1", cert_users: tuple[str, ...] = ()):
        self.storage = Storage()
        self.tokens = set(tokens)
        self.cert_users = set(cert_users)  # CNs of client certificates (ssl_context must verify them)
        self.ssl_context = ssl_context
        self.bookmark_interval = bookmark_interval
        self.host = host
        self.port = 0
        self.gone_as_status = False  # 410 for a too-old watch as a status response, not an ERROR event
        self.disabled: set[str] = set()  # resources this server does not serve (404)
        self.faults: list[Fault] = []
        self.log: list[Logged] = []
        self.watches: set[OpenWatch] = set()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="kubeapi", daemon=True)
        self._runner: web.AppRunner | None = None

    # --- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> "KubeApi":
        self._thread.start()
        self._sync(self._start())
        return self

    def __exit__(self, *exc) -> None:
        self._sync(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    async def _start(self, port: int = 0) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/version", self._version)
        app.router.add_get("/api", self._api)
        app.router.add_get("/apis", self._apis)
        app.router.add_get("/api/v1/namespaces/{ns}/{plural}", self._collection)
        app.router.add_get("/api/v1/{plural}", self._collection)
        app.router.add_get("/apis/discovery.k8s.io/v1/namespaces/{ns}/{plural}", self._collection)
        app.router.add_get("/apis/discovery.k8s.io/v1/{plural}", self._collection)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, port, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        for w in list(self.watches):
            w.watcher.queue.put_nowait(DROP)
        await self._runner.cleanup()

    def _sync(self, coro_or_fn: Any, *args) -> Any:
        """Run a coroutine, or a plain function, on the server's loop; return its result."""
        if not asyncio.iscoroutine(coro_or_fn):
            fn = coro_or_fn

            async def call():
                return fn(*args)

            coro_or_fn = call()
        return asyncio.run_coroutine_threadsafe(coro_or_fn, self.loop).result(timeout=60)

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}"

    def write_kubeconfig(self, path, token: str = "test-token") -> str:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "svcdns", "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "svcdns"}}],
            "current-context": "test",
        }
        with open(path, "w") as f:
            yaml.safe_dump(cfg, f)
        return str(path)

    # --- driving it from tests (thread-safe) ----------------------------------------------

    def put(self, *objs: dict) -> list[dict]:
        """Create or replace objects; returns them as stored (with resourceVersion)."""
        return self._sync(lambda: [self.storage.put(o) for o in objs])

    def delete(self, kind: str, namespace: str, name: str) -> dict | None:
        return self._sync(self.storage.delete, kind, namespace, name)

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        from .storage import BY_KIND

        res = BY_KIND[kind]
        return self._sync(lambda: self.storage.objects[res.plural].get((namespace if res.namespaced else "", name)))

    def expire(self, *, close_watches: bool = False) -> None:
        """Compact the history: every resourceVersion handed out so far now gets 410.
        With ``close_watches`` open watches are ended with a 410 ERROR event, as the
        watch cache does to a watcher that fell too far behind."""

        def run():
            self.storage.compact()
            if close_watches:
                for w in self.watches:
                    w.watcher.queue.put_nowait(GONE)

        self._sync(run)

    def restart(self, down: float = 0.2) -> None:
        """What clients see of an API server restart: every connection and watch cut,
        nothing listening for ``down`` seconds, then the same port again with the
        objects kept and the history compacted (older resourceVersions get 410)."""

        async def run():
            await self._stop()
            self.watches.clear()
            self.storage.compact()
            await asyncio.sleep(down)
            await self._start(self.port)

        self._sync(run())

    def drop_watches(self) -> int:
        """Cut every open watch connection mid-stream (TCP abort). Returns how many."""

        def run():
            for w in self.watches:
                if w.request.transport is not None:
                    w.request.transport.abort()
                w.watcher.queue.put_nowait(DROP)
            return len(self.watches)

        return self._sync(run)

    def stall_watches(self) -> int:
        """Open watches go silent (no events, no bookmarks) but stay connected: a
        half-dead connection only the client's idle timeout can detect."""

        def run():
            for w in self.watches:
                w.stalled = True
            return len(self.watches)

        return self._sync(run)

    def fail(self, count: int, status: int = 500, *, retry_after: int | None = None, plurals: tuple[str, ...] = (),
             watch: bool | None = None) -> None:
        """The next ``count`` matching requests get ``status`` (0: hang without answering)."""
        self._sync(lambda: self.faults.append(Fault(count, status, retry_after, plurals, watch)))

    def clear_faults(self) -> None:
        self._sync(self.faults.clear)

    def open_watches(self, plural: str | None = None) -> int:
        return self._sync(lambda: sum(1 for w in self.watches if plural is None or w.watcher.plural == plural))

    def requests(self, plural: str | None = None) -> list[Logged]:
        return [r for r in list(self.log) if plural is None or r.path.endswith("/" + plural)]

    # --- HTTP -------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        entry = Logged(request.path, dict(request.query))
        self.log.append(entry)
        resp = await self._handle(request, handler)
        entry.status = resp.status
        return resp

    async def _handle(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        if not self._authenticated(request):
            return status_response(401, "Unauthorized", "Unauthorized")
        plural = request.match_info.get("plural", "")
        is_watch = parse_bool(request.query.get("watch"))
        for fault in self.faults:
            if fault.count > 0 and fault.matches(plural, is_watch):
                fault.count -= 1
                if fault.status == 0:
                    while request.transport is not None and not request.transport.is_closing():
                        await asyncio.sleep(0.05)
                    return web.Response(status=504)
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
                reason = "TooManyRequests" if fault.status == 429 else "InternalError"
                return status_response(fault.status, reason, f"injected fault: {fault.status}", headers)
        return await handler(request)

    def _authenticated(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth[7:].strip() in self.tokens:
            return True
        # x509 client certificate: present only if the TLS handshake verified it
        cert = request.transport.get_extra_info("peercert") if request.transport is not None else None
        subject = dict(rdn[0] for rdn in (cert or {}).get("subject", ()))
        return subject.get("commonName") in self.cert_users

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"major": "1", "minor": "35", "gitVersion": "v1.35.0", "platform": "linux/amd64"})

    async def _api(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})

    async def _apis(self, request: web.Request) -> web.Response:
        version = {"groupVersion": "discovery.k8s.io/v1", "version": "v1"}
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": "discovery.k8s.io", "versions": [version], "preferredVersion": version}]})

    async def _collection(self, request: web.Request) -> web.StreamResponse:
        plural, ns = request.match_info["plural"], request.match_info.get("ns")
        res = RESOURCES.get(plural)
        group_ok = res is not None and request.path.startswith("/apis/" if "/" in res.api_version else "/api/")
        if not group_ok or plural in self.disabled or (ns is not None and not res.namespaced):
            return status_response(404, "NotFound", "the server could not find the requested resource")
        q = request.query
        try:
            match = Selector(q.get("labelSelector"), q.get("fieldSelector"))
            if parse_bool(q.get("watch")):
                return await self._watch(request, res, ns, match)
            limit = int(q.get("limit") or 0)
            body = self.storage.list_json(plural, ns, match, limit, q.get("continue"), f"{res.kind}List", res.api_version)
        except Expired as e:
            return status_response(410, "Expired", str(e))
        except (BadRequest, ValueError) as e:
            return status_response(400, "BadRequest", str(e))
        return web.Response(body=body, content_type="application/json")

    async def _watch(self, request: web.Request, res, ns: str | None, match: Selector) -> web.StreamResponse:
        q = request.query
        rv = q.get("resourceVersion")
        since = None if rv in (None, "", "0") else int(rv)
        try:
            watcher, backlog = self.storage.subscribe(res.plural, ns, match, since)
        except Expired as e:
            if self.gone_as_status:
                return status_response(410, "Expired", str(e))
            resp = await self._stream(request)
            await self._send(resp, {"type": "ERROR", "object": status_body(410, "Expired", str(e))})
            await resp.write_eof()
            return resp
        conn = OpenWatch(request, watcher)
        self.watches.add(conn)
        resp: web.StreamResponse | None = None
        deadline = time.monotonic() + float(q.get("timeoutSeconds") or 1800)
        bookmarks = parse_bool(q.get("allowWatchBookmarks"))
        try:
            resp = await self._stream(request)
            for event in backlog:
                await self._send(resp, event)
            while (left := deadline - time.monotonic()) > 0:
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), min(left, self.bookmark_interval))
                except asyncio.TimeoutError:
                    item = None
                if item is DROP:
                    return resp
                if conn.stalled:
                    if request.transport is None or request.transport.is_closing():
                        return resp
                    continue
                if item is GONE:
                    message = f"too old resource version: {since} ({self.storage.compacted + 1})"
                    await self._send(resp, {"type": "ERROR", "object": status_body(410, "Expired", message)})
                    break
                if item is None:
                    if bookmarks:
                        bookmark = {"kind": res.kind, "apiVersion": res.api_version, "metadata": {"resourceVersion": str(self.storage.rv)}}
                        await self._send(resp, {"type": "BOOKMARK", "object": bookmark})
                    continue
                event = self.storage.translate(watcher, item)
                if event is not None:
                    await self._send(resp, event)
            await resp.write_eof()
            return resp
        except (ConnectionResetError, ConnectionError, RuntimeError):
            return resp or web.Response(status=499)
        finally:
            self.storage.watchers.discard(watcher)
            self.watches.discard(conn)

    @staticmethod
    async def _stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        return resp

    @staticmethod
    async def _send(resp: web.StreamResponse, event: dict) -> None:
        await resp.write(compact_json(event).encode() + b"\n")
