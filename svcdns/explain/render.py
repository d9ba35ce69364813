"""An Explanation as text (the terminal), JSON (tools) and TXT strings (``dig -c CH``)."""

from __future__ import annotations

import json
from dataclasses import asdict

from .model import Explanation, ServiceView, Traffic


def render_json(ex: Explanation) -> str:
    doc = asdict(ex)
    doc.pop("unresolved", None)
    for step, raw in zip(doc["queries"], ex.queries):
        step["answered"] = raw.answered
    return json.dumps(doc, indent=2) + "\n"


def render_text(ex: Explanation) -> str:
    return "".join(line + "\n" for line in text_lines(ex))


def text_lines(ex: Explanation) -> list[str]:
    who = f"pod {ex.pod}" if ex.pod else f"a pod in namespace {ex.namespace}"
    out = [
        f"{ex.name} {ex.qtype}, looked up by {who}",
        f"  search {' '.join(ex.search)}; ndots:{ex.ndots}; autopath {'on' if ex.autopath else 'off'}",
        "",
        f"queries the pod's resolver sends ({len(ex.queries)}):",
    ]
    for i, step in enumerate(ex.queries, 1):
        out.append(f"  {i}. {step.qname} {ex.qtype} -> {step.rcode}" + ("" if step.via == "svcdns" else f" ({step.via})"))
        out.append(f"     why: {step.rule}")
        out.extend(f"     {record}" for record in step.records)
    out.append(f"answer: {ex.answer}")
    if ex.wasted:
        out.append(f"wasted: {ex.wasted} of {len(ex.queries)} queries found nothing")
        out.extend(f"  - {a.remedy}: {a.queries} quer{'y' if a.queries == 1 else 'ies'}" for a in ex.advice)
    else:
        out.append("wasted: none")
    if ex.service is not None:
        out.append("")
        out.extend(_service_lines(ex.service))
    if ex.traffic:
        out.append("")
        out.extend(_traffic_lines(ex.traffic))
    if ex.notes:
        out.append("")
        out.extend(f"note: {n}" for n in ex.notes)
    return out


def _service_lines(svc: ServiceView) -> list[str]:
    out = [f"service {svc.namespace}/{svc.name}: {svc.type}"]
    if svc.cluster_ips:
        out.append(f"  clusterIP: {', '.join(svc.cluster_ips)}")
    if svc.external_name:
        out.append(f"  externalName: {svc.external_name}")
    selector = ", ".join(f"{k}={v}" for k, v in sorted(svc.selector.items()))
    out.append(f"  selector: {selector or '(none: endpoints are written by hand)'}")
    if svc.ports:
        out.append(f"  ports: {'; '.join(svc.ports)}")
    if svc.publish_not_ready:
        out.append("  publishNotReadyAddresses: true")
    out.append(f"  DNS returns {svc.dns_returns}")
    if svc.type == "ExternalName":
        return out
    if not svc.endpoints:
        out.append("  endpoints: none")
    else:
        out.append("  endpoints:")
    for ep in svc.endpoints:
        flags = ",".join(f for f, on in (("ready", ep.ready), ("serving", ep.serving), ("terminating", ep.terminating)) if on) or "-"
        where = f" node {ep.node}" if ep.node else ""
        out.append(f"    {'+' if ep.in_dns else '-'} {ep.address} ({ep.hostname}) {flags}{where}: {ep.why}")
    return out


def _traffic_lines(traffic: tuple[Traffic, ...]) -> list[str]:
    out = ["where traffic goes:"]
    for t in traffic:
        extra = "; ".join(x for x in (t.scheduler, t.affinity, t.note) if x)
        out.append(f"  {t.vip} [{t.mode}]" + (f" ({extra})" if extra else ""))
        for d in t.destinations:
            share = f"{d.probability:.0%}" if d.target not in ("DROP", "REJECT") else ""
            out.append(f"    -> {d.target} {share}".rstrip() + (f"  {d.why}" if d.why else ""))
    return out


def txt_strings(ex: Explanation) -> list[list[bytes]]:
    """One TXT record per text line, each split into strings of at most 255 bytes."""
    records = []
    for line in text_lines(ex):
        data = line.encode("utf-8") or b" "
        records.append([data[i : i + 255] for i in range(0, len(data), 255)])
    return records
