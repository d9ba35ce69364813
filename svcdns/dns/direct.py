"""Wire answers for the commonest questions, written straight from a service.

The general path compiles a question the way the slow path answers it: the Resolver
parses the name, finds the service, builds an Answer, and wire's writer packs it with
name compression. That is ~17 µs an answer: 1.5 s of a 10,000-service start. Nearly
every precompiled answer has one of a few fixed shapes, written here without the
detour: a ClusterIP service's A/AAAA (its addresses, or NODATA with the zone's SOA),
SRV (one per port, the service name written out in full as RFC 2782 asks, its
addresses as glue) and PTR; a headless service's A/AAAA/SRV over its ready endpoints,
its endpoint names and their PTRs. Owner names are pointers to the question, exactly
where wire's writer would point.

What this module does not know answers ``None`` and takes the general path, question
by question (an address several services share, a hostname that is not one label, an
unusual zone set-up) or for the whole service (ExternalName, a missing namespace).
tests/dns/test_direct.py checks, for random services, that both paths give the same
bytes and that ``DROP`` is said exactly where the resolver answers no NOERROR.
"""

from __future__ import annotations

import socket
import struct

from ..model import Service
from .names import endpoint_hostname, reverse_name
from .records import RR, T_A, T_AAAA, T_PTR, T_SOA, T_SRV, Resolver
from .wire import CLASS_IN, encode_label, encode_name

# The resolver does not answer NOERROR: nothing is precompiled, the slow path answers.
DROP = b""

# key (question bytes), name, qtype, stored answer (None: ask the general path)
Planned = tuple[bytes, str, int, "bytes | None"]

_TAIL = {t: struct.pack(">HH", t, CLASS_IN) for t in (T_A, T_AAAA, T_SRV, T_PTR)}
_AT_QUESTION = b"\xc0\x0c"  # a pointer to the question name (offset 12)
_A_RR = struct.pack(">HH", T_A, CLASS_IN)
_AAAA_RR = struct.pack(">HH", T_AAAA, CLASS_IN)
_SRV_RR = struct.pack(">HH", T_SRV, CLASS_IN)
_PTR_RR = struct.pack(">HH", T_PTR, CLASS_IN)
_MAX_POINTER = 0x3FFF  # past this offset wire's writer stops recording names to point at
_pack_counts = struct.Struct(">HHHH").pack  # QDCOUNT (always 1), ANCOUNT, NSCOUNT, ARCOUNT
_pack_srv = struct.Struct(">HHIHHHH").pack  # TYPE, CLASS, TTL, RDLENGTH, priority, weight, port


def _pointer(offset: int) -> bytes:
    return (0xC000 | offset).to_bytes(2, "big")


def _address_rdata(ip: str) -> bytes:
    """RDLENGTH + RDATA of an A or AAAA record."""
    if ":" in ip:
        return b"\x00\x10" + socket.inet_pton(socket.AF_INET6, ip)
    return b"\x00\x04" + socket.inet_pton(socket.AF_INET, ip)


def _one_label(label: str) -> bool:
    """A name part the question parser reads as one label of its own."""
    return bool(label) and "." not in label and not label.startswith("_")


class DirectAnswers:
    """Plans the precompiled questions of one service and writes the answers it can."""

    def __init__(self, resolver: Resolver):
        self.resolver = resolver
        self.state = resolver.state
        zones = resolver.zones
        # A zone inside another zone makes some of the outer zone's names the inner
        # zone's: checked name by name then. A zone under .arpa makes reverse names
        # zone names (and PTR targets compress against the question): PTRs take the
        # general path.
        self._nested = any(a != b and a.endswith("." + b) for a in zones for b in zones)
        self._ptr = not any(z == "arpa" or z.endswith(".arpa") for z in zones)
        self._zone_wire = {z: encode_name(z, learn=True) for z in zones}
        self._svc_wire = {z: encode_label("svc") + self._zone_wire[z] for z in zones}
        self._nodata: dict[tuple[RR, int], bytes] = {}

    def plan(self, svc: Service, recursion_available: bool) -> list[Planned] | None:
        """Every question ``AnswerTable.questions(svc)`` lists, each with its stored
        answer where this module writes it; None: the general path compiles them all."""
        if svc.type == "ExternalName" or not _one_label(svc.name) or not _one_label(svc.namespace):
            return None
        if not self.state.namespace_exists(svc.namespace):
            return None  # every name is NXDOMAIN: nothing to precompile, quickly said by the resolver
        head = bytes((0x85, 0x80 if recursion_available else 0))  # QR AA RD, RA, NOERROR
        if svc.headless:
            return _Headless(self, svc, head).plan()
        if not svc.cluster_ips or not svc.ports:
            return None
        return self._cluster_ip(svc, head)

    # --- pieces shared by both shapes ---------------------------------------------------

    def service_name(self, svc: Service, zone: str) -> tuple[str, bytes | None]:
        """The service's name in ``zone`` and its wire form (None where another
        configured zone would claim the name: its questions take the general path)."""
        name = f"{svc.name}.{svc.namespace}.svc.{zone}"
        if self._nested and self.resolver.zone_of(name) != zone:
            return name, None
        return name, encode_label(svc.name) + encode_label(svc.namespace) + self._svc_wire[zone]

    def nodata(self, head: bytes, key: bytes, zone: str) -> bytes:
        """NOERROR without records: the zone's SOA in the authority section, its names
        compressed against the zone at the end of the question."""
        soa = self.resolver.soa(zone)
        at = 12 + len(key) - 4 - len(self._zone_wire[zone])
        tail = self._nodata.get((soa, at))
        if tail is None:
            ptr = _pointer(at)
            mname, rname, *numbers = soa.data
            rdata = self._before(mname, zone) + ptr + self._before(rname, zone) + ptr + struct.pack(">IIIII", *numbers)
            tail = ptr + struct.pack(">HHIH", T_SOA, CLASS_IN, soa.ttl, len(rdata)) + rdata
            if len(self._nodata) > 4096:  # one entry per zone and question length: bounded in practice
                self._nodata.clear()
            self._nodata[(soa, at)] = tail
        return head + _pack_counts(1, 0, 1, 0) + tail

    @staticmethod
    def _before(name: str, zone: str) -> bytes:
        """The labels of ``name`` in front of ``zone`` (an SOA name under its zone)."""
        if not name.endswith("." + zone):
            raise ValueError(f"SOA name {name!r} is not under its zone {zone!r}")
        return b"".join(encode_label(label) for label in name[: -len(zone) - 1].split("."))

    def addresses(self, head: bytes, key: bytes, zone: str, ips: list[str], ttl: bytes) -> bytes:
        """An A or AAAA answer: ``ips`` (deduplicated, in order) owned by the question."""
        if not ips:
            return self.nodata(head, key, zone)
        rtype = _AAAA_RR if ":" in ips[0] else _A_RR
        records = [_AT_QUESTION + rtype + ttl + _address_rdata(ip) for ip in dict.fromkeys(ips)]
        return head + _pack_counts(1, len(records), 0, 0) + b"".join(records)

    def srv(self, head: bytes, key: bytes, zone: str, targets: list[tuple[str, int, str, bytes]], ttl: int,
            known: dict[str, int]) -> bytes | None:
        """An SRV answer as Resolver._srv builds it and wire's writer packs it: one
        record per (target name, port), the target written out in full; glue
        addresses owned by a pointer to where their name was first written (``known``:
        names already in the question, with their offsets). ``targets``: (address,
        port or -1 for none, target name, its wire form); none at all is NXDOMAIN."""
        if not targets:
            return DROP
        weight = max(1, 100 // len(targets))
        ttl4 = struct.pack(">I", ttl)
        records: list[bytes] = []
        glue: list[bytes] = []
        written = dict(known)
        seen_srv: set[tuple[str, int]] = set()
        seen_glue: set[tuple[str, str]] = set()
        at = 12 + len(key)
        for addr, port, domain, domain_wire in targets:
            if port == -1:
                continue
            if (domain, port) not in seen_srv:
                seen_srv.add((domain, port))
                if domain not in written:
                    if at + 18 >= _MAX_POINTER:
                        return None  # the writer stops recording names to point at there: its business
                    written[domain] = at + 18  # after owner, TYPE, CLASS, TTL, RDLENGTH, priority, weight, port
                record = _AT_QUESTION + _pack_srv(T_SRV, CLASS_IN, ttl, 6 + len(domain_wire), 0, weight, port) + domain_wire
                records.append(record)
                at += len(record)
            if (domain, addr) not in seen_glue:
                seen_glue.add((domain, addr))
                glue.append(_pointer(written[domain]) + (_AAAA_RR if ":" in addr else _A_RR) + ttl4 + _address_rdata(addr))
        if not records:
            return self.nodata(head, key, zone)
        return head + _pack_counts(1, len(records), 0, len(glue)) + b"".join(records) + b"".join(glue)

    def ptr(self, head: bytes, target_wire: bytes, ttl: bytes) -> bytes:
        """A PTR answer with one name (nothing in a reverse name to compress it against)."""
        return head + _pack_counts(1, 1, 0, 0) + _AT_QUESTION + _PTR_RR + ttl + len(target_wire).to_bytes(2, "big") + target_wire

    # --- a service with ClusterIPs ------------------------------------------------------

    def _cluster_ip(self, svc: Service, head: bytes) -> list[Planned]:
        r = self.resolver
        ttl = r.cfg.ttl
        ttl4 = struct.pack(">I", ttl)
        v4 = [ip for ip in svc.cluster_ips if ":" not in ip]
        v6 = [ip for ip in svc.cluster_ips if ":" in ip]
        named = [p for p in svc.ports if p.name]
        out: list[Planned] = []
        for zone in r.zones:
            fq, fq_wire = self.service_name(svc, zone)
            if fq_wire is None:
                out.extend(_ask_resolver(fq, T_A, T_AAAA))
                out.extend(_ask_resolver(fq, T_SRV) if not named else [])
                out.extend(_ask_resolver(_port_name(p, fq), T_SRV)[0] for p in named)
                continue
            key = fq_wire + _TAIL[T_A]
            out.append((key, fq, T_A, self.addresses(head, key, zone, v4, ttl4)))
            key = fq_wire + _TAIL[T_AAAA]
            out.append((key, fq, T_AAAA, self.addresses(head, key, zone, v6, ttl4)))
            if not named:  # clients ask the service name itself for SRV
                key = fq_wire + _TAIL[T_SRV]
                targets = [(ip, p.port, fq, fq_wire) for p in svc.ports for ip in svc.cluster_ips]
                out.append((key, fq, T_SRV, self.srv(head, key, zone, targets, ttl, {fq: 12})))
            for p in named:
                name = _port_name(p, fq)
                if not _port_label(p.name):
                    out.extend(_ask_resolver(name, T_SRV))
                    continue
                proto = p.protocol.lower()
                prefix = encode_label("_" + p.name) + encode_label("_" + proto)
                key = prefix + fq_wire + _TAIL[T_SRV]
                targets = [(ip, q.port, fq, fq_wire) for q in svc.ports if q.name.lower() == p.name and q.protocol.lower() == proto for ip in svc.cluster_ips]
                out.append((key, name, T_SRV, self.srv(head, key, zone, targets, ttl, {fq: 12 + len(prefix)})))
        ptr_wire = encode_label(svc.name) + encode_label(svc.namespace) + self._svc_wire[r.primary_zone]
        for ip in svc.cluster_ips:
            name = reverse_name(ip)
            if not self._ptr or self.state.service_by_ip.get(ip) != svc.key:
                out.extend(_ask_resolver(name, T_PTR))  # another service holds the address: the resolver decides
                continue
            out.append((encode_name(name, True) + _TAIL[T_PTR], name, T_PTR, self.ptr(head, ptr_wire, ttl4)))
        return out


def _ask_resolver(name: str, *qtypes: int) -> list[Planned]:
    """Questions this module leaves to the general path."""
    wire = encode_name(name, True)
    return [(wire + _TAIL[t], name, t, None) for t in qtypes]


def _port_name(port, fq: str) -> str:
    return f"_{port.name}._{port.protocol.lower()}.{fq}"


def _port_label(name: str) -> bool:
    """A port name the resolver matches as written (it compares lowercase)."""
    return _one_label(name) and name == name.lower()


class _Headless:
    """One pass over a headless service's endpoints, then its answers in every zone.
    (Asking the resolver name by name scans every endpoint for each name: quadratic in
    the size of a StatefulSet, on every change.)"""

    def __init__(self, direct: DirectAnswers, svc: Service, head: bytes):
        self.direct, self.svc, self.head = direct, svc, head
        cfg = direct.resolver.cfg
        pod_names, publish = cfg.endpoint_pod_names, svc.publish_not_ready
        self.hosts: dict[str, list[str]] = {}  # every endpoint name -> its ready addresses, in order
        self.ptr: dict[str, list[str]] = {}  # every endpoint address -> the names it has when ready
        # ready (address, endpoint name, the slice's ports) in the resolver's order
        self.ready: list[tuple[str, str, list[tuple[str, str, int]]]] = []
        self.fqdn: set[str] = set()  # FQDN slices' addresses (the resolver's PTR scan sees them too)
        for sl in direct.state.service_slices(svc.key):
            if sl.address_type == "FQDN":
                self.fqdn.update(a for ep in sl.endpoints for a in ep.addresses)
                continue
            ports = [(p.name.lower(), p.protocol.lower(), p.port) for p in sl.ports] or [("", "", -1)]
            for ep in sl.endpoints:
                ready = ep.ready or publish
                for addr in ep.addresses:
                    host = endpoint_hostname(addr, ep.hostname, ep.target_name, pod_names)
                    addrs = self.hosts.setdefault(host, [])
                    names = self.ptr.setdefault(addr, [])
                    if ready:
                        addrs.append(addr)
                        if host not in names:
                            names.append(host)
                        self.ready.append((addr, host, ports))
        # A name of several labels (a pod name with dots) is parsed as something else
        # and compresses against the others: questions it is part of take the general path.
        self.plain = {host: _one_label(host) for host in self.hosts}
        self.all_plain = all(self.plain.values())

    def plan(self) -> list[Planned]:
        d, svc, head = self.direct, self.svc, self.head
        r = d.resolver
        ttl = r.cfg.ttl
        ttl4 = struct.pack(">I", ttl)
        out: list[Planned] = []
        for zone in r.zones:
            fq, fq_wire = d.service_name(svc, zone)
            named = [(p, _port_name(p, fq)) for p in svc.ports if p.name]
            if fq_wire is None:
                out.extend(_ask_resolver(fq, T_A, T_AAAA, T_SRV))
                out.extend(_ask_resolver(name, T_SRV)[0] for _, name in named)
                out.extend(_ask_resolver(f"{host}.{fq}", T_A)[0] for host in self.hosts)
                continue
            for qtype in (T_A, T_AAAA):
                key = fq_wire + _TAIL[qtype]
                ips = [addr for addr, _, _ in self.ready if (":" in addr) == (qtype == T_AAAA)]
                out.append((key, fq, qtype, d.addresses(head, key, zone, ips, ttl4) if self.ready else DROP))
            host_wire = {h: encode_label(h) + fq_wire for h, ok in self.plain.items() if ok}
            if self.all_plain:
                key = fq_wire + _TAIL[T_SRV]
                targets = [(addr, port, f"{host}.{fq}", host_wire[host]) for addr, host, ports in self.ready for _, _, port in ports]
                out.append((key, fq, T_SRV, d.srv(head, key, zone, targets, ttl, {fq: 12})))
            else:
                out.extend(_ask_resolver(fq, T_SRV))
            for p, name in named:
                if not self.all_plain or not _port_label(p.name):
                    out.extend(_ask_resolver(name, T_SRV))
                    continue
                proto = p.protocol.lower()
                prefix = encode_label("_" + p.name) + encode_label("_" + proto)
                key = prefix + fq_wire + _TAIL[T_SRV]
                targets = [
                    (addr, port, f"{host}.{fq}", host_wire[host])
                    for addr, host, ports in self.ready
                    for pname, pproto, port in ports
                    if pname == p.name and pproto == proto
                ]
                out.append((key, name, T_SRV, d.srv(head, key, zone, targets, ttl, {fq: 12 + len(prefix)})))
            for host, addrs in self.hosts.items():
                name = f"{host}.{fq}"
                if not self.plain[host]:
                    out.extend(_ask_resolver(name, T_A))
                    continue
                key = host_wire[host] + _TAIL[T_A]
                v4 = [a for a in addrs if ":" not in a]
                out.append((key, name, T_A, d.addresses(head, key, zone, v4, ttl4) if addrs else DROP))
        out.extend(self._ptrs(ttl4))
        return out

    def _ptrs(self, ttl4: bytes) -> list[Planned]:
        d, svc, state = self.direct, self.svc, self.direct.state
        suffix = encode_label(svc.name) + encode_label(svc.namespace) + d._svc_wire[d.resolver.primary_zone]
        out: list[Planned] = []
        for addr, hosts in self.ptr.items():
            name = reverse_name(addr)
            if not d._ptr or state.services_with_endpoint_ip(addr) != (svc.key,) or addr in state.service_by_ip or addr in self.fqdn:
                out.extend(_ask_resolver(name, T_PTR))  # shared with another service: the resolver gathers every name
            elif len(hosts) > 1 or (hosts and not self.plain[hosts[0]]):
                out.extend(_ask_resolver(name, T_PTR))  # several names (compressed against each other), or labels
            else:
                # no ready endpoint has the address: not a name the resolver knows
                out.append((encode_name(name, True) + _TAIL[T_PTR], name, T_PTR, d.ptr(self.head, encode_label(hosts[0]) + suffix, ttl4) if hosts else DROP))
        return out
