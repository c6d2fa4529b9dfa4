"""The engine: the one thing a dialect talks to (DESIGN §2).

A dialect translates its wire request into a ChatRequest (an input plan: inputs.py), calls
`prepare()`, and renders the run's typed events; for everything else it calls one of the
methods below: threads and their messages, stored responses, runs by id, models, providers.
No dialect reaches the store, the run registry, the model manager or the upstreams
directly, so each of those can change without any dialect knowing.

The work is split by job: generation.py runs a generation, resolution.py decides which
pools of targets answer a name and routing.py which target of a pool, health.py watches
each model server, lifecycle.py and models.py load and unload models per box, summaries.py
keeps long threads within budget (and names them), providers.py guards the upstreams a
client names.
"""

import json
from typing import Callable

from llmhub.config import Config
from llmhub.context import build_input, estimate_messages, estimate_tokens
from llmhub.engine import accounting
from llmhub.engine.generation import Access, ChatRequest, Generation, Native, Relay, stored_events
from llmhub.engine.health import Prober
from llmhub.engine.inputs import Chain, Prompt, Resent, Stateless, Summary, ThreadTurn
from llmhub.engine.lifecycle import Lifecycle
from llmhub.engine.providers import Providers
from llmhub.engine.resolution import Resolver, Target
from llmhub.engine.resumable import Resumable, Resumables
from llmhub.engine.routing import Router
from llmhub.engine.runs import Registry, Run
from llmhub.engine.summaries import Summaries, summary_prompt
from llmhub.engine.workers import Workers
from llmhub.errors import Conflict, Forbidden, HubError, NotFound
from llmhub.redaction import redact
from llmhub.store.database import Database
from llmhub.store.requests import RequestStore
from llmhub.store.responses import ResponseStore
from llmhub.store.retention import Upkeep
from llmhub.store.threads import ThreadStore
from llmhub.upstream.base import Upstream, speaks
from llmhub.waiting import delivering

__all__ = ["Access", "ChatRequest", "Native", "Relay", "Chain", "Prompt", "Resent", "Stateless",
           "Summary", "ThreadTurn", "Target", "Engine", "summary_prompt"]

# what /health adds to each upstream's live probe, from the router's view of it
HEALTH_FIELDS = ("state", "detail", "in_flight", "queued", "cooldowns", "targets")


class Engine:
    def __init__(self, config: Config, upstreams: dict[str, Upstream], registry: Registry,
                 db: Database, threads: ThreadStore, responses: ResponseStore,
                 request_store: RequestStore, request_log=None, limits=None) -> None:
        self.config = config
        self.db = db                        # health and what it could not store yet
        self.threads = threads
        self.responses = responses
        self.request_store = request_store  # read here, written by request_log
        self.request_log = request_log      # accounting.RequestLog
        self.registry = registry
        self.workers = Workers()
        self.router = Router(config, upstreams)
        self.resolver = Resolver(config, upstreams, self.router)
        self.router.register(self.resolver.pools.values())
        self.lifecycle = Lifecycle(self.router, upstreams, registry)
        self.resumables = Resumables()
        self.prober = Prober(self.router, config.health.interval_seconds,
                             config.health.timeout_seconds,
                             ticks=[self.lifecycle.unload_idle, self.resumables.sweep])
        self.generation = Generation(config, self.resolver, registry, threads, responses,
                                     self.workers, self.lifecycle, limits)
        self.summaries = Summaries(config, threads, self._generate, self.workers.submit)
        self.generation.finish_hooks.append(self.summaries.if_due)
        self.providers = Providers(config, upstreams)
        self.prober.start()
        self.turns = self.generation.turns
        self.upkeep: Upkeep | None = None   # set by the hub that runs it
        self.secrets = self.generation.secrets

    # -- runs --------------------------------------------------------------------------------
    def prepare(self, request: ChatRequest) -> Run:
        """A registered run, its input stored, not started (generation.Generation.prepare)."""
        return self.generation.prepare(request)

    def start(self, request: ChatRequest) -> Run:
        """Prepare a run and start its work on a worker; returns at once."""
        run = self.prepare(request)
        self.launch(run)
        return run

    def launch(self, run: Run) -> None:
        """Start a prepared run's work on a worker thread; nothing if it has started."""
        if run.job is not None:
            self.workers.submit(run.drive)

    @staticmethod
    def drive(run: Run, deliver: Callable[[], None] | None = None) -> None:
        """Do a prepared run's work in this thread until the run ends; once only. Without
        `deliver`, for a caller awaiting the whole reply: that caller, not a reader of its
        events, is then the client whose leaving ends it. With it, for a stream's one
        reader: `deliver` is called each time the work is about to wait on the upstream, and
        once more before the run's finish hooks store it, to write out what the run has
        made so far."""
        if deliver is None:
            run.drive(awaited=True)
            return
        with delivering(deliver):
            run.drive()

    def keep_response(self, run: Run, metadata: dict) -> None:
        """Keep a prepared /responses run in the seed's responses table, to its end."""
        self.generation.keep_response(run, metadata)

    def keep_resumable(self, run: Run, where: tuple, renderer) -> None:
        """Let a prepared run's stream be re-attached (resumable.Resumables.keep), for
        `[responses] resume_grace_seconds` after its client left or it ended."""
        with run.failing_on_error():
            self.resumables.keep(run, self.config.responses.resume_grace_seconds, where,
                                 renderer)

    def resumable(self, run_id: str) -> Resumable:
        """The caller's resumable stream with this id, live or just ended; NotFound
        otherwise (another key's too)."""
        return self.resumables.find(run_id, caller())

    def run(self, run_id: str) -> Run | None:
        """The live run with this id, if it is live and the caller's to see."""
        return self.registry.get(run_id, caller())

    def run_status(self, run_id: str) -> str:
        """A live or recently finished run's status; NotFound otherwise (another key's
        run too)."""
        return self.registry.status(run_id, caller())

    def cancel_run(self, run_id: str, reason: str = "cancelled") -> str:
        return self.registry.cancel(run_id, reason, caller=caller())

    def live_runs(self) -> list[Run]:
        """The live runs the caller may see: its own, or every one for an admin."""
        return self.registry.live(caller())

    def summarise(self, thread_id: str) -> bool:
        return self.summaries.summarise(thread_id)

    def detach(self, run: Run) -> None:
        """Make a prepared run a background run, within its key's max_background (429
        past it, and the run ends unstarted)."""
        limits = caller().limits
        with run.failing_on_error():
            self.registry.detach(run, limits.max_background if limits is not None else 0)

    def _generate(self, messages: list, model: str | None) -> Run:
        run = self.start(ChatRequest(Summary(messages), model=model, dialect="summary"))
        run.wait(self.resolver.default_upstream.config.total_timeout_seconds)
        return run

    def embed(self, model: str | None, body: dict) -> tuple[dict, Run]:
        """Embeddings (generation.Generation.embed): the upstream's reply and its run."""
        return self.generation.embed(model, body)

    def relay(self, relay: Relay) -> Run:
        """A relayed call's run (generation.Generation.prepare_relay), not started: the
        server gives it a sink and drives it."""
        return self.generation.prepare_relay(relay)

    def accepts_token_ids(self, model: str | None) -> bool:
        """Whether the upstream that would answer takes token-id arrays as input."""
        return getattr(self.resolver.upstream_for(model), "accepts_token_ids", False)

    # -- the request log ---------------------------------------------------------------------
    def requests(self, limit: int, before: float | None, match: dict) -> list[dict]:
        """Finished runs' records, newest first (the log is flushed first: none is missed);
        a user key's own only."""
        self.request_log.flush()
        only = caller().only
        if only is not None:
            if match.get("key", only) != only:
                return []                  # another key's records: as if there were none
            match = {**match, "key": only}
        return self.request_store.list_requests(limit, before, match)

    def request_log_version(self) -> int:
        """A number that changes whenever records are added (the log is flushed first), so
        a reader polling the log reads it again only when it grew."""
        self.request_log.flush()
        return self.request_log.written

    def request_record(self, run_id: str) -> dict | None:
        """One run's record (with its captured bodies); None for an unknown run or another
        key's."""
        self.request_log.flush()
        record = self.request_store.get_request(run_id)
        return record if record is not None and caller().sees(record["key"]) else None

    def usage(self, group: str, since: float, until: float) -> list[dict]:
        """Usage by key, model or day: every key's for an admin, a user key's own."""
        self.request_log.flush()
        return self.request_store.usage(group, since, until, caller().only)

    # -- threads and messages ----------------------------------------------------------------
    # Every thread method below answers another key's thread as the store answers an
    # unknown one (require_thread): the same 404, so ids are not even confirmed.
    def create_thread(self, thread_id: str | None, metadata: dict, messages: list) -> dict:
        if thread_id is not None and self.threads.thread_owner(thread_id) is not None:
            self.generation.require_thread(thread_id)   # another key's id: as unknown
        return self.threads.create_thread(thread_id, metadata, messages, caller().key)

    def list_threads(self, limit: int, before: float | None,
                     search: str | None = None) -> list[dict]:
        return self.threads.list_threads(limit, before, search, caller().only)

    def name_thread(self, thread_id: str, title: str | None = None) -> str:
        """Set a thread's title, or with none have the summary model name it."""
        self.generation.require_thread(thread_id)
        if title is None:
            return self.summaries.title(thread_id)
        self.threads.set_title(thread_id, title)
        return title

    def thread(self, thread_id: str) -> dict:
        self.generation.require_thread(thread_id)
        return self.threads.get_thread(thread_id)

    def update_thread(self, thread_id: str, metadata: dict) -> dict:
        self.generation.require_thread(thread_id)
        return self.threads.update_thread(thread_id, metadata)

    def delete_thread(self, thread_id: str) -> None:
        self.generation.require_thread(thread_id)
        self.threads.delete_thread(thread_id)

    def append_messages(self, thread_id: str, messages: list) -> list[dict]:
        self.generation.require_thread(thread_id)
        return self.threads.append_messages(thread_id, messages)

    def page_messages(self, thread_id: str, limit: int, after: str | None,
                      newest_first: bool = False):
        self.generation.require_thread(thread_id)
        return self.threads.page_messages(thread_id, limit, after, newest_first)

    def turn_input(self, plan: ThreadTurn) -> list[dict]:
        """The messages a turn on a stored thread would send upstream now: system prompt,
        summary, the unsummarised history (what fits, with a budget) and the new turn, from
        the read the turn itself makes, never the thread from its first message."""
        assert plan.thread_id is not None, "a turn on a stored thread"
        self.generation.require_thread(plan.thread_id)
        context = self.config.context
        budget = context.max_input_tokens if plan.budget else None
        history, summary, totals = self.threads.turn_plan(plan.thread_id, budget)
        return build_input(plan.system, history, plan.messages, summary, budget, totals,
                           context.replay_reasoning)[0]

    def messages_from(self, thread_id: str, anchor: str | None, count: int,
                      newest_first: bool = False) -> list[dict] | None:
        """A stretch of a thread from one message on (ThreadStore.messages_from)."""
        self.generation.require_thread(thread_id)
        return self.threads.messages_from(thread_id, anchor, count, newest_first)

    # -- stored responses --------------------------------------------------------------------
    # Another key's response is None here, as an unknown one is: each dialect's 404.
    def response(self, response_id: str) -> dict | None:
        return visible(self.responses.get_response(response_id))

    def oldest_response_time(self) -> float | None:
        return self.responses.oldest_response_time()

    def keep_api_response(self, run: Run, record: dict, outcome) -> None:
        """Keep a prepared /v1/responses run from its start (retention as [responses] says)
        to its end, when `outcome(run)` gives the fields stored, with the event log for
        replay. A store that fails fails the run before it starts."""
        kept = self.config.responses
        with run.failing_on_error():
            self.responses.create_api_response({**record, "owner": run.info["key"]},
                                               kept.keep_count, kept.keep_days * 86400)
        run.on_finish(lambda run: self._finish_api_response(run, outcome))

    def _finish_api_response(self, run: Run, outcome) -> None:
        """Store the end; if the store refuses, the run fails with the store's error (507 or
        503) and that failed end is what a retrieve shows at once (Database.finish_row)."""
        fields = dict(outcome(run), events=stored_events(run))

        def failed(error: HubError) -> dict:
            return dict(fields, status="failed", events=stored_events(run, error),
                        error={"code": error.code, "message": error.message})
        self.responses.finish_api_response(run.id, **fields, if_fails=failed)

    def api_response(self, response_id: str) -> dict | None:
        return visible(self.responses.get_api_response(response_id))

    def api_response_chain(self, response_id: str) -> list[dict] | None:
        """The response and those it continues, oldest first; None if it is unknown (or
        another key's)."""
        chain = self.responses.api_response_chain(response_id)
        return chain if chain is not None and visible(chain[-1]) is not None else None

    def delete_api_response(self, response_id: str) -> bool:
        if self.api_response(response_id) is None:
            return False
        return self.responses.delete_api_response(response_id)

    def delete_message(self, thread_id: str, message_id: str) -> None:
        self.generation.require_thread(thread_id)
        self.threads.delete_message(thread_id, message_id)

    def summarise_messages(self, messages: list) -> Run:
        """A summary of these messages by [models] summary, run to its end."""
        return self._generate(summary_prompt(None, messages), self.config.models.summary
                              or None)

    # -- models and providers ----------------------------------------------------------------
    def list_models(self):
        """(every upstream's models, the errors of those that could not say)."""
        return self.resolver.list_models()

    def model_catalog(self, upstream: str | None = None) -> tuple[list[dict], str]:
        """Every model an upstream has (LM Studio's; the default upstream unless named),
        and which endpoint said so."""
        return self._manager(upstream).catalog()

    # Loading and unloading are shared matters: an admin's, or a key's whose section says
    # manage_models, and then only for the models it may use and never over other keys'
    # runs (`exclusive` and `force` would end them).
    def load_model(self, key: str, exclusive: bool, context_length: int | None,
                   force: bool, upstream: str | None = None) -> dict:
        who = caller()
        who.check_manage(key)
        if not who.admin and (exclusive or force):
            raise Forbidden(f"Key {who.key!r} may not load exclusively or by force: that "
                            "unloads what others use, and takes an admin key",
                            param="exclusive" if exclusive else "force",
                            code="admin_only")
        return self._manager(upstream).load(key, exclusive, context_length, force)

    def unload_models(self, key: str | None, everything: bool, force: bool,
                      upstream: str | None = None) -> list[str]:
        who = caller()
        who.check_manage(key)
        if not who.admin:
            if everything or key is None:
                raise Forbidden(f"Key {who.key!r} may unload only a model it names",
                                param="model_key", code="admin_only")
            if any(not who.sees(run.info["key"]) and run.model == key
                   for run in self.registry.live()):
                raise Conflict(f"Other runs use {key}; only an admin key may unload it now",
                               code="runs_in_flight")
        return self._manager(upstream).unload(key, everything, force)

    def _manager(self, upstream: str | None):
        if upstream is not None and upstream not in self.lifecycle.managers:
            raise NotFound(f"No upstream named {upstream!r} (configured: "
                           f"{', '.join(self.lifecycle.managers)})", param="upstream",
                           code="upstream_not_found")
        return self.lifecycle.manager(upstream)

    def model_details(self) -> dict[str, dict]:
        """What LM Studio says of each model it has: loaded, type, context length; {} for
        an upstream that does not say, or cannot be asked now."""
        entries = self._catalog(self._manager(None))
        return {e["key"]: {"type": e["type"], "loaded": e["loaded"],
                           "context_length": e["context_length"],
                           "max_context_length": e["max_context_length"]} for e in entries}

    def model_facts(self, names: list[str]) -> list[dict]:
        """What the hub knows of the model each name resolves to, for clients that ask what
        a model can do before using it (Ollama's /api/tags and /api/show): its upstream's
        catalog entry where the upstream keeps one (LM Studio; asked once per upstream),
        and the context its box was probed with."""
        catalogs: dict[str, list] = {}
        facts = []
        for name in names:
            target = self.resolver.resolve(name)[0][0]
            upstream = target.upstream.name
            if upstream not in catalogs:
                catalogs[upstream] = self._catalog(self.lifecycle.managers[upstream])
            entry: dict = next((e for e in catalogs[upstream] if e["key"] == target.model), {})
            context = self.router.context_length(target, target.model)
            facts.append({**entry, "model": target.model, "upstream": upstream,
                          "kind": target.upstream.kind,
                          "context_length": entry.get("context_length") or context})
        return facts

    def loaded_models(self) -> list[dict]:
        """Every model loaded now, on every upstream: from LM Studio's catalog, or, for a
        server that loads none on request, what its box last listed (it serves those)."""
        loaded = []
        for name, manager in self.lifecycle.managers.items():
            if manager.managed:
                loaded += [dict(e, upstream=name) for e in self._catalog(manager)
                           if e["loaded"]]
                continue
            box = self.router.boxes.get(name)
            if box is None:
                continue
            models = box.loaded if box.loaded is not None else box.models
            loaded += [{"key": m, "upstream": name, "type": "llm",
                        "context_length": box.contexts.get(m)} for m in sorted(models or ())]
        return loaded

    @staticmethod
    def _catalog(manager) -> list[dict]:
        """What a box's model manager lists; [] where it lists nothing, or cannot now."""
        if not manager.managed:
            return []
        try:
            return manager.catalog()[0]
        except HubError:
            return []

    def warm_up(self, model: str | None, context: int | None = None) -> None:
        """Load the model a name resolves to, as the first request for it would (Ollama's
        empty prompt): no more than any caller that may use the model may cause."""
        target = self.resolver.resolve(model)[0][0]
        caller().check_model(model, target.model)
        self.lifecycle.ready(target, context=context)

    def pull(self, model: str):
        """Download the model a name resolves to on its upstream (LM Studio 0.4+), yielding
        its progress; a shared matter, like loading (an admin's or a manage_models key's).
        Once it is there the upstream is probed again, so the model is known at once."""
        target = self.resolver.resolve(model)[0][0]
        caller().check_manage(target.model)
        yield from self.lifecycle.managers[target.upstream.name].download(target.model)
        self.prober.probe_all()

    def unknown_model(self, name: str) -> bool:
        """True when no target of any pool for this name is a model its box last listed,
        and every box has listed: the name is unknown everywhere. Without a listing the
        upstream is left to say."""
        for pool in self.resolver.resolve(name):
            for target in pool:
                models = self.router.box(target).models
                if models is None or target.model in models:
                    return False
        return True

    def unload_when_idle(self, model: str | None) -> None:
        """Unload the model a name resolves to now, unless runs use it (Ollama's keep_alive
        0 with no prompt); a shared matter, like POST /models/unload (check_manage)."""
        target = self.resolver.resolve(model)[0][0]
        caller().check_manage(target.model)
        self.lifecycle.keep_alive(target.upstream.name, target.model, 0)

    def keep_alive(self, run: Run, seconds: float) -> None:
        """After the run, keep its model loaded `seconds` idle (inf: for good), or unload
        it at once for 0 (Ollama's keep_alive); never from under another run. A model's
        idle time is a shared matter: a key that may not load and unload models has its
        keep_alive ignored (its chat goes on; clients send one with every request)."""
        try:
            caller().check_manage(run.requested)
        except Forbidden:
            return

        def after(run: Run) -> None:
            # a provider is named by its kind; its address tells which upstream answered
            name = next((name for name, upstream in self.resolver.upstreams.items()
                         if run.provider and upstream.base_url == run.provider["base_url"]),
                        None)
            if name is None or run.model is None:
                return
            if seconds:           # a setting: made before the reply ends
                self.lifecycle.keep_alive(name, run.model, seconds)
            else:                 # an unload: once the run has left the registry
                self.workers.submit(self._unload_after, run, name, run.model)
        run.on_finish(after)

    def _unload_after(self, run: Run, upstream: str, model: str) -> None:
        run.wait(60)               # retired first: its own run must not count as in flight
        self.lifecycle.keep_alive(upstream, model, 0)

    def loaded_model(self) -> str | None:
        """The first loaded chat model; None if none is, or models are not managed here."""
        manager = self._manager(None)
        return manager.loaded_model() if manager.managed else None

    def image_refusal(self, model: str | None, media_type: str) -> str | None:
        """Why the upstream that would answer `model` refuses images of this type, if it
        does (LM Studio and WebP)."""
        return self.resolver.refusal(model, media_type)

    def upstream_kind(self, model: str | None) -> str:
        """The kind of upstream (lmstudio, openai, anthropic, mock) that would answer."""
        return self.resolver.upstream_for(model).kind

    def may_reach(self, model: str | None, kind: str) -> bool:
        """Whether any target for `model`, fallbacks included, is an upstream of `kind`."""
        return any(target.upstream.kind == kind for pool in self.resolver.resolve(model)
                   for target in pool)

    def count_input(self, request: ChatRequest, messages: list) -> tuple[int, bool]:
        """A request's input tokens (these messages, and the tools in its params) and
        whether they were counted: by the answering upstream's own tokenizer (llama.cpp's
        template and /tokenize, Anthropic's count_tokens, given the client's own body as
        a run would be), else the hub's estimate (LM Studio has no REST tokenizer). The
        one count behind /v1/messages/count_tokens and /v1/responses/input_tokens."""
        target = self.resolver.resolve(request.model)[0][0]
        upstream = target.upstream
        model = target.model or self.resolver.default_model(upstream)
        native = request.native
        if native is not None and speaks(upstream, native.dialect):
            counted = upstream.count_native(dict(native.body, model=model), native.headers)
        else:
            counter = getattr(upstream, "count_input", None)
            counted = counter(dict(request.params, messages=messages, model=model)) \
                if counter is not None else None
        if counted is not None:
            return counted, True
        tools = request.params.get("tools")
        return estimate_messages(messages) + (estimate_tokens(json.dumps(tools))
                                              if tools else 0), False

    def provider(self, base_url: str) -> Upstream:
        """The upstream for a client-named base URL; 403 unless it is allowed."""
        return self.providers.get(base_url)

    # -- health ------------------------------------------------------------------------------
    def health(self) -> tuple[list[dict], dict]:
        """(each upstream's probe now, with its state and targets as the router knows
        them; the database's state)."""
        states = {state["name"]: state for state in self.upstream_states()}
        probes = self.resolver.probe_all()
        for probe in probes:
            state = states.get(probe["name"], {})
            probe.update({key: state[key] for key in HEALTH_FIELDS if key in state})
        database = self.db.health()
        if self.upkeep is not None:
            database["last_sweep"] = self.upkeep.last_sweep
        return probes, database

    def storage_counters(self) -> dict:
        """What the store could not take yet, or ever (for /metrics)."""
        log = self.request_log
        return {"request_log_dropped": log.dropped if log else 0,
                "request_log_pending": log.pending() if log else 0,
                "held_ends": self.db.held_count(),
                "held_dropped": self.db.held_dropped}

    def upstream_list(self) -> list[dict]:
        """Each configured upstream's name, kind and (public) address."""
        return [{"name": u.name, **u.provider} for u in self.resolver.upstreams.values()]

    def upstream_states(self) -> list[dict]:
        """Each upstream's health, breaker, models and targets (routing.Router.view); an
        upstream's error text may echo a key, so it is redacted."""
        states = self.router.view()
        for state in states:
            if state["detail"]:
                state["detail"] = redact(state["detail"], self.secrets)
        return states

    def close(self) -> None:
        self.prober.stop()

    @property
    def default_upstream(self):
        return self.resolver.default_upstream


def caller() -> accounting.Caller:
    """Whose request is being served: its key's name and role (accounting.Caller)."""
    return accounting.current.get()


def visible(record: dict | None) -> dict | None:
    """A stored record if the caller may see it; None, as for an unknown id, if not."""
    return record if record is not None and caller().sees(record.get("owner")) else None
