"""userspace mode: the original kube-proxy design, in asyncio.

Every service port gets a listener on the node, on a port chosen at random; iptables
REDIRECTs its ClusterIP:port there (``KUBE-PORTALS-CONTAINER`` from PREROUTING for pod
traffic, ``KUBE-PORTALS-HOST`` from OUTPUT for the node's own). The proxy picks a backend
with the configured scheduler (see :mod:`..schedulers`), honours ClientIP affinity, and
when a backend refuses or does not answer the connect, tries the next one before the
client notices anything. UDP is relayed per client, with an idle timeout.

Services without endpoints are REJECTed (Local policies without local endpoints
DROPped) by the same filter rules iptables mode uses.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from dataclasses import dataclass

from .. import schedulers
from ..model import EndpointInfo, Key, ProxyView, ServicePortInfo, ServicePortName, categorize_endpoints, of_family
from . import iptables_rules as ipt
from . import tools

log = logging.getLogger(__name__)

PORTALS_CONTAINER = "KUBE-PORTALS-CONTAINER"
PORTALS_HOST = "KUBE-PORTALS-HOST"
NODEPORT_CONTAINER = "KUBE-NODEPORT-CONTAINER"
NODEPORT_HOST = "KUBE-NODEPORT-HOST"
NAT_CHAINS = (PORTALS_CONTAINER, PORTALS_HOST, NODEPORT_CONTAINER, NODEPORT_HOST)
JUMPS = (
    ipt.Jump("nat", "PREROUTING", PORTALS_CONTAINER, "handle ClusterIPs; NOTE: this must be before the NodePort rules"),
    ipt.Jump("nat", "OUTPUT", PORTALS_HOST, "handle ClusterIPs; NOTE: this must be before the NodePort rules"),
    ipt.Jump("nat", "PREROUTING", NODEPORT_CONTAINER, "handle service NodePorts; NOTE: this must be the last rule in the chain", "-m addrtype --dst-type LOCAL"),
    ipt.Jump("nat", "OUTPUT", NODEPORT_HOST, "handle service NodePorts; NOTE: this must be the last rule in the chain", "-m addrtype --dst-type LOCAL"),
    ipt.Jump("filter", "FORWARD", ipt.KUBE_SERVICES, "kubernetes service portals", ipt.NEW),
    ipt.Jump("filter", "OUTPUT", ipt.KUBE_SERVICES, "kubernetes service portals", ipt.NEW),
)
DIAL_TIMEOUTS = (0.25, 0.5, 1.0, 2.0)  # kube-proxy's userspace EndpointDialTimeouts
UDP_IDLE_TIMEOUT = 10.0
PROXY_PORTS = (32768, 60999)  # the Linux ephemeral range


def render_rules(view: ProxyView, ports: dict[ServicePortName, int], family: int = 4, jumps=JUMPS) -> str:
    """iptables-restore input sending each service IP:port to its proxy port (pure)."""
    filter_rules, nat_rules = [], []
    for svc in view.sorted_services():
        ips = of_family(svc.cluster_ips, family)
        if not ips or svc.name not in ports:
            continue
        endpoints = tuple(e for e in view.endpoints.get(svc.name, ()) if e.family == family)
        cat = categorize_endpoints(endpoints, svc, view.node_name, view.node_zone)
        name, proto, to = str(svc.name), svc.protocol.lower(), ports[svc.name]
        has_internal = cat.has_any and not (svc.internal_local and not cat.local)
        if not has_internal:
            target, why = ("REJECT", "has no endpoints") if not cat.has_any else ("DROP", "has no local endpoints")
            filter_rules.append(f'-A {ipt.KUBE_SERVICES} -m comment --comment "{name} {why}" -m {proto} -p {proto} -d {ips[0]} --dport {svc.port} -j {target}')
            continue
        for ip in (ips[0], *of_family((*svc.external_ips, *svc.load_balancer_ips), family)):
            for chain in (PORTALS_CONTAINER, PORTALS_HOST):
                nat_rules.append(f"-A {chain} -m comment --comment {name} -m {proto} -p {proto} -d {ip} --dport {svc.port} -j REDIRECT --to-ports {to}")
        if svc.node_port:
            for chain in (NODEPORT_CONTAINER, NODEPORT_HOST):
                nat_rules.append(f"-A {chain} -m comment --comment {name} -m {proto} -p {proto} --dport {svc.node_port} -j REDIRECT --to-ports {to}")
    lines = ["*filter", f":{ipt.KUBE_SERVICES} - [0:0]", *(j.line() for j in jumps if j.table == "filter"), *filter_rules, "COMMIT"]
    lines += ["*nat", *(f":{c} - [0:0]" for c in NAT_CHAINS), *(j.line() for j in jumps if j.table == "nat"), *nat_rules, "COMMIT", ""]
    return "\n".join(lines)


class LoadBalancer:
    """Backend choice for one service port: scheduler + ClientIP affinity."""

    def __init__(self, scheduler: str):
        self.scheduler = schedulers.make(scheduler)
        self.reals: list[schedulers.Real] = []
        self.affinity_timeout = 0
        self._sticky: dict[str, tuple[schedulers.Real, float]] = {}

    def update(self, endpoints: tuple[EndpointInfo, ...], affinity_timeout: int) -> None:
        """New endpoint set; counters of endpoints that stay are kept."""
        old = {str(r): r for r in self.reals}
        self.reals = [old.get(str(e)) or schedulers.Real(e.ip, e.port) for e in endpoints]
        self.affinity_timeout = affinity_timeout
        alive = set(map(id, self.reals))
        self._sticky = {c: (r, t) for c, (r, t) in self._sticky.items() if id(r) in alive}

    def pick(self, client: str, dest: str, exclude: set[int]) -> schedulers.Real | None:
        if self.affinity_timeout:
            hit = self._sticky.get(client)
            if hit and hit[1] > time.monotonic() and id(hit[0]) not in exclude:
                return hit[0]
        candidates = [r for r in self.reals if id(r) not in exclude]
        return self.scheduler.pick(candidates, client, dest) if candidates else None

    def chosen(self, client: str, real: schedulers.Real) -> None:
        if self.affinity_timeout:
            self._sticky[client] = (real, time.monotonic() + self.affinity_timeout)

    def failed(self, client: str, real: schedulers.Real) -> None:
        if self._sticky.get(client, (None,))[0] is real:
            del self._sticky[client]


@dataclass
class _Listener:
    svc: ServicePortInfo
    lb: LoadBalancer
    port: int
    server: object  # asyncio.Server (TCP) or DatagramTransport (UDP)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()


async def dial(lb: LoadBalancer, client: str, dest: str) -> tuple[schedulers.Real, asyncio.StreamReader, asyncio.StreamWriter] | None:
    """Connect to a backend; on refusal or timeout try the next one (kube-proxy's
    tryConnect). None when every backend failed."""
    tried: set[int] = set()
    for attempt in range(len(lb.reals)):
        real = lb.pick(client, dest, tried)
        if real is None:
            return None
        try:
            timeout = DIAL_TIMEOUTS[min(attempt, len(DIAL_TIMEOUTS) - 1)]
            reader, writer = await asyncio.wait_for(asyncio.open_connection(real.ip, real.port), timeout)
        except (TimeoutError, OSError) as e:
            log.debug("backend %s failed (%s); trying the next", real, e.__class__.__name__)
            tried.add(id(real))
            lb.failed(client, real)
            continue
        lb.chosen(client, real)
        return real, reader, writer
    return None


class _TcpHandler:
    def __init__(self, lb: LoadBalancer, connections: set):
        self.lb = lb
        self.connections = connections

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self.connections.add(task)
        peer, local = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
        try:
            got = await dial(self.lb, peer[0], local[0])
            if got is None:
                log.info("no backend of %s answered (%d tried); closing the client connection", local, len(self.lb.reals))
                writer.transport.abort()
                return
            real, up_reader, up_writer = got
            real.active += 1
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                real.active -= 1
                up_writer.close()
        finally:
            writer.close()
            self.connections.discard(task)


class _UdpRelay(asyncio.DatagramProtocol):
    """One listening socket; per client a connected socket to its backend."""

    def __init__(self, lb: LoadBalancer):
        self.lb = lb
        self.transport: asyncio.DatagramTransport | None = None
        self.sessions: dict[tuple, tuple[asyncio.DatagramTransport, schedulers.Real, list[float]]] = {}

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        session = self.sessions.get(addr)
        if session is not None:
            session[0].sendto(data)
            session[2][0] = time.monotonic()
            return
        asyncio.ensure_future(self._open(data, addr))

    async def _open(self, data: bytes, addr) -> None:
        real = self.lb.pick(addr[0], "", set())
        if real is None:
            return
        self.lb.chosen(addr[0], real)
        loop = asyncio.get_running_loop()
        seen = [time.monotonic()]
        relay = self

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, reply: bytes, _addr) -> None:
                seen[0] = time.monotonic()
                relay.transport.sendto(reply, addr)

        transport, _ = await loop.create_datagram_endpoint(Back, remote_addr=(real.ip, real.port))
        real.active += 1
        self.sessions[addr] = (transport, real, seen)
        transport.sendto(data)
        while time.monotonic() - seen[0] < UDP_IDLE_TIMEOUT and self.transport and not self.transport.is_closing():
            await asyncio.sleep(min(UDP_IDLE_TIMEOUT, 1.0))
        real.active -= 1
        self.sessions.pop(addr, None)
        transport.close()


class UserspaceBackend:
    """Listeners + redirect rules. ``sync`` runs on the event loop (it opens sockets)."""

    mode = "userspace"
    blocking = False

    def __init__(self, scheduler: str = "rr"):
        self.scheduler = scheduler
        self.listeners: dict[tuple[ServicePortName, int], _Listener] = {}  # per IP family
        self.connections: set = set()
        self._jumps_checked: set[int] = set()
        self.last_input_bytes = 0

    def render_all(self, view: ProxyView) -> str:
        """Rules with the proxy ports shown as 0 (they are chosen when listeners open)."""
        ports = {name: 0 for name in view.services}
        return "\n".join(render_rules(view, ports, family) for family in view.families())

    async def sync(self, view: ProxyView, changed: set[Key] | None) -> None:
        wanted = {
            (name, family): svc
            for name, svc in view.services.items()
            if svc.protocol in ("TCP", "UDP")  # SCTP cannot be proxied from userspace
            for family in {6 if ":" in ip else 4 for ip in svc.cluster_ips}
        }
        for key in [k for k in self.listeners if k not in wanted]:
            await self._close(self.listeners.pop(key))
        for (name, family), svc in wanted.items():
            listener = self.listeners.get((name, family))
            if listener is None:
                listener = self.listeners[(name, family)] = await self._open(svc, family)
            listener.svc = svc
            endpoints = tuple(e for e in view.endpoints.get(name, ()) if e.family == family)
            cat = categorize_endpoints(endpoints, svc, view.node_name, view.node_zone)
            listener.lb.update(cat.local if svc.internal_local else cat.cluster, svc.affinity_timeout)
        ports: dict[int, dict[ServicePortName, int]] = {4: {}, 6: {}}
        for (name, family), listener in self.listeners.items():
            ports[family][name] = listener.port
        await asyncio.to_thread(self._apply, view, ports)

    def _apply(self, view: ProxyView, ports: dict[int, dict[ServicePortName, int]]) -> None:
        total = 0
        for family in view.families():
            save, restore = ("iptables-save", "iptables-restore") if family == 4 else ("ip6tables-save", "ip6tables-restore")
            jumps: tuple = ()
            if family not in self._jumps_checked:
                _, present = tools.existing_state(tools.run_tool([save], what=save))
                jumps = tuple(j for j in JUMPS if (j.table, j.chain, j.target) not in present)
            text = render_rules(view, ports[family], family, jumps)
            tools.run_tool([restore, "-w", "--noflush"], text, what=restore)
            self._jumps_checked.add(family)
            total += len(text)
        self.last_input_bytes = total

    async def _open(self, svc: ServicePortInfo, family: int) -> _Listener:
        lb = LoadBalancer(self.scheduler)
        v6 = family == 6
        sock = _bind_random(socket.SOCK_STREAM if svc.protocol == "TCP" else socket.SOCK_DGRAM, v6)
        port = sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        if svc.protocol == "TCP":
            server = await asyncio.start_server(_TcpHandler(lb, self.connections), sock=sock)
        else:
            server, _ = await loop.create_datagram_endpoint(lambda: _UdpRelay(lb), sock=sock)
        log.info("%s (%s, IPv%d): proxying on port %d", svc.name, svc.protocol, family, port)
        return _Listener(svc, lb, port, server)

    async def _close(self, listener: _Listener) -> None:
        listener.server.close()
        if isinstance(listener.server, asyncio.AbstractServer):
            await listener.server.wait_closed()

    async def close(self) -> None:
        """Unlike the kernel modes, our rules must go with us: they point at our sockets."""
        for listener in self.listeners.values():
            await self._close(listener)
        self.listeners.clear()
        for task in list(self.connections):
            task.cancel()
        await asyncio.to_thread(remove_rules, tuple(self._jumps_checked))


def remove_rules(families: tuple[int, ...]) -> None:
    for family in families:
        tool = "iptables" if family == 4 else "ip6tables"
        for j in JUMPS:
            if j.chain in ("PREROUTING", "OUTPUT") and j.table == "nat":
                args = [tool, "-w", "-t", "nat", "-D", j.chain, *j.match.split(), "-m", "comment", "--comment", j.comment, "-j", j.target]
                try:
                    tools.run_tool(args)
                except tools.ApplyError as e:
                    log.debug("%s", e)
        text = "*nat\n" + "".join(f":{c} - [0:0]\n" for c in NAT_CHAINS) + "".join(f"-X {c}\n" for c in NAT_CHAINS) + "COMMIT\n"
        try:
            tools.run_tool([f"{tool}-restore", "-w", "--noflush"], text)
        except tools.ApplyError as e:
            log.warning("could not remove the userspace proxy's rules: %s", e)


def _bind_random(kind: int, v6: bool) -> socket.socket:
    """A socket on a random free port of the ephemeral range (any address)."""
    family = socket.AF_INET6 if v6 else socket.AF_INET
    for _ in range(50):
        sock = socket.socket(family, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind(("::" if v6 else "0.0.0.0", random.randint(*PROXY_PORTS)))
        except OSError:
            sock.close()
            continue
        if kind == socket.SOCK_STREAM:
            sock.listen(1024)
        sock.setblocking(False)
        return sock
    raise OSError("no free proxy port in %d-%d" % PROXY_PORTS)
