"""``--log-queries``: one line per query on the ``svcdns.query`` logger.

Installed over the handler's ``handle`` only when asked for, so a server without the log
runs the plain hot path (not even a flag test per query). The line: client, its pod's
namespace (``unknown`` for other clients), transport, name, class, type, rcode and time;
the same as structured fields (``extra``) for JSON log formatters.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from dnslib import CLASS, QTYPE, RCODE, DNSRecord

if TYPE_CHECKING:  # pragma: no cover
    from .handler import DnsHandler

query_log = logging.getLogger("svcdns.query")


def logging_handle(handler: "DnsHandler"):
    """``handler.handle``, followed by a log line once the reply is known."""
    handle = type(handler).handle

    def logged(data: bytes, client: str, tcp: bool):
        started = time.perf_counter()
        reply = handle(handler, data, client, tcp)
        if reply is None or type(reply) is bytes:
            log_query(handler, data, client, tcp, reply, started)
            return reply

        async def later():
            wire = await reply
            log_query(handler, data, client, tcp, wire, started)
            return wire

        return later()

    return logged


def log_query(handler: "DnsHandler", data: bytes, client: str, tcp: bool, reply: bytes | None, started: float) -> None:
    if not query_log.isEnabledFor(logging.INFO):
        return
    try:
        q = DNSRecord.parse(data).q
        qname, qtype, qclass = str(q.qname), str(QTYPE.get(q.qtype)), str(CLASS.get(q.qclass))
    except Exception:  # a malformed query is logged too, as far as it can be
        qname, qtype, qclass = "?", "?", "?"
    pod = handler.pod_by_ip.get(client)
    namespace = pod.namespace if pod is not None else "unknown"
    rcode = "dropped" if reply is None else str(RCODE.get(reply[3] & 0x0F))
    ms = (time.perf_counter() - started) * 1000
    query_log.info(
        "%s %s %s %s %s %s %s %.3fms", client, namespace, "tcp" if tcp else "udp", qname, qclass, qtype, rcode, ms,
        extra={"client": client, "namespace": namespace, "qname": qname, "qtype": qtype, "rcode": rcode, "duration_ms": ms},
    )
