"""The I/O edge of explain: fetch the upstream answers a lookup needs and explain again
until nothing is missing. Used by the CLI and by the CHAOS-class handler."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from dnslib import DNSError, DNSRecord

from ..dns.records import Resolver
from ..dns.wire import question_key, rr_from_dnslib
from . import Explanation, explain
from .model import Forwarded
from .stub import rr_text

if TYPE_CHECKING:  # pragma: no cover
    from ..dns.recursion import Recursor

MAX_ROUNDS = 16  # each round fetches every name the last one was missing; a lookup has few


def routes(recursor: "Recursor | None") -> tuple[tuple[str, str], ...]:
    """Where names outside the cluster go, as explain shows it."""
    if recursor is None:
        return ()
    return tuple((g.domain, ", ".join(up.name for up in g.upstreams)) for g in recursor.groups)


def forwarded_reply(template: bytes) -> Forwarded:
    try:
        msg = DNSRecord.parse(template)
    except (DNSError, IndexError, ValueError):
        return Forwarded(2)
    return Forwarded(msg.header.rcode, tuple(rr_text(rr_from_dnslib(rr)) for rr in msg.rr))


async def explain_live(resolver: Resolver, recursor: "Recursor | None", name: str, *, qtype: int, **kwargs) -> Explanation:
    """:func:`explain`, with every upstream answer it needs fetched through ``recursor``
    (its cache first, as the server would)."""
    forwarded: dict[str, Forwarded] = {}
    kwargs.setdefault("routes", routes(recursor))
    for _ in range(MAX_ROUNDS):
        ex = explain(resolver, name, qtype=qtype, forwarded=forwarded, **kwargs)
        if not ex.unresolved or recursor is None:
            return ex
        missing = [n for n in ex.unresolved if n not in forwarded]
        replies = await asyncio.gather(*(recursor.resolve(question_key(n, qtype), n) for n in missing))
        forwarded.update((n, forwarded_reply(t)) for n, t in zip(missing, replies))
    return ex
