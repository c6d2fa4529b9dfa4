"""Running one generation: a run's input, its upstream attempts, and its typed events.

Rules:
- Dialects never talk to an upstream: they build a ChatRequest (an input plan, inputs.py,
  and what to ask) and call `Engine.prepare()`; the server then drives the run on a worker
  for a stream, or in the handler's own thread for an awaited reply. Code outside a request
  calls `start()`.
- Each run has one driver, the only reader of its upstream call and the only thread that
  concludes the run (runs.Run). Cancel comes from other threads through
  `Run.cancel`, which shuts the call's socket; the driver notices and concludes.
- A name resolves to pools of targets: its own, then its `[fallbacks]`' (resolution.py).
  The router picks a target of a pool (routing.py); one that fails before it accepted the
  request is left for the next target of the pool, up to `[routing] retries` more, then for
  the next pool while the failure says another model may do (model_unavailable). Nothing
  has reached the client then; after that a failure ends the run with an error event.
- A target whose model is not loaded has it loaded first (lifecycle.py).
- The upstream's typed events are folded into the run's Transcript and published as they
  come; the upstream's usage counts are checked, and estimated where they are not counts.
- A key with `tokens_per_day` has its run's tokens counted as they stream (accounting.Budget):
  a run whose input alone would cross what is left is refused with a 429 before it starts,
  and one whose output crosses it is ended there, failed with that 429's error.
- A request that carries its client's own wire body (Native) sends that body to a target
  whose upstream speaks the same dialect (Anthropic → Anthropic), and the neutral body to
  every other target.
- A relayed call (Relay: rerank, tokenize, audio, images) is a run like any other: the same
  resolution, pools, gates, keys and request log. Its body goes upstream as it came (only
  the model renamed, where a target knows it by another name), and its reply goes to the
  Relay's sink as it comes, from the driver's thread. An upstream without the endpoint is a
  failure before any byte (passthrough.not_served), so another target may serve it.
- A finish "stop" is named with the request's stop sequence when the output ends with one
  (named_stops); a context overflow carries the tokens sent and the context length, as the
  upstream said them, else estimated (_count_overflow).
"""

import dataclasses
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from llmhub.config import Config
from llmhub.context import build_input, estimate_input, estimate_messages, estimate_tokens
from llmhub.engine import accounting
from llmhub.engine.inputs import InputPlan
from llmhub.engine.resolution import Resolver, Target
from llmhub.engine.routing import retryable
from llmhub.engine.runs import (COMPLETED, FAILED, FINAL, TOKENS, TRIMMED, Registry, Run,
                                estimated_usage, output_estimate)
from llmhub.engine.turns import Turns
from llmhub.engine.workers import Workers
from llmhub.errors import BadRequest, HubError, UpstreamError
from llmhub.events import Done, Error, Usage, stored, token_count
from llmhub.redaction import config_secrets
from llmhub.store.responses import ResponseStore
from llmhub.store.threads import ThreadStore, thread_not_found
from llmhub.transcript import finish_reason
from llmhub.upstream.base import Call, Upstream, relays, speaks
from llmhub.upstream.gate import Gate, QueueFull
from llmhub.upstream.passthrough import PassCall, not_served
from llmhub.upstream.think import join_think, split_think

__all__ = ["Access", "ChatRequest", "Native", "Relay", "RelaySink", "Generation",
           "stored_events"]

log = logging.getLogger("llmhub.pipes")


@dataclass(frozen=True)
class Access:
    """How a client reaches an upstream itself: its own key (LB-LLM-Key), headers passed
    through (Helicone-Auth), or a provider it named (the sessions dialect); no aliases then."""
    api_key: str | None = None
    headers: dict = field(default_factory=dict)
    provider: Upstream | None = None


@dataclass(frozen=True)
class Native:
    """The client's own request in its own dialect, for a target whose upstream speaks that
    dialect too (`upstream.speaks`, Anthropic → Anthropic): it is relayed as it came, only
    the model renamed, so what the neutral form has no room for (cache_control marks,
    context_management, system blocks, betas in `headers`) still reaches the model and its
    prompt cache. Every other target gets the neutral request, as before."""
    dialect: str
    body: dict
    headers: dict = field(default_factory=dict)


@dataclass
class ChatRequest:
    """What every dialect translates its wire request into: an input plan and what to ask."""
    input: InputPlan                             # inputs.Stateless, Chain, ThreadTurn, …
    model: str | None = None
    params: dict = field(default_factory=dict)   # OpenAI-named fields, sent upstream as-is
    dialect: str = "openai"
    run_id: str | None = None
    access: Access = field(default_factory=Access)
    session: str | None = None                   # keeps a conversation on one target (the
                                                 # thread's id when None)
    must_fit: bool = False                       # an input over the model's context is a
                                                 # 400, not cut by the upstream unsaid
    native: Native | None = None                 # the wire request, for a same-dialect target
    load_context: int | None = None              # a load on demand for it asks for this
                                                 # context (Ollama's num_ctx)


class RelaySink(Protocol):
    """Where a relayed reply goes (the server implements it over the client's connection).
    A failed write raises OSError: the client went away."""

    def open(self, status: int, headers: dict, length: int | None) -> None:
        ...                                # the status and headers; length None: streamed

    def send(self, data: bytes) -> None:   # one piece of the body, as it came
        ...

    def end(self) -> None:                 # the body's end, where the framing has one
        ...


@dataclass
class Relay:
    """A request passed to an upstream as it came (the relays dialect's)."""
    endpoint: str                  # the client's path, for messages: /v1/rerank
    paths: tuple                   # the upstream's paths from its root, tried in order
    model: str | None              # as the client named it; None: the default upstream's
    body: bytes | list             # whole, or pieces sent one after the other (multipart)
    content_type: str
    renamed: Callable[[str], bytes | list] | None = None   # the body for another model name
    accept: str | None = None
    input_estimate: int = 0        # tokens the body holds, for the key's budget
    sink: RelaySink | None = None  # set by the server before the run is driven


class Generation:
    def __init__(self, config: Config, resolver: Resolver, registry: Registry,
                 threads: ThreadStore, responses: ResponseStore, workers: Workers, lifecycle,
                 limits: accounting.Limits | None = None) -> None:
        self.config = config
        self.resolver = resolver
        self.router = resolver.router
        self.lifecycle = lifecycle
        self.registry = registry
        self.threads = threads
        self.responses = responses
        self.workers = workers
        self.limits = limits or accounting.Limits({})
        self.model_gates = {model: Gate(limit, config.upstream.max_queued)
                            for model, limit in config.concurrency.items()}
        self.turns = Turns()
        self.secrets = config_secrets(config)
        self.finish_hooks: list = []     # run after a thread turn's reply is stored

    # -- preparing ---------------------------------------------------------------------------
    def prepare(self, request: ChatRequest) -> Run:
        """A registered run with its input stored, not yet started: the caller must
        `drive` it. A handler that awaits the whole reply drives it in its own thread,
        which saves a thread hand-off per request: a quarter of the hub's CPU under load."""
        access = request.access
        pools = [[Target(access.provider, request.model or "")]] if access.provider \
            else self.resolver.resolve(request.model)
        first = pools[0][0]
        caller = accounting.current.get()
        caller.check_model(request.model, first.model)
        pools = allowed(caller, request.model, pools)
        run = self.registry.create(request.run_id, most=most_runs(caller),
                                   dialect=request.dialect, model=first.model)
        run.requested = request.model
        run.provider = first.upstream.provider
        run.log.buffer_limit = self.config.server.stream_buffer_bytes
        run.log.log_limit = self.config.responses.max_event_log_bytes
        run.secrets = self.secrets + ((access.api_key,) if access.api_key else ())
        run.must_fit = request.must_fit
        run.load_context = request.load_context
        with run.failing_on_error():
            turn = request.input.prepare(self, run)
            run.budget = self.limits.budget(run.info["key"], run.input_estimate)
        run.job = functools.partial(self._work, run, request.params, turn,
                                    (access.api_key, access.headers, request.input.endpoint,
                                     request.native),
                                    pools, request.session)
        return run

    # -- thread turns (inputs.ThreadTurn's) ---------------------------------------------------
    def require_thread(self, thread_id: str) -> None:
        """404 for a thread that does not exist or that the caller may not see: the same
        answer, so that another key's thread ids are not even confirmed."""
        caller = accounting.current.get()
        owner = self.threads.thread_owner(thread_id)
        if owner is None or not caller.sees(owner):
            raise thread_not_found(thread_id)

    def join_thread(self, run: Run) -> None:
        """Take the run's place in its thread's line; its reply is stored before the next
        turn on the thread may start."""
        thread_id = run.thread_id
        assert thread_id is not None, "the plan names the thread before the run joins it"
        self.turns.join(thread_id, run)
        run.on_finish(self.record_reply)
        for hook in self.finish_hooks:
            run.on_finish(hook)
        run.on_finish(lambda run: self.turns.leave(thread_id, run))

    def take_turn(self, run: Run, plan, budget: int | None) -> list | None:
        """Wait for this thread's earlier runs, then store the turn; None if the run ended
        first. The whole input is known only now: the key's budget is charged the rest."""
        assert run.thread_id is not None, "a turn on a stored thread"
        if not self.turns.wait(run.thread_id, run):
            return None
        known = run.input_estimate
        messages = self.store_turn(run, plan, budget)
        run.input_estimate = estimate_messages(messages)
        if run.budget is not None and not run.budget.charge(run.input_estimate - known):
            run.finish("fail", error=run.budget.spent())
            return None
        return messages

    def store_turn(self, run: Run, plan, budget: int | None) -> list:
        planned = {}
        replay = self.config.context.replay_reasoning

        def build(history, summary, totals):   # before the write: too big a turn stores nothing
            planned["messages"], run.context = build_input(
                plan.system, history, plan.messages, summary, budget, totals, replay)

        run.thread_id = self.threads.begin_turn(plan.thread_id, plan.messages, build, budget,
                                                run.info["key"])
        run.turn_stored = True
        return planned["messages"]

    def record_reply(self, run: Run) -> None:
        """Store what the model said, even partial, with the run's status (a finish hook)."""
        if not run.turn_stored or run.thread_id is None:
            return                     # cancelled while it waited for its turn: nothing asked
        transcript = run.transcript
        metadata = {"status": run.status, "run_id": run.id, "model": run.model or "",
                    "finish_reason": finish_reason(transcript.finish_reason, run.status,
                                                   otherwise=run.status)}
        if run.error is not None:
            metadata["error"] = run.error.message
        if run.status == "cancelled" and run.cancel_reason:
            metadata["cancel_reason"] = run.cancel_reason   # a Stop, or "shutdown": the page
                                                            # tells them apart
        metadata.update(reply_stats(run))
        self.threads.record_reply(run.thread_id, {
            "role": "assistant", "content": transcript.content, "name": None,
            "tool_call_id": None,
            "tool_calls": transcript.calls(), "attachments": [], "metadata": metadata,
            "reasoning": transcript.reasoning or None},
            tokens=run.usage.output_tokens if run.usage else None)

    # -- the responses record (the seed responses dialect's) ----------------------------------
    def keep_response(self, run: Run, metadata: dict) -> None:
        """Keep a /responses run in the responses table from now to its end."""
        kept = self.config.responses
        with run.failing_on_error():
            self.responses.create_response({
                "id": run.id, "thread_id": run.thread_id, "model": run.model,
                "provider": run.provider, "status": "in_progress", "metadata": metadata,
                "context": run.context or {}, "created_at": time.time(),
                "owner": run.info["key"]},
                kept.keep_count, kept.keep_days * 86400)
        run.on_finish(self._finish_response)

    def _finish_response(self, run: Run) -> None:
        assert run.usage is not None, "set before the finish hooks run (Run._conclude)"
        fields = {"status": run.status, "output": run.transcript.text, "model": run.model,
                  "provider": run.provider, "context": run.context or {},
                  "usage": run.usage.counts(), "events": stored_events(run)}
        self.responses.finish_response(run.id, **fields, if_fails=lambda error: dict(
            fields, status=FAILED, events=stored_events(run, error)))

    # -- embeddings --------------------------------------------------------------------------
    def embed(self, model: str | None, body: dict) -> tuple[dict, Run]:
        """Embeddings through the same aliases, prefixes, pools, fallbacks and queues as a
        chat, driven in the caller's thread; (the upstream's reply, the finished run). The
        input counts against the key's budget before the call; usage the upstream gives as 0
        (LM Studio always does) is estimated."""
        pools = self.resolver.resolve(model)
        caller = accounting.current.get()
        caller.check_model(model, pools[0][0].model)
        pools = allowed(caller, model, pools)
        run = self.registry.create(None, most=most_runs(caller), dialect="embeddings",
                                   model=pools[0][0].model)
        run.requested = model
        run.input_estimate = estimate_input(body.get("input"))
        with run.failing_on_error():
            run.budget = self.limits.budget(run.info["key"], run.input_estimate)
        replies: list = []
        run.job = functools.partial(self._embed_work, run, pools, body, replies)
        run.drive()
        if run.status == COMPLETED:
            return replies[-1][0], run
        raise run.failure() if run.error else HubError("Cancelled while queued", status=409,
                                                       code="cancelled")

    def _embed_work(self, run: Run, pools: list, body: dict, replies: list) -> None:
        def attempt(target: Target) -> HubError | None:
            try:
                replies.append(self._embed_once(run, target, body))
            except HubError as exc:
                return exc
            return None

        failures = self._through_pools(run, pools, None, attempt)
        if replies and replies[-1][0] is not None:
            reply, name, target = replies[-1]
            if run.start(name, target.upstream.provider):
                run.usage = self._embedding_usage(reply, body.get("input"))
                run.finish("complete", finish_reason="stop")
            return
        run.finish("fail", error=_summarise(failures) if failures else None)

    def _embed_once(self, run: Run, target: Target, body: dict):
        entered = self._admit(run, target)
        if entered is None:
            return None, None, target
        try:
            upstream = target.upstream
            name = target.model or self.resolver.default_model(upstream)
            embed = getattr(upstream, "embeddings", None)
            if embed is None:
                raise UpstreamError(f"{upstream.label} has no embeddings endpoint", status=400,
                                    code="unsupported_endpoint")
            if run.upstream_at is None:
                run.upstream_at = time.monotonic()
            reply = embed(dict(body, model=name))
            self.router.opened(target, None)
            return reply, name, target
        finally:
            self._leave(entered, run)

    @staticmethod
    def _embedding_usage(reply: dict, given) -> Usage:
        usage = reply["usage"] if isinstance(reply.get("usage"), dict) else {}
        prompt = token_count(usage.get("prompt_tokens"))
        if prompt:                   # 0 (LM Studio always) is not a count either
            return Usage(prompt, 0, raw=usage)
        return Usage(estimate_input(given), 0, input_estimated=True)

    # -- relayed calls -----------------------------------------------------------------------
    def prepare_relay(self, relay: Relay) -> Run:
        """A run for a relayed call, through the same aliases, pools, fallbacks, queues and
        limits as a chat; not started: its driver (the handler, which set `relay.sink`)
        drives it, and its reply is written as it comes."""
        pools = self.resolver.resolve(relay.model)
        caller = accounting.current.get()
        caller.check_model(relay.model, pools[0][0].model)
        pools = allowed(caller, relay.model, pools)
        run = self.registry.create(None, most=most_runs(caller), dialect="relays",
                                   model=relay_model(pools[0][0], relay))
        run.requested = relay.model
        run.provider = pools[0][0].upstream.provider
        run.secrets = self.secrets
        run.input_estimate = relay.input_estimate
        with run.failing_on_error():
            run.budget = self.limits.budget(run.info["key"], run.input_estimate)
        run.job = functools.partial(self._relay_work, run, pools, relay)
        return run

    def _relay_work(self, run: Run, pools: list, relay: Relay) -> None:
        failures = self._through_pools(run, pools, None,
                                       lambda target: self._relay_once(run, target, relay))
        if failures:
            run.finish("fail", error=_summarise(failures))

    def _relay_once(self, run: Run, target: Target, relay: Relay) -> HubError | None:
        """One target's try; its error if it failed before the upstream accepted."""
        entered, call = self._admit(run, target), None
        if entered is None:
            return None                       # cancelled while queued
        try:
            call = pass_call(target, relay)
            if not run.attach(call):
                return None
            if run.upstream_at is None:
                run.upstream_at = time.monotonic()
            call.open()
            self.router.opened(target, None)
            if run.start(relay_model(target, relay) or "", target.upstream.provider):
                assert relay.sink is not None, "the server sets it before driving the run"
                self._deliver(run, call, relay.sink, target)
            return None
        except UpstreamError as exc:
            return exc
        finally:
            if call is not None:
                call.close()
            self._leave(entered, run)

    def _deliver(self, run: Run, call: PassCall, sink: RelaySink, target: Target) -> None:
        """The accepted reply to the sink as it comes; the run ends with it."""
        try:
            sink.open(call.status, call.reply_headers, call.length)
            while data := call.read():
                if run.first_token_at is None:
                    run.first_token_at = time.monotonic()
                sink.send(data)
            sink.end()
        except UpstreamError as exc:          # the box failed mid-reply, or a cancel
            if exc.code != "aborted" and run.status not in FINAL:
                self.router.failed(target, exc)
            run.finish("fail", error=exc)
            return
        except OSError:                       # a write failed: the client went away
            run.finish("cancel", reason="client_gone")
            return
        run.finish("complete", finish_reason="stop")

    # -- running -----------------------------------------------------------------------------
    def _work(self, run: Run, params: dict, turn, access: tuple, pools: list,
              session: str | None) -> None:
        """The run's work, done by its driver (Run.drive, which also catches its bugs)."""
        try:
            messages = turn()
        except HubError as exc:         # the thread went, or the store failed
            run.finish("fail", error=exc)
            return
        if messages is None:
            return                      # it ended while it waited for its turn
        body = dict(params, messages=messages) if messages or "prompt" not in params \
            else dict(params)         # a legacy completion has a prompt instead
        session = session or run.thread_id
        failures = self._through_pools(
            run, pools, session, lambda target: self._attempt(run, body, access, target, session))
        if failures:
            self._count_overflow(run, *failures[0])
            run.finish("fail", error=_summarise(failures))

    def _through_pools(self, run: Run, pools: list, session: str | None, attempt) -> list:
        """Try each pool in turn while the failures say another model may do; the
        (target, error) failures, [] once an attempt succeeded or the run ended."""
        failures = []
        for pool in pools:
            failure = self._through_pool(run, pool, session, attempt)
            if failure is None:
                return []
            failures.append(failure)
            if run.status in FINAL or not getattr(failure[1], "model_unavailable", False):
                break
        return failures

    def _through_pool(self, run: Run, pool: list, session: str | None, attempt):
        """Targets of one pool, the router's choice each time, while each fails before the
        upstream accepted: at most 1 + [routing] retries of them. None, or the last
        (target, error)."""
        tried: tuple[Target, ...] = ()
        while True:
            try:
                target = self.router.acquire(run, pool, session, tried)
            except HubError as exc:          # every target asked for time; a full line
                if run.status not in FINAL and isinstance(exc, UpstreamError):
                    return pool[0], exc
                run.finish("fail", error=exc)
                return None
            if target is None:
                return None                  # the run ended while it waited
            tried += (target,)
            try:
                error = attempt(target)
                if error is not None:        # counted while it is still the trial
                    self.router.failed(target, error)
            finally:
                self.router.release(target, run)
            if error is None:
                return None
            if run.status in FINAL or not retryable(error) or len(tried) == len(pool) \
                    or len(tried) > self.router.retries:
                return target, error
            log.info("run %s: %s failed before any byte (%s); trying another target",
                     run.id, target.upstream.name, error.message)
            self.limits.count_request(run.info.get("key"))   # a retry is a request too

    def _admit(self, run: Run, target: Target) -> list | None:
        """Wait at the model's limit, then the upstream's; the gates entered, or None if the
        run was cancelled while it queued, or refused because the line was full."""
        entered: list[Gate] = []
        for gate in (self.model_gates.get(target.model), target.upstream.gate):
            if gate is None:
                continue
            try:
                admitted = gate.enter(run)
            except QueueFull as exc:
                run.finish("fail", error=exc)
                admitted = False
            if not admitted:
                self._leave(entered, run)
                return None
            entered.append(gate)
        return entered

    @staticmethod
    def _leave(gates: list, run: Run) -> None:
        for gate in gates:
            gate.leave(run)

    def _attempt(self, run: Run, body: dict, access: tuple, target: Target,
                 session: str | None) -> HubError | None:
        """One upstream try; returns its error if it failed before the upstream accepted.
        The router counts the target in flight meanwhile (_through_pool)."""
        upstream, call, entered = target.upstream, None, None
        try:
            entered = self._admit(run, target)
            if entered is None:
                return None                   # cancelled while queued
            if not self._load_model(run, target):
                return None                   # it ended while its model loaded
            model = target.model or self.resolver.default_model(upstream)
            if run.must_fit:
                self._check_fits(run, target, model)
            call = upstream_call(upstream, dict(body, model=model), access)
            if not run.attach(call):
                return None
            sent = time.monotonic()
            if run.upstream_at is None:
                run.upstream_at = sent
            call.open()
            self.router.opened(target, session)
            if run.start(model, upstream.provider):
                events = call.events()
                if self.resolver.thinks_in_tags(model):
                    events = split_think(events)
                elif self.resolver.inlines_thinking(model):
                    events = join_think(events)
                if body.get("stop"):
                    events = named_stops(events, body["stop"], run.transcript)
                self._relay(run, events, target)
                if run.first_token_at is not None:
                    self.router.first_token(target, run.first_token_at - sent)
            return None
        except UpstreamError as exc:
            return exc
        except HubError as exc:
            run.finish("fail", error=exc)
            return None
        finally:
            if call is not None:
                call.close()
            if entered is not None:
                self._leave(entered, run)

    def _check_fits(self, run: Run, target: Target, model: str) -> None:
        """LM Studio cuts an input its context cannot hold without a word (its overflow
        policy). The estimate counts low (code and Cyrillic take more tokens than it
        says), so an input it finds too big surely is."""
        context = self.router.context_length(target, model)
        if context is not None and run.input_estimate > context:
            raise BadRequest(f"Your input exceeds the context window of this model "
                             f"({run.input_estimate} tokens > {context}). Please adjust your "
                             "input and try again, or send truncation: auto.", param="input",
                             code="context_length_exceeded")

    def _load_model(self, run: Run, target: Target) -> bool:
        """Its model loaded; a failed load is the target's failure, so a pool moves on.
        False if the run ended while it waited for the load."""
        try:
            return self.lifecycle.ready(target, run)
        except UpstreamError:
            raise
        except HubError as exc:
            raise UpstreamError(f"Could not load {target.model} on {target.upstream.name}: "
                                f"{exc.message}", status=exc.status if exc.status >= 500
                                else 502, code=exc.code, model_unavailable=True,
                                reason="load_failed", where=target.upstream.name) from None

    def _relay(self, run: Run, events, target: Target) -> None:
        try:
            for event in events:
                if not self._push(run, event):
                    return
        except UpstreamError as exc:
            self.router.failed(target, exc)     # a box that died mid-stream is counted
            self._count_overflow(run, target, exc)
            run.finish("fail", error=exc, finish_reason=run.transcript.finish_reason)
            return
        if run.usage is None:
            run.usage = estimated_usage(run)
            run.emit(run.usage)
        run.finish("complete", finish_reason=run.transcript.finish_reason or "stop")

    def _push(self, run: Run, event) -> bool:
        if event.kind == "usage":
            event = run.usage = self._checked_usage(run, event)
            return run.emit(event)
        run.transcript.add(event)
        published = run.emit(event)
        if run.budget is not None and event.kind in TOKENS and \
                not run.budget.charge(tokens_of(event)):
            run.finish("fail", error=run.budget.spent(), finish_reason="length")
            return False
        return published

    def _count_overflow(self, run: Run, target: Target, error: HubError) -> None:
        """A context overflow says what was sent and what fits (agents compact by the
        gap): as the upstream said, else the run's input estimate and the context length
        the model's box says it is loaded with (LM Studio's catalog, asked only now)."""
        if error.code != "context_length_exceeded" or not isinstance(error, UpstreamError):
            return
        error.prompt_tokens = error.prompt_tokens or run.input_estimate or None
        if error.context_length is None:
            error.context_length = self._loaded_context(target)

    def _loaded_context(self, target: Target) -> int | None:
        manager = self.lifecycle.managers.get(target.upstream.name)
        if manager is None or not manager.managed:
            return None
        try:
            entries, _ = manager.catalog()
        except HubError:
            return None
        return next((e["context_length"] for e in entries if e["key"] == target.model), None)

    def _checked_usage(self, run: Run, usage: Usage) -> Usage:
        """The upstream's counts where they are counts; each one that is not (the adapter
        left it None) is estimated instead, and logged."""
        fixes: dict[str, Any] = {}
        if usage.input_tokens is None:
            log.warning("run %s: the upstream's input token count is not a count; estimated",
                        run.id)
            fixes.update(input_tokens=run.input_estimate, input_estimated=True)
        if usage.output_tokens is None:
            log.warning("run %s: the upstream's output token count is not a count; estimated",
                        run.id)
            fixes.update(output_tokens=output_estimate(run.transcript), output_estimated=True)
        return dataclasses.replace(usage, **fixes) if fixes else usage


def allowed(caller, requested: str | None, pools: list) -> list:
    """What a key may be answered by: the whole first pool when it may use the name it
    asked for (an alias or pool its admin made), else that pool's targets whose model it
    may use; and of each fallback only such targets: a fallback it may not use is skipped,
    not taken. (check_model has made sure the first pool keeps one.)"""
    if caller.limits is None or not caller.limits.models:
        return pools
    first = pools[0] if caller.may_use(requested) else \
        [target for target in pools[0] if caller.may_use(target.model)]
    rest = [[target for target in pool if caller.may_use(target.model)] for pool in pools[1:]]
    return [pool for pool in [first, *rest] if pool]


def most_runs(caller) -> int:
    """How many runs the key may have at once (0: no bound, as for `local`)."""
    return caller.limits.max_concurrent if caller.limits is not None else 0


def tokens_of(event) -> int:
    """A content event's tokens, estimated: what a budget is charged as it streams."""
    return estimate_tokens((getattr(event, "text", None) or "") +
                           (getattr(event, "name", None) or "") +
                           (getattr(event, "arguments", None) or ""))


def reply_stats(run: Run) -> dict:
    """What a reply's line on the chat page says: the name asked for (when another answered:
    an alias or a fallback), tokens, time to first token, tokens a second after it."""
    stats: dict[str, Any] = {}
    if run.requested and run.requested != run.model:
        stats["requested_model"] = run.requested
    if run.usage is not None and run.usage.output_tokens is not None:
        stats["output_tokens"] = run.usage.output_tokens
    if run.first_token_at is not None:
        stats["ttft_ms"] = round((run.first_token_at - run.started) * 1000, 1)
        generating = time.monotonic() - run.first_token_at
        if stats.get("output_tokens") and generating > 0:
            stats["tokens_per_second"] = round(stats["output_tokens"] / generating, 1)
    return stats


def named_stops(events, stop, transcript):
    """Events with the stop sequence named on a finish that did not name it: OpenAI's
    finish_reason "stop" says neither which sequence nor whether one stopped it. A server
    that leaves the sequence in its output ends the text with it; one that neither says
    (as llama.cpp's `stopping_word` and Anthropic do) nor shows it stays unnamed, since
    a stop sequence cannot then be told from the model's own end of turn."""
    stops = [stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str) and s]
    for event in events:
        if event.kind == "finish" and event.reason == "stop" and event.choice == 0 and \
                event.stop_sequence is None:
            text = transcript.text
            reached = next((s for s in stops if s and text.endswith(s)), None)
            event = dataclasses.replace(event, stop_sequence=reached) if reached else event
        yield event


def upstream_call(upstream: Upstream, body: dict, access: tuple) -> Call:
    """The call for one target: the client's own request where the upstream speaks the
    client's dialect (Native), else the neutral body as a chat or a legacy completion."""
    api_key, headers, endpoint, native = access
    if native is not None and speaks(upstream, native.dialect):
        return upstream.relay(dict(native.body, model=body["model"]), api_key=api_key,
                              extra_headers={**native.headers, **headers})
    opener = upstream.chat if endpoint == "chat" else completions_of(upstream)
    return opener(body, api_key=api_key, extra_headers=headers)


def relay_model(target: Target, relay: Relay) -> str | None:
    """The model a relayed call names upstream, for its record: none if the client named
    none (the body goes as it came, and `[models] default`, a chat model, routed it)."""
    return (target.model or relay.model) if relay.model else None


def pass_call(target: Target, relay: Relay) -> PassCall:
    """The relayed call for one target: the body as it came, or renamed where the target
    knows the model the client named by another name (an alias, a pool, an `up:` prefix);
    a 501 for an upstream kind that has no such endpoints (Anthropic, mock)."""
    upstream = target.upstream
    if not relays(upstream):
        raise not_served(upstream, relay.endpoint, [])
    body = relay.body
    if relay.model and target.model and target.model != relay.model and relay.renamed:
        body = relay.renamed(target.model)
    return PassCall(upstream, relay.endpoint, relay.paths, body, relay.content_type,
                    relay.accept)


def completions_of(upstream: Upstream) -> Callable[..., Call]:
    """The upstream's legacy text completions; 400 for one that has none (Anthropic)."""
    complete = getattr(upstream, "complete", None)
    if complete is None:
        raise UpstreamError(f"{upstream.label} has no text completions endpoint; use chat "
                            "completions", status=400, code="unsupported_endpoint")
    return complete


def stored_events(run: Run, failure: HubError | None = None) -> list:
    """The run's kept event log as stored for replay; a bounded log that dropped its start
    says how many events it dropped, so a resume from before them is refused, not gapped.
    With `failure`, the log of the run failed by it at its end (the store refused the
    run's record: the run ends failed with that error, and its replay says so)."""
    closing = run.closing if failure is None else \
        [Error(**failure.as_dict()), Done(FAILED, None, None)]
    kept = [stored(e) for e in run.events + closing]
    return ([[TRIMMED, {"count": run.base}]] if run.base else []) + kept


def _summarise(failures: list) -> HubError:
    """The first target's error, naming every fallback that failed after it."""
    first = failures[0][1]
    if len(failures) == 1:
        return first
    tried = "; ".join(f"fallback {t.model!r}: {e.message}" for t, e in failures[1:])
    return UpstreamError(f"{first.message} ({tried})", status=first.status, code=first.code,
                         param=first.param)
