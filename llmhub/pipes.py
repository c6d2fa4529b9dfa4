"""One generation: resolve the model, start a run, relay the upstream as neutral events.

Rules:
- Dialects never talk to an upstream: they build a ChatRequest and call
  `Engine.prepare()`; the server then starts the run on a worker for a stream, or drives it
  in the handler's own thread for an awaited reply. Code outside a request calls `start()`.
- Each run has one thread, the only reader of its upstream call: a worker for a stream, the
  handler itself for an awaited reply. Cancel comes from other threads through
  `Run.cancel`, which finishes the run and aborts the call's socket.
- `[fallbacks]` are tried only while nothing has reached the client, that is before the
  upstream accepted the request; after that a failure ends the run with an error event.
"""

import functools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from llmhub.cancellation import CANCELLED, COMPLETED, FINAL, TRIMMED, Gate, Registry, Run, Turns
from llmhub.config import Config
from llmhub.context import (build_input, content_text, estimate_messages, estimate_tokens,
                            message_tokens, split_for_summary)
from llmhub.errors import BadRequest, HubError, UpstreamError
from llmhub.redaction import config_secrets
from llmhub.threads import Store

__all__ = ["ChatRequest", "Target", "Engine"]

log = logging.getLogger("llmhub.pipes")


@dataclass
class ChatRequest:
    """What every dialect translates its wire request into.

    With `persist`, `messages` must be normalised (threads.normalise_message): they are stored
    in the thread (a new one when `thread_id` is None) before the upstream is called, and the
    upstream sees `system` + the thread's history + them. Without it they go upstream as-is.
    """
    messages: list
    model: str | None = None
    params: dict = field(default_factory=dict)   # OpenAI-named fields, sent upstream as-is
    dialect: str = "openai"
    run_id: str | None = None
    system: str | None = None
    thread_id: str | None = None
    persist: bool = False
    budget: bool = False                         # apply [context] max_input_tokens
    keep_response: bool = False                  # record it in the responses table
    metadata: dict = field(default_factory=dict) # the client's, kept with the response
    upstream_key: str | None = None              # replaces the upstream's api_key (LB-LLM-Key)
    upstream: object = None                      # a client-chosen provider; no aliases then
    upstream_headers: dict = field(default_factory=dict)   # passed through (Helicone-Auth)


@dataclass(frozen=True)
class Target:
    upstream: object
    model: str


class Workers:
    """Reusable daemon threads for run workers: starting a thread costs ~100 µs a request.

    `_idle` counts waiting threads not yet promised a job. submit() promises one (or starts
    a thread); a thread that waits `idle_seconds` for nothing leaves, unless it was promised.
    """

    idle_seconds = 60.0

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, job, *args) -> None:
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1
        self._jobs.put((job, args))
        if spawn:
            threading.Thread(target=self._loop, name="run worker", daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                job, args = self._jobs.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:     # nobody promised this thread a job: leave
                        self._idle -= 1
                        return
                continue
            try:
                job(*args)
            except Exception:    # a job's bug must not kill the thread or skew `_idle`
                log.exception("background job %s failed", getattr(job, "__name__", job))
            with self._lock:
                self._idle += 1


class Engine:
    models_cache_seconds = 30   # how long an upstream's model list answers "default model"

    def __init__(self, config: Config, upstreams: dict, registry: Registry,
                 store: Store) -> None:
        self.config = config
        self.upstreams = upstreams
        self.registry = registry
        self.store = store
        self.default_upstream = next(iter(upstreams.values()))
        self.workers = Workers()
        self.model_gates = {model: Gate(limit) for model, limit in config.concurrency.items()}
        self.turns = Turns()
        self.secrets = config_secrets(config)
        self._listed: dict[str, tuple[float, list]] = {}
        self._summarising: set[str] = set()
        self._summarising_lock = threading.Lock()

    # -- model resolution --------------------------------------------------------------------
    def alias_chain(self, name: str) -> list[str]:
        chain = [name]
        while chain[-1] in self.config.aliases:      # config.py refuses cycles
            chain.append(self.config.aliases[chain[-1]])
        return chain

    def resolve(self, requested: str | None) -> list[Target]:
        """The target for a requested name, then its fallbacks, without repeats."""
        chain = self.alias_chain(requested or self.config.models["default"])
        targets = [self.target(chain[-1])]
        for step in chain:
            if step in self.config.fallbacks:
                targets += [self.target(self.alias_chain(f)[-1])
                            for f in self.config.fallbacks[step]]
                break
        return list(dict.fromkeys(targets))

    def target(self, name: str) -> Target:
        """`NAME:model` picks upstream NAME; `lm:model` the LM Studio upstream (seed prefix)."""
        prefix, sep, rest = name.partition(":")
        if sep and prefix in self.upstreams:
            return Target(self.upstreams[prefix], rest)
        if sep and prefix == "lm":
            lmstudio = [u for u in self.upstreams.values() if u.kind == "lmstudio"]
            return Target((lmstudio or [self.default_upstream])[0], rest)
        return Target(self.default_upstream, name)

    def default_model(self, upstream) -> str:
        """The first model an upstream lists, when neither request nor config names one."""
        listed_at, models = self._listed.get(upstream.name, (0.0, []))
        if time.monotonic() - listed_at > self.models_cache_seconds or not models:
            models = [m["id"] for m in upstream.list_models()]
            self._listed[upstream.name] = (time.monotonic(), models)
        if not models:
            raise BadRequest(f"No model was given, [models] default is not set, and "
                             f"{upstream.label} lists no models", param="model",
                             code="model_not_found")
        return models[0]

    # -- runs --------------------------------------------------------------------------------
    def start(self, request: ChatRequest) -> Run:
        """Register a run, store its input if it persists, start its worker; returns at once."""
        run = self.prepare(request)
        self.launch(run)
        return run

    def prepare(self, request: ChatRequest) -> Run:
        """A registered run with its input stored, not yet started: the caller must
        `drive(run)`. A handler that awaits the whole reply drives it in its own thread,
        which saves a thread hand-off per request: a quarter of the hub's CPU under load."""
        targets = [Target(request.upstream, request.model or "")] if request.upstream \
            else self.resolve(request.model)
        run = self.registry.create(request.run_id, dialect=request.dialect,
                                   model=targets[0].model)
        run.provider = targets[0].upstream.provider
        run.buffer_limit = self.config.server["stream_buffer_bytes"]
        run.log_limit = self.config.responses["max_event_log_bytes"]
        run.secrets = self.secrets + ((request.upstream_key,) if request.upstream_key else ())
        try:
            turn = self._input(run, request)
            if request.keep_response:
                self._keep_response(run, request)
        except BaseException as exc:
            run.finish("fail", error=exc if isinstance(exc, HubError) else None)
            raise
        # access = (api key, extra headers) for reaching the upstream on the client's behalf
        run.job = functools.partial(self._work, run, request.params, turn,
                                    (request.upstream_key, request.upstream_headers), targets)
        return run

    def launch(self, run: Run) -> None:
        """Start a prepared run's work on a worker thread; nothing if it has started."""
        if run.job is not None:
            self.workers.submit(self.drive, run)

    @staticmethod
    def drive(run: Run) -> None:
        """Do a prepared run's work in this thread, until the run ends; once only."""
        job, run.job = run.job, None
        if job is not None:
            job()

    def _input(self, run: Run, request: ChatRequest):
        """What the upstream gets: the messages, or for a turn on an existing thread a
        function that waits for the thread's earlier runs and then stores and builds them.

        Runs on one thread go one at a time, in order of arrival: a turn's input is built
        only once the turn before it and its answer are stored (DESIGN §6)."""
        budget = self.config.context["max_input_tokens"] if request.budget else None
        if not request.persist and not request.budget:     # sent as the client gave them
            system = [{"role": "system", "content": request.system}] if request.system else []
            return self._ready(run, system + request.messages)
        if not request.persist:
            messages, run.context = build_input(request.system, [], request.messages,
                                                budget=budget)
            return self._ready(run, messages)
        build_input(request.system, [], request.messages, budget=budget)   # alone too big?
        if request.thread_id is None:                 # a new thread: nobody to wait for
            turn = self._ready(run, self._store_turn(run, request, budget))
        else:
            self.store.get_thread(request.thread_id)  # 404 before anything runs
            run.thread_id = request.thread_id
            turn = functools.partial(self._take_turn, run, request, budget)
        self.turns.join(run.thread_id, run)
        self._on_turn_finish(run)
        return turn

    @staticmethod
    def _ready(run: Run, messages: list):
        run.input_estimate = estimate_messages(messages)
        return lambda: messages

    def _on_turn_finish(self, run: Run) -> None:
        # in this order: the reply is stored before the next turn on the thread may start
        run.on_finish(self._record_reply)
        run.on_finish(self._summary_if_due)
        run.on_finish(lambda run: self.turns.leave(run.thread_id, run))

    def _take_turn(self, run: Run, request: ChatRequest, budget: int | None) -> list | None:
        """Wait for this thread's earlier runs, then store the turn; None if cancelled."""
        if not self.turns.wait(run.thread_id, run):
            return None
        messages = self._store_turn(run, request, budget)
        run.input_estimate = estimate_messages(messages)
        return messages

    def _store_turn(self, run: Run, request: ChatRequest, budget: int | None) -> list:
        planned = {}

        def plan(history, summary, totals):   # before the write: an over-budget turn stores nothing
            planned["messages"], run.context = build_input(
                request.system, history, request.messages, summary, budget, totals)

        run.thread_id = self.store.begin_turn(request.thread_id, request.messages, plan, budget)
        run.turn_stored = True
        return planned["messages"]

    def _record_reply(self, run: Run) -> None:
        """Store what the model said, even partial, with the run's status (a finish hook)."""
        if not run.turn_stored:
            return                     # cancelled while it waited for its turn: nothing asked
        transcript = run.transcript
        metadata = {"status": run.status, "run_id": run.id, "model": run.model or "",
                    "finish_reason": transcript.finish_reason or
                    ("cancelled" if run.status == CANCELLED else run.status)}
        if run.error is not None:
            metadata["error"] = run.error.message
        message = transcript.message()
        self.store.record_reply(run.thread_id, {
            "role": "assistant", "content": message["content"], "name": None,
            "tool_call_id": None, "tool_calls": message.get("tool_calls", []),
            "attachments": [], "metadata": metadata},
            tokens=(run.usage or {}).get("output_tokens"))

    # -- summaries (DESIGN §7) ----------------------------------------------------------------
    def _summary_if_due(self, run: Run) -> None:
        """A finish hook: schedule a summary once the unsummarised tokens pass the trigger.

        It runs in the background after the turn, so no response ever waits for it; the
        turn that triggered it reports `summary_scheduled`, the next ones `summarised`.
        """
        if not run.turn_stored:
            return
        context = run.context or {}
        unsummarised = context.get("history_tokens", 0) + run.input_estimate + \
            estimate_tokens(run.transcript.text)
        if unsummarised > self.config.context["summary_trigger_tokens"]:
            context["summary_scheduled"] = True
            self.workers.submit(self.summarise, run.thread_id)

    def summarise(self, thread_id: str) -> bool:
        """Summarise a thread's older messages with [models] summary; True if one was stored."""
        with self._summarising_lock:
            if thread_id in self._summarising:
                return False
            self._summarising.add(thread_id)
        try:
            older, summary = self._to_summarise(thread_id)
            if not older:
                return False
            run = self.start(ChatRequest(messages=summary_prompt(summary, older),
                                         model=self.config.models["summary"] or None,
                                         dialect="summary"))
            run.wait(self.default_upstream.config.total_timeout_seconds)
            text = run.transcript.text.strip()
            if run.status != COMPLETED or not text:
                log.warning("summary of thread %s failed: %s", thread_id,
                            run.error.message if run.error else run.status)
                return False
            self.store.save_summary(thread_id, older[-1]["seq"], text, estimate_tokens(text))
            return True
        finally:
            with self._summarising_lock:
                self._summarising.discard(thread_id)

    def _to_summarise(self, thread_id: str) -> tuple[list[dict], dict | None]:
        """The oldest unsummarised messages, short of the recent tail, within one budget.

        A huge backlog (an imported thread) is summarised a budget's worth at a time, each
        pass folding the previous summary in, rather than in one enormous request.
        """
        context = self.config.context
        chunk_budget = context["max_input_tokens"] * 3 // 4
        summary, oldest, newest = self.store.summary_source(
            thread_id, chunk_budget, context["keep_recent_tokens"])
        _, tail = split_for_summary(newest, context["keep_recent_tokens"])
        tail_start = tail[0]["seq"] if tail else float("inf")
        chunk, used = [], estimate_tokens(summary["text"]) if summary else 0
        for message in oldest:
            used += message_tokens(message)
            if message["seq"] >= tail_start or (chunk and used > chunk_budget):
                break
            chunk.append(message)
        return chunk, summary

    # -- responses (the responses dialect's record) ------------------------------------------
    def _keep_response(self, run: Run, request: ChatRequest) -> None:
        kept = self.config.responses
        self.store.create_response({
            "id": run.id, "thread_id": run.thread_id, "model": run.model,
            "provider": run.provider, "status": "in_progress", "metadata": request.metadata,
            "context": run.context or {}, "created_at": time.time()},
            kept["keep_count"], kept["keep_days"] * 86400)
        run.on_finish(self._finish_response)

    def _finish_response(self, run: Run) -> None:
        usage = run.usage or _usage(run.input_estimate, estimate_tokens(run.transcript.text),
                                    None, estimated=True)
        self.store.finish_response(
            run.id, status=run.status, output=run.transcript.text, model=run.model,
            provider=run.provider, context=run.context or {},
            usage={k: usage[k] for k in ("input_tokens", "output_tokens", "total_tokens")},
            events=stored_events(run))

    def _work(self, run: Run, params: dict, turn, access: tuple,
              targets: list[Target]) -> None:
        failures = []
        try:
            try:
                messages = turn()
            except HubError as exc:         # the thread went, or the store failed
                run.finish("fail", error=exc)
                return
            if messages is None:
                return                      # cancelled while it waited for its turn
            body = dict(params, messages=messages)
            for target in targets:
                error = self._attempt(run, body, access, target)
                if error is None:
                    return
                failures.append((target, error))
                if run.status in FINAL or not error.model_unavailable:
                    break
            run.finish("fail", error=_summarise(failures))
        except Exception:  # a bug: the run must still end, and the client hear of it
            log.exception("run %s crashed", run.id)
            run.finish("fail", error=HubError("Internal error in the hub; see its log"))

    def _attempt(self, run: Run, body: dict, access: tuple, target: Target) -> HubError | None:
        """One upstream try; returns its error if it failed before the upstream accepted."""
        upstream, call = target.upstream, None
        gates = [g for g in (self.model_gates.get(target.model), upstream.gate) if g]
        entered = []
        for gate in gates:                    # the model's limit, then the upstream's
            if not gate.enter(run):
                for held in entered:
                    held.leave()
                return None                   # cancelled while queued
            entered.append(gate)
        try:
            model = target.model or self.default_model(upstream)
            api_key, headers = access
            call = upstream.chat(dict(body, model=model), api_key=api_key, extra_headers=headers)
            if not run.attach(call):
                return None
            if run.upstream_at is None:
                run.upstream_at = time.monotonic()
            call.open()
            if run.start(model, upstream.provider):
                self._relay(run, call)
            return None
        except UpstreamError as exc:
            return exc
        except HubError as exc:
            run.finish("fail", error=exc)
            return None
        finally:
            if call is not None:
                call.close()
            for gate in entered:
                gate.leave()

    def _relay(self, run: Run, call) -> None:
        try:
            for chunk in call.chunks():
                if not self._push(run, chunk):
                    return
        except UpstreamError as exc:
            run.finish("fail", error=exc, finish_reason=run.transcript.finish_reason)
            return
        if run.usage is None:
            output = estimate_tokens(run.transcript.text)
            run.emit("usage", _usage(run.input_estimate, output, None, estimated=True))
        run.finish("complete", finish_reason=run.transcript.finish_reason or "stop")

    def _push(self, run: Run, chunk: dict) -> bool:
        text = run.transcript.add(chunk)
        usage = chunk.get("usage")
        if chunk.get("choices"):
            raw = {k: v for k, v in chunk.items() if k != "usage"} if usage else chunk
            if not run.emit("delta", {"text": text, "chunk": raw}):
                return False
        if isinstance(usage, dict):
            run.usage = self._reported_usage(run, usage)
            return run.emit("usage", run.usage)
        return True

    def _reported_usage(self, run: Run, usage: dict) -> dict:
        """The upstream's token counts, where they are counts; each one that is not (a
        string, a list, a negative or absurd number) is estimated instead, and logged."""
        prompt, completion = (usage.get(k, 0) for k in ("prompt_tokens", "completion_tokens"))
        estimated = False
        if not _is_count(prompt):
            log.warning("run %s: upstream prompt_tokens %.40r is not a count; estimated",
                        run.id, prompt)
            prompt, estimated = run.input_estimate, True
        if not _is_count(completion):
            log.warning("run %s: upstream completion_tokens %.40r is not a count; estimated",
                        run.id, completion)
            completion, estimated = estimate_tokens(run.transcript.text), True
        return _usage(prompt, completion, usage, estimated=estimated)

    # -- models and health -------------------------------------------------------------------
    def list_models(self) -> tuple[list[dict], list[UpstreamError]]:
        models, errors = [], []
        for upstream in self.upstreams.values():
            try:
                listed = upstream.list_models()
            except UpstreamError as exc:
                errors.append(exc)
                continue
            self._listed[upstream.name] = (time.monotonic(), [m["id"] for m in listed])
            models += listed
        return models, errors

    def probe_all(self) -> list[dict]:
        return [{"name": u.name, "kind": u.kind, "base_url": u.base_url, **u.probe()}
                for u in self.upstreams.values()]


SUMMARY_INSTRUCTION = (
    "Summarise the conversation below for your own later use. Keep every fact, name, number, "
    "decision and open question; drop pleasantries. Write plain prose, at most a few "
    "paragraphs, in the conversation's language.")


def summary_prompt(previous: dict | None, messages: list[dict]) -> list[dict]:
    lines = [f"Earlier summary: {previous['text']}"] if previous else []
    lines += [f"{m['role']}: {content_text(m['content'])}" for m in messages]
    return [{"role": "system", "content": SUMMARY_INSTRUCTION},
            {"role": "user", "content": "\n".join(lines)}]


def stored_events(run: Run) -> list:
    """The run's kept event log as stored for replay; a bounded log that dropped its start
    says how many events it dropped, so a resume from before them is refused, not gapped."""
    kept = [slim(e) for e in run.events + run.closing]
    return ([[TRIMMED, {"count": run.base}]] if run.base else []) + kept


def slim(event) -> list:
    """An event as stored for replay: deltas keep their text, not the raw upstream chunk."""
    kind, data = event
    if kind == "delta":
        return [kind, {"text": data["text"]}]
    if kind == "usage":
        return [kind, {k: v for k, v in data.items() if k != "raw"}]
    return [kind, data]


def _is_count(value) -> bool:
    return type(value) is int and 0 <= value < 1 << 53


def _usage(input_tokens: int, output_tokens: int, raw: dict | None, estimated=False) -> dict:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens, "estimated": estimated, "raw": raw}


def _summarise(failures: list) -> HubError:
    """The first target's error, naming every fallback that failed after it."""
    first = failures[0][1]
    if len(failures) == 1:
        return first
    tried = "; ".join(f"fallback {t.model!r}: {e.message}" for t, e in failures[1:])
    return UpstreamError(f"{first.message} ({tried})", status=first.status, code=first.code,
                         param=first.param)
