"""First-in-first-out admission to one upstream (or one model): at most `limit` runs at once.

It lives beside the upstreams because each adapter owns one; what waits in it is anything
with an `ended` flag and a `gate` slot, so nothing here depends on the engine's runs.

Two priorities (issue 32): a run entered while `background` is set in its driver's context
(a batch line) is admitted only when no interactive run waits, and an interactive run that
finds every slot taken while a background run holds one preempts it (`cancel("preempted")`:
the batch runs that line again later). So a batch uses every idle slot and never makes an
interactive request wait for one, beyond the moment its upstream call takes to abort. One
batch line is preempted per interactive run waiting, never more.
"""

import collections
import contextvars
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

    def cancel(self, reason: str = ..., wait: float = ...) -> str: ...


# Set (True) in the context of a thread that drives background work (a batch line): what it
# enters waits behind every interactive run and may be preempted by one.
background: contextvars.ContextVar[bool] = contextvars.ContextVar("background", default=False)
PREEMPTED = "preempted"     # the cancel reason of a background run an interactive one displaced


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
        self._waiting: collections.deque["Waiter"] = collections.deque()   # interactive
        self._low: collections.deque["Waiter"] = collections.deque()       # background
        self._holders: list["Waiter"] = []       # background runs holding a slot
        self._preempted: list["Waiter"] = []     # those already asked to give it up

    def enter(self, run: "Waiter", poll: float = 0.05) -> bool:
        """Block until `run` may go; False if it finished (was cancelled) while waiting."""
        if not self.limit:
            return True
        low = background.get()
        with self._cond:
            # max_queued bounds interactive waiters; batch lines are bounded by their own
            # [batches] max_parallel_lines, and never crowd an interactive request out
            busy = self._waiting or self._active >= self.limit
            if not low and busy and self.max_queued and len(self._waiting) >= self.max_queued:
                raise QueueFull(len(self._waiting))
            line = self._low if low else self._waiting
            line.append(run)
            run.gate = self
            try:
                while not self._may_go(run, line):
                    if run.ended:
                        return False
                    if not low:
                        self._preempt_for(run)
                    self._cond.wait(poll)
                self._active += 1
                if low:
                    self._holders.append(run)
                return True
            finally:
                line.remove(run)
                run.gate = None
                self._cond.notify_all()

    def _may_go(self, run: "Waiter", line: collections.deque) -> bool:
        if self._active >= self.limit or line[0] is not run:
            return False
        return line is self._waiting or not self._waiting

    def _preempt_for(self, run: "Waiter") -> None:
        """When every slot is taken and `run` heads the interactive line, cancel one
        background holder (each is asked once); called holding the condition. One victim
        per interactive waiter: a victim asked but not yet gone (its upstream call
        aborting) still frees a slot, so while there are as many as waiters, none more."""
        if self._waiting[0] is not run or self._active < self.limit or \
                len(self._preempted) >= len(self._waiting):
            return
        victim = next((h for h in self._holders if h not in self._preempted), None)
        if victim is None:
            return
        self._preempted.append(victim)
        self._cond.release()           # a cancel takes the run's own locks
        try:
            victim.cancel(PREEMPTED)
        finally:
            self._cond.acquire()

    def leave(self, run: "Waiter | None" = None) -> None:
        if not self.limit:
            return
        with self._cond:
            self._active -= 1
            if run is not None and run in self._holders:
                self._holders.remove(run)
                if run in self._preempted:
                    self._preempted.remove(run)
            self._cond.notify_all()

    def position(self, run: "Waiter") -> int | None:
        """Place in line, 1 first: an interactive run counts interactive ones only; a
        background one comes after every interactive one."""
        with self._cond:
            if run in self._waiting:
                return self._waiting.index(run) + 1
            if run in self._low:
                return len(self._waiting) + self._low.index(run) + 1
            return None

    def queued_now(self) -> int:
        return len(self._waiting) + len(self._low)

    @property
    def queued(self) -> int:
        with self._cond:
            return self.queued_now()


class QueueFull(HubError):
    """A gate's line is as long as `max_queued` allows: refused now rather than held."""
    status, code = 503, "queue_full"

    def __init__(self, waiting: int) -> None:
        super().__init__(f"The model server is busy: {waiting} requests are already waiting "
                         "([upstream] max_queued); try again shortly",
                         headers={"Retry-After": "1"})
