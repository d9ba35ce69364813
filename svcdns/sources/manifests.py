"""Kubernetes manifests on disk as a cluster source.

Files and directories (``*.yaml``, ``*.yml``, ``*.json``; directories are walked) are read
into slim records. Multi-document YAML, ``kind: List`` / ``*List`` and JSON (``kubectl get
-o json``) are accepted. The paths are polled; only files that changed are re-read, and
only the objects that changed reach the cluster state.

Bad input never costs good state: a document that does not parse or an object that does
not validate is reported (file, document, object, field) and the object's last good
version, if any, keeps being served.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import yaml

from ..model import KINDS, ObjectError, Record, Service
from ..store import ClusterState

log = logging.getLogger(__name__)

try:  # libyaml is ~10x faster on large manifest sets
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader

SUFFIXES = (".yaml", ".yml", ".json")
_DOC_SPLIT = re.compile(r"^---[ \t]*(?:#.*)?$", re.MULTILINE)

ObjKey = tuple[str, str, str]  # kind, namespace, name

# Sees every Service of the manifests at once, in file order (first file, first document
# first), and returns the Services to serve: the ClusterIP allocator (svcdns.ipam) fills
# in missing clusterIPs and drops services whose requested address it must refuse.
ServicesHook = Callable[[list[Service]], list[Service]]


@dataclass(frozen=True)
class ManifestError:
    """One rejected document or object, with everything a user needs to find it."""

    file: str
    document: int
    obj: str  # "Service default/web" or "" when unknown
    field: str
    message: str
    value: Any = None  # the offending raw value, when the object error named one

    def __str__(self) -> str:
        where = f"{self.file}: document {self.document}"
        if self.obj:
            where += f" ({self.obj})"
        return f"{where}: {self.field + ': ' if self.field else ''}{self.message}"


@dataclass
class _File:
    stamp: tuple[int, int]
    objects: dict[ObjKey, Record] = field(default_factory=dict)


def read_documents(path: str, text: str) -> Iterator[tuple[int, Any, str | None]]:
    """Yield (document number, parsed object or None, error or None) for one file's text.

    YAML documents are split before parsing, so a syntax error costs only its own document."""
    if path.endswith(".json"):
        try:
            for doc in stream_json(text):
                yield 1, doc, None
        except ValueError as e:
            yield 1, None, f"invalid JSON: {e}"
        return
    number = 0
    for chunk in _DOC_SPLIT.split(text):
        if not chunk.strip() or all(not ln.strip() or ln.lstrip().startswith("#") for ln in chunk.splitlines()):
            continue
        number += 1
        try:
            yield number, yaml.load(chunk, Loader=_Loader), None
        except yaml.YAMLError as e:
            yield number, None, f"invalid YAML: {' '.join(str(e).split())}"


_JSON_WS = re.compile(r"[ \t\n\r]*")


def stream_json(text: str) -> Iterator[Any]:
    """Decode a JSON document; a List's items are decoded and yielded one at a time.

    `kubectl get -o json` of a large cluster is one List: decoding it whole holds every
    raw object at once (~6x the file size) and leaves the heap at that high-water mark.
    Items yielded here carry ``kind`` (filled from the list's kind, as expand_items does)."""
    decode = json.JSONDecoder().raw_decode

    def ws(i: int) -> int:
        return _JSON_WS.match(text, i).end()

    pos = ws(0)
    if text[pos : pos + 1] != "{":
        yield json.loads(text)
        return
    head: dict[str, Any] = {}
    waiting: list[Any] = []  # items without a kind seen before the list's "kind" key
    pos = ws(pos + 1)
    while text[pos : pos + 1] != "}":
        key, pos = decode(text, pos)
        pos = ws(pos)
        if text[pos : pos + 1] != ":":
            raise ValueError(f"expected ':' at char {pos}")
        pos = ws(pos + 1)
        if key == "items" and text[pos : pos + 1] == "[":
            pos = ws(pos + 1)
            while text[pos : pos + 1] != "]":
                item, pos = decode(text, pos)
                if isinstance(item, dict) and "kind" not in item:
                    kind = head.get("kind")
                    if not isinstance(kind, str):
                        waiting.append(item)
                        item = None
                    elif kind.endswith("List") and kind != "List":
                        item["kind"] = kind[:-4]
                if item is not None:
                    yield item
                pos = ws(pos)
                if text[pos : pos + 1] == ",":
                    pos = ws(pos + 1)
                elif text[pos : pos + 1] != "]":
                    raise ValueError(f"expected ',' or ']' at char {pos}")
            head["items"] = True
            pos += 1
        else:
            head[key], pos = decode(text, pos)
        pos = ws(pos)
        if text[pos : pos + 1] == ",":
            pos = ws(pos + 1)
        elif text[pos : pos + 1] != "}":
            raise ValueError(f"expected ',' or '}}' at char {pos}")
    if "items" not in head:
        yield head
        return
    kind = head.get("kind")
    for item in waiting:
        if isinstance(kind, str) and kind.endswith("List") and kind != "List":
            item["kind"] = kind[:-4]
        yield item


def expand_items(doc: Any) -> Iterator[Any]:
    """A List (``kind: List`` or ``ServiceList`` from the API) yields its items; items of a
    typed list carry no ``kind`` on a real cluster, so it is filled in."""
    if isinstance(doc, dict) and isinstance(doc.get("kind"), str) and doc["kind"].endswith("List") and "items" in doc:
        item_kind = doc["kind"][:-4] or None
        for item in doc.get("items") or []:
            if isinstance(item, dict) and "kind" not in item and item_kind:
                item = {**item, "kind": item_kind}
            yield item
    else:
        yield doc


def _describe(obj: Any) -> tuple[str, ObjKey | None]:
    if not isinstance(obj, dict):
        return "", None
    kind = obj.get("kind")
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    name = meta.get("name")
    if not isinstance(kind, str) or not isinstance(name, str):
        return (kind if isinstance(kind, str) else ""), None
    ns = meta.get("namespace") if isinstance(meta.get("namespace"), str) else "default"
    if kind in ("Namespace", "Node"):
        return f"{kind} {name}", (kind, "", name)
    return f"{kind} {ns}/{name}", (kind, ns, name)


def parse_file(path: str, previous: dict[ObjKey, Record] | None = None) -> tuple[dict[ObjKey, Record], list[ManifestError]]:
    """Records of one file plus the errors found. An object that fails keeps its
    previous version; a document that fails to parse keeps all previous objects that
    no good document accounts for (we cannot know which of them it held)."""
    previous = previous or {}
    objects: dict[ObjKey, Record] = {}
    errors: list[ManifestError] = []
    broken_doc = False
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
    except OSError as e:
        return dict(previous), [ManifestError(path, 0, "", "", f"cannot read: {e.strerror}")]
    # Documents are decoded one at a time and dropped once turned into records.
    for number, doc, err in read_documents(path, text):
        if err:
            errors.append(ManifestError(path, number, "", "", err))
            broken_doc = True
            continue
        if doc is None:
            continue
        for obj in expand_items(doc):
            desc, key = _describe(obj)
            kind = obj.get("kind") if isinstance(obj, dict) else None
            if not isinstance(obj, dict) or not isinstance(kind, str):
                errors.append(ManifestError(path, number, desc, "kind", "missing: not a Kubernetes object"))
                continue
            if kind not in KINDS:
                log.info("%s: document %d: ignoring %s (svcdns does not use this kind)", path, number, desc or kind)
                continue
            try:
                rec = KINDS[kind].from_raw(obj)
            except ObjectError as e:
                errors.append(ManifestError(path, number, desc, e.field, e.message, e.value))
                if key is not None and key in previous:
                    objects[key] = previous[key]
                continue
            rkey = (kind, *rec.key)
            if rkey in objects:
                errors.append(ManifestError(path, number, desc, "metadata.name", "duplicate: an earlier document of this file defines it; keeping the first"))
                continue
            old = previous.get(rkey)
            # An unchanged object keeps its existing record, so a full re-read of a large
            # file never holds two copies of the cluster (and the store sees no change).
            objects[rkey] = old if old == rec else rec
    if broken_doc:
        for key, rec in previous.items():
            objects.setdefault(key, rec)
    return objects, errors


def list_files(paths: list[str]) -> list[str]:
    """Every manifest file under ``paths``, in a stable order (the order that decides
    which of two files defining the same object wins)."""
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                out.extend(os.path.join(root, f) for f in sorted(files) if f.endswith(SUFFIXES) and not f.startswith("."))
        else:
            out.append(p)
    return out


class ManifestSource:
    """Feeds a ClusterState from files; ``poll`` re-reads only what changed."""

    def __init__(self, paths: list[str], state: ClusterState, *, interval: float = 1.0, on_error=None, services_hook: ServicesHook | None = None):
        self.paths = list(paths)
        self.services_hook = services_hook
        self.state = state
        self.interval = interval
        self.errors: list[ManifestError] = []  # errors of the latest read of each file
        self._files: dict[str, _File] = {}
        self._order: dict[str, int] = {}
        self._where: dict[ObjKey, set[str]] = {}
        self._on_error = on_error

    def load(self) -> None:
        """First full read; marks the state synced (consumers compile once, here)."""
        self.poll()
        self.state.mark_synced()
        self.state.commit()

    def poll(self) -> bool:
        """Re-read changed, new and removed files; apply what changed. True if anything did."""
        files = list_files(self.paths)
        self._order = {f: i for i, f in enumerate(files)}
        touched: set[ObjKey] = set()
        for path in [p for p in self._files if p not in self._order]:
            gone = self._files.pop(path).objects
            self._index(path, gone, {})
            touched |= set(gone)
            self.errors = [e for e in self.errors if e.file != path]
        changed_errors: list[ManifestError] = []
        for path in files:
            try:
                st = os.stat(path)
                stamp = (st.st_mtime_ns, st.st_size)
            except OSError as e:
                stamp = (0, 0)
                if path not in self._files:
                    changed_errors.append(ManifestError(path, 0, "", "", f"cannot read: {e.strerror}"))
                    self._files[path] = _File(stamp)
                continue
            old = self._files.get(path)
            if old is not None and old.stamp == stamp:
                continue
            objects, errors = parse_file(path, old.objects if old else None)
            self._files[path] = _File(stamp, objects)
            self._index(path, old.objects if old else {}, objects)
            touched |= set(objects) | set(old.objects if old else ())
            self.errors = [e for e in self.errors if e.file != path] + errors
            changed_errors.extend(errors)
        for err in changed_errors:
            log.error("%s", err)
            if self._on_error:
                self._on_error(err)
        if not touched:
            return False
        self._apply(touched)
        return True

    def _index(self, path: str, old: dict[ObjKey, Record], new: dict[ObjKey, Record]) -> None:
        for key in old.keys() - new.keys():
            self._where[key].discard(path)
            if not self._where[key]:
                del self._where[key]
        for key in new.keys() - old.keys():
            self._where.setdefault(key, set()).add(path)

    def _apply(self, keys: set[ObjKey]) -> None:
        hooked = self.services_hook is not None
        for key in keys:
            holders = sorted(self._where.get(key, ()), key=self._order.__getitem__)
            kind = key[0]
            if len(holders) > 1:
                log.error("%s %s is defined in %s; using the one in %s", kind, "/".join(k for k in key[1:] if k), ", ".join(holders), holders[0])
            if hooked and kind == "Service":
                continue
            if not holders:
                self.state.remove(kind, key[1:])
                continue
            self.state.apply(self._files[holders[0]].objects[key])
        if hooked and any(key[0] == "Service" for key in keys):
            # Allocation is global (one service's address depends on the others), so the
            # hook sees them all; the state still only reports services that changed.
            self.state.replace_kind("Service", self.services_hook(self.services_in_file_order()))
        self.state.commit()

    def services_in_file_order(self) -> list[Service]:
        """Every Service the manifests define (the first definition of each), in the order
        the files list them: the order that decides who is older when creationTimestamps tie."""
        out: list[Service] = []
        seen: set[ObjKey] = set()
        for path in sorted(self._files, key=lambda p: self._order.get(p, len(self._order))):
            for key, rec in self._files[path].objects.items():
                if key[0] == "Service" and key not in seen:
                    seen.add(key)
                    out.append(rec)
        return out

    async def run(self) -> None:
        """Poll forever (changes are served within ``interval`` plus a read)."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.poll()
            except Exception:  # a source degrades, it does not take the server down
                log.exception("re-reading manifests failed; keeping the last good state")
