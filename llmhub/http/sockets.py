"""Socket readiness checks that hold up at scale and on every platform.

`select.select()` refuses file descriptors at or above FD_SETSIZE (1024 on Linux): a hub
holding a thousand streams has such descriptors, and a check that treats that error as
"the client left" cancels healthy streams. `poll()` has no such limit; Windows has no poll,
and its select() has no descriptor-number limit.
"""

import contextlib
import logging
import select
import socket
import sys
import threading
import time
from typing import Callable

__all__ = ["readable", "arrivals", "writable", "peer_closed", "ready", "RecvSize", "Ticker",
           "HangupWatch", "Deadlines"]

log = logging.getLogger("llmhub.sockets")
SELECT_LIMIT = 500   # Windows' select() takes at most 512 sockets a call
# Linux's struct tcp_info: the state byte first, tcpi_bytes_received at 128..136 (Linux 4.1+).
TCP_INFO = getattr(socket, "TCP_INFO", None) if sys.platform.startswith("linux") else None
TCP_ESTABLISHED = 1
BYTES_RECEIVED = slice(128, 136)


def readable(sock: socket.socket, timeout: float = 0.0) -> bool:
    """True if a read would not block (data, EOF or an error is waiting)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(timeout * 1000))
    return bool(select.select([sock], [], [], timeout)[0])


def arrivals(sock: socket.socket) -> int | None:
    """How many bytes have come in on a TCP connection (a FIN counts one), read without
    releasing the GIL; -1 once it is no longer open (a FIN or a reset came); None where the
    platform keeps no such count.

    Why not `readable()`: poll() releases the GIL, and on a loaded hub each release hands it to
    another thread and waits to get it back (~50 µs a call at 64 clients; bench/README.md,
    fifth round). getsockopt() keeps it."""
    if TCP_INFO is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, BYTES_RECEIVED.stop)
    except (OSError, ValueError):
        return -1            # closed: no descriptor
    if len(info) < BYTES_RECEIVED.stop:
        return None          # a kernel before 4.1
    if info[0] != TCP_ESTABLISHED:
        return -1
    return int.from_bytes(info[BYTES_RECEIVED], sys.byteorder)


def writable(sock: socket.socket) -> bool:
    """True if a small write would not block now (the send buffer has room)."""
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLOUT)
            return bool(poller.poll(0))
        return bool(select.select([], [sock], [], 0)[1])
    except (OSError, ValueError):   # closed meanwhile: the write will say so
        return True


def peer_closed(sock: socket.socket) -> bool:
    """True once the other side has closed: readable, with nothing to read."""
    try:
        return readable(sock) and sock.recv(1, socket.MSG_PEEK) == b""
    except (ConnectionError, OSError):
        return True


def ready(socks: list[socket.socket], timeout: float) -> list[socket.socket]:
    """The sockets among `socks` that are readable, waiting up to `timeout` for one."""
    if hasattr(select, "poll"):
        poller, by_fd = select.poll(), {}
        for sock in socks:
            with contextlib.suppress(OSError, ValueError):   # closed meanwhile: skip it
                poller.register(sock, select.POLLIN | select.POLLPRI)
                by_fd[sock.fileno()] = sock
        return [by_fd[fd] for fd, _ in poller.poll(timeout * 1000) if fd in by_fd]
    found = []
    for start in range(0, len(socks), SELECT_LIMIT):
        group = [s for s in socks[start:start + SELECT_LIMIT] if s.fileno() >= 0]
        with contextlib.suppress(OSError, ValueError):
            found += select.select(group, [], [], timeout if start == 0 else 0)[0]
    return found


class RecvSize:
    """How much the next recv asks for: small while reads come back short, four times more
    after each read that filled it, up to `most`. A recv blocked on a silent peer holds a
    buffer of the size it asked for the whole time it waits: a thousand held streams asking
    for 64 KiB each held 56 KiB apiece (tracemalloc), where a token's chunk is a few hundred
    bytes. A bulk transfer fills its reads, and is at `most` after two of them.

    Over TLS one recv returns at most one record (16 KiB of plaintext), so a read that
    brought a whole record counts as full."""

    __slots__ = ("size", "record")
    least, most = 2048, 65536
    TLS_RECORD = 16384

    def __init__(self, tls: bool = False) -> None:
        self.size = self.least
        self.record = self.TLS_RECORD if tls else self.most

    def recv(self, sock: socket.socket) -> bytes:
        size = self.size
        data = sock.recv(size)
        full = len(data) >= min(size, self.record)
        self.size = min(size * 4, self.most) if full else self.least
        return data


class Ticker:
    """A background thread that calls `tick()` every `interval` seconds while it has
    something to look after, and leaves after `linger` quiet seconds; `_wanted()` starts it
    again. It ticks on a clock rather than being woken per request, which would cost a
    thread switch each."""

    interval = 0.1
    linger = 10.0

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._running = False

    def _wanted(self) -> None:
        """Call with the lock held, after adding something to look after."""
        if not self._running:
            self._running = True
            threading.Thread(target=self._loop, name=self.name, daemon=True).start()

    def _loop(self) -> None:
        quiet = 0.0
        while True:
            time.sleep(self.interval)
            with self._lock:
                busy = self._busy()
                quiet = 0.0 if busy else quiet + self.interval
                if quiet >= self.linger:
                    self._running = False
                    return
            if busy:
                try:
                    self.tick()
                except Exception:   # the thread must outlive a bad callback
                    log.exception("%s failed", self.name)

    def _busy(self) -> bool:
        raise NotImplementedError

    def tick(self) -> None:
        raise NotImplementedError


class HangupWatch(Ticker):
    """Notices clients hanging up while their handlers are busy elsewhere.

    A handler awaiting a whole reply drives the upstream call itself, so it cannot watch its
    own client meanwhile. It lends the client's socket to this watch, which checks every
    socket it holds in one poll a tick, and runs `on_hangup` for each whose peer closed. A
    socket with data waiting (a pipelined request) cannot show a hangup, and is dropped
    rather than reported readable again and again.
    """

    def __init__(self) -> None:
        super().__init__("hangup watch")
        self._watched: dict[socket.socket, Callable[[], None]] = {}

    @contextlib.contextmanager
    def watching(self, sock: socket.socket, on_hangup: Callable[[], None]):
        with self._lock:
            self._watched[sock] = on_hangup
            self._wanted()
        try:
            yield
        finally:
            with self._lock:
                self._watched.pop(sock, None)

    def _busy(self) -> bool:
        return bool(self._watched)

    def tick(self) -> None:
        with self._lock:
            socks = list(self._watched)
        for sock in ready(socks, 0):
            with self._lock:
                on_hangup = self._watched.pop(sock, None)
            if on_hangup is not None and peer_closed(sock):
                on_hangup()    # else gone from the watch already, or data waiting


class Deadlines(Ticker):
    """Enforces timeouts by calling `expire()` on each holder whose `expires_at` has passed.
    Holders change `expires_at` from their own threads, so it is read once a tick.

    Sockets given a timeout make CPython poll() before every recv and send, and each of
    those syscalls releases the GIL: under load, a context switch apiece. Sockets that stay
    blocking, with this thread shutting them down when they are overdue, cost one syscall
    an operation. A timeout is then late by up to a tick, which no timeout here minds.
    """

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__("deadlines")
        self.interval = interval
        self._holders: set = set()

    def add(self, holder) -> None:
        with self._lock:
            self._holders.add(holder)
            self._wanted()

    def discard(self, holder) -> None:
        with self._lock:
            self._holders.discard(holder)

    def holders(self) -> list:
        with self._lock:
            return list(self._holders)

    def _busy(self) -> bool:
        return bool(self._holders)

    def tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            holders = list(self._holders)
        for holder in holders:
            if (expires := holder.expires_at) is not None and expires <= now:
                holder.expire()
