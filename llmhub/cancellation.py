"""Live runs: their state table, their event log, the registry, and cancel by id.

Rules:
1. Every state change goes through `transition()`, which raises on a move the table lacks.
2. A run finishes exactly once (`Run.finish`); the first finisher wins and later ones are
   no-ops. Cancel finishes the run at once, from the cancelling thread, and shuts the upstream
   socket, so a run stuck in a connect or a silent prefill still reports `cancelled` at once.
3. Events are appended to `Run.events` and never removed while the run lives: any number of
   readers follow it by cursor (`Run.read`), which is what lets a stream be re-attached.
4. Finish hooks (persistence) run before the final events are published, so a client that
   sees `done` can already read what was stored; they see those final events in
   `Run.closing`.
5. A resumable stream's client going away is not a cancel: `remove_listener(grace)` cancels
   only if nobody has re-attached (`add_listener`) when the grace period ends.
"""

import collections
import logging
import threading
import time
from typing import Any, Callable, NamedTuple

from llmhub import ids
from llmhub.completion import Transcript
from llmhub.errors import Conflict, HubError, NotFound

__all__ = ["Event", "Run", "Registry", "Gate", "transition", "QUEUED", "STREAMING",
           "COMPLETED", "CANCELLED", "FAILED", "FINAL"]

log = logging.getLogger("llmhub.runs")

QUEUED, STREAMING = "queued", "streaming"
COMPLETED, CANCELLED, FAILED = "completed", "cancelled", "failed"
FINAL = (COMPLETED, CANCELLED, FAILED)

TRANSITIONS = {
    (QUEUED, "start"): STREAMING,
    (QUEUED, "cancel"): CANCELLED,
    (QUEUED, "fail"): FAILED,
    (STREAMING, "complete"): COMPLETED,
    (STREAMING, "cancel"): CANCELLED,
    (STREAMING, "fail"): FAILED,
}


def transition(state: str, event: str) -> str:
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise ValueError(f"illegal run transition: {event!r} from {state!r}") from None


class Event(NamedTuple):
    """A neutral run event: kind is start, delta, usage, error or done (DESIGN §2)."""
    kind: str
    data: dict


class Run:
    """One generation. Created by the registry; driven by the engine; read by dialects."""

    def __init__(self, run_id: str, registry: "Registry", **info: Any) -> None:
        self.id = run_id
        self.created = int(time.time())
        self.started = time.monotonic()
        self.state = QUEUED
        self.info = info               # requested model, dialect, thread id …
        self.model = info.get("model")
        self.thread_id: str | None = None
        self.provider: dict | None = None
        self.cancel_reason: str | None = None
        self.error: HubError | None = None
        self.events: list[Event] = []
        self.transcript = Transcript()     # what the model has said so far
        self.usage: dict | None = None     # the usage event's data, once known
        self.input_estimate = 0            # prompt tokens, estimated before the upstream says
        self.context: dict | None = None   # what context.build_input included and dropped
        self.closing: list[Event] = []     # the final events, set just before finish hooks
        self.gate: "Gate | None" = None    # the gate this run is queued at, while it waits
        self.job: Callable[[], None] | None = None   # the engine's work, until a thread runs it
        self._listeners = 0
        self._over = threading.Event()     # set once finished: waiting for the end must not
                                           # wake on every token, as the condition does
        self.first_token_at: float | None = None
        self.upstream_at: float | None = None   # when the first upstream request went out
        self._registry = registry
        self._cond = threading.Condition()
        self._call = None              # the upstream call to abort on cancel
        self._final: str | None = None # set once finishing has begun; emits stop there
        self._hooks: list[Callable[["Run"], None]] = []

    # -- reading -----------------------------------------------------------------------------
    def read(self, cursor: int, timeout: float) -> list[Event]:
        """Events after `cursor`, waiting up to `timeout` for at least one."""
        with self._cond:
            if len(self.events) <= cursor:
                self._cond.wait(timeout)
            return self.events[cursor:]

    def wait(self, timeout: float) -> bool:
        """Wait until the run has finished; True if it has."""
        return self._over.wait(timeout)

    # -- driving (engine side) ---------------------------------------------------------------
    def on_finish(self, hook: Callable[["Run"], None]) -> None:
        self._hooks.append(hook)

    def attach(self, call) -> bool:
        """Record the upstream call cancel must abort; False (and aborted) if already over."""
        with self._cond:
            self._call = call
            over = self._final is not None
        if over:
            call.abort()
        return not over

    def start(self, model: str, provider: dict) -> bool:
        with self._cond:
            if self._final:
                return False
            self.state = transition(self.state, "start")
            self.model, self.provider = model, provider
            self._append(Event("start", {"model": model, "provider": provider}))
        return True

    def emit(self, kind: str, data: dict) -> bool:
        """Publish an event; False once the run is finishing (the caller should stop)."""
        with self._cond:
            if self._final:
                return False
            if kind == "delta" and self.first_token_at is None and data.get("text"):
                self.first_token_at = time.monotonic()
            self._append(Event(kind, data))
        return True

    def finish(self, event: str, *, reason: str | None = None, error: HubError | None = None,
               finish_reason: str | None = None) -> bool:
        """complete / cancel / fail; the first call wins and returns True."""
        with self._cond:
            if self._final:
                return False
            new_state = self._final = transition(self.state, event)
        self.cancel_reason, self.error = reason, error
        if event == "cancel" and self._call is not None:
            self._call.abort()
        done = {"status": new_state, "finish_reason": finish_reason}
        if reason:
            done["reason"] = reason
        self.closing = ([Event("error", error.as_dict())] if error is not None else []) + \
            [Event("done", done)]
        for hook in self._hooks:
            try:
                hook(self)
            except Exception:   # the run must still end, or its readers would wait forever
                log.exception("finish hook failed for run %s", self.id)
                done["stored"] = False
        # Retire before the closing events go out: a client that has read `done` may at
        # once ask for the run's status (cancel, metrics) and must find it finished.
        self._registry._retire(self)
        with self._cond:
            self.state = new_state
            for closing in self.closing:
                self._append(closing)
        self._over.set()
        return True

    def cancel(self, reason: str = "cancelled") -> str:
        """Cancel if still live; returns the run's final status either way."""
        self.finish("cancel", reason=reason)
        return self.status

    @property
    def status(self) -> str:
        return self._final or self.state

    def failure(self) -> HubError:
        """The run's error as a fresh exception, to raise in a handler's thread (one
        exception object must not be raised in two threads)."""
        return HubError.from_dict(self.error.as_dict())

    @property
    def queue_position(self) -> int | None:
        gate = self.gate
        return gate.position(self) if gate is not None else None

    def add_listener(self) -> None:
        with self._cond:
            self._listeners += 1

    def remove_listener(self, grace: float) -> None:
        """A listener left; with nobody left after `grace` seconds, cancel the run."""
        with self._cond:
            self._listeners -= 1
            if self._listeners > 0 or self._final:
                return
        timer = threading.Timer(grace, self._abandon_if_alone)
        timer.daemon = True
        timer.start()

    def _abandon_if_alone(self) -> None:
        with self._cond:
            if self._listeners > 0:
                return
        self.cancel("client_gone")

    def _append(self, event: Event) -> None:
        self.events.append(event)
        self._cond.notify_all()


class Registry:
    """Every live run by id, plus the final status of recently finished ones."""

    remember_finished = 10_000   # how many finished ids still answer "already finished"

    def __init__(self, on_retire: Callable[[Run], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._on_retire = on_retire      # metrics: every run is seen once, as it ends
        self._live: dict[str, Run] = {}
        self._finished: collections.OrderedDict[str, str] = collections.OrderedDict()

    def create(self, run_id: str | None = None, **info: Any) -> Run:
        run_id = run_id or "run_" + ids.uuid4().hex
        with self._lock:
            if run_id in self._live or run_id in self._finished:
                raise Conflict(f"Run id {run_id!r} is already in use", param="X-Run-Id")
            run = self._live[run_id] = Run(run_id, self, **info)
        return run

    def get(self, run_id: str) -> Run | None:
        with self._lock:
            return self._live.get(run_id)

    def status(self, run_id: str) -> str:
        with self._lock:
            run = self._live.get(run_id)
            if run is None and run_id in self._finished:
                return self._finished[run_id]
        if run is None:
            raise NotFound(f"No run with id {run_id!r}", code="run_not_found")
        return run.status

    def cancel(self, run_id: str, reason: str = "cancelled") -> str:
        """Cancel a live run; idempotent. Unknown ids raise NotFound."""
        run = self.get(run_id)
        if run is None:
            return self.status(run_id)
        return run.cancel(reason)

    def cancel_all(self, reason: str) -> int:
        runs = self.live()
        for run in runs:
            run.cancel(reason)
        return len(runs)

    def live(self) -> list[Run]:
        with self._lock:
            return list(self._live.values())

    def _retire(self, run: Run) -> None:
        with self._lock:
            self._live.pop(run.id, None)
            self._finished[run.id] = run.status
            while len(self._finished) > self.remember_finished:
                self._finished.popitem(last=False)
        if self._on_retire is not None:
            self._on_retire(run)


class Gate:
    """First-in-first-out admission for at most `limit` runs at once (0 = no limit).

    Used per upstream; there is no global lock. A run waiting here stays `queued` and can be
    cancelled while it waits.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._cond = threading.Condition()
        self._active = 0
        self._waiting: collections.deque[Run] = collections.deque()

    def enter(self, run: Run, poll: float = 0.05) -> bool:
        """Block until `run` may go; False if it finished (was cancelled) while waiting."""
        if not self.limit:
            return True
        with self._cond:
            self._waiting.append(run)
            run.gate = self
            try:
                while self._waiting[0] is not run or self._active >= self.limit:
                    if run.status in FINAL:
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

    def position(self, run: Run) -> int | None:
        with self._cond:
            return self._waiting.index(run) + 1 if run in self._waiting else None

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._waiting)
