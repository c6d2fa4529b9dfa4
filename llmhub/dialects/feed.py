"""A feed computed once per tick and fanned out to every subscriber.

Each open /runs page reads a feed of live runs, records and usage. Computing that per
subscriber cost about 3% of a core each, so thirty tabs took a whole core. Here one ticker
thread computes one snapshot per tick for every subscriber at once, and each subscriber
gets its own view of it.

Rules:
1. `compute(views)` is called once per tick, whatever the number of subscribers; `views`
   is the set of distinct views the subscribers need (for the runs page: None for an
   admin, else the user key's name), and it returns {view: payload}.
2. A subscriber is handed a payload only when its view changed since the last one it got:
   a quiet hub sends nothing but the stream's keep-alive comments.
3. The ticker runs only while someone subscribes; a new subscriber wakes it at once, so a
   page gets its first snapshot without waiting a tick.

A subscriber is read the way a run is (runs.RunContract), so the stream pump
serves it like any run.
"""

import logging
import threading
import time
from typing import Callable, Hashable

from llmhub.engine.runs import STREAMING, RunContract

__all__ = ["Feed", "Snapshot"]

log = logging.getLogger("llmhub.feed")


class Snapshot:
    """One payload for one subscriber, as the stream pump reads events."""
    kind = "snapshot"

    def __init__(self, data: dict) -> None:
        self.data = data


class Feed:
    def __init__(self, compute: Callable[[set], dict], every: float) -> None:
        self.compute, self.every = compute, every
        self.ticks = 0                       # how many snapshots were computed (tests read it)
        self._changed = threading.Condition()
        self._payloads: dict = {}            # view → payload of the latest tick
        self._subscribers: set = set()
        self._wake = threading.Event()
        self._ticker: threading.Thread | None = None

    def subscribe(self, view: Hashable) -> "Subscriber":
        subscriber = Subscriber(self, view)
        with self._changed:
            self._subscribers.add(subscriber)
            if self._ticker is None:
                self._ticker = threading.Thread(target=self._loop, name="feed", daemon=True)
                self._ticker.start()
        self._wake.set()                     # a new view is computed now, not next tick
        return subscriber

    def unsubscribe(self, subscriber: "Subscriber") -> None:
        with self._changed:
            self._subscribers.discard(subscriber)
            self._changed.notify_all()
        self._wake.set()

    def latest(self, view: Hashable) -> tuple[int, dict | None]:
        with self._changed:
            return self.ticks, self._payloads.get(view)

    def wait_tick(self, seen: int, timeout: float) -> None:
        """Return once a tick newer than `seen` is in, or after `timeout` seconds."""
        with self._changed:
            self._changed.wait_for(lambda: self.ticks > seen, timeout)

    def _loop(self) -> None:
        while True:
            self._wake.clear()               # before reading the views: a subscriber
            with self._changed:              # that comes during the tick wakes the next
                views = {s.view for s in self._subscribers}
                if not views:
                    self._ticker = None      # the next subscriber starts a new ticker
                    return
            self._tick(views)
            self._wake.wait(self.every)

    def _tick(self, views: set) -> None:
        try:
            payloads = self.compute(views)
        except Exception:                    # one bad tick must not end every page's feed
            log.exception("the feed could not compute a snapshot")
            return
        with self._changed:
            self._payloads = payloads
            self.ticks += 1
            self._changed.notify_all()


class Subscriber(RunContract):
    """One reader's place in a feed: its view, and the last payload it was handed."""

    job = None
    base = 0
    status = STREAMING
    secrets = ()

    def __init__(self, feed: Feed, view: Hashable) -> None:
        self.id, self.created, self.info = "monitor", int(time.time()), {}
        self.feed, self.view = feed, view
        self._seen = 0
        self._sent: dict | None = None
        self._over = threading.Event()

    def read(self, cursor: int, timeout: float, reader: int | None = None) -> list:
        deadline = time.monotonic() + timeout
        while not self._over.is_set():
            tick, payload = self.feed.latest(self.view)
            if tick > self._seen:
                self._seen = tick
                if payload is not None and payload != self._sent:
                    self._sent = payload
                    return [Snapshot(payload)]
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            self.feed.wait_tick(self._seen, left)
        return []

    def follow(self, cursor: int, driving: bool = False) -> int:
        return 0

    def unfollow(self, reader: int) -> None:
        self._leave()

    def wait(self, timeout: float | None) -> bool:
        return self._over.wait(timeout)

    def cancel(self, reason: str = "", wait: float = 0.0) -> str:
        self._leave()
        return "cancelled"

    def _leave(self) -> None:
        self._over.set()
        self.feed.unsubscribe(self)
