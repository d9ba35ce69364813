"""The bounded-frequency sync loop, and the command line contract."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from svcdns.cli import build_parser, proxy_config
from svcdns.config import ConfigError
from svcdns.proxy.backends.ipvs import ipvs_available
from svcdns.proxy.command import check
from svcdns.proxy.runner import SyncRunner

LAB = Path(__file__).parent / "testdata" / "lab.yaml"


async def test_runner_batches_within_min_interval_and_retries():
    calls: list[float] = []
    results = [True, False, True, True]

    async def fn():
        calls.append(time.monotonic())
        return results[len(calls) - 1] if len(calls) <= len(results) else True

    runner = SyncRunner(fn, min_interval=0.3, max_interval=60, retry_interval=0.2)
    await runner.run_once()
    task = asyncio.ensure_future(runner.loop())
    for _ in range(5):  # a burst of changes -> one sync, not before min_interval
        runner.request()
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.45)
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.29
    await asyncio.sleep(0.5)  # the second sync failed: retried without any request
    assert len(calls) == 3
    assert runner.healthy(grace=10)
    runner.stop()
    await task


async def test_runner_reports_unhealthy_when_a_sync_is_overdue():
    async def fn():
        return True

    runner = SyncRunner(fn, min_interval=100, max_interval=100, retry_interval=1)
    await runner.run_once()
    runner.request()
    await asyncio.sleep(0.05)
    assert not runner.healthy(grace=0.01)


def parse(*argv: str):
    return proxy_config(build_parser().parse_args(["proxy", *argv]))


def test_contract_flags_parse():
    cfg = parse(
        "--mode", "ipvs", "--manifests", "a.yaml", "--node-name", "n1", "--cluster-cidr", "10.244.0.0/16,fd00:244::/56",
        "--scheduler", "sh", "--once", "--dry-run", "--min-sync-period", "2.5", "--health", "127.0.0.1:10256",
    )
    assert (cfg.mode, cfg.node_name, cfg.scheduler, cfg.once, cfg.dry_run, cfg.min_sync_period) == ("ipvs", "n1", "sh", True, True, 2.5)
    assert cfg.cluster_cidrs == ("10.244.0.0/16", "fd00:244::/56") and cfg.health == ("127.0.0.1", 10256)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--mode", "userspace", "--manifests", "a", "--node-name", "n1", "--once"], "--once: the userspace proxy"),
    ],
    ids=["userspace-once"],
)
def test_unusable_combinations_are_named(argv, message):
    with pytest.raises(ConfigError, match=message[:40].replace("(", r"\(").replace(")", r"\)")):
        check(parse(*argv))


def test_missing_kernel_tools_are_named_at_start():
    env = {**os.environ, "PATH": "/nonexistent"}  # no iptables-restore, no ipset
    proc = subprocess.run([sys.executable, "-m", "svcdns", "proxy", "--mode", "iptables", "--manifests", str(LAB), "--node-name", "node-a", "--once"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode != 0
    assert "--mode iptables needs iptables-restore, ipset on PATH (Debian/Ubuntu: apt-get install ipset iptables)" in proc.stderr
    dry = subprocess.run([sys.executable, "-m", "svcdns", "proxy", "--mode", "iptables", "--manifests", str(LAB), "--node-name", "node-a", "--dry-run"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert dry.returncode == 0, dry.stderr  # printing the rules needs no tool


def test_bad_cidr_names_the_flag():
    with pytest.raises(ConfigError, match="--cluster-cidr: 'ten' is not a CIDR"):
        parse("--mode", "iptables", "--node-name", "n", "--cluster-cidr", "ten")


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "svcdns", "proxy", *argv], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("mode,marker", [("iptables", ":KUBE-SERVICES - [0:0]"), ("nftables", "add table ip svcdns"), ("userspace", "KUBE-PORTALS-CONTAINER")])
def test_dry_run_prints_the_rules_and_exits(mode, marker):
    proc = run_cli("--mode", mode, "--manifests", str(LAB), "--node-name", "node-a", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert marker in proc.stdout


def test_dry_run_in_ipvs_mode():
    proc = run_cli("--mode", "ipvs", "--manifests", str(LAB), "--node-name", "node-a", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    if ipvs_available()[0]:
        assert "# ipvsadm-restore input" in proc.stdout and "-A -t 10.96.0.10:80 -s rr" in proc.stdout
    else:
        assert "IPVS is not available" in proc.stderr and "the rules below are the ipset and iptables-restore input" in proc.stderr
        assert proc.stdout.startswith("# ipset restore input (KUBE-LOOP-BACK)") and "\n*filter\n" in proc.stdout and "KUBE-SVC-" in proc.stdout


def test_live_source_fails_clearly():
    proc = run_cli("--mode", "iptables", "--kubeconfig", "/nonexistent", "--node-name", "node-a", "--once")
    assert proc.returncode == 1
    assert "cannot connect to the Kubernetes API: --kubeconfig /nonexistent: no such file" in proc.stderr
    assert "Traceback" not in proc.stderr
