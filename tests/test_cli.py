"""`svcdns serve` as a user runs it: a real process, asked with `dig`."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.skipif(shutil.which("dig") is None, reason="dig missing: `make test` installs dnsutils")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def svcdns_process():
    procs = []

    def start(*args: str):
        dns_port, http_port = free_port(), free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "svcdns", "serve", "--listen", f"127.0.0.1:{dns_port}", "--health", f"127.0.0.1:{http_port}", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        procs.append(proc)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/ready", timeout=1) as r:
                    if r.status == 200:
                        return proc, dns_port, http_port
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(f"svcdns exited: {proc.stderr.read()}")
                time.sleep(0.1)
        raise AssertionError("svcdns did not become ready")

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def dig(port: int, *args: str) -> str:
    return subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1", *args], capture_output=True, text=True, timeout=10, check=True).stdout


def test_dig_against_the_embedded_example(svcdns_process):
    proc, port, http_port = svcdns_process()
    assert dig(port, "+short", "my-service.default.svc.cluster.local").split() == ["10.0.23.45"]
    assert sorted(dig(port, "+short", "nginx.default.svc.cluster.local").split()) == ["10.244.1.20", "10.244.2.21"]
    assert dig(port, "+short", "-x", "10.0.0.11").split() == ["redis-master.default.svc.cluster.local."]
    assert sorted(dig(port, "+short", "my-service.web", "SRV").splitlines()) == [  # short name: CNAME, then SRV
        "0 50 443 my-service.web.svc.cluster.local.", "0 50 80 my-service.web.svc.cluster.local.", "my-service.web.svc.cluster.local."
    ]
    tcp = dig(port, "+tcp", "+noall", "+answer", "redis-master.default.svc.cluster.local")
    assert " ".join(tcp.split()) == "redis-master.default.svc.cluster.local. 5 IN A 10.0.0.11"
    status = dig(port, "nope.default.svc.cluster.local")
    assert "status: NXDOMAIN" in status and "flags: qr aa" in status
    # /health, /ready and /metrics
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health") as r:
        assert r.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics") as r:
        metrics = r.read().decode()
    assert 'svcdns_dns_requests_total{qtype="A"}' in metrics
    assert 'svcdns_dns_responses_total{rcode="NXDOMAIN"} 1.0' in metrics
    assert "svcdns_dns_request_duration_seconds_bucket" in metrics
    assert "svcdns_store_last_sync_timestamp_seconds" in metrics
    # graceful stop on SIGTERM; the log said it served the example
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert "serving the embedded example cluster" in proc.stderr.read()


def test_manifest_errors_are_counted_in_metrics(svcdns_process, tmp_path):
    (tmp_path / "m.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: {ports: [{port: -1}]}\n")
    proc, port, http_port = svcdns_process("--manifests", str(tmp_path))
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics") as r:
        assert 'svcdns_source_errors_total{source="manifests"} 1.0' in r.read().decode()
    proc.terminate()
    assert "spec.ports[0].port: must be an integer 1-65535, got -1" in proc.communicate(timeout=10)[1]


def test_bind_failure_exits_1_with_a_clear_error():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = subprocess.run([sys.executable, "-m", "svcdns", "serve", "--listen", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=20)
    assert res.returncode == 1
    assert f"cannot serve on 127.0.0.1:{port}" in res.stderr


@pytest.mark.parametrize("args,message", [
    (["--listen", "nowhere:53"], "--listen: 'nowhere' is not an IP address"),
    (["--listen", "127.0.0.1:99999"], "--listen: port '99999' is not 0-65535"),
    (["--ttl", "-3"], "is not a TTL"),
    (["--pods", "maybe"], "invalid choice: 'maybe'"),
])
def test_bad_flags_are_named(args, message):
    res = subprocess.run([sys.executable, "-m", "svcdns", "serve", *args], capture_output=True, text=True, timeout=20)
    assert res.returncode == 2 and message in res.stderr
