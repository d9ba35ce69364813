"""Real nameservers for forwarding tests, all on loopback and started by the tests:
Knot DNS serving zone files (the upstream that exists), dnsmasq (a forwarder, for loops),
and a tiny Python UDP server that answers late (or never), can count what it was asked
and can lie first (replies with a wrong ID or question)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rrset
from prometheus_client.parser import text_string_to_metric_families

KNOTD = shutil.which("knotd") or "/usr/sbin/knotd"
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"

EXAMPLE_ZONE = """\
$TTL 300
@       IN SOA ns.example.test. admin.example.test. 1 3600 600 86400 60
@       IN NS  ns
ns      IN A   127.0.0.1
www     IN A   192.0.2.10
www     IN AAAA 2001:db8::10
alias   IN CNAME www
db      IN A   192.0.2.20
short 30 IN A  192.0.2.11
long 86400 IN A 192.0.2.12
"""
# 20 TXT records of 100 characters: ~2.3 kB, more than a 1232-byte UDP answer holds.
BIG_TXT = "".join(f'big IN TXT "{i:02d}{"x" * 98}"\n' for i in range(20))
REVERSE_ZONE = """\
$TTL 300
@   IN SOA ns.example.test. admin.example.test. 1 3600 600 86400 60
@   IN NS  ns.example.test.
10  IN PTR www.example.test.
"""
CORP_ZONE = """\
$TTL 300
@   IN SOA ns.corp.internal. admin.corp.internal. 1 3600 600 86400 60
@   IN NS  ns
ns  IN A   127.0.0.1
db  IN A   192.0.2.99
"""
DEFAULT_ZONES = {"example.test": EXAMPLE_ZONE + BIG_TXT, "2.0.192.in-addr.arpa": REVERSE_ZONE}


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def wait_answering(host: str, port: int, name: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            dns.query.udp(dns.message.make_query(name, "SOA"), host, port=port, timeout=0.2)
            return
        except (OSError, dns.exception.Timeout):
            if time.monotonic() > deadline:
                raise RuntimeError(f"nameserver on {host}:{port} did not come up") from None
            time.sleep(0.05)


class Knot:
    """knotd serving ``zones`` ({origin: zone text}) on host:port until stopped."""

    def __init__(self, workdir: Path, zones: dict[str, str] | None = None, host: str = "127.0.0.1"):
        self.dir = workdir
        self.zones = zones or DEFAULT_ZONES
        self.host = host
        self.port = free_port(host)
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def start(self) -> "Knot":
        self.dir.mkdir(parents=True, exist_ok=True)
        zone_conf = []
        for origin, text in self.zones.items():
            path = self.dir / f"{origin}.zone"
            path.write_text(text)
            zone_conf.append(f'  - domain: {origin}\n    file: "{path}"\n')
        conf = self.dir / "knot.conf"
        conf.write_text(
            f'server:\n    rundir: "{self.dir}"\n    listen: {self.host}@{self.port}\n'
            "    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n"
            f'database:\n    storage: "{self.dir}"\n'
            "log:\n  - target: stderr\n    any: warning\n"
            "zone:\n" + "".join(zone_conf)
        )
        self.proc = subprocess.Popen([KNOTD, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=open(self.dir / "knotd.log", "w"))
        wait_answering(self.host, self.port, next(iter(self.zones)))
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "Knot":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Dnsmasq:
    """dnsmasq as a plain forwarder to ``server`` (no cache, no hosts, no resolv.conf)."""

    def __init__(self, workdir: Path, server: tuple[str, int], host: str = "127.0.0.1"):
        self.dir = workdir
        self.server = server
        self.host = host
        self.port = free_port(host)
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Dnsmasq":
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [
            DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--cache-size=0",
            f"--listen-address={self.host}", "--bind-interfaces", f"--port={self.port}",
            f"--server={self.server[0]}#{self.server[1]}", f"--pid-file={self.dir / 'dnsmasq.pid'}", "--log-facility=-",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(self.dir / "dnsmasq.log", "w"))
        deadline = time.monotonic() + 10
        while not _udp_bound(self.host, self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dnsmasq did not start: {(self.dir / 'dnsmasq.log').read_text()}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=5)


def _udp_bound(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


class SlowServer:
    """A UDP nameserver that answers every A question with 192.0.2.77 after ``delay``
    seconds (None: never). ``lies`` first sends a reply with a wrong ID and one for a
    wrong question from the same address; ``old`` rejects EDNS with FORMERR;
    ``garbled`` claims more records than it sends.
    ``questions`` records what it was asked."""

    def __init__(self, delay: float | None, *, lies: bool = False, old: bool = False, garbled: bool = False, host: str = "127.0.0.1"):
        self.delay = delay
        self.lies = lies
        self.garbled = garbled  # the right ID and question, then records that are not there
        self.old = old  # answers FORMERR to queries with EDNS, like servers from before RFC 6891
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.address = self.sock.getsockname()
        self.questions: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "SlowServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except (socket.timeout, OSError):
                continue
            query = dns.message.from_wire(data)
            self.questions.append(query.question[0].name.to_text())
            if self.old and query.edns >= 0:
                formerr = dns.message.make_response(query)
                formerr.use_edns(False)
                formerr.set_rcode(dns.rcode.FORMERR)
                self.sock.sendto(formerr.to_wire(), peer)
            elif self.delay is not None:
                threading.Timer(self.delay, self._answer, (query, peer)).start()

    def _answer(self, query: dns.message.Message, peer) -> None:
        reply = dns.message.make_response(query)
        reply.answer.append(dns.rrset.from_text(query.question[0].name, 120, "IN", "A", "192.0.2.77"))
        try:
            if self.lies:
                wrong_id = dns.message.make_response(query)
                wrong_id.id = (query.id + 1) % 65536
                wrong_id.answer.append(dns.rrset.from_text(query.question[0].name, 120, "IN", "A", "203.0.113.66"))
                self.sock.sendto(wrong_id.to_wire(), peer)
                other = dns.message.make_query("evil.example.", "A")
                other.id = query.id
                wrong_q = dns.message.make_response(other)
                wrong_q.answer.append(dns.rrset.from_text("evil.example.", 120, "IN", "A", "203.0.113.66"))
                self.sock.sendto(wrong_q.to_wire(), peer)
            wire = reply.to_wire()
            if self.garbled:
                wire = wire[:6] + b"\x00\x05" + wire[8:]  # ANCOUNT 5, one record present
            self.sock.sendto(wire, peer)
        except OSError:
            pass


class FakeClock:
    """The forwarding cache's clock, moved by the test."""

    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def metric(srv, name: str, **labels) -> float:
    """One sample from the server's /metrics (0 when absent)."""
    text = urllib.request.urlopen(srv.health_url + "/metrics", timeout=5).read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def upstream_label(address) -> str:
    return f"{address[0]}:{address[1]}"
