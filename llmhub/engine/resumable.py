"""Streams a client asked to be resumable: which runs they are, and how long each is kept.

A stream in any dialect may ask to survive its client (dialects/reattach.py says how). Its
run then follows rule 3 of runs.py ("who ends a run"): it waits `grace` seconds after its
last reader left, and a reader that comes back in time keeps it; nobody back in time, it is
cancelled (`client_gone`), stored and counted as any cancelled run. What this table adds is
the run after its end: a finished run leaves the registry at once, but a client that lost
the tail of its stream still needs its events, so the table holds the run (its event log,
nothing more) for `grace` seconds after it ended, then lets it go.

Rules:
- An entry belongs to the key that made the run: another key's lookup is the same 404 as an
  unknown id (an admin sees all, as everywhere).
- An entry carries what the dialect needs to render the stream again (`renderer`, opaque
  here) and where it was asked (`where`): the engine never looks inside either.
- Expired entries go on the next lookup or keep, and on the health prober's tick: memory
  is bounded by the grace, not by who comes back.
"""

import threading
import time
from typing import Any, NamedTuple

from llmhub.errors import NotFound

__all__ = ["Resumables", "Resumable", "not_resumable"]


class Resumable(NamedTuple):
    run: Any              # the live run (runs.Run), or the finished one it became
    where: tuple          # the dialect and route that made the stream
    renderer: Any         # the dialect's renderer as made, before it rendered anything


def not_resumable(run_id: str) -> NotFound:
    return NotFound(f"No resumable stream with run id {run_id!r}: a stream can be resumed "
                    "when its request asked (X-Llmhub-Resumable: 1), by its own key, until "
                    "resume_grace_seconds after its client left or it ended",
                    code="run_not_found", param="X-Llmhub-Resume")


class Resumables:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, Resumable] = {}
        self._ends: dict[str, float] = {}    # run id → when its entry expires, once it ended

    def keep(self, run, grace: float, where: tuple, renderer: Any) -> None:
        """Make `run` resumable: its stream waits `grace` seconds for a client to come back,
        and its events stay that long after it ends."""
        self.sweep()
        run.allow_resume(grace)
        with self._lock:
            self._entries[run.id] = Resumable(run, where, renderer)
        run.on_finish(lambda run: self._ended(run.id, grace))
        if run.ended:                     # ended before the hook was in place (a cancel by
            self._ended(run.id, grace)    # X-Run-Id): its time is counted from now

    def find(self, run_id: str, caller) -> Resumable:
        """The caller's resumable stream with this id; NotFound otherwise."""
        self.sweep()
        with self._lock:
            entry = self._entries.get(run_id)
        if entry is None or not caller.sees(entry.run.info["key"]):
            raise not_resumable(run_id)
        return entry

    def sweep(self) -> None:
        now = time.monotonic()
        with self._lock:
            for run_id in [r for r, expires in self._ends.items() if expires <= now]:
                del self._ends[run_id], self._entries[run_id]

    def _ended(self, run_id: str, grace: float) -> None:
        # A finish hook: on the run's driver, before its closing events go out. It must
        # not fail (a failing hook fails the run), and it does nothing that could.
        with self._lock:
            if run_id in self._entries:
                self._ends[run_id] = time.monotonic() + grace

    def __len__(self) -> int:
        return len(self._entries)
