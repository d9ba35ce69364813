"""Running the kernel tools (iptables-restore, nft, ipvsadm-restore) and reading back
what is already there. The only place the backends do I/O."""

from __future__ import annotations

import re
import subprocess


class ApplyError(RuntimeError):
    """A tool refused our input; the message carries its stderr (and the offending line)."""


def run_tool(argv: list[str], data: str | None = None, *, what: str = "", timeout: float | None = None) -> str:
    """Run one of iptables-restore, nft, ipvsadm-restore...; raise ApplyError with its
    complaint. For restore tools the failing line is quoted from our input.

    No timeout by default: a large first restore can legitimately take minutes
    (iptables-nft at 100,000 endpoints, see docs/performance.md), and killing it would
    only start it over."""
    try:
        proc = subprocess.run(argv, input=data, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise ApplyError(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise ApplyError(f"{argv[0]} did not finish within {timeout} s") from None
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip()
        raise ApplyError(f"{what or ' '.join(argv)} failed (exit {proc.returncode}): {msg}{_quote_line(msg, data)}")
    return proc.stdout


def _quote_line(msg: str, data: str | None) -> str:
    m = re.search(r"line:? (\d+)", msg)
    if not m or not data:
        return ""
    lines = data.splitlines()
    n = int(m.group(1))
    return f"\n  line {n}: {lines[n - 1]}" if 0 < n <= len(lines) else ""


def existing_state(save_output: str) -> tuple[set[str], set[tuple[str, str, str]]]:
    """From ``iptables-save``: the chains of every table, and which (table, chain, target)
    jumps already exist."""
    chains: set[str] = set()
    jumps: set[tuple[str, str, str]] = set()
    table = ""
    for line in save_output.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            chains.add(line[1:].split(" ", 1)[0])
        elif line.startswith("-A "):
            parts = line.split()
            if "-j" in parts:
                jumps.add((table, parts[1], parts[parts.index("-j") + 1]))
    return chains, jumps
