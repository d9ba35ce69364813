"""``svcdns explain``: why a name resolves the way it does, and where its traffic goes.

Pure: :func:`explain` reads the cluster state through the Resolver and returns an
:class:`Explanation`. Upstream replies are passed in (``forwarded``); when a lookup needs
one it was not given, ``Explanation.unresolved`` names it and the caller (the CLI, the
CHAOS handler) fetches it and calls again. Renderers live in :mod:`.render`.
"""

from __future__ import annotations

from typing import Mapping

from ..dns.records import T_A, T_AAAA, Resolver
from .model import UNKNOWN, Advice, Explanation, Forwarded, Step
from .service import service_of, service_view
from .stub import TYPE_NAMES, Client, Stub, pod_search

DEFAULT_NDOTS = 5  # what kubelet writes for ClusterFirst pods

__all__ = ["explain", "Explanation", "Forwarded", "DEFAULT_NDOTS", "qtype_code"]


def qtype_code(name: str) -> int:
    """``A`` -> 1; raises ValueError for a type explain does not know."""
    for code, text in TYPE_NAMES.items():
        if text == name.upper():
            return code
    raise ValueError(f"{name!r} is not a query type explain knows ({', '.join(sorted(TYPE_NAMES.values()))})")


def explain(
    resolver: Resolver,
    name: str,
    *,
    namespace: str,
    qtype: int = T_A,
    pod: str = "",
    autopath: bool = True,
    autopath_off: str = "",
    ndots: int = DEFAULT_NDOTS,
    routes: tuple[tuple[str, str], ...] = (),
    host_search: tuple[str, ...] = (),
    forwarded: Mapping[str, Forwarded] | None = None,
) -> Explanation:
    """Explain a lookup of ``name`` by a pod in ``namespace``.

    ``autopath``: svcdns walks this client's search path (autopath on and the pod known
    by its IP); ``autopath_off`` says why not, when it does not. ``routes``: (domain,
    upstreams) that names outside the cluster are forwarded to ("" = the default)."""
    host_search = tuple(s for s in host_search if resolver.zone_of(s) is None)
    client = Client(namespace, autopath, routes, host_search, forwarded or {})
    stub = Stub(resolver, client, qtype)
    steps = stub.lookup(name, ndots, autopath)
    found = service_of(resolver, steps)
    service = service_view(resolver, found[0], found[1], qtype) if found else None
    advice = _advice(stub, name, ndots, autopath, autopath_off, steps)
    notes = []
    if not resolver.state.namespace_exists(namespace):
        notes.append(f"namespace {namespace} has no objects in the cluster state: names in it do not exist")
    if autopath and not pod:
        notes.append("autopath applies to pods svcdns knows by their IP (serve watches pods when autopath is on)")
    if qtype in (T_A, T_AAAA) and not name.endswith("."):
        notes.append("getaddrinfo() asks A and AAAA side by side: an application usually sends each query twice")
    return Explanation(
        name=name,
        qtype=TYPE_NAMES.get(qtype, str(qtype)),
        namespace=namespace,
        pod=pod,
        search=pod_search(namespace, resolver.primary_zone, host_search),
        ndots=ndots,
        autopath=autopath,
        queries=tuple(steps),
        answer=_outcome(steps),
        wasted=max(0, len(steps) - 1),
        advice=tuple(advice),
        service=service,
        notes=tuple(notes),
        unresolved=tuple(client.missing),
    )


def _outcome(steps: list[Step]) -> str:
    final = steps[-1]
    if final.rcode == UNKNOWN:
        return "unknown: an upstream answer is still needed"
    if final.answered:
        data = [" ".join(r.split()[3:]) for r in final.records if " IN CNAME " not in r]
        cnames = [r.split()[-1] for r in final.records if " IN CNAME " in r]
        via = f" (via CNAME {' -> '.join(cnames)})" if cnames and data else ""
        return f"{final.rcode} for {final.qname}: " + "; ".join(data or [" ".join(r.split()[3:]) for r in final.records]) + via
    if any(s.rcode == "NOERROR" for s in steps):
        nodata = next(s for s in steps if s.rcode == "NOERROR")
        return f"NODATA: {nodata.qname} exists but has no records of this type"
    return final.rule if final.rule.startswith(final.rcode) else f"{final.rcode}: {final.rule}"


def _result(steps: list[Step]) -> tuple:
    """What the application ends up with, CNAME owners aside (to compare two lookups)."""
    final = steps[-1]
    if not final.answered:
        return (final.rcode,)
    return tuple(sorted(" ".join(r.split()[2:]) for r in final.records if " IN CNAME " not in r))


def _answered_name(steps: list[Step]) -> str | None:
    final = steps[-1]
    if not final.answered:
        return None
    if final.via == "autopath":  # the CNAME points at the name on the path that answered
        return final.records[0].split()[-1].rstrip(".")
    return final.qname


def _advice(stub: Stub, name: str, ndots: int, autopath: bool, autopath_off: str, steps: list[Step]) -> list[Advice]:
    """Cheaper ways to the same lookup, each with the number of queries it takes."""
    if len(steps) <= 1 or any(s.rcode == UNKNOWN for s in steps):
        return []
    out = []
    fqdn = (_answered_name(steps) or name.rstrip(".")) + "."
    alt = stub.lookup(fqdn, ndots, autopath)
    if not any(s.rcode == UNKNOWN for s in alt):
        out.append(Advice(f"ask for the absolute name {fqdn} (trailing dot: no search path)", len(alt)))
    dots = name.count(".")
    if not name.endswith(".") and 1 <= dots < ndots:
        alt = stub.lookup(name, dots, autopath)
        if len(alt) < len(steps) and not any(s.rcode == UNKNOWN for s in alt):
            same = _result(alt) == _result(steps)
            out.append(Advice(
                f"lower ndots to {dots} in the pod's dnsConfig.options (names with {dots}+ dots are tried as written first)"
                + ("" if same else f" -- but then the answer is {_outcome(alt)}"),
                len(alt),
            ))
    if not autopath:
        alt = stub.lookup(name, ndots, True)
        if len(alt) < len(steps) and not any(s.rcode == UNKNOWN for s in alt):
            out.append(Advice(f"autopath: svcdns walks the search path itself ({autopath_off})", len(alt)))
    return out
