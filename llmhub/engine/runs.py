"""Live runs: who owns them, who ends them, and how each is finished exactly once.

A run is three parts, each with one job:
- its event log (eventlog.EventLog), which any number of readers follow by cursor;
- its course through the state table below: `transition()` is the only way a state moves,
  and it raises on a move the table lacks;
- the `Run` itself, the object dialects hold: who made it, what it asked for, what the model
  has said so far, and the rules of its end.

Who ends a run (DESIGN §5; docs/api/hub.md "Runs"):
1. Its owner (or an admin) with an explicit cancel, and the hub's shutdown. Cancel is
   idempotent; cancelling a finished run says how it ended.
2. A run nothing can resume is cancelled as soon as its last reader goes away: any stream
   that is not stored and was not asked to be resumable (chat completions, Messages,
   Langbase, the seed dialects, `/v1/responses` with `store: false`…), and every awaited
   (non-streaming) call.
3. A stream that can be resumed (`allow_resume(grace)`: `/responses`, `/v1/responses` with
   `store`, and any stream whose request asked to be resumable: resumable.py) waits `grace`
   seconds after its last reader left; a reader that re-attaches meanwhile keeps it alive,
   and only the last departure's timer may end it.
4. A background run (`detach()`) is never ended by a reader leaving.

How a run ends: any thread may ask (`finish`, `cancel`); the first end asked for wins. Asking
sets the run's final status at once, wakes its driver and shuts the upstream socket. The
run's driver, the one thread that does its work (`drive`: its client's handler, or a worker
for a stream that must outlive its client), then concludes it: counts what it spent, runs
its finish hooks (persistence), leaves the registry (which records it once) and publishes
its closing events.
A run that no thread drives (its work not yet taken) is concluded by the thread that asked.
So persistence and recording never run on a canceller's thread, and never twice.

Finish hooks run before the closing events are published, so a client that sees `done` can
already read what was stored; they see those events in `Run.closing`. A hook that fails
makes the run failed: nothing reports success for a reply that was not stored.
"""

import collections
import contextlib
import logging
import threading
import time
from typing import Any, Callable

from llmhub import ids
from llmhub.context import estimate_tokens
from llmhub.engine import accounting
from llmhub.engine.eventlog import TRIMMED, EventLog, EventsGone
from llmhub.errors import Conflict, HubError, NotFound
from llmhub.events import Done, Error, Start, Usage
from llmhub.redaction import redact_error
from llmhub.transcript import Transcript
from llmhub.upstream.gate import Place, background
from llmhub.waiting import waiting

__all__ = ["RunContract", "Run", "Registry", "TooManyRuns", "EventsGone", "TRIMMED", "transition",
           "estimated_usage", "QUEUED", "STREAMING", "COMPLETED", "CANCELLED", "FAILED", "FINAL"]

log = logging.getLogger("llmhub.runs")

QUEUED, STREAMING = "queued", "streaming"
COMPLETED, CANCELLED, FAILED = "completed", "cancelled", "failed"
FINAL = (COMPLETED, CANCELLED, FAILED)
OVER = threading.Event()    # a concluded run's `_over`: waiting for its end returns at once
OVER.set()

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
    tool calls, finish reason. `usage` is the Usage event once known. `info` holds who made
    it and, once it is over, its request-log record (a replay has none).
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
    info: dict
    cancel_reason: str | None
    job: Callable[[], None] | None   # the engine's work, until a thread takes it

    def read(self, cursor: int, timeout: float, reader: int | None = None) -> list:
        """Events from absolute position `cursor` on, waiting up to `timeout` for one;
        EventsGone if the log no longer holds `cursor`."""
        raise NotImplementedError

    def follow(self, cursor: int, driving: bool = False) -> int:
        """Register a reader from `cursor` (its events are kept for it); its key.
        `driving`: the reader is the thread that will drive the run (Engine.drive with
        `deliver`): it takes events between appends, so the log never holds it back."""
        raise NotImplementedError

    def unfollow(self, reader: int) -> None:
        """The reader left; the run's own rule says whether that ends it."""
        raise NotImplementedError

    def wait(self, timeout: float | None) -> bool:
        """Block until the run is over; True if it is."""
        raise NotImplementedError

    def cancel(self, reason: str = "cancelled", wait: float = 0.0) -> str:
        """Cancel if still live; the final status either way. `wait`: how long to give the
        run to be concluded (stored, recorded) before answering."""
        raise NotImplementedError


class Run(RunContract):
    """One generation. Created by the registry; driven by the engine; read by dialects."""

    # Slots: a thousand held streams are a thousand runs, and a run's attribute dict was
    # a kilobyte and a half of each one's memory.
    __slots__ = (
        'log', 'secrets', 'id', 'created', 'started', 'requested', 'state', 'info', 'model',
        'thread_id', 'provider', 'cancel_reason', 'error', 'transcript', 'usage',
        'input_estimate', 'context', 'turn_stored', 'closing', 'gate', 'job', 'budget',
        'background', 'resume_grace', 'awaited', 'must_fit', 'load_context', 'first_token_at',
        'upstream_at',
        '_registry', '_lock', '_call', '_final', '_finish_reason', '_hooks', '_driver',
        '_concluding', '_departures', '_over')

    def __init__(self, run_id: str, registry: "Registry", **info: Any) -> None:
        self.log = EventLog()              # its bounds are set per run by the engine
        self.secrets: tuple = ()           # redacted from every error message the run carries
        self.id = run_id
        self.created = int(time.time())
        self.started = time.monotonic()
        self.requested: str | None = None  # the model name the client gave
        self.state = QUEUED
        self.info = info                   # dialect, key name, route; its record once retired
        self.model = info.get("model")
        self.thread_id: str | None = None
        self.provider: dict | None = None
        self.cancel_reason: str | None = None
        self.error: HubError | None = None
        self.transcript = Transcript()     # what the model has said so far
        self.usage: Usage | None = None    # the Usage event, once known
        self.input_estimate = 0            # prompt tokens, estimated before the upstream says
        self.context: dict | None = None   # what context.build_input included and dropped
        self.must_fit = False              # over the model's context: refused, not cut
        self.load_context: int | None = None   # the context a load made for it asks for
        self.turn_stored = False           # its input is in its thread: its reply goes too
        self.closing: list = []            # the final events, set just before finish hooks
        self.gate: Place | None = None     # the gate (or pool line) it waits at, while it waits
        self.job: Callable[[], None] | None = None   # the engine's work, until a driver takes it
        self.budget: accounting.Budget | None = None   # its key's tokens, counted live
        self.background = False            # never ended by a reader leaving
        self.resume_grace: float | None = None   # seconds a resumable run waits for a reader
        self.awaited = False               # a caller awaits the whole reply (not a reader)
        self.first_token_at: float | None = None
        self.upstream_at: float | None = None    # when the first upstream request went out
        self._registry = registry
        self._lock = threading.Lock()      # the end asked for, the driver, the upstream call
        self._call = None                  # the upstream call to abort on cancel
        self._final: str | None = None     # the final status, once an end was asked for
        self._finish_reason: str | None = None
        self._hooks: list[Callable[["Run"], None]] = []
        self._driver: int | None = None    # the thread doing the run's work, while it does
        self._concluding = False
        self._departures = 0               # readers that left: only the last one's grace counts
        # Set once concluded: waiting for the end must not wake on every token, as the log's
        # condition does. Made by the first wait (a run driven in its caller's thread ends
        # before anyone waits), OVER once concluded.
        self._over: threading.Event | None = None

    # -- reading -----------------------------------------------------------------------------
    # The contract only reads events, base and status; a live run derives them (a replay
    # sets them), so these properties narrow what the contract declares as attributes.
    @property
    def events(self) -> list:  # type: ignore[override]
        return self.log.events

    @property
    def base(self) -> int:  # type: ignore[override]
        return self.log.base

    def read(self, cursor: int, timeout: float, reader: int | None = None) -> list:
        return self.log.read(cursor, timeout, reader)

    def follow(self, cursor: int, driving: bool = False) -> int:
        return self.log.follow(cursor, driving)

    @property
    def drivable(self) -> bool:
        """Whether a stream's one reader may drive the run in its own thread: its work not
        yet taken, and the run one that ends when that reader leaves (rule 2)."""
        return self.job is not None and not self.background and self.resume_grace is None

    def unfollow(self, reader: int) -> None:
        """A reader left. Rules 2-4 of the module's docstring decide what that ends; a run
        awaited whole by its caller is that caller's to end, not a passing reader's."""
        if self.log.unfollow(reader) or self.background or self.awaited or self._final:
            return
        if self.resume_grace is None:
            self.cancel("client_gone")
            return
        with self._lock:
            self._departures += 1
            departure = self._departures
        timer = threading.Timer(self.resume_grace, self._abandon_if_alone, (departure,))
        timer.daemon = True
        timer.start()

    def _abandon_if_alone(self, departure: int) -> None:
        if not self.log.followed and departure == self._departures:
            self.cancel("client_gone")

    def wait(self, timeout: float | None) -> bool:
        with self._lock:
            if self._over is None:
                self._over = threading.Event()
            over = self._over
        return over.wait(timeout)

    # -- who ends it -------------------------------------------------------------------------
    def detach(self) -> None:
        """A background run: only a cancel or the hub's shutdown ends it early."""
        self.background = True

    def allow_resume(self, grace: float) -> None:
        """A resumable stream: a reader may come back within `grace` seconds of the last
        one leaving."""
        self.resume_grace = grace

    # -- driving (engine side) ---------------------------------------------------------------
    def drive(self, awaited: bool = False) -> None:
        """Do the run's work in this thread, which becomes its driver: the one thread that
        reads its upstream and concludes it. Nothing if another thread has taken the work
        or the run ended before anyone did. `awaited`: the caller waits for the whole
        reply (its own disconnect watch ends the run), rather than streaming it."""
        with self._lock:
            job, self.job = self.job, None
            if job is None:
                return
            self._driver = threading.get_ident()
            self.awaited = awaited
        try:
            job()
        except Exception:   # a bug: the run must still end, and its client hear of it
            log.exception("run %s crashed", self.id)
            self.finish("fail", error=HubError("Internal error in the hub; see its log"))
        finally:
            with self._lock:
                self._driver = None
                unfinished = self._final is None
            if unfinished:     # the work returned without ending the run: a bug too
                log.error("run %s: its work returned without ending it", self.id)
                self.finish("fail", error=HubError("Internal error in the hub; see its log"))
            self._conclude()

    @contextlib.contextmanager
    def failing_on_error(self):
        """Whatever raises in the block fails the run before it propagates (with the error,
        when it is a HubError): a run that will never be driven must not stay live."""
        try:
            yield
        except BaseException as exc:
            self.finish("fail", error=exc if isinstance(exc, HubError) else None)
            raise

    def on_finish(self, hook: Callable[["Run"], None]) -> None:
        self._hooks.append(hook)

    def attach(self, call) -> bool:
        """Record the upstream call cancel must abort; False (and aborted) if already over."""
        with self._lock:
            self._call = call
            over = self._final is not None
        if over:
            call.abort()
        return not over

    def start(self, model: str, provider: dict) -> bool:
        with self._lock:
            if self._final:
                return False
            self.state = transition(self.state, "start")
            self.model, self.provider = model, provider
        self.log.append(Start(model, provider, self.input_estimate))
        return True

    def emit(self, event) -> bool:
        """Publish a content event; False once the run is ending (the caller should stop).

        Blocks while a following stream has more than the log's `buffer_limit` bytes
        untaken, so the caller stops reading the upstream until the client catches up (or
        goes)."""
        if self._final:
            return False
        first = self.first_token_at is None and event.kind in TOKENS and \
            bool(getattr(event, "text", None) or getattr(event, "id", None))
        if first:
            self.first_token_at = time.monotonic()
        self.log.append(event, self._ending)
        if first:
            # A stream's driver writes the first token at once, not after the rest of the
            # read it came in (a burst after the prefill): it is the one the client waits on.
            waiting()
        return self._final is None

    def _ending(self) -> bool:
        return self._final is not None

    def finish(self, event: str, *, reason: str | None = None, error: HubError | None = None,
               finish_reason: str | None = None) -> bool:
        """Ask the run to end: complete / cancel / fail, from any thread; the first call wins
        and returns True. The driver concludes the run; with no driver, this thread does."""
        with self._lock:
            if self._final:
                return False
            self._final = transition(self.state, event)
            self.cancel_reason, self._finish_reason = reason, finish_reason
            self.error = redact_error(error, self.secrets)
            me = threading.get_ident()
            here = self._driver in (None, me)
            if self._driver is None:
                self.job = None        # nobody took the work: nobody will now
            call = self._call if event != "complete" else None
        self.log.wake()                # a driver held back by a slow reader: stop
        if call is not None:
            self._abort(call)          # a failure from outside the driver stops it too
        if here:
            self._conclude()
        return True

    def cancel(self, reason: str = "cancelled", wait: float = 0.0) -> str:
        """Cancel if still live; returns the run's final status either way. With `wait`,
        give its driver that long to conclude it, so that what it made is stored and
        recorded when the caller answers (an API's cancel); a watcher thread never waits."""
        self.finish("cancel", reason=reason)
        if wait:
            self.wait(wait)
        return self.status

    def _abort(self, call) -> None:
        try:
            call.abort()
        except Exception:   # the end must still come
            log.exception("aborting the upstream call of run %s failed", self.id)

    # -- concluding (the driver's thread) ----------------------------------------------------
    def _conclude(self) -> None:
        """Count, store, record and publish the end, once. Total: whatever fails inside (a
        hook, the store, a metric), the run still ends, its readers get their closing
        events, and it leaves the registry."""
        with self._lock:
            if self._concluding or self._final is None:
                return
            self._concluding = True
        try:
            # A reader driving the run gets its last tokens before the hooks store them
            # (llmhub.waiting); its failing to must not keep them from being stored.
            waiting()
        except Exception:
            log.exception("delivering the last of run %s failed", self.id)
        try:
            if self.usage is None:
                self.usage = estimated_usage(self)
            self._run_hooks()
        except Exception:   # a bug here must not leave readers waiting forever
            log.exception("finishing run %s failed", self.id)
        finally:
            self._close()

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
        error: list = [Error(**self.error.as_dict())] if self._final == FAILED and \
            self.error is not None else []
        return error + [Done(self.status, self._finish_reason, self.cancel_reason)]

    def _close(self) -> None:
        # Retire before the closing events go out: a client that has read `done` may at
        # once ask for the run's status (cancel, metrics) and must find it finished.
        self.state = self.status          # the final one: an end was asked for
        try:
            self._registry._retire(self)
        except Exception:
            log.exception("retiring run %s failed", self.id)
        if not self.closing or self.closing[-1].kind != "done":
            self.closing = self._closing_events()
        self.log.extend(self.closing)
        with self._lock:
            over, self._over = self._over, OVER
        if over is not None:
            over.set()

    # -- what it is --------------------------------------------------------------------------
    @property
    def status(self) -> str:  # type: ignore[override]
        return self._final or self.state

    @property
    def ended(self) -> bool:
        return self.status in FINAL

    @property
    def concluded(self) -> bool:
        """Stored, recorded and its end published (`_close`): nothing waits on its driver."""
        return self._over is OVER

    def failure(self) -> HubError:
        """The run's error as a fresh exception, to raise in a handler's thread (one
        exception object must not be raised in two threads)."""
        assert self.error is not None, "failure() is asked of a failed run"
        return HubError.from_dict(self.error.as_dict())

    @property
    def queue_position(self) -> int | None:
        gate = self.gate
        return gate.position(self) if gate is not None else None


TOKENS = ("delta", "reasoning", "tool_call")   # the events that are the model saying something


def estimated_usage(run: Run) -> Usage:
    """What a run spent when its upstream never said: the input it sent (none if nothing
    reached an upstream) and the output delivered so far, both marked estimated."""
    sent = run.input_estimate if run.upstream_at is not None else 0
    return Usage(sent, output_estimate(run.transcript), input_estimated=True,
                 output_estimated=True)


def output_estimate(transcript: Transcript) -> int:
    calls = "".join(c["function"]["name"] + c["function"]["arguments"]
                    for c in transcript.tool_calls.values())
    return estimate_tokens(transcript.text + transcript.reasoning + calls)


class Registry:
    """Every live run by id, plus the final status of recently finished ones."""

    remember_finished = 10_000   # how many finished ids still answer "already finished"

    def __init__(self, on_retire: Callable[[Run], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._on_retire = on_retire      # records and counts every run once, as it ends
        self._live: dict[str, Run] = {}
        self._per_key: collections.Counter = collections.Counter()   # live runs by owner
        self._batch_lines: set[str] = set()     # live runs of batch lines: not in _per_key
        # finished run id → (its final status, its owner)
        self._finished: collections.OrderedDict[str, tuple] = collections.OrderedDict()

    def create(self, run_id: str | None = None, most: int = 0, **info: Any) -> Run:
        """A new live run, its owner the key whose request made it; with `most`, refused
        (429) when that key already has so many live. A batch line's run (made under
        gate.background) neither counts nor is refused: `[batches] max_parallel_lines`
        bounds those, and a running batch never takes its owner's interactive runs."""
        run_id = run_id or "run_" + ids.uuid4_hex()
        caller = accounting.current.get()           # whose request made it, by key name
        info.setdefault("key", caller.key)
        info.setdefault("route", caller.route)
        key, line = info["key"], background.get()
        # Made before the lock, which every run takes twice: the less done inside it, the
        # less likely a GIL switch in it makes the others queue (a convoy under load).
        run = Run(run_id, self, **info)
        with self._lock:
            if run_id in self._live or run_id in self._finished:
                raise Conflict(f"Run id {run_id!r} is already in use", param="X-Run-Id")
            if most and not line and self._per_key[key] >= most:
                raise TooManyRuns(key, most, "runs at once", "max_concurrent")
            self._live[run_id] = run
            if line:
                self._batch_lines.add(run_id)
            else:
                self._per_key[key] += 1
        return run

    def detach(self, run: Run, most: int = 0) -> None:
        """Make `run` a background run (Run.detach); with `most`, refused (429) when its
        key already has so many background runs queued or running."""
        key = run.info["key"]
        with self._lock:
            if most and sum(1 for r in self._live.values()
                            if r.background and r.info["key"] == key) >= most:
                raise TooManyRuns(key, most, "background runs queued or running",
                                  "max_background")
            run.detach()

    def get(self, run_id: str, caller=None) -> Run | None:
        """The live run; with `caller`, only if that caller may see it (else None, as for
        an unknown id)."""
        with self._lock:
            run = self._live.get(run_id)
        return run if run is None or caller is None or caller.sees(run.info["key"]) else None

    def status(self, run_id: str, caller=None) -> str:
        """A live or recently finished run's status; NotFound for an unknown one, or one
        `caller` may not see."""
        with self._lock:
            run = self._live.get(run_id)
            status, owner = (run.status, run.info["key"]) if run is not None else \
                self._finished.get(run_id, (None, None))
        if status is None or caller is not None and not caller.sees(owner):
            raise NotFound(f"No run with id {run_id!r}", code="run_not_found")
        return status

    def cancel(self, run_id: str, reason: str = "cancelled", wait: float = 5.0,
               caller=None) -> str:
        """Cancel a live run and wait (bounded) for it to be concluded; idempotent. Unknown
        ids (and with `caller`, another key's runs) raise NotFound."""
        run = self.get(run_id, caller)
        if run is None:
            return self.status(run_id, caller)
        return run.cancel(reason, wait)

    def cancel_all(self, reason: str, wait: float = 5.0) -> int:
        """Cancel every live run and give their drivers up to `wait` seconds to conclude
        them (store what they made), so a shutdown loses nothing it could keep."""
        runs = self.live()
        for run in runs:
            run.cancel(reason)
        deadline = time.monotonic() + wait
        for run in runs:
            run.wait(max(0.0, deadline - time.monotonic()))
        return len(runs)

    def live(self, caller=None) -> list[Run]:
        """Every live run; with `caller`, those it may see."""
        with self._lock:
            runs = list(self._live.values())
        return runs if caller is None or caller.admin else \
            [run for run in runs if caller.sees(run.info["key"])]

    def _retire(self, run: Run) -> None:
        key, status = run.info["key"], run.status
        with self._lock:
            if self._live.pop(run.id, None) is not None:
                if run.id in self._batch_lines:
                    self._batch_lines.discard(run.id)
                else:
                    self._per_key[key] -= 1
                    if not self._per_key[key]:
                        del self._per_key[key]
            self._finished[run.id] = (status, key)
            while len(self._finished) > self.remember_finished:
                self._finished.popitem(last=False)
        if self._on_retire is not None:
            try:
                self._on_retire(run)
            except Exception:   # a metric must never keep a run alive
                log.exception("on_retire failed for run %s", run.id)


class TooManyRuns(accounting.RateLimited):
    """A key has as many runs as its [key:NAME] allows at once: refused, not queued, so
    one key never holds every slot of a shared hub."""
    code = "too_many_runs"

    def __init__(self, key: str, most: int, what: str, setting: str) -> None:
        super().__init__(f"Key {key!r} already has {most} {what} ([key:{key}] {setting}); "
                         "try again when one ends", 1, param=setting)
