"""`svcdns serve --kubeconfig` as a user runs it: a real process, flags from the command
line, default timings. It follows the API, survives faults and outages without exiting,
logs an outage once, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import dns.message
import dns.query
import dns.rcode
import pytest

from tests.kubeapi import objects as o
from tests.sources.conftest import eventually, sample, seed


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


class Process:
    def __init__(self, log_path, *args: str):
        self.dns_port, self.http_port = free_port(), free_port()
        cmd = [sys.executable, "-m", "svcdns", "--log-level", "debug", "serve", "--listen", f"127.0.0.1:{self.dns_port}",
               "--health", f"127.0.0.1:{self.http_port}", *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
        self.log_path = log_path
        with open(log_path, "w") as log:  # a file, not a pipe: a full pipe would block the server
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)

    def answer(self, name: str, rdtype: str = "A"):
        msg = dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=self.dns_port, timeout=2)
        return dns.rcode.to_text(msg.rcode()), sorted(rd.to_text() for rrset in msg.answer for rd in rrset)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/ready", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with open(self.log_path) as f:
            return self.proc.returncode, f.read()


@pytest.fixture
def process(tmp_path):
    started = []

    def start(*args):
        p = Process(tmp_path / f"svcdns-{len(started)}.log", *args)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def test_serve_kubeconfig_process_follows_api_and_survives_faults(kubeapi, tmp_path, process):
    seed(kubeapi)
    kubeapi.put(o.service("default", "hidden", "10.0.0.77"))
    metrics_port = free_port()
    p = process("--kubeconfig", kubeapi.write_kubeconfig(tmp_path / "kubeconfig"), "--namespaces", "web,default",
                "--labels", "app!=hidden", "--endpoint-pod-names", "--metrics", f"127.0.0.1:{metrics_port}")
    eventually(p.ready, 10, "/ready of the svcdns process")
    assert p.answer("frontend.web.svc.cluster.local.") == ("NOERROR", ["10.0.10.1"])
    assert p.answer("hidden.default.svc.cluster.local.") == ("NOERROR", ["10.0.0.77"])
    kubeapi.put(o.service("default", "hidden", "10.0.0.77", labels={"app": "hidden"}))
    eventually(lambda: p.answer("hidden.default.svc.cluster.local.")[0] == "NXDOMAIN", 1.0, "label selector")

    # an outage: every request fails for 3 s; answers stay, then follow the API again
    kubeapi.fail(10**6, 500)
    kubeapi.drop_watches()
    time.sleep(3)
    assert p.answer("frontend.web.svc.cluster.local.") == ("NOERROR", ["10.0.10.1"])
    kubeapi.clear_faults()
    kubeapi.put(o.service("web", "frontend", "10.0.10.42"))
    # default backoff (0.8 s doubling, +-50%): 3 s into an outage the next retry is at most ~10 s away
    eventually(lambda: p.answer("frontend.web.svc.cluster.local.") == ("NOERROR", ["10.0.10.42"]), 15, "after the outage")

    # history expired under open watches: relist, within the 3 s the issue allows
    kubeapi.expire(close_watches=True)
    kubeapi.delete("Service", "web", "frontend")
    eventually(lambda: p.answer("frontend.web.svc.cluster.local.")[0] == "NXDOMAIN", 3.0, "after 410")

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as r:
        metrics = r.read().decode()
    assert sample(metrics, 'svcdns_source_relists_total{kind="Service"}') >= 1  # after the 410
    assert sample(metrics, 'svcdns_source_synced{kind="EndpointSlice"}') == 1
    assert p.proc.poll() is None, "svcdns exited"
    code, err = p.stop()
    assert code == 0, err
    outage_lines = [ln for ln in err.splitlines() if "serving the last good state" in ln]
    assert len(outage_lines) == 1, outage_lines
    assert "in sync with the Kubernetes API" in err


@pytest.mark.parametrize("args,message", [
    (["--labels", "app in web"], "--labels: 'app in web' is not a label selector requirement"),
    (["--namespaces", "Web_1"], "--namespaces: 'Web_1' is not a namespace name"),
], ids=["bad-labels", "bad-namespace"])
def test_bad_flags_are_named(args, message):
    proc = subprocess.run([sys.executable, "-m", "svcdns", "serve", "--listen", "127.0.0.1:0", *args],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and message in proc.stderr


def test_missing_kubeconfig_exits_with_the_reason(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "svcdns", "serve", "--listen", "127.0.0.1:0",
                           "--kubeconfig", str(tmp_path / "nope")], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert f"--kubeconfig {tmp_path / 'nope'}: no such file" in proc.stderr
