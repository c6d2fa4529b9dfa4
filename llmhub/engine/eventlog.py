"""A run's event log: its typed events in order, for any number of readers.

Readers follow the log by absolute cursor, which is what lets a stream be re-attached.
Memory is bounded twice over. While a reader follows the log, the writer's `append`
blocks once the events that reader has not taken pass `buffer_limit` bytes: the run's
driver stops reading the upstream, and TCP pushes back on the model server. And the log keeps
at most `log_limit` bytes, dropping its oldest events, never ones a reader still needs; a
resume from before the window is told so (`EventsGone`).

Waking is paid only when someone waits: the Condition is made the first time a reader or
a held-back writer waits, and `_notify` is a no-op while nobody does. notify_all costs a
few µs even with no waiter, and most appends find none (a reader that is behind takes the
new events on its next read without waiting; a driving reader never waits).

The log knows nothing of runs: who may write, and when the log is over, is the run's
business (runs.Run).
"""

import threading
from typing import Callable

from llmhub.errors import Gone
from llmhub.events import weight

__all__ = ["EventLog", "EventsGone", "TRIMMED"]

TRIMMED = "trimmed"    # a stored log's first entry when the bounded log dropped its start


class EventsGone(Gone):
    """A reader asked for events the bounded log has already dropped."""

    def __init__(self, cursor: int, base: int) -> None:
        super().__init__(f"Events before {base} are no longer kept (asked from {cursor}); "
                         "[responses] max_event_log_bytes bounds the log",
                         code="events_expired", param="Last-Event-ID")


class EventLog:
    # Slots: a thousand held streams are a thousand logs.
    __slots__ = ("buffer_limit", "log_limit", "events", "base", "_ends", "_bytes",
                 "_base_bytes", "_readers", "_drivers", "_next_reader", "_lock", "_cond",
                 "_waiting")

    def __init__(self, buffer_limit: int = 1 << 20, log_limit: int = 8 << 20) -> None:
        self.buffer_limit = buffer_limit
        self.log_limit = log_limit
        self.events: list = []
        self.base = 0                      # absolute position of events[0]
        self._ends: list[int] = []         # bytes emitted up to the end of each kept event
        self._bytes = 0                    # bytes emitted in all (an estimate: events.weight)
        self._base_bytes = 0               # … of which before `base`, dropped from the log
        self._readers: dict[int, int] = {}   # reader key → the cursor it has reached
        self._drivers: dict[int, int] = {}   # … of readers that are the writer's own thread
        self._next_reader = 0
        # Taken directly: `with` on a Condition is a Python-level __enter__ per event.
        self._lock = threading.Lock()
        self._cond: threading.Condition | None = None   # over _lock, made by the first wait:
        # new events, for readers; readers moving on, for a held-back writer
        self._waiting = 0                  # threads in _wait (read under _lock by _notify)

    # -- readers -----------------------------------------------------------------------------
    def read(self, cursor: int, timeout: float, reader: int | None = None) -> list:
        """Events from absolute position `cursor` on, waiting up to `timeout` for one;
        EventsGone if the log no longer holds `cursor`."""
        with self._lock:
            if reader in self._drivers:
                self._drivers[reader] = cursor
            elif reader is not None and self._readers.get(reader, cursor) < cursor:
                self._readers[reader] = cursor
                self._notify()
                if self._bytes - self._base_bytes > self.log_limit:
                    self._trim()          # what this reader held back may go now
            if cursor < self.base:
                raise EventsGone(cursor, self.base)
            # A driving reader asks with no timeout: it must not make the Condition.
            if timeout > 0 and self.base + len(self.events) <= cursor:
                self._wait(timeout)
            return self.events[cursor - self.base:]

    def follow(self, cursor: int, driving: bool = False) -> int:
        """A reader from `cursor` on: its events are kept for it, and the writer is held back
        when it falls behind; unless it is `driving`, the writer's own thread reading between
        appends, which must never wait for itself (its writes block instead). Returns the
        reader's key."""
        with self._lock:
            if cursor < self.base:
                raise EventsGone(cursor, self.base)
            self._next_reader += 1
            (self._drivers if driving else self._readers)[self._next_reader] = cursor
            return self._next_reader

    def unfollow(self, reader: int) -> int:
        """The reader left; how many readers are still following."""
        with self._lock:
            self._readers.pop(reader, None)
            self._drivers.pop(reader, None)
            self._notify()
            return len(self._readers) + len(self._drivers)

    @property
    def followed(self) -> bool:
        return bool(self._readers or self._drivers)

    # -- the writer --------------------------------------------------------------------------
    def append(self, event, stop: Callable[[], bool] | None = None) -> None:
        """Add an event. With `stop`, the writer is then held back (in the same lock) while
        a reader has more than `buffer_limit` bytes untaken, until it catches up or `stop()`
        says the writer should give up (checked on every wake)."""
        with self._lock:
            self._append(event)
            while stop is not None and self._readers and not stop() and \
                    self.untaken() > self.buffer_limit:
                self._wait(0.5)

    def extend(self, events: list) -> None:
        with self._lock:
            for event in events:
                self._append(event)

    def wake(self) -> None:
        """Wake a held-back writer and waiting readers (the run is ending)."""
        with self._lock:
            self._notify()

    # -- the bounds --------------------------------------------------------------------------
    def _append(self, event) -> None:
        self._bytes += weight(event)
        self.events.append(event)
        self._ends.append(self._bytes)
        if self._waiting:                  # _notify's test, without its call on every event
            self._notify()
        if self._bytes - self._base_bytes > self.log_limit:
            self._trim()

    def _trim(self) -> None:
        """Drop the older half of the kept log, but nothing a reader has not taken."""
        keep_from = min([self.base + len(self.events) // 2, *self._readers.values(),
                         *self._drivers.values()])
        drop = keep_from - self.base
        if drop > 0:
            self._base_bytes = self._ends[drop - 1]
            del self.events[:drop], self._ends[:drop]
            self.base = keep_from

    def _wait(self, timeout: float) -> None:
        """Wait (holding _lock) for a _notify, at most `timeout` seconds."""
        if self._cond is None:
            self._cond = threading.Condition(self._lock)
        self._waiting += 1
        try:
            self._cond.wait(timeout)
        finally:
            self._waiting -= 1

    def _notify(self) -> None:
        # Under _lock: a waiter counted itself (and made the Condition) before waiting.
        if self._waiting and self._cond is not None:
            self._cond.notify_all()

    def untaken(self) -> int:
        """Bytes emitted after the slowest reader's cursor (0 with no reader)."""
        if not self._readers:
            return 0
        slowest = min(self._readers.values())
        taken = self._base_bytes if slowest <= self.base else \
            self._ends[min(slowest - self.base, len(self._ends)) - 1]
        return self._bytes - taken
