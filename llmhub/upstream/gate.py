"""First-in-first-out admission to one upstream (or one model): at most `limit` runs at once.

It lives beside the upstreams because each adapter owns one; what waits in it is anything
with an `ended` flag and a `gate` slot, so nothing here depends on the engine's runs.
"""

import collections
import threading
from typing import Protocol

from llmhub.errors import HubError


class Place(Protocol):
    """Where a run waits: a Gate, or a pool's line (engine/routing.py)."""

    def position(self, run: "Waiter") -> int | None: ...


class Waiter(Protocol):
    """What a gate holds in its line: a run, seen only as far as the gate needs."""
    gate: Place | None

    @property
    def ended(self) -> bool: ...


class Gate:
    """First-in-first-out admission for at most `limit` runs at once (0 = no limit).

    Used per upstream; there is no global lock. A run waiting here stays `queued` and can be
    cancelled while it waits.
    """

    def __init__(self, limit: int, max_queued: int = 0) -> None:
        self.limit = limit
        self.max_queued = max_queued     # waiting runs allowed; 0: any number
        self._cond = threading.Condition()
        self._active = 0
        self._waiting: collections.deque["Waiter"] = collections.deque()

    def enter(self, run: "Waiter", poll: float = 0.05) -> bool:
        """Block until `run` may go; False if it finished (was cancelled) while waiting."""
        if not self.limit:
            return True
        with self._cond:
            busy = self._waiting or self._active >= self.limit
            if busy and self.max_queued and len(self._waiting) >= self.max_queued:
                raise QueueFull(len(self._waiting))
            self._waiting.append(run)
            run.gate = self
            try:
                while self._waiting[0] is not run or self._active >= self.limit:
                    if run.ended:
                        return False
                    self._cond.wait(poll)
                self._active += 1
                return True
            finally:
                self._waiting.remove(run)
                run.gate = None
                self._cond.notify_all()

    def leave(self) -> None:
        if not self.limit:
            return
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    def position(self, run: "Waiter") -> int | None:
        with self._cond:
            return self._waiting.index(run) + 1 if run in self._waiting else None

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._waiting)


class QueueFull(HubError):
    """A gate's line is as long as `max_queued` allows: refused now rather than held."""
    status, code = 503, "queue_full"

    def __init__(self, waiting: int) -> None:
        super().__init__(f"The model server is busy: {waiting} requests are already waiting "
                         "([upstream] max_queued); try again shortly",
                         headers={"Retry-After": "1"})
