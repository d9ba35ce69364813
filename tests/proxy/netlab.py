"""A tiny cluster made of network namespaces, for proxy tests that push real packets.

  client ns (10.244.0.100) --veth--+
  pod ns p1 (10.244.1.1)   --veth--+-- node ns (forwards; svcdns rules live here) --veth-- gw ns
  pod ns p2 ...            --veth--+       (10.96.0.0/16 is routed to gw, like a default route)

Every pod answers TCP (and UDP) with its own name. Sockets are created inside a namespace
by a short-lived thread that setns()es into it; the socket stays in that namespace, so the
test drives everything from its own process. All traffic stays inside namespaces this
lab created; ``close()`` deletes them (names carry the test PID) and stops what it started.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
NODE_GW = "10.244.0.1"  # the node's address on every pod veth
SERVICE_CIDR = "10.96.0.0/16"
CLUSTER_CIDR = "10.244.0.0/16"


def sh(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=60)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def in_netns(ns: str, fn, *args):
    """Run fn in a thread that entered network namespace ``ns`` (the thread then dies)."""
    out: dict = {}

    def target():
        try:
            with open(f"/var/run/netns/{ns}") as f:
                if _libc.setns(f.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {ns}")
            out["value"] = fn(*args)
        except BaseException as e:  # handed to the caller
            out["error"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


class _Worker:
    """A thread that lives in one namespace, for creating many sockets cheaply."""

    def __init__(self, ns: str):
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.pool.submit(self._enter, ns).result()

    @staticmethod
    def _enter(ns: str) -> None:
        with open(f"/var/run/netns/{ns}") as f:
            if _libc.setns(f.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {ns}")

    def socket(self, kind: int = socket.SOCK_STREAM) -> socket.socket:
        return self.pool.submit(socket.socket, socket.AF_INET, kind).result()

    def close(self) -> None:
        self.pool.shutdown()


@dataclass
class Pod:
    name: str
    ip: str
    listen: bool = True
    sockets: list = field(default_factory=list)


class Lab:
    """Namespaces + veths + name-answering servers. Use as a context manager."""

    _count = 0

    def __init__(self, pods: list[tuple[str, str]], *, dead: tuple[str, ...] = (), port: int = 8080):
        Lab._count += 1
        self.tag = f"sv{os.getpid() % 100000}x{Lab._count}"
        self.node = f"{self.tag}-node"
        self.port = port
        self.pods = [Pod(name, ip, listen=name not in dead) for name, ip in pods]
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._workers: dict[str, _Worker] = {}

    # --- building ----------------------------------------------------------------

    def __enter__(self) -> Lab:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def ns(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def _add_ns(self, name: str) -> str:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def _build(self) -> None:
        self._add_ns(self.node)
        sh("ip", "netns", "exec", self.node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for i, (name, ip) in enumerate([("client", "10.244.0.100"), *((p.name, p.ip) for p in self.pods)]):
            self._attach(f"v{i}", self._add_ns(self.ns(name)), ip)
        gw = self._add_ns(self.ns("gw"))
        self._attach("vgw", gw, "10.244.0.254")
        sh("ip", "-n", self.node, "route", "add", SERVICE_CIDR, "via", "10.244.0.254", "dev", "vgw")
        for pod in self.pods:
            if pod.listen:
                self._serve(pod)

    def _attach(self, ifname: str, ns: str, ip: str) -> None:
        """veth ``ifname`` in the node <-> ``eth0`` in ns, /32 routes both ways."""
        sh("ip", "-n", self.node, "link", "add", ifname, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "-n", self.node, "addr", "add", f"{NODE_GW}/32", "dev", ifname)
        sh("ip", "-n", self.node, "link", "set", ifname, "up")
        sh("ip", "-n", self.node, "route", "add", f"{ip}/32", "dev", ifname)
        sh("ip", "-n", ns, "addr", "add", f"{ip}/32", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "route", "add", NODE_GW, "dev", "eth0")
        sh("ip", "-n", ns, "route", "add", "default", "via", NODE_GW, "dev", "eth0")

    def _serve(self, pod: Pod) -> None:
        """TCP and UDP servers in the pod's namespace answering ``<name>\\n``."""

        def make():
            tcp = socket.socket()
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind(("0.0.0.0", self.port))
            tcp.listen(512)
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("0.0.0.0", self.port))
            return tcp, udp

        tcp, udp = in_netns(self.ns(pod.name), make)
        pod.sockets += [tcp, udp]
        answer = f"{pod.name}\n".encode()
        for fn, sock in ((self._tcp_loop, tcp), (self._udp_loop, udp)):
            t = threading.Thread(target=fn, args=(sock, answer), daemon=True)
            t.start()
            self._threads.append(t)

    def _tcp_loop(self, sock: socket.socket, answer: bytes) -> None:
        sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                try:
                    conn.sendall(answer)
                except OSError:
                    pass

    def _udp_loop(self, sock: socket.socket, answer: bytes) -> None:
        sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                _, addr = sock.recvfrom(2048)
                sock.sendto(answer, addr)
            except (TimeoutError, OSError):
                continue

    # --- using -------------------------------------------------------------------

    def worker(self, ns: str) -> _Worker:
        if ns not in self._workers:
            self._workers[ns] = _Worker(ns)
        return self._workers[ns]

    def ask(self, ip: str, port: int, *, source: str = "client", timeout: float = 2.0, udp: bool = False) -> str:
        """Connect from ``source`` (a pod name, or "node") and return the answer:
        the pod's name, or "refused" / "timeout" / "reset"."""
        ns = self.node if source == "node" else self.ns(source)
        sock = self.worker(ns).socket(socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            if udp:
                sock.sendto(b"hi", (ip, port))
                return sock.recv(2048).decode().strip()
            sock.connect((ip, port))
            data = b""
            while chunk := sock.recv(2048):
                data += chunk
            return data.decode().strip() or "closed"
        except ConnectionRefusedError:
            return "refused"
        except ConnectionResetError:
            return "reset"
        except TimeoutError:
            return "timeout"
        finally:
            sock.close()

    def tally(self, ip: str, port: int, n: int, **kw) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _ in range(n):
            got = self.ask(ip, port, **kw)
            counts[got] = counts.get(got, 0) + 1
        return counts

    def node_exec(self, *argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.node, *argv, check=check, input=input)

    def start(self, argv: list[str], **kw) -> subprocess.Popen:
        """A process in the node namespace (stopped by PID at close)."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.node, *argv], **kw)
        self.processes.append(proc)
        return proc

    def wait_for(self, predicate, timeout: float = 15.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    # --- tearing down --------------------------------------------------------------

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        for pod in self.pods:
            for s in pod.sockets:
                s.close()
        for w in self._workers.values():
            w.close()
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()
