"""Server-side search path completion (CoreDNS's autopath plugin with ``@kubernetes``).

A pod in namespace ``ns`` with the default ``ndots:5`` asks ``github.com.ns.svc.ZONE``,
then ``github.com.svc.ZONE``, ``github.com.ZONE``, the host's search domains and finally
``github.com``: up to five round trips for one name. Knowing the pod's namespace from its
address, we walk that path ourselves when the first name does not exist, and answer the
first question with a CNAME to the name that resolved plus its records. Clients that are
not pods (and queries that do not end in their first search domain) are not touched; if
nothing on the path resolves, the original NXDOMAIN stands.
"""

from __future__ import annotations

import logging
from .records import NOERROR, Resolver
from .recursion import Recursor, prepend_cname
from .wire import pack, question_key

log = logging.getLogger(__name__)


class AutoPath:
    def __init__(self, resolver: Resolver, recursor: Recursor | None, search: tuple[str, ...] = ()):
        self.resolver = resolver
        self.recursor = recursor
        self.search = tuple(s for s in search if resolver.zone_of(s) is None)  # the host's domains
        self.hits = 0

    def base(self, qname: str, namespace: str) -> tuple[str, str] | None:
        """(what the pod asked for, the zone) when ``qname`` ends in the pod's first search
        domain ``namespace.svc.ZONE``; None otherwise."""
        for zone in self.resolver.zones:
            first = f".{namespace}.svc.{zone}"
            if qname.endswith(first) and len(qname) > len(first):
                return qname[: -len(first)], zone
        return None

    def may_apply(self, qname: str) -> bool:
        """Could ``qname`` be some pod's first search-path query (``X.ns.svc.ZONE``)? Such
        NXDOMAINs depend on who asks, so they are not cached for everyone."""
        for zone in self.resolver.zones:
            suffix = f".svc.{zone}"
            if qname.endswith(suffix) and qname[: -len(suffix)].count(".") >= 1:
                return True
        return False

    def path(self, base: str, zone: str) -> list[str]:
        """The names the pod would try after the first one, in its order."""
        return [f"{base}.svc.{zone}", f"{base}.{zone}", *(f"{base}.{s}" for s in self.search), base]

    async def walk(self, qname: str, qtype: int, base: str, zone: str, namespace: str, client: str) -> bytes | None:
        """The template answering ``qname`` from the first name on the path that exists, or
        None when none does (or a step fails): the caller keeps the NXDOMAIN."""
        recursor = self.recursor
        for name in self.path(base, zone):
            answer = self.resolver.resolve(name, qtype, namespace)
            if answer is not None:
                if answer.rcode != NOERROR:
                    continue
                if answer.chase and recursor is not None and recursor.allowed(client):
                    template = await recursor.chase(name, qtype, answer)
                else:
                    template = pack(name, qtype, answer, recursion_available=recursor is not None)
            elif recursor is not None and recursor.allowed(client):
                template = await recursor.resolve(question_key(name, qtype), name)
                if template[3] & 0x0F != NOERROR:  # NXDOMAIN goes on; so does a failure (CoreDNS)
                    continue
            else:
                continue
            self.hits += 1
            result = prepend_cname(qname, qtype, template)
            if recursor is not None:
                return recursor.cache.store_composed(question_key(qname, qtype), result, namespace)
            return result
        return None

