"""ipvs mode: one IPVS virtual server per service IP:port, plus the iptables rules IPVS
needs (masquerade, reject for services without endpoints).

Kept thin on purpose: upstream deprecated its ipvs proxier (KEP-5495). What it does:

- ``ipvsadm-restore`` input: ``-A -t VIP:PORT -s SCHED [-p TIMEOUT]`` per virtual server
  (ClusterIP, external and LB IPs), ``-a ... -r EP:PORT -m -w 1`` per real server
  (masquerading forwarding). ClientIP affinity is IPVS persistence. Local policies use
  this node's endpoints only.
- the VIPs are bound to a dummy interface ``kube-ipvs0`` so the node accepts them;
- iptables (nat): KUBE-SERVICES marks off-cluster traffic to VIPs for masquerade
  (kube-proxy uses ipsets for the same matches); KUBE-POSTROUTING masquerades hairpin
  connections (a pod sent to itself) found in the ipset KUBE-LOOP-BACK of this node's
  real servers, as kube-proxy does; (filter): REJECT/DROP as in iptables mode.

NodePorts are not programmed in ipvs mode (they need a virtual server per node address).

A kernel without IPVS (no ``/proc/net/ip_vs`` and ``modprobe ip_vs`` fails) cannot run
this mode: :func:`ipvs_available` says so and the command falls back to iptables mode,
as kube-proxy does.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass

from ..model import Key, ProxyView, categorize_endpoints, of_family
from . import iptables_rules as ipt
from . import tools
from . import loopback

log = logging.getLogger(__name__)

DUMMY = "kube-ipvs0"
_PROTO_FLAG = {"TCP": "-t", "UDP": "-u", "SCTP": "--sctp-service"}


def ipvs_available() -> tuple[bool, str]:
    """(True, "") when the kernel can do IPVS; else (False, why)."""
    if os.path.exists("/proc/net/ip_vs"):
        return True, ""
    modprobe = shutil.which("modprobe") or ("/sbin/modprobe" if os.path.exists("/sbin/modprobe") else None)
    if modprobe:
        proc = subprocess.run([modprobe, "ip_vs"], capture_output=True, text=True)
        if proc.returncode == 0 and os.path.exists("/proc/net/ip_vs"):
            return True, ""
        return False, f"modprobe ip_vs failed: {(proc.stderr or proc.stdout).strip() or 'exit %d' % proc.returncode}"
    return False, "/proc/net/ip_vs is missing and there is no modprobe to load ip_vs"


def _hostport(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


VirtualServer = tuple[str, str, int]  # (protocol, ip, port)


@dataclass(frozen=True)
class VirtualConfig:
    scheduler: str
    persistence: int  # seconds; 0 = none
    reals: tuple[str, ...]  # "ip:port" / "[ip]:port"


def desired(view: ProxyView, scheduler: str, family: int = 4) -> dict[VirtualServer, VirtualConfig]:
    """The virtual servers this node should have."""
    out: dict[VirtualServer, VirtualConfig] = {}
    for svc in view.sorted_services():
        ips = of_family(svc.cluster_ips, family)
        if not ips:
            continue
        endpoints = tuple(e for e in view.endpoints.get(svc.name, ()) if e.family == family)
        cat = categorize_endpoints(endpoints, svc, view.node_name, view.node_zone)
        internal = cat.local if svc.internal_local else cat.cluster
        external = cat.local if svc.external_policy_local else cat.cluster
        for ip, eps in ((ips[0], internal), *((e, external) for e in of_family((*svc.external_ips, *svc.load_balancer_ips), family))):
            if eps:
                out[(svc.protocol, ip, svc.port)] = VirtualConfig(scheduler, svc.affinity_timeout, tuple(str(e) for e in eps))
    return out


def render_ipvs(vss: dict[VirtualServer, VirtualConfig]) -> str:
    """``ipvsadm-restore`` input creating every virtual and real server."""
    lines = []
    for (proto, ip, port), cfg in vss.items():
        flag = _PROTO_FLAG[proto]
        vs = _hostport(ip, port)
        persist = f" -p {cfg.persistence}" if cfg.persistence else ""
        lines.append(f"-A {flag} {vs} -s {cfg.scheduler}{persist}")
        lines += [f"-a {flag} {vs} -r {real} -m -w 1" for real in cfg.reals]
    return "\n".join(lines) + "\n"


def diff_ipvs(current: dict[VirtualServer, VirtualConfig], wanted: dict[VirtualServer, VirtualConfig]) -> str:
    """``ipvsadm-restore`` commands turning ``current`` into ``wanted`` without touching
    what stays (established connections keep their real servers)."""
    lines = []
    for key in current.keys() - wanted.keys():
        proto, ip, port = key
        lines.append(f"-D {_PROTO_FLAG[proto]} {_hostport(ip, port)}")
    for key, cfg in wanted.items():
        proto, ip, port = key
        flag, vs = _PROTO_FLAG[proto], _hostport(ip, port)
        persist = f" -p {cfg.persistence}" if cfg.persistence else ""
        old = current.get(key)
        if old is None:
            lines.append(f"-A {flag} {vs} -s {cfg.scheduler}{persist}")
        elif (old.scheduler, old.persistence) != (cfg.scheduler, cfg.persistence):
            lines.append(f"-E {flag} {vs} -s {cfg.scheduler}{persist}")
        have = set(old.reals) if old else set()
        lines += [f"-d {flag} {vs} -r {r}" for r in sorted(have - set(cfg.reals))]
        lines += [f"-a {flag} {vs} -r {r} -m -w 1" for r in cfg.reals if r not in have]
    return "\n".join(lines) + ("\n" if lines else "")


def parse_ipvsadm_save(text: str) -> dict[VirtualServer, VirtualConfig]:
    """``ipvsadm-save -n`` output back into the model (the first sync's starting point)."""
    flags = {v: k for k, v in _PROTO_FLAG.items()}
    vss: dict[VirtualServer, dict] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[1] not in flags:
            continue
        host, _, port = parts[2].rpartition(":")
        key = (flags[parts[1]], host.strip("[]"), int(port))
        if parts[0] == "-A":
            sched = parts[parts.index("-s") + 1] if "-s" in parts else "wlc"
            persist = int(parts[parts.index("-p") + 1]) if "-p" in parts else 0
            vss[key] = {"scheduler": sched, "persistence": persist, "reals": []}
        elif parts[0] == "-a" and key in vss and "-r" in parts:
            vss[key]["reals"].append(parts[parts.index("-r") + 1])
    return {k: VirtualConfig(v["scheduler"], v["persistence"], tuple(v["reals"])) for k, v in vss.items()}


def loop_back(view: ProxyView, family: int = 4) -> frozenset[str]:
    """KUBE-LOOP-BACK entries: this node's real servers (only they can be hairpin)."""
    out = set()
    for svc in view.sorted_services():
        if not of_family(svc.cluster_ips, family):
            continue
        proto = svc.protocol.lower()
        out.update(loopback.entry(e.ip, proto, e.port) for e in view.endpoints.get(svc.name, ()) if e.family == family and e.local)
    return frozenset(out)


def render_iptables(view: ProxyView, family: int = 4) -> str:
    """The iptables-restore input IPVS mode needs beside the virtual servers."""
    cidr = view.cluster_cidr(family)
    filter_rules, nat_rules = [], []
    for svc in view.sorted_services():
        ips = of_family(svc.cluster_ips, family)
        if not ips:
            continue
        endpoints = tuple(e for e in view.endpoints.get(svc.name, ()) if e.family == family)
        cat = categorize_endpoints(endpoints, svc, view.node_name, view.node_zone)
        name, proto = str(svc.name), svc.protocol.lower()
        match = f"-m {proto} -p {proto}"
        has_internal = cat.has_any and not (svc.internal_local and not cat.local)
        target = "REJECT" if not cat.has_any else "DROP"
        comment = f'"{name} has no endpoints"' if not cat.has_any else f'"{name} has no local endpoints"'
        if not has_internal:
            filter_rules.append(f"-A {ipt.KUBE_SERVICES} -m comment --comment {comment} {match} -d {ips[0]} --dport {svc.port} -j {target}")
        elif cidr:
            nat_rules.append(f'-A {ipt.KUBE_SERVICES} -m comment --comment "{name} cluster IP" {match} -d {ips[0]} --dport {svc.port} ! -s {cidr} -j {ipt.KUBE_MARK_MASQ}')
        for ip in of_family((*svc.external_ips, *svc.load_balancer_ips), family):
            if cat.has_any and not svc.external_policy_local:
                nat_rules.append(f'-A {ipt.KUBE_SERVICES} -m comment --comment "{name} external IP" {match} -d {ip} --dport {svc.port} -j {ipt.KUBE_MARK_MASQ}')
    jumps = [j for j in ipt.JUMPS if j.target in (ipt.KUBE_SERVICES, ipt.KUBE_FORWARD, ipt.KUBE_POSTROUTING)]
    lines = ["*filter", f":{ipt.KUBE_SERVICES} - [0:0]", f":{ipt.KUBE_FORWARD} - [0:0]", *(j.line() for j in jumps if j.table == "filter"), *filter_rules]
    lines += [
        f'-A {ipt.KUBE_FORWARD} -m comment --comment "kubernetes forwarding rules" -m mark --mark {ipt.MASQ_MARK}/{ipt.MASQ_MARK} -j ACCEPT',
        f'-A {ipt.KUBE_FORWARD} -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
        "COMMIT",
        "*nat",
        *(f":{c} - [0:0]" for c in (ipt.KUBE_SERVICES, ipt.KUBE_POSTROUTING, ipt.KUBE_MARK_MASQ)),
        *(j.line() for j in jumps if j.table == "nat"),
        loopback.masquerade_rule(ipt.KUBE_POSTROUTING, family),
        f"-A {ipt.KUBE_POSTROUTING} -m mark ! --mark {ipt.MASQ_MARK}/{ipt.MASQ_MARK} -j RETURN",
        f"-A {ipt.KUBE_POSTROUTING} -j MARK --xor-mark {ipt.MASQ_MARK}",
        f'-A {ipt.KUBE_POSTROUTING} -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
        f"-A {ipt.KUBE_MARK_MASQ} -j MARK --or-mark {ipt.MASQ_MARK}",
        *nat_rules,
        "COMMIT",
        "",
    ]
    return "\n".join(lines)


class IpvsBackend:
    """Programs IPVS (only constructed when :func:`ipvs_available`)."""

    mode = "ipvs"
    blocking = True

    def __init__(self, scheduler: str = "rr"):
        self.scheduler = scheduler
        self._current: dict[int, dict[VirtualServer, VirtualConfig]] = {}
        self._jumps_done: set[int] = set()
        self._loop_back = loopback.LoopBackSets()
        self.last_input_bytes = 0

    def render_all(self, view: ProxyView) -> str:
        parts = []
        for family in view.families():
            parts.append(f"# ipvsadm-restore input (IPv{family})\n" + render_ipvs(desired(view, self.scheduler, family)))
            parts.append(loopback.dry_run(family, loop_back(view, family)))
            parts.append(f"# {'iptables' if family == 4 else 'ip6tables'}-restore input (IPv{family})\n" + render_iptables(view, family))
        return "\n".join(parts)

    def sync(self, view: ProxyView, changed: set[Key] | None) -> None:
        total = 0
        for family in view.families():
            wanted = desired(view, self.scheduler, family)
            current = self._current.pop(family, None)
            if current is None or changed is None:
                current = parse_ipvsadm_save(tools.run_tool(["ipvsadm-save", "-n"], what="ipvsadm-save"))
                current = {k: v for k, v in current.items() if (":" in k[1]) == (family == 6)}
            self._bind_vips({k[1] for k in wanted}, {k[1] for k in current}, family)
            commands = diff_ipvs(current, wanted)
            if commands:
                tools.run_tool(["ipvsadm-restore"], commands, what="ipvsadm-restore")
            self._current[family] = wanted
            self._loop_back.sync(family, loop_back(view, family), full=changed is None)
            rules = render_iptables(view, family)
            if family in self._jumps_done:  # the jumps exist: only refill our chains
                rules = "\n".join(line for line in rules.splitlines() if not line.startswith("-I ")) + "\n"
            tools.run_tool(["iptables-restore" if family == 4 else "ip6tables-restore", "-w", "--noflush"], rules, what="iptables-restore")
            self._jumps_done.add(family)
            total += len(commands) + len(rules)
        self.last_input_bytes = total

    def _bind_vips(self, wanted: set[str], current: set[str], family: int) -> None:
        """VIPs live on a dummy interface so the node accepts packets for them."""
        subprocess.run(["ip", "link", "add", DUMMY, "type", "dummy"], capture_output=True)
        prefix = "/128" if family == 6 else "/32"
        for ip in sorted(wanted - current):
            subprocess.run(["ip", "addr", "replace", ip + prefix, "dev", DUMMY], capture_output=True)
        for ip in sorted(current - wanted):
            subprocess.run(["ip", "addr", "del", ip + prefix, "dev", DUMMY], capture_output=True)

    def close(self) -> None:
        """Virtual servers stay when the proxy stops (connections keep flowing)."""

