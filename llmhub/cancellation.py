"""Live runs: their state table, their event log, the registry, and cancel by id.

Rules:
1. Every state change goes through `transition()`, which raises on a move the table lacks.
2. A run finishes exactly once (`Run.finish`); the first finisher wins and later ones are
   no-ops. Cancel (or a failure) finishes the run at once, from its thread, and shuts the
   upstream socket, so a run stuck in a connect or a silent prefill still reports
   `cancelled` at once.
3. Events (typed: events.py) are appended to `Run.events`; any number of readers follow
   it by absolute cursor (`Run.read`), which is what lets a stream be re-attached. The log
   is bounded in bytes: its oldest events go once no reader needs them, and a cursor
   before them is refused.
4. Finish hooks (persistence) run before the final events are published, so a client that
   sees `done` can already read what was stored; they see those final events in
   `Run.closing`. A hook that fails makes the run failed: nothing reports success for a
   reply that was not stored.
5. A resumable stream's client going away is not a cancel: `unfollow(reader, grace)` cancels
   only if nobody has re-attached (`follow`) when the grace period ends.
"""

import collections
import logging
import threading
import time
from typing import Any, Callable

from llmhub import accounting, ids
from llmhub.completion import Transcript
from llmhub.errors import Conflict, Gone, HubError, NotFound
from llmhub.events import Done, Error, Start, Usage, weight
from llmhub.redaction import redact_error

__all__ = ["RunContract", "Run", "Registry", "Gate", "QueueFull", "Turns", "EventsGone",
           "TRIMMED", "transition", "QUEUED", "STREAMING", "COMPLETED", "CANCELLED", "FAILED",
           "FINAL"]

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


class RunContract:
    """What a dialect and the stream pump may use of a run: a live `Run`, or a finished
    one read back from the store (`responses.Replay`). DESIGN §2 has the state table.

    `status` is one of QUEUED, STREAMING (the upstream accepted), COMPLETED, CANCELLED or
    FAILED, and moves only as TRANSITIONS allows; once final it never changes. `events` is
    the kept window of the run's typed event log, whose first event is at absolute position
    `base`; the log begins with Start, ends with Done (after an Error if the run failed), and
    holds the content events between. `transcript` is the result so far: text, reasoning,
    tool calls, finish reason. `usage` is the Usage event once known.
    """

    __slots__ = ()
    id: str
    created: int
    model: str | None
    provider: dict | None
    thread_id: str | None
    status: str
    base: int
    events: list
    transcript: Transcript
    usage: Usage | None
    job: Callable[[], None] | None   # the engine's work, until a thread takes it

    def read(self, cursor: int, timeout: float, reader: int | None = None) -> list:
        """Events from absolute position `cursor` on, waiting up to `timeout` for one;
        EventsGone if the log no longer holds `cursor`."""
        raise NotImplementedError

    def follow(self, cursor: int) -> int:
        """Register a reader from `cursor` (its events are kept for it); its key."""
        raise NotImplementedError

    def unfollow(self, reader: int, grace: float | None = None) -> None:
        raise NotImplementedError

    def wait(self, timeout: float) -> bool:
        """Block until the run is final; True if it is."""
        raise NotImplementedError

    def cancel(self, reason: str = "cancelled") -> str:
        """Cancel if still live; the final status either way."""
        raise NotImplementedError


class Run(RunContract):
    """One generation. Created by the registry; driven by the engine; read by dialects.

    Memory is bounded twice over. While a stream reads the run (`follow`), the engine's
    `emit` blocks once the events that reader has not taken pass `buffer_limit` bytes: the
    worker stops reading the upstream, and TCP pushes back on the model server. And the log
    keeps at most `log_limit` bytes, dropping its oldest events, never ones a reader still
    needs; a resume from before the window is told so (`EventsGone`).
    """

    # Slots: a thousand held streams are a thousand runs, and a run's attribute dict was
    # a kilobyte and a half of each one's memory.
    __slots__ = (
        'buffer_limit', 'log_limit', 'secrets', 'id', 'created', 'started', 'requested',
        'state', 'info', 'model', 'thread_id', 'provider', 'cancel_reason',
        'error', 'events', 'base', '_ends', '_bytes', '_base_bytes',
        'transcript', 'usage', 'input_estimate', 'context', 'turn_stored',
        'closing', 'gate', 'job', '_readers', '_next_reader', '_over',
        'first_token_at', 'upstream_at', '_registry', '_cond', '_call',
        '_final', '_finish_reason', '_hooks')

    def __init__(self, run_id: str, registry: "Registry", **info: Any) -> None:
        self.buffer_limit = 1 << 20    # set per run by the engine from the config
        self.log_limit = 8 << 20
        self.secrets: tuple = ()       # redacted from every error message the run carries
        self.id = run_id
        self.created = int(time.time())
        self.started = time.monotonic()
        self.requested: str | None = None   # the model name the client gave
        self.state = QUEUED
        self.info = info               # dialect, key name, route; its record once retired
        self.model = info.get("model")
        self.thread_id: str | None = None
        self.provider: dict | None = None
        self.cancel_reason: str | None = None
        self.error: HubError | None = None
        self.events: list = []
        self.base = 0                      # absolute position of events[0]
        self._ends: list[int] = []         # bytes emitted up to the end of each kept event
        self._bytes = 0                    # bytes emitted in all (an estimate: see _size)
        self._base_bytes = 0               # … of which before `base`, dropped from the log
        self.transcript = Transcript()     # what the model has said so far
        self.usage: Usage | None = None    # the Usage event, once known
        self.input_estimate = 0            # prompt tokens, estimated before the upstream says
        self.context: dict | None = None   # what context.build_input included and dropped
        self.turn_stored = False           # its input is in its thread: its reply goes too
        self.closing: list = []            # the final events, set just before finish hooks
        self.gate: "Gate | None" = None    # the gate this run is queued at, while it waits
        self.job: Callable[[], None] | None = None   # the engine's work, until a thread runs it
        self._readers: dict[int, int] = {}           # reader key → the cursor it has reached
        self._next_reader = 0
        self._over = threading.Event()     # set once finished: waiting for the end must not
                                           # wake on every token, as the condition does
        self.first_token_at: float | None = None
        self.upstream_at: float | None = None   # when the first upstream request went out
        self._registry = registry
        self._cond = threading.Condition(threading.Lock())   # new events, for readers;
                                           # readers moving on, for a held-back worker
        self._call = None              # the upstream call to abort on cancel
        self._final: str | None = None # set once finishing has begun; emits stop there
        self._finish_reason: str | None = None
        self._hooks: list[Callable[["Run"], None]] = []

    # -- reading -----------------------------------------------------------------------------
    def read(self, cursor: int, timeout: float, reader: int | None = None) -> list:
        with self._cond:
            if reader is not None and self._readers.get(reader, cursor) < cursor:
                self._readers[reader] = cursor
                self._cond.notify_all()
                if self._bytes - self._base_bytes > self.log_limit:
                    self._trim()          # what this reader held back may go now
            if cursor < self.base:
                raise EventsGone(cursor, self.base)
            if self.base + len(self.events) <= cursor:
                self._cond.wait(timeout)
            return self.events[cursor - self.base:]

    def wait(self, timeout: float) -> bool:
        return self._over.wait(timeout)

    def follow(self, cursor: int) -> int:
        """A stream reads from `cursor` on: keep its events, and hold the worker back when it
        falls behind."""
        with self._cond:
            if cursor < self.base:
                raise EventsGone(cursor, self.base)
            self._next_reader += 1
            self._readers[self._next_reader] = cursor
            return self._next_reader

    def unfollow(self, reader: int, grace: float | None = None) -> None:
        """A reader left. With `grace` (a resumable stream) and nobody reading after that
        many seconds, the run is cancelled; without, it is the caller's to cancel."""
        with self._cond:
            self._readers.pop(reader, None)
            self._cond.notify_all()
            if grace is None or self._readers or self._final:
                return
        timer = threading.Timer(grace, self._abandon_if_alone)
        timer.daemon = True
        timer.start()

    def _abandon_if_alone(self) -> None:
        with self._cond:
            if self._readers:
                return
        self.cancel("client_gone")

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
            self._append(Start(self.id, self.created, model, provider, self.requested,
                               self.thread_id))
        return True

    def emit(self, event) -> bool:
        """Publish a content event; False once the run is finishing (the caller should stop).

        Blocks while a following stream has more than `buffer_limit` bytes untaken, so the
        caller stops reading the upstream until the client catches up (or goes)."""
        with self._cond:
            if self._final:
                return False
            if self.first_token_at is None and event.kind in TOKENS and \
                    (getattr(event, "text", None) or getattr(event, "id", None)):
                self.first_token_at = time.monotonic()
            self._append(event)
            while self._readers and not self._final and self._untaken() > self.buffer_limit:
                self._cond.wait(0.5)
            return not self._final

    def finish(self, event: str, *, reason: str | None = None, error: HubError | None = None,
               finish_reason: str | None = None) -> bool:
        """complete / cancel / fail; the first call wins and returns True.

        Total: whatever fails inside (a hook, the store, a metric), the run still ends, its
        readers get their closing events, and it leaves the registry. A finish hook that fails
        (the reply could not be stored) turns the run's end into a failure."""
        with self._cond:
            if self._final:
                return False
            self._final = transition(self.state, event)
            self._cond.notify_all()        # a worker held back by a slow reader: stop
        try:
            self.cancel_reason, self._finish_reason = reason, finish_reason
            self.error = redact_error(error, self.secrets)
            if event != "complete" and self._call is not None:
                self._abort_call()        # a failure from outside the worker stops it too
            self._run_hooks()
        except Exception:   # a bug here must not leave readers waiting forever
            log.exception("finishing run %s failed", self.id)
        finally:
            self._close()
        return True

    def _abort_call(self) -> None:
        try:
            self._call.abort()
        except Exception:   # the hooks must still run
            log.exception("aborting the upstream call of run %s failed", self.id)

    def _run_hooks(self) -> None:
        self.closing = self._closing_events()
        for hook in self._hooks:
            try:
                hook(self)
            except Exception as exc:   # the reply or its record was not stored: say so
                log.error("finish hook %s failed for run %s: %s",
                          getattr(hook, "__name__", hook), self.id, exc,
                          exc_info=not isinstance(exc, HubError))
                self._fail_finish(exc)

    def _fail_finish(self, exc: Exception) -> None:
        if self._final != FAILED:
            self._final = transition(self.state, "fail")
        if self.error is None:
            self.error = redact_error(exc if isinstance(exc, HubError) else HubError(
                "The hub could not finish this run; see its log"), self.secrets)
        self.closing = self._closing_events()

    def _closing_events(self) -> list:
        error = [Error(**self.error.as_dict())] if self._final == FAILED and \
            self.error is not None else []
        return error + [Done(self._final, self._finish_reason, self.cancel_reason)]

    def _close(self) -> None:
        # Retire before the closing events go out: a client that has read `done` may at
        # once ask for the run's status (cancel, metrics) and must find it finished.
        try:
            self._registry._retire(self)
        except Exception:
            log.exception("retiring run %s failed", self.id)
        with self._cond:
            self.state = self._final
            if not self.closing or self.closing[-1].kind != "done":
                self.closing = self._closing_events()
            for closing in self.closing:
                self._append(closing)
        self._over.set()

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

    # -- the log -----------------------------------------------------------------------------
    def _append(self, event) -> None:
        self._bytes += weight(event)
        self.events.append(event)
        self._ends.append(self._bytes)
        self._cond.notify_all()
        if self._bytes - self._base_bytes > self.log_limit:
            self._trim()

    def _trim(self) -> None:
        """Drop the older half of the kept log, but nothing a reader has not taken."""
        keep_from = self.base + len(self.events) // 2
        if self._readers:
            keep_from = min(keep_from, min(self._readers.values()))
        drop = keep_from - self.base
        if drop > 0:
            self._base_bytes = self._ends[drop - 1]
            del self.events[:drop], self._ends[:drop]
            self.base = keep_from

    def _untaken(self) -> int:
        """Bytes emitted after the slowest reader's cursor."""
        slowest = min(self._readers.values())
        taken = self._base_bytes if slowest <= self.base else \
            self._ends[min(slowest - self.base, len(self._ends)) - 1]
        return self._bytes - taken


TRIMMED = "trimmed"    # a stored log's first entry when the bounded log dropped its start
TOKENS = ("delta", "reasoning", "tool_call")   # the events that are the model saying something


class EventsGone(Gone):
    """A reader asked for events the bounded log has already dropped."""

    def __init__(self, cursor: int, base: int) -> None:
        super().__init__(f"Events before {base} are no longer kept (asked from {cursor}); "
                         "[responses] max_event_log_bytes bounds the log",
                         code="events_expired", param="Last-Event-ID")


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
        caller = accounting.current.get()           # whose request made it, by key name
        info.setdefault("key", caller.key)
        info.setdefault("route", caller.route)
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
            try:
                self._on_retire(run)
            except Exception:   # a metric must never keep a run alive
                log.exception("on_retire failed for run %s", run.id)


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
        self._waiting: collections.deque[Run] = collections.deque()

    def enter(self, run: Run, poll: float = 0.05) -> bool:
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


class QueueFull(HubError):
    """A gate's line is as long as `max_queued` allows: refused now rather than held."""
    status, code = 503, "queue_full"

    def __init__(self, waiting: int) -> None:
        super().__init__(f"The model server is busy: {waiting} requests are already waiting "
                         "([upstream] max_queued); try again shortly",
                         headers={"Retry-After": "1"})


class Turns:
    """One run at a time per thread, in order of arrival.

    Two runs on one thread at once would store [A's question, B's question, B's answer,
    A's answer], and B's model input would hold A's unanswered question. A run joins its
    thread's line when it is prepared (so arrival decides the order), waits in its worker
    until it is first, and leaves when it finishes, after its reply is stored. A run
    cancelled while it waits leaves the line and stores nothing.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._lines: dict[str, collections.deque] = {}

    def join(self, thread_id: str, run: Run) -> None:
        with self._cond:
            self._lines.setdefault(thread_id, collections.deque()).append(run)

    def wait(self, thread_id: str, run: Run, poll: float = 0.05) -> bool:
        """Block until `run` is first in its thread's line; False if it finished first."""
        with self._cond:
            while True:
                line = self._lines.get(thread_id)
                if run.status in FINAL or not line or run not in line:
                    return False
                if line[0] is run:
                    return True
                self._cond.wait(poll)

    def leave(self, thread_id: str, run: Run) -> None:
        with self._cond:
            line = self._lines.get(thread_id)
            if line is not None and run in line:
                line.remove(run)
                if not line:
                    del self._lines[thread_id]
                self._cond.notify_all()

    def waiting(self, thread_id: str) -> int:
        with self._cond:
            return len(self._lines.get(thread_id, ()))
