"""``dig @svcdns -c CH TXT NAME.explain.svcdns.``: ``svcdns explain`` over DNS.

The explanation for NAME as the asking pod would look it up (its namespace, its search
path, autopath as svcdns applies it to that pod; clients that are not pods are explained
as a pod in ``default``), one TXT record per line. Only clients in ``--allow-explain``
get it (it tells a lot about the cluster); others are REFUSED. Reached from the handler's
slow path only: class CH never matches the hot path's tables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dnslib import CLASS, QTYPE, RR, TXT, DNSRecord, EDNS0

from ..explain.fetch import explain_live
from ..explain.render import txt_strings
from .acl import AccessList
from .records import Resolver
from .wire import OPT_PAYLOAD

if TYPE_CHECKING:  # pragma: no cover
    from .recursion import Recursor

SUFFIX = ".explain.svcdns"
C_CH, T_TXT, T_ANY = 3, 16, 255


class ExplainResponder:
    def __init__(self, resolver: Resolver, recursor: "Recursor | None", allow: AccessList, *, autopath: bool, host_search: tuple[str, ...] = ()):
        self.resolver, self.recursor, self.allow = resolver, recursor, allow
        self.autopath, self.host_search = autopath, host_search
        self.answered = 0
        self.refused = 0

    @staticmethod
    def handles(qname: str, qclass: int) -> bool:
        return qclass == C_CH and qname.endswith(SUFFIX) and len(qname) > len(SUFFIX)

    def allowed(self, client: str) -> bool:
        ok = self.allow(client)
        self.refused += not ok
        return ok

    async def answer(self, request: DNSRecord, client: str, edns: bool, limit: int) -> bytes:
        qname = str(request.q.qname).rstrip(".").lower()
        reply = request.reply()
        reply.header.aa = reply.header.ad = 0
        reply.header.ra = int(self.recursor is not None)
        if request.q.qtype in (T_TXT, T_ANY):
            for strings in txt_strings(await self.explain(qname[: -len(SUFFIX)], client)):
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, CLASS.CH, 0, TXT(strings)))
        self.answered += 1
        if edns:
            reply.add_ar(EDNS0(udp_len=OPT_PAYLOAD))
        wire = bytes(reply.pack())
        if len(wire) > limit:  # too big for this UDP client: TC, question kept; dig asks again over TCP
            reply.rr = []
            reply.header.tc = 1
            wire = bytes(reply.pack())
        return wire

    async def explain(self, name: str, client: str):
        pod = self.resolver.state.pod_by_ip.get(client)
        namespace, label = (pod.namespace, f"{pod.namespace}/{pod.name}") if pod is not None else ("default", "")
        why = "" if self.autopath else "svcdns serve --autopath"
        return await explain_live(
            self.resolver, self.recursor, name, qtype=1, namespace=namespace, pod=label,
            autopath=self.autopath, autopath_off=why, host_search=self.host_search,
        )
