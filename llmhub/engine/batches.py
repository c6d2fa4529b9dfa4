"""OpenAI's Files and Batch APIs, durable (issue 32): uploads, batches, and the worker that
runs their lines through the same engine as interactive requests.

Rules:
- Every file and batch is its owner's (the key that made it); another key's answers the
  same 404 an unknown id gets. An admin key sees everyone's, as elsewhere.
- A batch is `validating` until its input file is read: a file with bad lines fails it
  with OpenAI's `errors.data[]` ({code, message, param, line}); otherwise it is
  `in_progress` until every line has a result, then `finalizing` while its output and error
  files are written from the stored results, in line order, then `completed`. A cancel
  makes it `cancelling` (the lines in flight are cancelled), then `cancelled`, with the
  lines answered by then in its output file.
- Each line's result is stored as the line finishes (store/batches.py), never twice. A
  restart resumes each unfinished batch from what is stored: finished lines are not run
  again, a line that was running is run again once, and the output holds each line once.
- A line runs as a background run (upstream/gate.py): it waits behind every interactive
  request and gives up its slot to one (`preempted`), to be run again later. A line
  cancelled for any reason other than its batch's cancel is put back, never answered as
  cancelled. At most `[batches] max_parallel_lines` lines run at once; they do not count
  toward the owner key's `max_concurrent` (engine/runs.py Registry.create), so a running
  batch never turns its owner's interactive requests away.
- No model server there (requeue_for's SERVER_DOWN: an error before any byte of an
  answer) fails no line: the batch waits, one line at a time after a doubling pause, until
  a server answers. A line the server took but sent nothing for (a first-byte timeout) is
  tried MAX_ATTEMPTS times, then its last error is its answer; a timeout after the answer
  began is its answer at once (run again, it would most likely time out again).
- A batch still unfinished at `expires_at` (its 24h window) ends `expired`, as OpenAI's:
  its lines in flight are cancelled, the lines answered by then go to its output (and
  error) file, every other line to its error file with code `batch_expired`.
- A batch whose owner key is no longer configured (removed from [keys], the hub restarted)
  fails at once, `key_not_found`, its lines not run.
- The lines themselves are run by `run_line` (dialects/batches.py), which calls the
  endpoint's own view as its HTTP route would, under the batch owner's key.
"""

import collections
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Generator, NamedTuple

from llmhub.config import Config
from llmhub.engine import accounting
from llmhub.errors import BadRequest, Conflict, HubError, NotFound, PayloadTooLarge
from llmhub.store.batches import BatchStore
from llmhub.store.files import FileStore
from llmhub.upstream.gate import background
from llmhub.wire import cursor_page

__all__ = ["Batches", "LineOutcome", "Requeue", "requeue_for", "ENDPOINTS", "PURPOSES"]

log = logging.getLogger("llmhub.batches")

ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/completions")
PURPOSES = ("batch", "user_data")          # what a client may upload
WINDOW = 86400                             # "24h", the one completion window OpenAI takes
MAX_ATTEMPTS = 3                           # a line's runs that timed out before it fails
MAX_ERRORS = 1000                          # validation errors reported at most
# A line may be run more than once (preempted, the hub restarted): a /v1/responses line
# that continues a conversation would add its turn to it each time, so it is refused.
NOT_REPEATABLE = ("conversation", "previous_response_id")


class LineOutcome(NamedTuple):
    """What one line's request answered: its HTTP status and JSON body, as its route would."""
    status_code: int
    body: dict
    request_id: str
    input_tokens: int = 0
    output_tokens: int = 0


class Requeue(Exception):
    """The line did not run to an answer (preempted by an interactive request, the hub
    stopping, the key at its run limit): put it back, to run again after `delay` s.
    `down`: no model server answered; the batch waits for one (Batches._put_back).
    `answer`: set when the try counts against the line (MAX_ATTEMPTS): its answer once
    the line has no tries left."""

    def __init__(self, delay: float = 0.0, down: bool = False,
                 counted: bool = False) -> None:
        super().__init__(delay)
        self.delay = delay
        self.down = down
        self.counted = counted
        self.answer: LineOutcome | None = None


# What a line's run failed with that says "not now" rather than "no": the line is put back.
NOT_NOW = ("cancelled", "too_many_runs", "rate_limited", "shutting_down")
# The model server is not there (LM Studio closed overnight): put back too, and the batch
# waits for it, trying one line at a time, rather than failing every line in a minute.
# Only before any byte of an answer (model_unavailable): a timeout mid-answer is an answer.
SERVER_DOWN = ("upstream_unavailable", "upstream_timeout", "upstream_busy")


def requeue_for(error: HubError) -> Requeue | None:
    """The Requeue a line's error calls for; None: the error is the line's answer."""
    if error.code in SERVER_DOWN and getattr(error, "model_unavailable", False):
        # a server that took the line and sent nothing may be stuck on this very line
        return Requeue(down=True, counted=error.code == "upstream_timeout")
    if error.code in NOT_NOW:
        return Requeue(float(error.headers.get("Retry-After", 1)))
    return None


@dataclass
class Job:
    """A batch's lines in memory while it runs: what is left, what is in flight."""
    batch_id: str
    owner: str
    endpoint: str
    lines: dict                                    # line number → its text (JSON): a
                                                   # third of the parsed request's memory
    pending: collections.deque                     # line numbers not yet answered
    running: dict = field(default_factory=dict)    # line number → run id, once known
    not_before: float = 0.0                        # a requeue's delay
    cancelling: bool = False                       # cancelled or expired: no more runs
    backoff: float = 0.0          # while no model server answers: the pause, doubling
    tries: dict = field(default_factory=dict)      # line number → its counted tries

    def idle(self) -> bool:
        """No line left to run nor in flight. Call with Batches._lock held: a put-back
        moves a line from `running` to `pending` under it, so both are read at one time."""
        return not self.pending and not self.running


def now() -> int:
    return int(time.time())


def caller() -> accounting.Caller:
    return accounting.current.get()


class Batches:
    tick = 1.0            # the worker's longest sleep: it is woken by every change anyway
    retry_seconds = 2.0   # the first pause while no model server answers; then doubling
    retry_most = 60.0     # to at most this

    def __init__(self, config: Config, files: FileStore, store: BatchStore,
                 cancel_run: Callable[[str], object]) -> None:
        self.config = config
        self.limits = config.batches
        self.files = files
        self.store = store
        self.cancel_run = cancel_run
        self.run_line: Callable[..., LineOutcome] | None = None   # set by the hub
        self._jobs: dict[str, Job] = {}
        self._cancelled: set[str] = set()   # batches cancelled while the worker had them:
                                            # a job it makes for one starts cancelling
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        self._threads: set[threading.Thread] = set()
        self.counters = {"completed": 0, "failed": 0, "requeued": 0}

    # -- files -------------------------------------------------------------------------------
    def upload(self, filename: str, purpose: str, data: bytes) -> dict:
        if purpose not in PURPOSES:
            raise BadRequest(f"'purpose' must be one of {', '.join(PURPOSES)}, not "
                             f"{purpose!r}", param="purpose", code="invalid_value")
        if purpose == "batch" and not filename.lower().endswith(".jsonl"):
            raise BadRequest("Invalid file format for Batch API. Must be .jsonl",
                             param="file", code="invalid_file_format")
        if len(data) > self.limits.max_file_bytes:
            raise PayloadTooLarge(f"The file is {len(data)} bytes; at most "
                                  f"{self.limits.max_file_bytes} are accepted ([batches] "
                                  "max_file_bytes)", param="file", code="file_too_large")
        total = self.files.total_bytes()
        if total + len(data) > self.limits.max_total_bytes:
            raise PayloadTooLarge(f"The hub's files would take {total + len(data)} bytes; at "
                                  f"most {self.limits.max_total_bytes} are kept ([batches] "
                                  "max_total_bytes): delete some first", param="file",
                                  code="storage_limit_exceeded")
        record = {"id": "file-" + uuid.uuid4().hex, "owner": caller().key,
                  "filename": filename, "purpose": purpose, "created_at": now()}
        return file_object(self.files.put(record, [data]))

    def file(self, file_id: str) -> dict:
        return file_object(self._file(file_id))

    def _file(self, file_id: str) -> dict:
        record = self.files.get(file_id)
        if record is None or not caller().sees(record["owner"]):
            raise NotFound(f"No such File object: {file_id}", param="file_id",
                           code="file_not_found")
        return record

    def content(self, file_id: str) -> tuple[int, Generator[bytes, None, None]]:
        """(its size, its bytes a piece at a time): store/files.py FileStore.reader."""
        return self.files.reader(self._file(file_id)["id"])

    def list_files(self, purpose: str | None, limit: int, after: str | None,
                   order: str) -> dict:
        start = self._file(after) if after else None
        rows = self.files.page(caller().only, purpose, limit + 1, start, order == "desc")
        return page([file_object(r) for r in rows], limit)

    def delete_file(self, file_id: str) -> dict:
        record = self._file(file_id)
        if any(batch["input_file_id"] == file_id for batch, _ in self.store.active()):
            raise Conflict(f"File {file_id} is the input of a batch still running; cancel "
                           "the batch first", param="file_id", code="file_in_use")
        self.files.delete(record["id"])
        return {"id": file_id, "object": "file", "deleted": True}

    # -- batches -----------------------------------------------------------------------------
    def create(self, input_file_id: str, endpoint: str, window: str,
               metadata: dict | None) -> dict:
        if endpoint not in ENDPOINTS:
            raise BadRequest(f"'endpoint' must be one of {', '.join(ENDPOINTS)}",
                             param="endpoint", code="invalid_value")
        if window != "24h":
            raise BadRequest("'completion_window' must be 24h", param="completion_window",
                             code="invalid_value")
        source = self._file(input_file_id)
        if source["purpose"] != "batch":
            raise BadRequest(f"File {input_file_id} was uploaded with purpose "
                             f"{source['purpose']!r}; a batch's input needs purpose 'batch'",
                             param="input_file_id", code="invalid_value")
        created = now()
        batch = {"id": "batch_" + uuid.uuid4().hex, "object": "batch", "endpoint": endpoint,
                 "errors": None, "input_file_id": input_file_id, "completion_window": window,
                 "status": "validating", "output_file_id": None, "error_file_id": None,
                 "created_at": created, "in_progress_at": None,
                 "expires_at": created + WINDOW, "finalizing_at": None,
                 "completed_at": None, "failed_at": None, "expired_at": None,
                 "cancelling_at": None, "cancelled_at": None,
                 "request_counts": {"total": 0, "completed": 0, "failed": 0},
                 "metadata": metadata, "model": None, "usage": None}
        self.store.create(batch, caller().key)
        self._wake.set()
        return batch

    def batch(self, batch_id: str) -> dict:
        return self._live_view(self._batch(batch_id)[0])

    def _batch(self, batch_id: str) -> tuple[dict, str]:
        found = self.store.get(batch_id)
        if found is None or not caller().sees(found[1]):
            raise NotFound(f"No batch found with id '{batch_id}'", param="batch_id",
                           code="batch_not_found")
        return found

    def list_batches(self, limit: int, after: str | None) -> dict:
        start = self._batch(after)[0]["id"] if after else None
        rows = self.store.page(caller().only, limit + 1, start)
        return page([self._live_view(b) for b in rows], limit)

    def cancel(self, batch_id: str) -> dict:
        while True:                    # again if the worker moved it on meanwhile
            batch = self._batch(batch_id)[0]
            if batch["status"] in ("cancelling", "cancelled"):
                return self._live_view(batch)
            if batch["status"] not in ("validating", "in_progress"):
                raise Conflict(f"Cannot cancel a batch with status '{batch['status']}'",
                               param="batch_id", code="batch_not_cancellable")
            if self._move(batch, "cancelling", cancelling_at=now()):
                break
        with self._lock:
            self._cancelled.add(batch_id)
            job = self._jobs.get(batch_id)
            running = [r for r in job.running.values() if r] if job is not None else []
            if job is not None:
                job.cancelling = True
        for run_id in running:
            self._cancel(run_id)
        self._wake.set()
        return self._live_view(batch)

    def _move(self, batch: dict, status: str, **fields) -> bool:
        """Move the batch on from the status it was read with (store: `expect`); False,
        and `batch` unchanged, if it has moved on since."""
        moved = dict(batch, status=status, **fields)
        if not self.store.update(moved, expect=batch["status"]):
            return False
        batch.update(moved)
        return True

    def _cancel(self, run_id: str) -> None:
        try:
            self.cancel_run(run_id)
        except HubError:
            pass               # it ended meanwhile

    def _live_view(self, batch: dict) -> dict:
        """The stored batch, with its counts and usage as they are now while it runs."""
        if batch["status"] in ("in_progress", "finalizing", "cancelling"):
            batch = dict(batch, **summary(self.store.counts(batch["id"]),
                                          batch["request_counts"]["total"]))
        return batch

    # -- the worker --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker: it resumes every batch the last process left unfinished."""
        self._worker = threading.Thread(target=self._loop, args=(self._recover(),),
                                        name="batches", daemon=True)
        self._worker.start()

    def stop(self, wait: float = 5.0) -> None:
        """Stop launching lines and cancel those in flight (each is run again after a
        restart, as none of them has a stored result)."""
        self._stopping.set()
        self._wake.set()
        with self._lock:
            running = [run_id for job in self._jobs.values() for run_id in job.running.values()
                       if run_id]
            threads = list(self._threads)
        for run_id in running:
            self._cancel(run_id)
        deadline = time.monotonic() + wait
        for thread in threads + ([self._worker] if self._worker else []):
            thread.join(max(0.0, deadline - time.monotonic()))

    def _recover(self) -> bool:
        """What a start finds: the lines of batches that ended just before a crash go;
        whether any batch has work left. A full disk must not stop the hub starting."""
        try:
            self.store.drop_lines()
            return bool(self.store.active())
        except HubError as exc:
            log.error("the batch worker could not read its batches: %s", exc.message)
            return True

    def _loop(self, busy: bool) -> None:
        """Step every active batch, then sleep: a tick while some are active (a requeued
        line's pause ends on its own), until woken (a new batch, a cancel) while none is,
        so an idle hub never reads the database for batches."""
        while not self._stopping.is_set():
            if busy:
                busy = self._step_all()
            self._wake.wait(self.tick if busy else None)
            self._wake.clear()
            busy = True                # woken, or a tick: look again

    def _step_all(self) -> bool:
        """One step of each active batch; whether any was active (or the store failed)."""
        try:
            active = self.store.active()
            for batch, owner in active:
                if self._stopping.is_set():
                    break
                self._step(batch, owner)
            return bool(active)
        except HubError as exc:        # the store refused (a full disk): next tick
            log.error("the batch worker could not go on: %s", exc.message)
        except Exception:              # a bug: logged whole, and the next tick goes on
            log.exception("the batch worker failed a step")
        return True

    def _step(self, batch: dict, owner: str) -> None:
        status = batch["status"]
        if status in ("validating", "in_progress") and not self._owner_exists(owner):
            self._fail(batch, [error("key_not_found", f"The API key {owner!r} that made this "
                                     "batch is no longer configured ([keys]): its lines are "
                                     "not run")])
        elif status in ("validating", "in_progress") and now() >= batch["expires_at"]:
            self._expire(batch, owner)
        elif status == "validating":
            self._validate(batch, owner)
        elif status == "in_progress":
            job = self._job(batch, owner)
            if job is None:
                return
            self._launch(job)
            with self._lock:
                idle = job.idle()
            if idle:
                self._finalize(batch, owner, "completed")
        elif status == "finalizing":
            self._finalize(batch, owner, "completed")
        elif status == "cancelling":
            with self._lock:
                job = self._jobs.get(batch["id"])
                busy = bool(job and job.running)
            if not busy:
                self._finalize(batch, owner, "cancelled")

    def _owner_exists(self, owner: str) -> bool:
        """A key removed from [keys] (and the hub restarted) has no limits left to run its
        lines under (accounting admits it with none): its batches must not go on."""
        return owner == accounting.LOCAL or owner in self.config.keys

    def _expire(self, batch: dict, owner: str) -> None:
        """Past its window: stop its lines, then end it `expired` once none is in flight."""
        with self._lock:
            job = self._jobs.get(batch["id"])
            running = []
            if job is not None and not job.cancelling:
                job.cancelling = True
                running = [r for r in job.running.values() if r]
            busy = bool(job and job.running)
        for run_id in running:
            self._cancel(run_id)
        if not busy:
            self._finalize(batch, owner, "expired")

    def _validate(self, batch: dict, owner: str) -> None:
        lines, errors, models = self._read_input(batch)
        if errors:
            self._fail(batch, errors)
            return
        self._move(batch, "in_progress", in_progress_at=now(),
                   model=models.pop() if len(models) == 1 else None,
                   request_counts={"total": len(lines), "completed": 0, "failed": 0})
        self._wake.set()

    def _fail(self, batch: dict, errors: list) -> None:
        self._move(batch, "failed", failed_at=now(),
                   errors={"object": "list", "data": errors[:MAX_ERRORS]})

    def _read_input(self, batch: dict) -> "Input":
        if self.files.get(batch["input_file_id"]) is None:
            return Input({}, [error("file_not_found", f"The input file "
                                    f"{batch['input_file_id']} no longer exists",
                                    "input_file_id")], set())
        return parse_input(self.files.content(batch["input_file_id"]), batch["endpoint"],
                           self.limits.max_lines)

    def _job(self, batch: dict, owner: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(batch["id"])
        if job is not None:
            return job
        lines, errors, _ = self._read_input(batch)
        if errors:                     # its input went from under it: it fails
            self._fail(batch, errors)
            return None
        done = self.store.done_lines(batch["id"])
        job = Job(batch["id"], owner, batch["endpoint"], lines,
                  collections.deque(n for n in sorted(lines) if n not in done))
        with self._lock:               # a cancel that read no job yet has left its mark
            job.cancelling = batch["id"] in self._cancelled
            return self._jobs.setdefault(batch["id"], job)

    def _launch(self, job: Job) -> None:
        with self._lock:
            if self._stopping.is_set() or job.cancelling or time.monotonic() < job.not_before:
                return
            room = self.limits.max_parallel_lines - sum(len(j.running)
                                                        for j in self._jobs.values())
            if job.backoff:            # the server was down: one line finds out if it is back
                room = min(room, 1 - len(job.running))
            started = []
            while room > 0 and job.pending:
                number = job.pending.popleft()
                job.running[number] = None
                thread = threading.Thread(target=self._run, args=(job, number),
                                          name=f"batch line {number}", daemon=True)
                self._threads.add(thread)
                started.append(thread)
                room -= 1
        for thread in started:
            thread.start()

    def _run(self, job: Job, number: int) -> None:
        """One line, in its own thread: its outcome stored, or the line put back. The
        thread is the batch owner's request, and a background one (upstream/gate.py)."""
        accounting.current.set(accounting.Caller((job.owner, f"batch {job.endpoint}",
                                                  self.config.key_limits.get(job.owner))))
        background.set(True)
        request = json.loads(job.lines[number])    # checked by parse_input
        try:
            outcome = self._answer(job, number, request["body"])
            if outcome is not None:
                self._keep(job, number, request["custom_id"], outcome)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())
            self._wake.set()

    def _answer(self, job: Job, number: int, body: dict) -> LineOutcome | None:
        """What the line's endpoint answered; None if the line was put back."""
        def started(run_id: str) -> None:
            with self._lock:
                job.running[number] = run_id
                late = job.cancelling or self._stopping.is_set()
            if late:                   # cancelled before its run existed
                self._cancel(run_id)

        assert self.run_line is not None, "the hub sets it before starting the worker"
        try:
            return self.run_line(job.owner, job.endpoint, body, started)
        except Requeue as again:
            if again.counted and again.answer is not None:
                with self._lock:
                    job.tries[number] = tries = job.tries.get(number, 0) + 1
                if tries >= MAX_ATTEMPTS:      # no tries left: its last error answers it
                    return again.answer
            self._put_back(job, number, again)
            return None
        except Exception:
            log.exception("batch %s line %s crashed", job.batch_id, number)
            return LineOutcome(500, INTERNAL, job.running.get(number) or "")

    def _keep(self, job: Job, number: int, custom_id: str, outcome: LineOutcome) -> None:
        """Store the line's result (once: store/batches.py); if the store refuses, the
        line is put back, to run again later."""
        ok = 200 <= outcome.status_code < 300
        try:
            self.store.record_line(job.batch_id, number, ok,
                                   line_result(custom_id, outcome),
                                   outcome.input_tokens, outcome.output_tokens)
        except HubError as exc:
            log.error("batch %s line %s: its result could not be stored (%s)",
                      job.batch_id, number, exc.message)
            self._put_back(job, number, Requeue(5.0))
            return
        with self._lock:
            job.running.pop(number, None)
            job.backoff = 0.0          # a server answered
            self.counters["completed" if ok else "failed"] += 1

    def _put_back(self, job: Job, number: int, again: Requeue) -> None:
        with self._lock:
            job.running.pop(number, None)
            self.counters["requeued"] += 1
            delay = again.delay
            if again.down:
                job.backoff = min(max(job.backoff * 2, self.retry_seconds), self.retry_most)
                delay = job.backoff
            if not job.cancelling:
                job.pending.appendleft(number)
                job.not_before = max(job.not_before, time.monotonic() + delay)

    def _finalize(self, batch: dict, owner: str, final: str) -> None:
        """Write the output and error files from the stored results (each line once, in
        line order), then the final status. Run again after a crash, it writes the same
        files under the same ids."""
        if final == "completed" and batch["status"] == "in_progress":
            if not self._all_answered(batch):
                return                 # a line is unanswered: never complete without it
            if not self._move(batch, "finalizing", finalizing_at=now()):
                return                 # cancelled meanwhile: the next step ends it so
        if final == "expired":
            self._record_expired(batch)
        counts = self.store.counts(batch["id"])
        hexid = batch["id"].removeprefix("batch_")
        for ok, kind, key in ((True, "output", "output_file_id"),
                              (False, "error", "error_file_id")):
            if not counts["completed" if ok else "failed"]:
                continue
            record = {"id": f"file-{hexid}{kind[:3]}", "owner": owner,
                      "filename": f"{batch['id']}_{kind}.jsonl", "purpose": "batch_output",
                      "created_at": now()}
            self.files.put(record, ((result + "\n").encode("utf-8")
                                    for result in self.store.results(batch["id"], ok)))
            batch[key] = record["id"]
        ended = {f"{final}_at": now()}            # completed_at, cancelled_at, expired_at
        if self._move(batch, final, **summary(counts, batch["request_counts"]["total"]),
                      **ended):
            self.store.drop_lines(batch["id"])     # the files hold them now
        with self._lock:
            self._jobs.pop(batch["id"], None)
            self._cancelled.discard(batch["id"])

    def _all_answered(self, batch: dict) -> bool:
        counts = self.store.counts(batch["id"])
        answered = counts["completed"] + counts["failed"]
        if answered == batch["request_counts"]["total"]:
            return True
        log.error("batch %s: %d of its %d lines answered, yet none left to run; not "
                  "completed", batch["id"], answered, batch["request_counts"]["total"])
        return False

    def _record_expired(self, batch: dict) -> None:
        """Each line without a result gets OpenAI's `batch_expired` error as its result."""
        if batch["status"] == "validating":
            return                     # never read: it has no lines
        done = self.store.done_lines(batch["id"])
        for number, raw in self._read_input(batch).lines.items():
            if number not in done:
                self.store.record_line(batch["id"], number, False, expired_result(
                    json.loads(raw)["custom_id"]), 0, 0)

    # -- what it is doing, for /metrics and the runs page ------------------------------------
    def progress(self) -> dict:
        """Batches by status and lines running, waiting and ended (engine/metrics.py)."""
        statuses = self.store.status_counts()
        with self._lock:
            return {"statuses": statuses,
                    "lines_running": sum(len(j.running) for j in self._jobs.values()),
                    "lines_pending": sum(len(j.pending) for j in self._jobs.values()),
                    **{f"lines_{k}": v for k, v in self.counters.items()}}


# --- shapes ------------------------------------------------------------------------------------

def file_object(record: dict) -> dict:
    """A stored file as OpenAI's FileObject."""
    return {"id": record["id"], "object": "file", "bytes": record["bytes"],
            "created_at": record["created_at"], "filename": record["filename"],
            "purpose": record["purpose"], "status": "processed", "expires_at": None,
            "status_details": None}


def page(items: list, limit: int) -> dict:
    """OpenAI's cursor page: `items` holds one more than `limit` when more follow."""
    return cursor_page(items[:limit], len(items) > limit)


def summary(counts: dict, total: int) -> dict:
    """request_counts and usage from the stored lines' counts."""
    tokens_in, tokens_out = counts["input_tokens"], counts["output_tokens"]
    return {"request_counts": {"total": total, "completed": counts["completed"],
                               "failed": counts["failed"]},
            "usage": {"input_tokens": tokens_in, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": tokens_out,
                      "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": tokens_in + tokens_out}}


INTERNAL = {"error": {"message": "Internal error in the hub; see its log", "type": "api_error",
                      "param": None, "code": None}}


def line_result(custom_id: str, outcome: LineOutcome) -> dict:
    """One line of a batch's output (or error) file, as OpenAI writes it."""
    return {"id": "batch_req_" + uuid.uuid4().hex, "custom_id": custom_id,
            "response": {"status_code": outcome.status_code,
                         "request_id": outcome.request_id, "body": outcome.body},
            "error": None}


def expired_result(custom_id: str) -> dict:
    """A line the batch's window closed on, as OpenAI writes it to the error file."""
    return {"id": "batch_req_" + uuid.uuid4().hex, "custom_id": custom_id, "response": None,
            "error": {"code": "batch_expired", "message": "This request could not be "
                      "executed before the completion window expired."}}


def error(code: str, message: str, param: str | None = None, line: int | None = None) -> dict:
    return {"code": code, "message": message, "param": param, "line": line}


class Input(NamedTuple):
    """A batch input file, read: each good line's text by line number (1 first), OpenAI's
    errors for the bad ones, and the models the lines name."""
    lines: dict
    errors: list
    models: set


def parse_input(data: bytes, endpoint: str, max_lines: int) -> Input:
    """Every line is checked, so a user fixes the file in one go."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return Input({}, [error("invalid_file_format",
                                f"The file is not UTF-8 (byte {exc.start})")], set())
    lines: dict[int, str] = {}
    errors: list[dict] = []
    seen: set = set()
    models: set = set()
    for number, raw in enumerate(text.split("\n"), 1):   # not splitlines(): U+2028 and
        raw = raw.removesuffix("\r")                      # the like are text in a string
        if not raw.strip():
            continue
        problem, request = check_line(raw, endpoint, seen)
        if problem is not None:
            errors.append(dict(problem, line=number))
            continue
        seen.add(request["custom_id"])
        models.add(request["body"].get("model"))
        lines[number] = raw
    if not lines and not errors:
        errors.append(error("empty_file", "The batch input file is empty."))
    elif len(lines) > max_lines:
        errors.append(error("too_many_tasks", f"The batch input file has {len(lines)} "
                            f"requests; at most {max_lines} are accepted ([batches] "
                            "max_lines)"))
    return Input(lines, errors, models)


def check_line(raw: str, endpoint: str, seen: set) -> tuple[dict | None, dict]:
    """(OpenAI's error for this line or None, the parsed request)."""
    try:
        request = json.loads(raw)
    except ValueError:
        return error("invalid_json_line", "This line is not parseable as valid JSON."), {}
    if not isinstance(request, dict):
        return error("invalid_json_line", "This line is not a JSON object."), {}
    for name, kind, what in (("custom_id", str, "a string"), ("method", str, "a string"),
                             ("url", str, "a string"), ("body", dict, "an object")):
        if name not in request:
            return error("missing_required_parameter",
                         f"Missing required parameter: '{name}'.", name), {}
        if not isinstance(request[name], kind):
            return error("invalid_value", f"'{name}' must be {what}.", name), {}
    if request["method"].upper() != "POST":
        return error("invalid_value", "'method' must be POST.", "method"), {}
    if request["url"] != endpoint:
        return error("url_mismatch", "The URL provided for this request does not match the "
                     f"batch endpoint ({endpoint}).", "url"), {}
    for name in NOT_REPEATABLE:
        if request["body"].get(name) is not None:
            return error("invalid_value", f"'body.{name}' is not supported in a batch: a "
                         "batch line may be run more than once, and each run would add to "
                         "the conversation.", f"body.{name}"), {}
    if request["custom_id"] in seen:
        return error("duplicate_custom_id", "The custom_id for this request is a duplicate "
                     "of another request. The custom_id parameter must be unique for each "
                     "individual request in a batch.", "custom_id"), {}
    return None, request
