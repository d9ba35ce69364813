"""Batched UDP I/O with Linux recvmmsg/sendmmsg, through ctypes.

Per datagram, an asyncio transport costs more than answering from a template (~15 µs
against ~2 µs): a wake-up, two system calls, Python objects for the payload and the peer
address. C servers (Knot, NSD) amortise this with recvmmsg/sendmmsg; Python's socket
module does not expose them, so this module calls libc directly. One event-loop
wake-up then receives up to ``BATCH`` queries into preallocated buffers, answers them,
and sends every reply with one system call. The handler API is unchanged.

Only on Linux; :func:`available` says whether it can be used (the server falls back to
the asyncio transport otherwise).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import socket
import sys
import time
from bisect import bisect_left

from .deferred import send_when_ready

log = logging.getLogger(__name__)

BATCH = 64  # datagrams per system call
SLOT = 4096  # bytes per receive/send slot: queries are small, UDP replies are <= 1232
NAME = 128  # sizeof(struct sockaddr_storage)
MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20
AF_INET = int(socket.AF_INET)  # a plain int: comparing with the IntEnum member costs more


class _IOVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_IOVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


_libc = None


def available() -> bool:
    """True where recvmmsg/sendmmsg can be called (Linux with glibc or musl)."""
    global _libc
    if not sys.platform.startswith("linux"):
        return False
    if _libc is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            libc.recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
            libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
            _libc = libc
        except (OSError, AttributeError):
            return False
    return True


class _Batch:
    """BATCH message headers over one flat buffer for payloads and one for addresses."""

    def __init__(self):
        self.data = bytearray(BATCH * SLOT)
        self.names = bytearray(BATCH * NAME)
        self.view = memoryview(self.data)
        data_base = ctypes.addressof((ctypes.c_char * len(self.data)).from_buffer(self.data))
        self.names_base = ctypes.addressof((ctypes.c_char * len(self.names)).from_buffer(self.names))
        self.iov = (_IOVec * BATCH)()
        self.msgs = (_MMsgHdr * BATCH)()
        for i in range(BATCH):
            self.iov[i].iov_base = data_base + i * SLOT
            self.iov[i].iov_len = SLOT
            hdr = self.msgs[i].msg_hdr
            hdr.msg_name = self.names_base + i * NAME
            hdr.msg_namelen = NAME
            hdr.msg_iov = ctypes.pointer(self.iov[i])
            hdr.msg_iovlen = 1
        # Header fields read and written per datagram through flat views of the arrays:
        # a ctypes attribute access costs ~10x an index into a memoryview.
        assert ctypes.sizeof(_MMsgHdr) == 64 and ctypes.sizeof(_IOVec) == 16
        self.u32 = memoryview(self.msgs).cast("B").cast("I")  # msghdr i: namelen [16i+2], flags [16i+12], msg_len [16i+14]
        self.names_u32 = memoryview(self.names).cast("I")  # sockaddr i: family|port [32i], IPv4 address [32i+1]
        self.iov_len = memoryview(self.iov).cast("B").cast("Q")  # iov i: iov_len [2i+1]
        # Both arrays as bytes, and a copy of them as set up here: the kernel and the
        # replies change namelen and iov_len, and one slice copy per batch restores them
        # (a loop over the slots cost ~60 ns a datagram).
        self.msgs_raw = memoryview(self.msgs).cast("B")
        self.iov_raw = memoryview(self.iov).cast("B")
        self.msgs_pristine = memoryview(bytes(self.msgs_raw))
        self.iov_pristine = memoryview(bytes(self.iov_raw))


class MmsgReader:
    """Serves one UDP socket from the event loop with batched system calls."""

    def __init__(self, sock: socket.socket, handler, latency):
        if not available():
            raise OSError("recvmmsg/sendmmsg are not available here")
        self.sock = sock
        self.fd = sock.fileno()
        self.handler = handler
        self.latency = latency
        self.rx = _Batch()
        self.pending: set[asyncio.Task] = set()
        self._peers: dict[bytes, str] = {}  # raw address -> text, for the handler's client
        sock.setblocking(False)

    def _peer(self, i: int) -> str:
        names = self.rx.names
        off = i * NAME
        if names[off] | names[off + 1] << 8 == AF_INET:
            # The address as one int read from the buffer: no objects made per datagram.
            raw = self.rx.names_u32[(i << 5) + 1]
            text = self._peers.get(raw)
            if text is None:
                if len(self._peers) > 65536:
                    self._peers.clear()
                text = self._peers[raw] = socket.inet_ntop(socket.AF_INET, bytes(names[off + 4 : off + 8]))
            return text
        raw = bytes(names[off + 8 : off + 24])
        text = self._peers.get(raw)
        if text is None:
            if len(self._peers) > 65536:
                self._peers.clear()
            text = self._peers[raw] = socket.inet_ntop(socket.AF_INET6, raw)
        return text

    def on_readable(self) -> int:
        """Answer what is queued (at most 8 batches: stay fair to TCP and HTTP); returns
        how many datagrams were read.

        A reply is written over its query's slot and sent with that slot's header: the
        kernel left the client's address and its length there, so nothing is copied but
        the reply itself. Slots without a reply (dropped, or answered later) split the
        batch into runs, one sendmmsg each."""
        rx = self.rx
        handle, peer, peers = self.handler.handle, self._peer, self._peers
        u32, view, iov_len, msgs, names = rx.u32, rx.view, rx.iov_len, rx.msgs, rx.names_u32
        total = 0
        for _ in range(8):
            n = _libc.recvmmsg(self.fd, msgs, BATCH, MSG_DONTWAIT, None)
            if n <= 0:
                return total
            total += n
            started = time.perf_counter()
            run = 0  # first slot of the current run of replies
            for i in range(n):
                h = i << 4
                base = i * SLOT
                reply = None
                if not u32[h + 12] & MSG_TRUNC:  # larger than any query we answer: drop
                    # a known IPv4 client without a call: family (low half) and address
                    client = peers.get(names[(i << 5) + 1]) if names[i << 5] & 0xFFFF == AF_INET else None
                    reply = handle(bytes(view[base : base + u32[h + 14]]), client or peer(i), False)
                if type(reply) is bytes:
                    length = len(reply)
                    if length <= SLOT:
                        view[base : base + length] = reply
                        iov_len[(i << 1) + 1] = length
                        continue
                elif reply is not None:
                    self._later(reply, i, started)
                if run < i:
                    self._send(run, i - run)
                run = i + 1
            if run < n:
                self._send(run, n - run)  # a full socket buffer drops replies, like queries
            rx.msgs_raw[: n << 6] = rx.msgs_pristine[: n << 6]  # ready the slots for the next recvmmsg
            rx.iov_raw[: n << 4] = rx.iov_pristine[: n << 4]
            elapsed = time.perf_counter() - started
            lat = self.latency
            lat.counts[bisect_left(lat.buckets, elapsed)] += n
            lat.sum += elapsed * n
            if n < BATCH:
                return total
        return total

    def _send(self, first: int, count: int) -> None:
        msgs = self.rx.msgs if first == 0 else ctypes.byref(self.rx.msgs, first * ctypes.sizeof(_MMsgHdr))
        _libc.sendmmsg(self.fd, msgs, count, 0)

    def _later(self, pending, i: int, started: float) -> None:
        """A reply that needs the network (forwarding): sent on its own when it comes."""
        addr = self._address(i, self.rx.u32[(i << 4) + 2])
        task = asyncio.ensure_future(send_when_ready(pending, lambda r, addr=addr: self.sock.sendto(r, addr), self.latency, started, addr[0]))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    def drain(self) -> int:
        """Answer everything already queued on the socket (shutdown)."""
        total = 0
        while (n := self.on_readable()) > 0:
            total += n
        return total

    def _address(self, i: int, namelen: int):
        peer = self._peer(i)
        off = i * NAME
        port = self.rx.names[off + 2] << 8 | self.rx.names[off + 3]
        return (peer, port) if ":" not in peer else (peer, port, 0, 0)
