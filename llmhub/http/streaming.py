"""The stream pump: one run's events, rendered by a dialect, written to one client.

A pump works one of two ways. Following (`pump()`), it waits on the run's events with a
short timeout, and on each quiet tick asks whether the client is still there and whether a
ping is due: that is how a client leaving is noticed while the upstream is silent (a long
prefill). Driven (`flush()`), the run's own driver calls it just before it blocks on the
upstream, so what one read brought goes out in one write from the thread that read it;
the `Pinger` keeps such a stream's pings while the upstream is silent, and the server's
hangup watch notices the client leaving. Its writes and the pinger's take one lock, so
pings and events never interleave mid-frame.

It knows no sockets and no HTTP: it writes through a `StreamWriter`, which the server
implements over a connection and a test over a list.
"""

import threading
import time
from typing import Protocol

from llmhub.errors import HubError, error_of
from llmhub.http.sockets import Ticker

__all__ = ["Pump", "StreamWriter", "Pinger"]


class StreamWriter(Protocol):
    @property
    def started(self) -> bool:             # the headers (and so a 200) have gone out
        ...

    def start(self, data: bytes) -> None:  # the headers, with the first data
        ...

    def send(self, data: bytes) -> None:   # one piece of the body; never empty
        ...

    def end(self, data: bytes = b"") -> None:   # the last piece and the body's end, in
        ...                                      # one write (where the framing has an end)

    def client_gone(self) -> bool:
        ...

    def writable(self) -> bool:            # a small write would not block
        ...


class Pump:
    """Streams `run` from event `cursor` on, as the reader `reader` (Run.follow): following
    it (`pump`), or driven by its driver (`flush` before each wait on the upstream, then
    `pump` for the closing events).

    A run that fails before anything went out raises its error, so the server can still
    answer with a real status; a client that leaves raises ConnectionResetError.
    """

    poll = 0.1       # seconds: how soon a silent run notices its client left, …
    poll_max = 1.0   # … backing off to this while it stays silent: a thousand idle streams
                     # must not wake ten thousand times a second

    def __init__(self, run, renderer, writer: StreamWriter, ping_every: float,
                 cursor: int = 0, reader: int | None = None) -> None:
        self.run, self.renderer, self.writer = run, renderer, writer
        self.ping_every, self.cursor, self.reader = ping_every, cursor, reader
        self.next_ping = 0.0
        self.broken: BaseException | None = None   # a driven write failed: what pump() raises
        self.pinging = False                       # the Pinger may write (under the lock)
        self._opened = False
        self._lock = threading.Lock()              # the driver's writes and the pinger's

    def open(self) -> None:
        """Start the ping clock (a steady beat from acceptance on) and send the renderer's
        eager opening; once."""
        if self._opened:
            return
        self._opened = True
        self.next_ping = time.monotonic() + self.ping_every
        if self.renderer.eager:
            self.writer.start(self.renderer.opening(self.run))

    def pump(self) -> None:
        """Follow the run to its end, writing its events as they come."""
        if self.broken is not None:
            raise self.broken
        self.open()
        run = self.run
        quickest = poll = min(self.poll, self.ping_every)
        while True:
            events = run.read(self.cursor, poll, self.reader)
            if events:
                with self._lock:
                    if self._deliver(events):
                        return
                poll = quickest
            elif self.writer.client_gone():
                raise ConnectionResetError("client went away")
            else:
                poll = min(poll * 1.5, self.poll_max, self.ping_every)
            if time.monotonic() >= self.next_ping:
                with self._lock:
                    self._ping()

    def flush(self) -> None:
        """Driven: write what the run has emitted since the last write, and a ping if one is
        due. Called by the run's driver before it waits on the upstream, so it never raises:
        a client gone cancels the run, a renderer's bug fails it, and `broken` says which
        for the server once the driver is done. Closing events are left to `pump()`."""
        if self.broken is not None:
            return
        with self._lock:
            try:
                events = before_closing(self.run.read(self.cursor, 0, self.reader))
                if events:
                    self._deliver(events)
                if time.monotonic() >= self.next_ping:
                    self._ping()
            except OSError as exc:
                self._gone(exc)
            except Exception as exc:   # a renderer's bug: the run must still end
                self.broken = exc
                self.run.finish("fail", error=HubError(
                    "The hub failed while streaming this reply; see its log"))

    def keep_pinging(self, now: float) -> None:
        """The pinger's tick: a ping if one is due and the driver is not writing, and only
        where it cannot block (a client that reads nothing holds no pinger)."""
        if self.broken is not None or now < self.next_ping or \
                not self._lock.acquire(blocking=False):
            return
        try:
            if self.pinging and self.writer.writable():
                self._ping()
        except OSError as exc:
            self._gone(exc)
        finally:
            self._lock.release()

    def stop_pinging(self) -> None:
        """No tick of the pinger writes from now on, not even one that took this pump just
        before: the connection may be carrying the next request's reply by then."""
        with self._lock:
            self.pinging = False

    def _deliver(self, events: list) -> bool:
        """Render and write `events`; True once the last was `done` (the body ended)."""
        self.cursor += len(events)
        if not self.writer.started and events[0].kind == "error":
            raise error_of(events[0])
        data = b"".join(self.renderer.render(event) for event in events)
        if events[-1].kind != "done":
            self._write(data)
            return False
        if self.writer.started:
            self.writer.end(data)          # one write, one packet: the client wakes once
        else:
            self.writer.start(data)
            self.writer.end()
        return True

    def _ping(self) -> None:
        self.next_ping = time.monotonic() + self.ping_every
        self._write(self.renderer.ping())

    def _write(self, data: bytes) -> None:
        if not self.writer.started:
            self.writer.start(data)
        elif data:
            self.writer.send(data)

    def _gone(self, exc: OSError) -> None:
        self.broken = ConnectionResetError(f"client went away ({type(exc).__name__})")
        self.run.cancel("client_gone")


def before_closing(events: list) -> list:
    """`events` without the closing ones ([Error,] Done), which the log ends with."""
    if not events or events[-1].kind != "done":
        return events
    return events[:-2] if len(events) > 1 and events[-2].kind == "error" else events[:-1]


class Pinger(Ticker):
    """Pings for driven streams (Pump.flush), whose one thread is blocked on the upstream
    while it is silent: one thread for all of them, on a clock."""

    def __init__(self, ping_every: float) -> None:
        super().__init__("pinger")
        self.interval = min(1.0, max(0.05, ping_every / 10))   # a ping is at most 10% late
        self._pumps: set[Pump] = set()

    def add(self, pump: Pump) -> None:
        pump.pinging = True
        with self._lock:
            self._pumps.add(pump)
            self._wanted()

    def discard(self, pump: Pump) -> None:
        with self._lock:
            self._pumps.discard(pump)
        pump.stop_pinging()

    def _busy(self) -> bool:
        return bool(self._pumps)

    def tick(self) -> None:
        with self._lock:
            pumps = list(self._pumps)
        now = time.monotonic()
        for pump in pumps:
            pump.keep_pinging(now)
