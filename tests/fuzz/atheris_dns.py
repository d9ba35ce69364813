"""Long fuzz runs with atheris (libFuzzer for Python): ``make fuzz``.

    .venv/bin/python tests/fuzz/atheris_dns.py -runs=1000000 CORPUS_DIR

Each input drives, chosen by its first byte: the handler as a UDP query, as a TCP query,
from a pod's address (autopath), or a TCP byte stream through the real TcpProtocol
(framing, lying prefixes, pipelining) in chunks the input decides. Every reply must pass
``check_reply``; anything raised is a crash libFuzzer reports with the input that caused
it. The seed corpus is the valid queries of tests/fuzz/packets.py. libFuzzer's final
"Done N runs" is the figure docs/reliability.md records (on a crash, the harness prints
how many inputs ran before it).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["svcdns", "dnslib"]):
    from svcdns.config import ServeConfig
    from svcdns.dns.tcp import TcpConnections, TcpLimits, TcpProtocol
    from svcdns.serve import Server

from tests.fuzz.packets import VALID, check_reply  # noqa: E402

LOOP = asyncio.new_event_loop()
SERVER = Server(ServeConfig(listen=("127.0.0.1", 0)))
SERVER.source.load()
HANDLER = SERVER.handler
POD_IP = next(iter(SERVER.state.pod_by_ip))
RUNS = [0]


class Transport:
    """Just enough of an asyncio transport for TcpProtocol: collects what it writes."""

    def __init__(self):
        self.out = bytearray()
        self.closed = False

    def get_extra_info(self, name):
        return ("127.0.0.1", 40000) if name == "peername" else None

    def write(self, data):
        self.out += data

    def writelines(self, parts):
        for p in parts:
            self.out += p

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    abort = close

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def get_write_buffer_size(self):
        return 0


def finish(reply):
    if reply is not None and not isinstance(reply, (bytes, list)):
        reply = LOOP.run_until_complete(reply)
    return reply


async def tcp_stream(data: bytes, cuts: list[int]) -> None:
    conn = TcpProtocol(HANDLER, SERVER.dns.latency, TcpConnections(TcpLimits()))
    transport = Transport()
    conn.connection_made(transport)
    start = 0
    for cut in [*cuts, len(data)]:
        if transport.closed:
            break
        conn.data_received(data[start:cut])
        start = cut
    await asyncio.sleep(0)
    conn.connection_lost(None)
    out = bytes(transport.out)
    while out:  # every framed reply parses and is a response
        assert len(out) >= 2, "half a length prefix"
        size = out[0] << 8 | out[1]
        message = out[2 : 2 + size]
        assert len(message) == size, "a reply shorter than its prefix"
        assert message[2] & 0x80, "a reply without QR"
        out = out[2 + size :]


def one_input(data: bytes) -> None:
    RUNS[0] += 1
    if not data:
        return
    mode, packet = data[0] % 4, data[1:]
    if mode == 0:
        check_reply(packet, finish(HANDLER.handle(packet, "127.0.0.1", False)), tcp=False)
    elif mode == 1:
        check_reply(packet, finish(HANDLER.handle(packet, "127.0.0.1", True)), tcp=True)
    elif mode == 2:
        check_reply(packet, finish(HANDLER.handle(packet, POD_IP, False)), tcp=False)
    else:
        cuts = sorted({b % (len(packet) + 1) for b in packet[:3]})
        LOOP.run_until_complete(tcp_stream(packet, cuts))


def seed(corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    for i, wire in enumerate(VALID):
        for mode in range(3):
            (corpus / f"seed-{i}-{mode}").write_bytes(bytes([mode]) + wire)
        framed = len(wire).to_bytes(2, "big") + wire
        (corpus / f"seed-{i}-tcp").write_bytes(b"\x03" + framed + framed)


@atexit.register
def report() -> None:
    print(f"svcdns fuzz: {RUNS[0]} inputs run", file=sys.stderr, flush=True)


if __name__ == "__main__":
    dirs = [a for a in sys.argv[1:] if not a.startswith("-")]
    if dirs:
        seed(Path(dirs[0]))
    os.environ.setdefault("PYTHONHASHSEED", "0")
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
