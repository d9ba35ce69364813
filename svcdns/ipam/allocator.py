"""The allocator: who gets which address, and why a request is refused (see the
package docstring for the rules)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Sequence

from ..model import Service, ip_family
from .ranges import FLAG, KUBERNETES, STATIC_MIN, ServiceCIDR, family_name

log = logging.getLogger("svcdns.ipam")

Key = tuple[str, str]


# --- results -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Assignment:
    """One address held by a service. ``mode`` is static (written in the manifest) or
    dynamic (chosen by svcdns), as KEP-3070 names them."""

    key: Key
    family: int
    address: str
    mode: str
    index: int = -1  # position in its range (saves re-parsing the address on reload)

    def __str__(self) -> str:
        return f"{self.key[0]}/{self.key[1]} {family_name(self.family)} {self.address} {self.mode}"


@dataclass(frozen=True, slots=True)
class AllocationError:
    """A service that got no address (or not the one it asked for)."""

    key: Key
    address: str  # "" when the problem is not one address
    reason: str

    def __str__(self) -> str:
        return f"{self.key[0]}/{self.key[1]}: {self.address or '-'}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Usage:
    cidr: ServiceCIDR
    static_used: int
    dynamic_used: int
    reserved_held: bool  # index 0 is free, held back for default/kubernetes

    def __str__(self) -> str:
        c = self.cidr
        used = self.static_used + self.dynamic_used
        text = f"{c} ({family_name(c.family)}): {used} of {c.size} addresses allocated"
        if c.static_size:
            text += f"; static band {c.address(0)}-{c.address(c.static_size - 1)}: {self.static_used} of {c.static_size}"
        else:
            text += f"; no static band (ranges of {STATIC_MIN} addresses or fewer have none)"
        start = c.static_size
        text += f"; dynamic band {c.address(start)}-{c.address(c.size - 1)}: {self.dynamic_used} of {c.size - start}"
        if self.reserved_held:
            text += f"; {c.address(0)} held back for default/kubernetes"
        return text


@dataclass
class Allocation:
    """The outcome for one set of services."""

    cidrs: tuple[ServiceCIDR, ...]
    services: list[Service]  # to serve, input order: clusterIPs filled in, refused ones left out
    assignments: list[Assignment]  # sorted by range, then address
    errors: list[AllocationError]
    kept: list[Key]  # refused now, serving their previous version instead
    inputs: dict[Key, Service] = field(default_factory=dict)  # the services as given, for reuse on reload

    def usage(self) -> list[Usage]:
        out = []
        for c in self.cidrs:
            static = dynamic = 0
            reserved_held = True
            for a in self.assignments:
                if a.family != c.family:
                    continue
                reserved_held = reserved_held and a.index != 0
                if c.band(a.index) == "static":
                    static += 1
                else:
                    dynamic += 1
            out.append(Usage(c, static, dynamic, reserved_held))
        return out


# --- the allocator ---------------------------------------------------------------------


def wanted_families(svc: Service, configured: Sequence[int]) -> tuple[tuple[int, ...], str]:
    """The families a service gets addresses in, primary first, or ((), why not).
    ipFamilyPolicy defaults as the API server defaults it: RequireDualStack when two
    clusterIPs or two ipFamilies are given, else SingleStack."""
    requested = tuple(ip_family(ip) for ip in svc.cluster_ips)
    asked = tuple(4 if f == "IPv4" else 6 for f in svc.ip_families)
    if asked and requested and asked[: len(requested)] != requested[: len(asked)]:
        return (), f"spec.ipFamilies {list(svc.ip_families)} does not match the families of spec.clusterIPs"
    policy = svc.ip_family_policy or ("RequireDualStack" if len(requested) == 2 or len(asked) == 2 else "SingleStack")
    order = tuple(dict.fromkeys(requested + asked + tuple(configured)))
    if policy == "SingleStack":
        if len(requested) > 1 or len(asked) > 1:
            return (), "ipFamilyPolicy SingleStack allows addresses of one IP family only"
        families = order[:1]
    elif policy == "PreferDualStack":
        families = tuple(f for f in order if f in configured or f in requested)[:2]
    else:
        if len(configured) < 2:
            return (), f"ipFamilyPolicy RequireDualStack needs an IPv4 and an IPv6 {FLAG}"
        families = order[:2]
    for f in families:
        if f not in configured and f not in requested:
            return (), f"no {family_name(f)} {FLAG} is configured"
    return families, ""


def _start(key: Key, family: int, span: int) -> int:
    digest = hashlib.blake2b(f"{key[0]}/{key[1]}/{family}".encode(), digest_size=16).digest()
    return int.from_bytes(digest, "big") % span


class _Run:
    """One allocation pass. Phases, in order of precedence:
    1. requested addresses, oldest service first (they were there first);
    2. refused services fall back to the version served before, if its addresses are free;
    3. dynamic addresses a running server handed out before stay where they are;
    4. the rest are chosen by hash, upper band first."""

    def __init__(self, services: Sequence[Service], cidrs: tuple[ServiceCIDR, ...], previous: Allocation | None):
        self.services = services
        self.cidrs = cidrs
        self.configured = tuple(c.family for c in cidrs)
        self.by_family = {c.family: c for c in cidrs}
        self.previous = previous
        self.held: dict[int, dict[int, Key]] = {c.family: {} for c in cidrs}  # family -> index -> holder
        self.got: dict[Key, dict[int, tuple[int, str]]] = {}  # key -> family -> (index, mode)
        self.families: dict[Key, tuple[int, ...]] = {}
        self.refused: set[Key] = set()
        self.kept: dict[Key, Service] = {}
        self.errors: list[AllocationError] = []
        order = {svc.key: i for i, svc in enumerate(services)}
        # A service with a creationTimestamp existed in a cluster; one without is newer.
        self.age = lambda s: ((0, s.creation) if s.creation else (1, ""), order[s.key])
        self.by_key = {s.key: s for s in services}

    # --- the pool ------------------------------------------------------------------------

    def check(self, key: Key, ip: str) -> tuple[int, str]:
        """(index, "") if ``key`` may take ``ip`` now, else (-1, reason)."""
        family = ip_family(ip)
        cidr = self.by_family.get(family)
        if cidr is None:
            return -1, f"no {family_name(family)} {FLAG} is configured"
        index, why = cidr.locate(ip)
        if why:
            return -1, why
        return self.check_index(key, family, index)

    def check_index(self, key: Key, family: int, index: int) -> tuple[int, str]:
        cidr = self.by_family[family]
        if index == 0 and key != KUBERNETES:
            return -1, f"reserved for default/kubernetes (the first address of {cidr})"
        holder = self.held[family].get(index)
        if holder is not None and holder != key:
            return -1, f"already allocated to {holder[0]}/{holder[1]}{self._why_holder_wins(holder, key)}"
        return index, ""

    def _why_holder_wins(self, holder: Key, key: Key) -> str:
        """Say why the other service keeps the address, so the user knows which to fix."""
        a, b = self.by_key.get(holder), self.by_key.get(key)
        if a is None or b is None or holder == KUBERNETES:
            return ""
        if a.creation and b.creation and a.creation != b.creation:
            return f", created earlier ({a.creation})"
        if a.creation and not b.creation:
            return f", which has a creationTimestamp ({a.creation}) and this one none"
        return ", defined earlier in the manifests"

    def take(self, key: Key, family: int, index: int, mode: str) -> None:
        self.held[family][index] = key
        self.got.setdefault(key, {})[family] = (index, mode)

    def release(self, key: Key) -> None:
        for family, (index, _) in self.got.pop(key, {}).items():
            self.held[family].pop(index, None)

    def next_free(self, key: Key, family: int) -> int:
        """Hash-chosen free index: the dynamic band first, then the static band; -1 if full."""
        cidr, held = self.by_family[family], self.held[family]
        if key == KUBERNETES and 0 not in held:
            return 0
        for lo, hi in ((cidr.dynamic_start, cidr.size), (1, cidr.static_size)):
            span = hi - lo
            if span <= 0:
                continue
            start = _start(key, family, span)
            for i in range(span):
                index = lo + (start + i) % span
                if index not in held:
                    return index
        return -1

    # --- the phases ----------------------------------------------------------------------

    def requested(self) -> None:
        candidates = [s for s in self.services if not s.headless and s.type != "ExternalName"]
        for svc in sorted(candidates, key=lambda s: (s.key != KUBERNETES, self.age(s))):
            fams, why = wanted_families(svc, self.configured)
            if why:
                self.refuse(svc.key, [AllocationError(svc.key, ",".join(svc.cluster_ips), why)])
                continue
            checks = [(ip, *self.check(svc.key, ip)) for ip in svc.cluster_ips]
            problems = [AllocationError(svc.key, ip, reason) for ip, _, reason in checks if reason]
            if problems:
                self.refuse(svc.key, problems)
                continue
            self.families[svc.key] = fams
            self.got[svc.key] = {}
            for ip, index, _ in checks:
                self.take(svc.key, ip_family(ip), index, "static")

    def refuse(self, key: Key, problems: list[AllocationError]) -> None:
        self.errors.extend(problems)
        self.refused.add(key)
        self.release(key)
        self.families.pop(key, None)

    def keep_previous(self) -> None:
        if self.previous is None:
            return
        before = {s.key: s for s in self.previous.services}
        modes = {(a.key, a.family): a.mode for a in self.previous.assignments}
        for key in sorted(self.refused, key=lambda k: self.age(self.by_key[k])):
            old = before.get(key)
            if old is None or not old.cluster_ips:
                continue
            checks = [self.check(key, ip) for ip in old.cluster_ips]
            if any(reason for _, reason in checks):
                continue
            self.got[key] = {}
            for ip, (index, _) in zip(old.cluster_ips, checks):
                self.take(key, ip_family(ip), index, modes.get((key, ip_family(ip)), "static"))
            self.kept[key] = old

    def pending(self) -> list[tuple[Service, int]]:
        return [
            (svc, fam)
            for svc in sorted((self.by_key[k] for k in self.families), key=self.age)
            for fam in self.families[svc.key]
            if fam not in self.got.get(svc.key, {})
        ]

    def restore_dynamic(self) -> None:
        if self.previous is None:
            return
        same = self.previous.cidrs == self.cidrs
        before = {(a.key, a.family): a for a in self.previous.assignments if a.mode == "dynamic"}
        for svc, family in self.pending():
            prev = before.get((svc.key, family))
            if prev is None:
                continue
            index, reason = self.check_index(svc.key, family, prev.index) if same else self.check(svc.key, prev.address)
            if not reason:
                self.take(svc.key, family, index, "dynamic")

    def fill(self) -> None:
        for svc, family in self.pending():
            if svc.key in self.refused:
                continue
            index = self.next_free(svc.key, family)
            if index < 0:
                cidr = self.by_family[family]
                self.refuse(svc.key, [AllocationError(svc.key, "", f"{FLAG} {cidr} is full ({cidr.size - 1} addresses besides the reserved one)")])
                continue
            self.take(svc.key, family, index, "dynamic")

    def result(self) -> Allocation:
        rank = {f: i for i, f in enumerate(self.configured)}
        assignments = sorted(
            (Assignment(key, fam, self.by_family[fam].address(index), mode, index) for key, per in self.got.items() for fam, (index, mode) in per.items()),
            key=lambda a: (rank[a.family], a.index),
        )
        address = {(a.key, a.family): a.address for a in assignments}
        # Reuse last reload's record when neither the service nor its addresses changed:
        # cheaper than a new one, and the state then sees nothing to update.
        prev_in = self.previous.inputs if self.previous else {}
        prev_out = {s.key: s for s in self.previous.services} if self.previous else {}
        served = []
        for svc in self.services:
            key = svc.key
            if key in self.kept:
                served.append(self.kept[key])
            elif key in self.families:
                ips = tuple(address[key, f] for f in self.families[key])
                if ips == svc.cluster_ips:
                    served.append(svc)
                elif prev_in.get(key) is svc and key in prev_out and prev_out[key].cluster_ips == ips:
                    served.append(prev_out[key])
                else:
                    served.append(replace(svc, cluster_ips=ips))
            elif key not in self.refused:
                served.append(svc)  # headless, ExternalName
        return Allocation(self.cidrs, served, assignments, self.errors, list(self.kept), self.by_key)


def allocate(services: Sequence[Service], cidrs: Sequence[ServiceCIDR], previous: Allocation | None = None) -> Allocation:
    """Give every service its ClusterIPs. ``services`` come in manifest order (the
    tie-breaker for age); ``previous`` is the last allocation of a running server, whose
    dynamic addresses stay put and whose served versions stand in for refused ones."""
    run = _Run(services, tuple(cidrs), previous)
    run.requested()
    run.keep_previous()
    run.restore_dynamic()
    run.fill()
    return run.result()


class ClusterIPAllocator:
    """The allocator of a running source: remembers the last allocation so addresses stay
    put across reloads, and logs each problem once. Call it with every Service (the
    ManifestSource ``services_hook``); it returns the Services to serve."""

    def __init__(self, cidrs: Iterable[ServiceCIDR], on_error: Callable[[AllocationError], None] | None = None):
        self.cidrs = tuple(cidrs)
        self.last: Allocation | None = None
        self._reported: set[str] = set()
        self._on_error = on_error

    def __call__(self, services: list[Service]) -> list[Service]:
        alloc = allocate(services, self.cidrs, self.last)
        messages = {str(e) for e in alloc.errors}
        for err in alloc.errors:
            if str(err) not in self._reported:
                if err.key in alloc.kept:
                    log.error("%s; serving its previous version until this is fixed", err)
                else:
                    log.error("%s; service not served", err)
                if self._on_error:
                    self._on_error(err)
        self._reported = messages
        if self.last is not None:
            before = {(a.key, a.family): a.address for a in self.last.assignments}
            for a in alloc.assignments:
                old = before.get((a.key, a.family))
                if old is not None and old != a.address:
                    log.warning("%s/%s: ClusterIP moved from %s to %s", a.key[0], a.key[1], old, a.address)
        self.last = alloc
        return alloc.services
