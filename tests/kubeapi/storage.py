"""The object store behind the test API server: what etcd plus the watch cache are to
kube-apiserver.

One global resourceVersion counter; every write stores a fresh object stamped with the
new resourceVersion and appends an event to the history. Watches replay the history
after their resourceVersion and then follow new events; history older than the last
compaction is gone (-> 410). LIST pages are cut from a snapshot taken by the first
page, so a paginated LIST is consistent at one resourceVersion, as it is from etcd.
Stored objects are never mutated, so snapshots and history share them freely.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import functools
import itertools
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


@dataclass(frozen=True)
class Resource:
    kind: str
    api_version: str
    plural: str
    namespaced: bool


RESOURCES = {
    r.plural: r
    for r in (
        Resource("Service", "v1", "services", True),
        Resource("Endpoints", "v1", "endpoints", True),
        Resource("Pod", "v1", "pods", True),
        Resource("Namespace", "v1", "namespaces", False),
        Resource("Node", "v1", "nodes", False),
        Resource("EndpointSlice", "discovery.k8s.io/v1", "endpointslices", True),
    )
}
BY_KIND = {r.kind: r for r in RESOURCES.values()}

Key = tuple[str, str]


compact_json = functools.partial(json.dumps, separators=(",", ":"))  # as kube-apiserver writes JSON


class Expired(Exception):
    """A resourceVersion or continue token older than the history kept (HTTP 410)."""


class BadRequest(Exception):
    """A malformed selector or parameter (HTTP 400)."""


@dataclass
class Event:
    rv: int
    plural: str
    type: str  # ADDED | MODIFIED | DELETED
    obj: dict
    old: dict | None  # previous version (MODIFIED), for selector transitions


@dataclass(eq=False)
class Watcher:
    plural: str
    namespace: str | None
    match: "Selector"
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)


# --- selectors ----------------------------------------------------------------------

_REQ = re.compile(r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9./_-]+)\s*(?:(?P<op>==|=|!=)\s*(?P<val>[A-Za-z0-9._-]*)"
                  r"|\s+(?P<set>in|notin)\s*\((?P<vals>[^)]*)\))?\s*$")


class Selector:
    """labelSelector + fieldSelector (metadata.name / metadata.namespace), as the API
    server evaluates them."""

    def __init__(self, labels: str | None, fields: str | None):
        self.label_reqs = [self._parse(p) for p in _split(labels)]
        self.field_reqs = []
        for part in _split(fields):
            m = re.match(r"^\s*(metadata\.name|metadata\.namespace)\s*(==|=|!=)\s*([^,]*)\s*$", part)
            if not m:
                raise BadRequest(f"unable to parse requirement: field selector {part!r} is not supported")
            self.field_reqs.append((m.group(1).split(".")[1], m.group(2) != "!=", m.group(3)))

    @staticmethod
    def _parse(part: str):
        m = _REQ.match(part)
        if not m or (m.group("neg") and (m.group("op") or m.group("set"))):
            raise BadRequest(f"unable to parse requirement: {part!r}")
        if m.group("neg"):
            return (m.group("key"), "!exists", ())
        if m.group("op"):
            return (m.group("key"), "!=" if m.group("op") == "!=" else "=", (m.group("val"),))
        if m.group("set"):
            return (m.group("key"), m.group("set"), tuple(v.strip() for v in m.group("vals").split(",")))
        return (m.group("key"), "exists", ())

    def __call__(self, obj: dict | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        for key, op, vals in self.label_reqs:
            have = labels.get(key)
            ok = {
                "exists": have is not None,
                "!exists": have is None,
                "=": have == vals[0],
                "!=": have != vals[0],
                "in": have in vals,
                "notin": have not in vals,
            }[op]
            if not ok:
                return False
        return all((meta.get(f, "") == v) == eq for f, eq, v in self.field_reqs)


def _split(selector: str | None) -> list[str]:
    if not selector:
        return []
    return [p for p in re.split(r",(?![^()]*\))", selector) if p.strip()]


# --- the store ----------------------------------------------------------------------


class Storage:
    def __init__(self) -> None:
        self.rv = 100
        self.objects: dict[str, dict[Key, dict]] = {p: {} for p in RESOURCES}
        self.history: list[Event] = []
        self.compacted = 0  # events with rv <= compacted are gone
        self.watchers: set[Watcher] = set()
        self._snapshots: dict[int, tuple[int, list[dict]]] = {}  # continue id -> (rv, selected objects)
        self._snapshot_ids = itertools.count(1)
        self._encoded: dict[int, tuple[dict, bytes]] = {}  # id(stored object) -> (it, its JSON)

    # writes

    def put(self, obj: dict) -> dict:
        """Create or replace (kubectl apply, minus the merge)."""
        res = BY_KIND[obj["kind"]]
        key = self._key(res, obj)
        old = self.objects[res.plural].get(key)
        new = copy.deepcopy(obj)
        meta = new.setdefault("metadata", {})
        if res.namespaced:
            meta.setdefault("namespace", "default")
        else:
            meta.pop("namespace", None)
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        meta["uid"] = (old or {}).get("metadata", {}).get("uid") or str(uuid.uuid4())
        meta["creationTimestamp"] = (old or {}).get("metadata", {}).get("creationTimestamp") or _now()
        new["apiVersion"] = res.api_version
        self.objects[res.plural][key] = new
        self._emit(Event(self.rv, res.plural, "MODIFIED" if old else "ADDED", new, old))
        return new

    def delete(self, kind: str, namespace: str, name: str) -> dict | None:
        res = BY_KIND[kind]
        key = (namespace if res.namespaced else "", name)
        old = self.objects[res.plural].pop(key, None)
        if old is None:
            return None
        self.rv += 1
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self.rv)
        self._emit(Event(self.rv, res.plural, "DELETED", gone, old))
        return gone

    def compact(self) -> None:
        """Forget all history: every resourceVersion handed out so far is too old."""
        self.compacted = self.rv
        self.history.clear()
        self._snapshots.clear()

    def _emit(self, event: Event) -> None:
        self.history.append(event)
        for w in list(self.watchers):
            w.queue.put_nowait(event)

    @staticmethod
    def _key(res: Resource, obj: dict) -> Key:
        meta = obj.get("metadata") or {}
        return (meta.get("namespace") or "default" if res.namespaced else "", meta["name"])

    # reads

    def list(self, plural: str, namespace: str | None, match: Selector, limit: int, token: str | None) -> dict:
        """One LIST page: {"metadata": {...}, "items": [...]}, items without kind/apiVersion."""
        meta, rows = self._page(plural, namespace, match, limit, token)
        return {"metadata": meta, "items": [{k: v for k, v in obj.items() if k not in ("kind", "apiVersion")} for obj in rows]}

    def list_json(self, plural: str, namespace: str | None, match: Selector, limit: int, token: str | None, kind: str, api_version: str) -> bytes:
        """The same page as :meth:`list`, as the response body. Each object's JSON is
        encoded once per version and reused by every LIST (kube-apiserver keeps encoded
        objects in its watch cache too): encoding 37 MB per relist made this server,
        not the client under test, the slow side of the 10,000-service benchmark."""
        meta, rows = self._page(plural, namespace, match, limit, token)
        head = compact_json({"kind": kind, "apiVersion": api_version, "metadata": meta})[:-1].encode()
        return head + b',"items":[' + b",".join(map(self._item_json, rows)) + b"]}"

    def _item_json(self, obj: dict) -> bytes:
        cached = self._encoded.get(id(obj))
        if cached is not None and cached[0] is obj:
            return cached[1]
        if len(self._encoded) > 4 * sum(map(len, self.objects.values())) + 1000:
            self._encoded.clear()  # old versions' encodings
        data = compact_json({k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}).encode()
        self._encoded[id(obj)] = (obj, data)  # holding obj keeps its id from being reused
        return data

    def _page(self, plural: str, namespace: str | None, match: Selector, limit: int, token: str | None) -> tuple[dict, list[dict]]:
        if token:
            try:
                state = json.loads(base64.b64decode(token))
                snap_id, start = int(state["id"]), int(state["start"])
            except (ValueError, KeyError, TypeError):
                raise BadRequest("continue key is not valid") from None
            if snap_id not in self._snapshots:
                raise Expired("The provided continue parameter is too old to display a consistent list result. "
                              "You can start a new list without the continue parameter.")
            rv, rows = self._snapshots[snap_id]
        else:
            # The snapshot holds the objects this LIST selects, so that every page is
            # full (as kube-apiserver fills pages) and remainingItemCount is a subtraction.
            rv = self.rv
            rows = [obj for (ns, _), obj in sorted(self.objects[plural].items())
                    if (namespace is None or ns == namespace) and match(obj)]
            snap_id, start = next(self._snapshot_ids), 0
            self._snapshots[snap_id] = (rv, rows)
        end = min(len(rows), start + limit) if limit else len(rows)
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if end < len(rows):
            token = {"v": "meta.k8s.io/v1", "id": snap_id, "start": end, "rv": rv}
            meta["continue"] = base64.b64encode(json.dumps(token).encode()).decode()
            meta["remainingItemCount"] = len(rows) - end
        else:
            self._snapshots.pop(snap_id, None)
        return meta, rows[start:end]

    def subscribe(self, plural: str, namespace: str | None, match: Selector, since: int | None) -> tuple[Watcher, list[dict]]:
        """Register a watcher and return the events it must see first: the history after
        ``since``, or (no resourceVersion) ADDED for every current object."""
        if since is not None and since < self.compacted:
            raise Expired(f"too old resource version: {since} ({self.compacted + 1})")
        w = Watcher(plural, namespace, match)
        self.watchers.add(w)
        if since is None:
            backlog = [{"type": "ADDED", "object": o} for (ns, _), o in sorted(self.objects[plural].items())
                       if (namespace is None or ns == namespace) and match(o)]
        else:
            backlog = [e for ev in self.history if ev.rv > since and (e := self.translate(w, ev))]
        return w, backlog

    def translate(self, w: Watcher, ev: Event) -> dict | None:
        """The event as this watcher sees it: a MODIFIED that moves an object into (out
        of) its selector is an ADDED (DELETED), as from the API server's watch cache."""
        if ev.plural != w.plural:
            return None
        ns = (ev.obj.get("metadata") or {}).get("namespace", "")
        if w.namespace is not None and ns != w.namespace:
            return None
        now = w.match(ev.obj) if ev.type != "DELETED" else False
        before = w.match(ev.old) if ev.type != "ADDED" else False
        if ev.type == "DELETED":
            return {"type": "DELETED", "object": ev.obj} if before else None
        if now and before:
            return {"type": "MODIFIED", "object": ev.obj}
        if now:
            return {"type": "ADDED", "object": ev.obj}
        if before:
            return {"type": "DELETED", "object": ev.obj}
        return None


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
