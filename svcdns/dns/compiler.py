"""Precompiled answers, kept in step with the cluster state.

For every service, the questions pods and people actually ask (its A/AAAA/SRV names in
each zone, named-port SRV names, headless endpoint names, PTRs of its addresses) are
answered once and packed into wire templates: the common shapes written directly
(:mod:`.direct`), the rest by the same :class:`Resolver` the slow path uses (tests hold
the two to the same bytes). A state change recompiles only the services it touched; the
query hot path is then a dictionary lookup.
"""

from __future__ import annotations

import logging
import struct
import time
from typing import Iterable

from ..model import Service
from ..store import ClusterState, Delta
from .direct import DROP, DirectAnswers
from .names import endpoint_hostname, reverse_name
from .records import NOERROR, T_A, T_AAAA, T_CNAME, T_PTR, T_SRV, Resolver
from .wire import pack_stored, question_key

log = logging.getLogger(__name__)

Key = tuple[str, str]


def decode_key(key: bytes) -> tuple[str, int]:
    """Inverse of question_key: (name, qtype)."""
    labels, i = [], 0
    while key[i]:
        n = key[i]
        labels.append(key[i + 1 : i + 1 + n].decode("latin-1"))
        i += 1 + n
    return ".".join(labels), struct.unpack(">H", key[i + 1 : i + 3])[0]


class BoundedDict(dict):
    """A dict that empties itself when full. Reads are plain ``dict.get`` (C speed: the
    hot path reads this on every table miss), where cachetools' LRUCache costs a
    Python-level call per read. The entries are emptied at every cluster change anyway;
    a working set larger than the bound is a flood of unique names, for which no
    eviction order helps. (Evicting the oldest key instead makes ``next(iter(d))`` walk
    the deleted slots at the front of the table: quadratic under a flood.)"""

    __slots__ = ("maxsize",)

    def __init__(self, maxsize: int):
        super().__init__()
        self.maxsize = maxsize

    def __setitem__(self, key, value) -> None:
        if len(self) >= self.maxsize and key not in self:
            self.clear()
        super().__setitem__(key, value)


class AnswerTable:
    """question key -> stored answer (see wire.compact), for every precompiled question.

    ``slow`` caches answers the slow path computed (NXDOMAINs for search-path misses,
    NODATA for namespaces, ...); it is bounded and emptied whenever the state changes.
    """

    def __init__(self, state: ClusterState, resolver: Resolver, *, recursion_available: bool = False, slow_cache_size: int = 50000):
        self.state = state
        self.resolver = resolver
        self.recursion_available = recursion_available
        self.answers: dict[bytes, bytes] = {}
        self.slow = BoundedDict(slow_cache_size)
        self.not_for_pods = BoundedDict(slow_cache_size)  # answers autopath may rewrite for pods
        self.last_change = 0.0
        self.compile_seconds = 0.0
        self._owned: dict[Key, tuple[bytes, ...]] = {}
        self.direct = DirectAnswers(resolver)
        state.subscribe(self.on_change)

    def on_change(self, delta: Delta) -> None:
        started = time.perf_counter()
        self.slow.clear()
        self.not_for_pods.clear()
        keys = set(delta.services)
        if delta.namespaces:
            keys |= {k for k in self.state.services if k[0] in delta.namespaces}
        for key in keys:
            self.compile_service(key)
        self.last_change = time.time()
        self.compile_seconds = time.perf_counter() - started
        if len(keys) > 100:
            log.info("compiled answers for %d services in %.3fs (%d answers)", len(keys), self.compile_seconds, len(self.answers))

    def compile_service(self, key: Key) -> None:
        svc = self.state.services.get(key)
        planned = None if svc is None else self.direct.plan(svc, self.recursion_available)
        if planned is None and svc is not None:
            planned = [(question_key(n, t, learn=True), n, t, None) for n, t in self.questions(svc)]
        wanted = {qkey: (name, qtype, stored) for qkey, name, qtype, stored in planned or ()}
        old = self._owned.pop(key, ())
        for qkey in old:
            if qkey not in wanted:
                self._compile(qkey, *decode_key(qkey))
        for qkey, (name, qtype, stored) in wanted.items():
            self._compile(qkey, name, qtype, stored)
        if wanted:
            self._owned[key] = tuple(wanted)

    def _compile(self, qkey: bytes, name: str, qtype: int, stored: bytes | None = None) -> None:
        """Store the answer to one question: ``stored`` as the direct path wrote it
        (DROP: no NOERROR answer), else what the resolver says, packed."""
        if stored is None:
            answer = self.resolver.resolve(name, qtype)
            # With forwarding on, an ExternalName's answer is completed upstream at query time.
            if answer is None or answer.rcode != NOERROR or (answer.chase and self.recursion_available):
                stored = DROP
            else:
                stored = pack_stored(name, qtype, answer, recursion_available=self.recursion_available, key=qkey)
        if stored:
            self.answers[qkey] = stored
        else:
            self.answers.pop(qkey, None)

    def questions(self, svc: Service) -> Iterable[tuple[str, int]]:
        """The questions precompiled for one service: what pods ask all day (A, AAAA,
        SRV of the service and its named ports, headless endpoint names, PTRs of its
        ClusterIPs and of the endpoints DNS names). Rarer shapes (short names people
        type, PTRs of pods behind a ClusterIP, A on a named-port name, ...) take the
        slow path, whose answers are cached until the next change. Each precompiled
        answer costs ~250 bytes; at 100,000 endpoints the choice is worth ~30 MB."""
        for zone in self.resolver.zones:
            fqdn = f"{svc.name}.{svc.namespace}.svc.{zone}"
            yield fqdn, T_A
            yield fqdn, T_AAAA
            if svc.headless or not any(p.name for p in svc.ports):  # else clients ask _port._proto names
                yield fqdn, T_SRV
            if svc.type == "ExternalName":
                yield fqdn, T_CNAME
                continue
            for p in svc.ports:
                if p.name:
                    yield f"_{p.name}._{p.protocol.lower()}.{fqdn}", T_SRV
            if svc.headless:
                for host in self._endpoint_names(svc):
                    yield f"{host}.{fqdn}", T_A
        for ip in svc.cluster_ips:
            yield reverse_name(ip), T_PTR
        if svc.headless:
            for sl in self.state.service_slices(svc.key):
                if sl.address_type != "FQDN":
                    for ep in sl.endpoints:
                        for addr in ep.addresses:
                            yield reverse_name(addr), T_PTR

    def _endpoint_names(self, svc: Service) -> set[str]:
        pod_names = self.resolver.cfg.endpoint_pod_names
        return {
            endpoint_hostname(a, ep.hostname, ep.target_name, pod_names)
            for sl in self.state.service_slices(svc.key)
            if sl.address_type != "FQDN"
            for ep in sl.endpoints
            for a in ep.addresses
        }
