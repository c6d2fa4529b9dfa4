"""OpenAI's Responses API (`/v1/responses…`) on the hub's own store: persistent, cancellable,
resumable. The seed's `/responses` dialect (responses.py) is a different wire and stays as
it is.

Wire rules kept here (the `openai` SDK's types are the ground truth):
- `input` is a string or items (response_items.py); `instructions` are the system prompt of
  this response only, never carried forward; tools (response_tools.py: functions,
  namespaces and custom tools run; hosted tools are left out and named in a header),
  `tool_choice`, `parallel_tool_calls`, `text.format`, `reasoning.effort`,
  `max_output_tokens`, `temperature`, `top_p` are translated; `client_metadata` stays
  here; other fields go upstream as they came;
- `reasoning.summary`, or no `reasoning` at all, gives the reasoning as a summary too,
  streamed as `response.reasoning_summary_text.delta` (the AI SDK reads nothing else);
- an `item_reference` input item is the stored item it names (one of this key's
  responses' output or input items: the AI SDK sends them for items it was given);
- `previous_response_id` rebuilds the history from the stored input and output of every
  response up the chain (a chain may branch); `conversation` keeps the turn in a thread
  (the conversation id is the thread id); both at once is a 400;
- `truncation: auto` fits the history to `[context] max_input_tokens`, cutting the oldest;
  `disabled` (the default, as at OpenAI) sends it all, and an overflow is a 400: the
  upstream's, or the engine's where the box says its context and the input is over it;
- the stream and retrieve name the model that answered, not the alias asked for;
- `store: false` keeps nothing: the response cannot be retrieved, but can be cancelled
  while it runs, and its stream's client leaving cancels it at once (nothing can resume
  it); a stored stream waits `[responses] resume_grace_seconds` for its client to come back;
- `background: true` runs with no client, and no reader leaving ends it (only a cancel):
  without `stream` it answers at once, with `stream` it answers with the event stream;
- a stream is the event sequence the SDK's `responses.stream()` assembles, every event with
  a `sequence_number`; `GET /v1/responses/{id}?stream=true&starting_after=N` replays the
  events after N and follows a live run to its end;
- errors are OpenAI's shape; an unknown `previous_response_id` is 400
  `previous_response_not_found`.
"""

import time
from dataclasses import replace

from llmhub.context import to_upstream
from llmhub.dialects.checks import (check_int, check_number, check_openai_metadata,
                                    check_type, query_int)
from llmhub.dialects.openai import error_body
from llmhub.dialects.responses import Replay, new_response_id
from llmhub.engine.facade import Chain, ChatRequest, ThreadTurn
from llmhub.engine.runs import CANCELLED, COMPLETED, FAILED, QUEUED, STREAMING
from llmhub.errors import BadRequest, HubError, NotFound, error_of
from llmhub.events import Usage
from llmhub.formats.response_items import (items_to_messages, output_items, reasoning_item,
                                           response_of, wants_summary)
from llmhub.formats.response_tools import OMITTED_HEADER, Toolbox, custom_input
from llmhub.messages import check_thread_id
from llmhub.wire import (JSONResponse, JSONTemplate, RunResponse, SSETemplate,
                         StreamRenderer, StreamResponse, cursor_page, json_bytes, sse,
                         token_count_header)

__all__ = ["TITLE", "error_body", "create", "retrieve", "cancel", "delete", "input_items",
           "input_tokens", "compact", "ResponseEvents"]

TITLE = "OpenAI Responses"
# What the hub reads; every other field goes upstream as it came.
READ = {"model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls",
        "text", "reasoning", "max_output_tokens", "temperature", "top_p", "store", "metadata",
        "previous_response_id", "conversation", "background", "stream", "truncation",
        "include", "stream_options", "client_metadata"}
ECHO = ("instructions", "tools", "tool_choice", "parallel_tool_calls", "text", "reasoning",
        "max_output_tokens", "temperature", "top_p", "truncation", "metadata", "user",
        "store", "background", "include")
# What a response object's fields change between a stream's first event and its last.
CHANGING = ("status", "error", "incomplete_details", "model", "output", "usage")
STATUS = {QUEUED: "queued", STREAMING: "in_progress", COMPLETED: "completed",
          CANCELLED: "cancelled", FAILED: "failed"}


# --- POST /v1/responses ----------------------------------------------------------------------

def create(request):
    hub, body = request.hub, request.json_object()
    response_id = new_response_id()
    chat, record, tools = parse(body, hub, response_id)
    run = hub.engine.prepare(chat)
    stored = body.get("store", True)
    headers = {OMITTED_HEADER: ", ".join(tools.omitted)} if tools.omitted else {}
    if stored:
        hub.engine.keep_api_response(run, record, lambda run: outcome(run, record, tools))
    if body.get("background"):
        hub.engine.detach(run)        # no reader leaving ends it: only a cancel
        if body.get("stream"):        # the event stream, resumable by sequence number
            return StreamResponse(run, ResponseEvents(record, tools=tools), headers=headers)
        hub.engine.launch(run)
        return JSONResponse(response_body(record, outcome(run, record, tools)),
                            headers=headers)
    if body.get("stream"):
        if stored:                    # resumable (starting_after) for a while
            run.allow_resume(hub.config.responses.resume_grace_seconds)
        return StreamResponse(run, ResponseEvents(record, tools=tools), headers=headers)
    return RunResponse(run, lambda run: finished(run, record, tools), headers=headers)


def finished(run, record: dict, tools: Toolbox) -> JSONResponse:
    """The awaited reply; a run that failed answers with its error's real status."""
    if run.status == FAILED:
        raise run.failure()
    return JSONResponse(response_body(record, outcome(run, record, tools), run.context))


def parse(body: dict, hub, response_id: str) -> tuple[ChatRequest, dict, Toolbox]:
    """The chat request a /v1/responses body makes, the record that keeps it, and its
    tools (read once: an agent sends a dozen, and the header, the stream and the stored
    outcome each need them). A store: false turn keeps no input items."""
    check_fields(body)
    tools = Toolbox(body.get("tools"))
    given = body["input"]
    items = [{"type": "message", "role": "user", "content": given}] if isinstance(given, str) \
        else resolved(hub, given)
    new = items_to_messages(items)
    conversation = conversation_id(body.get("conversation"))
    if conversation is None:                 # sent as they are: without the store's fields
        new = [to_upstream(m) for m in new]
    system = body.get("instructions")
    if conversation is None and not body.get("previous_response_id"):
        system, new = one_system(system, new)
    # the same box turn by turn, for its prompt cache: a client that keeps nothing here
    # (Codex, store: false) names its session in prompt_cache_key
    history, previous = [], body.get("previous_response_id")
    session = cache_key(body) or response_id
    if previous and conversation:
        raise BadRequest("Send 'previous_response_id' or 'conversation', not both",
                         param="previous_response_id")
    if previous:
        chain = hub.engine.api_response_chain(previous)
        if chain is None:
            raise BadRequest(f"Previous response with id '{previous}' not found.",
                             param="previous_response_id", code="previous_response_not_found")
        for link in chain:
            history += items_to_messages(link["input"]) + items_to_messages(link["output"])
        session = chain[0]["id"]           # a chain stays on one box: its prompt cache
    auto = body.get("truncation") == "auto"
    plan = ThreadTurn(new, conversation, system, budget=auto) if conversation else \
        Chain(new, history, system, budget=auto)
    chat = ChatRequest(plan, model=body["model"], params=upstream_params(body, tools),
                       dialect="v1-responses", run_id=response_id,
                       session=None if conversation else session, must_fit=not auto)
    record = {"id": response_id, "created_at": time.time(), "status": "queued",
              "previous_id": previous, "conversation_id": conversation, "model": body["model"],
              "request": {k: body.get(k) for k in ECHO},
              "input": [input_item(item, f"in_{response_id[5:]}_{i}")
                        for i, item in enumerate(items)] if body.get("store", True) else []}
    return chat, record, tools


def resolved(hub, items: list) -> list:
    """Input items with each `item_reference` replaced by the stored item it names."""
    return [referenced(hub, item.get("id"), f"input[{i}]") if isinstance(item, dict) and
            item.get("type") == "item_reference" else item for i, item in enumerate(items)]


def referenced(hub, item_id, at: str) -> dict:
    """An item of one of the caller's stored responses, by its id; another key's is as
    unknown as an id never given."""
    response_id = response_of(item_id) if isinstance(item_id, str) else None
    record = hub.engine.api_response(response_id) if response_id else None
    for item in (record["output"] + record["input"]) if record else ():
        if item.get("id") == item_id:
            return item
    raise BadRequest(f"Item with id {item_id!r} not found.", param=f"{at}.id")


def one_system(system: str | None, new: list[dict]) -> tuple[str | None, list[dict]]:
    """The instructions and the developer messages that open the input, as one system
    prompt: Codex sends two, and many chat templates take one system message, first."""
    texts = [system] if system else []
    while new and new[0]["role"] == "system" and isinstance(new[0]["content"], str):
        texts.append(new[0]["content"])
        new = new[1:]
    return ("\n\n".join(texts) if texts else None), new


def input_item(item: dict, item_id: str) -> dict:
    """An input item as input_items lists it: with an id, and a message says it is one
    (the shorthand `{"role", "content"}` leaves the type out)."""
    return {"type": "message", **item, "id": item.get("id") or item_id}


def cache_key(body: dict) -> str | None:
    key = body.get("prompt_cache_key")
    return f"cache-{key}" if isinstance(key, str) and key else None


def conversation_id(value) -> str | None:
    if value is None:
        return None
    given = value.get("id") if isinstance(value, dict) else value
    return check_thread_id(given, "conversation")


def check_fields(body: dict) -> None:
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequest("'model' is required: a string", param="model", code="missing_field")
    given = body.get("input")
    if not (isinstance(given, str) or isinstance(given, list)):
        raise BadRequest("'input' is required: a string or a list of items", param="input",
                         code="missing_field" if given is None else "invalid_type")
    check_type(body, "instructions", str, "a string")
    check_type(body, "previous_response_id", str, "a string")
    check_openai_metadata(body.get("metadata"))     # OpenAI's 16 keys, 64 and 512 chars
    for name in ("store", "background", "stream", "parallel_tool_calls"):
        check_type(body, name, bool, "true or false")
    check_int(body, "max_output_tokens", 1)
    check_number(body, "temperature", 0, 2)
    check_number(body, "top_p", 0, 1)
    if body.get("truncation") not in (None, "auto", "disabled"):
        raise BadRequest("'truncation' must be auto or disabled", param="truncation")
    check_type(body, "tools", list, "a list")
    check_type(body, "include", list, "a list")
    check_type(body, "reasoning", dict, "an object")
    check_type(body, "text", dict, "an object")


def upstream_params(body: dict, tools: Toolbox) -> dict:
    """The Responses fields as the chat fields every upstream takes."""
    params = {k: v for k, v in body.items() if k not in READ}
    choice = tools.choice(body.get("tool_choice"))   # allowed_tools narrows the tools
    if tools.functions:
        params["tools"] = tools.functions
    if choice is not None:
        params["tool_choice"] = choice
    for name, target in (("parallel_tool_calls", "parallel_tool_calls"),
                         ("max_output_tokens", "max_tokens"), ("temperature", "temperature"),
                         ("top_p", "top_p")):
        if body.get(name) is not None:
            params[target] = body[name]
    fmt = ((body.get("text") or {}).get("format") or {})
    if fmt.get("type") == "json_object":
        params["response_format"] = {"type": "json_object"}
    elif fmt.get("type") == "json_schema":
        params["response_format"] = {"type": "json_schema", "json_schema": {
            k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}}
    effort = (body.get("reasoning") or {}).get("effort")
    if effort:
        params["reasoning_effort"] = effort
    return params


# --- the response object ---------------------------------------------------------------------

def outcome(run, record: dict, tools: Toolbox | None = None) -> dict:
    """What a run has made so far: status, model, output items, usage, error. `tools`:
    the request's, when its creator has them read already."""
    status = STATUS[run.status]
    if status == "completed" and run.transcript.finish_reason == "length":
        status = "incomplete"
    usage, request = run.usage, record["request"]
    if tools is None:
        tools = Toolbox(request.get("tools"))
    output = output_items(run.id, run.transcript, tools, request) \
        if run.status != QUEUED else []
    return {"status": status, "model": run.model, "output": output,
            "usage": usage_json(usage.input_tokens, usage.output_tokens,
                                usage.reasoning_tokens, usage.cached_tokens) if usage else None,
            "error": {"code": run.error.code, "message": run.error.message}
            if run.status == FAILED and run.error else None}


def usage_json(input_tokens: int, output_tokens: int, reasoning: int | None,
               cached: int | None = None) -> dict:
    """OpenAI's usage; `cached` is the part of the input the upstream's prompt cache
    served (events.Usage.cached_tokens), 0 where it did not say."""
    return {"input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": cached or 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning or 0},
            "total_tokens": input_tokens + output_tokens}


def response_body(record: dict, result: dict, context: dict | None = None) -> dict:
    """The Response object: the record's echo of the request, and the run's outcome."""
    request = record["request"]
    status = result["status"]
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    body = {"id": record["id"], "object": "response", "created_at": int(record["created_at"]),
            "status": status, "background": bool(request.get("background")),
            "error": result["error"], "incomplete_details": incomplete,
            "instructions": request.get("instructions"),
            "max_output_tokens": request.get("max_output_tokens"),
            "model": result["model"] or record["model"], "output": result["output"],
            "parallel_tool_calls": request.get("parallel_tool_calls", True),
            "previous_response_id": record["previous_id"],
            "conversation": {"id": record["conversation_id"]}
            if record["conversation_id"] else None,
            "reasoning": request.get("reasoning") or {"effort": None, "summary": None},
            "store": request.get("store", True) is not False,
            "temperature": request.get("temperature"),
            "text": request.get("text") or {"format": {"type": "text"}},
            "tool_choice": request.get("tool_choice") or "auto",
            "tools": request.get("tools") or [], "top_p": request.get("top_p"),
            "truncation": request.get("truncation") or "disabled",
            "usage": result["usage"], "user": request.get("user"),
            "metadata": request.get("metadata") or {}}
    if context:
        body["context"] = context     # llmhub's: what of a conversation went upstream
    return body


def stored_outcome(record: dict) -> dict:
    return {k: record[k] for k in ("status", "model", "output", "usage", "error")}


# --- retrieve, resume, cancel, delete ----------------------------------------------------------

def find(hub, response_id: str) -> dict:
    record = hub.engine.api_response(response_id)
    if record is None:
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id",
                       code="response_not_found")
    return record


def retrieve(request, response_id: str):
    hub = request.hub
    record = find(hub, response_id)
    run = hub.engine.run(response_id)
    if request.query.get("stream", "").lower() not in ("1", "true"):
        result = outcome(run, record) if run is not None else stored_outcome(record)
        return JSONResponse(response_body(record, result))
    after = request.query.get("starting_after")
    if after is not None and not (after.isascii() and after.isdigit()):
        raise BadRequest("'starting_after' must be a sequence number", param="starting_after")
    if run is None:
        run = Replay(replay_record(record))
    return StreamResponse(run, ResponseEvents(record, int(after) if after else None))


def replay_record(record: dict) -> dict:
    """A stored /v1/responses record in the shape responses.Replay reads."""
    return {"id": record["id"], "created_at": record["created_at"], "model": record["model"],
            "provider": None, "status": STATUS_BACK.get(record["status"], record["status"]),
            "thread_id": record["conversation_id"], "usage": None, "output": "",
            "events": record["events"]}


STATUS_BACK = {"in_progress": "failed", "queued": "failed", "incomplete": COMPLETED}


def cancel(request, response_id: str) -> JSONResponse:
    """Stop the model (its socket closes at once); a finished response comes back as it is."""
    hub = request.hub
    run = hub.engine.run(response_id)
    record = hub.engine.api_response(response_id)
    if run is None and record is None:
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id",
                       code="response_not_found")
    if run is not None:
        run.cancel("cancelled", wait=5)   # its finish hooks have stored the partial output
        if record is None:            # store: false
            return JSONResponse({"id": response_id, "object": "response",
                                 "status": STATUS[run.status]})
        record = hub.engine.api_response(response_id)
    return JSONResponse(response_body(record, stored_outcome(record)))


def delete(request, response_id: str) -> JSONResponse:
    hub = request.hub
    run = hub.engine.run(response_id)
    if run is not None:
        run.cancel("deleted", wait=5)
    if not hub.engine.delete_api_response(response_id):
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id",
                       code="response_not_found")
    return JSONResponse({"id": response_id, "object": "response", "deleted": True})


def input_items(request, response_id: str) -> JSONResponse:
    """The response's own input items, paged as OpenAI pages (`limit`, `order`, `after`)."""
    items = find(request.hub, response_id)["input"]
    return JSONResponse(page(items, request.query))


def page_args(query: dict) -> tuple[int, str]:
    """A list's `limit` (1-100, 20 by default) and `order` (asc or desc, desc by default)."""
    limit = query_int(query.get("limit"), "limit", 20, hi=100)
    order = query.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise BadRequest("'order' must be asc or desc", param="order")
    return limit, order


def page(items: list, query: dict, ordered: bool = False) -> dict:
    """One page of `items` (oldest first; `ordered`: already in the query's order)."""
    limit, order = page_args(query)
    listed = items if order == "asc" or ordered else items[::-1]
    after = query.get("after")
    if after:
        ids = [item.get("id") for item in listed]
        if after not in ids:
            raise BadRequest(f"'after' names no item: {after!r}", param="after")
        listed = listed[ids.index(after) + 1:]
    return cursor_page(listed[:limit], len(listed) > limit)


# --- input_tokens and compact ------------------------------------------------------------------

def input_tokens(request) -> JSONResponse:
    """What this request would send upstream, counted by the upstream's tokenizer where it
    has one, else estimated; `X-Llmhub-Token-Count` says which (facade.Engine.count_input)."""
    hub, body = request.hub, request.json_object()
    chat, _, _ = parse(dict(body, model=body.get("model") or "any"), hub, new_response_id())
    tokens, counted = hub.engine.count_input(chat, would_send(hub, chat.input))
    return JSONResponse({"object": "response.input_tokens", "input_tokens": tokens},
                        headers=token_count_header(counted))


def would_send(hub, plan) -> list[dict]:
    """The messages a run of this input would send: a conversation's turn reads its
    summary and what follows it, as the turn itself would, never the whole thread."""
    if isinstance(plan, ThreadTurn):
        return hub.engine.turn_input(plan)
    system = [{"role": "system", "content": plan.system}] if plan.system else []
    return system + plan.history + plan.messages


def compact(request) -> JSONResponse:
    """The conversation so far as its user messages and one compaction item: a summary by
    [models] summary, which a later request sends back in place of the history."""
    hub, body = request.hub, request.json_object()
    if body.get("input") is None and body.get("previous_response_id") is not None:
        body = dict(body, input=[])   # the chain so far is the whole conversation
    chat, _, _ = parse(body, hub, new_response_id())
    assert isinstance(chat.input, (Chain, ThreadTurn))   # what parse plans
    conversation = would_send(hub, replace(chat.input, system=None, budget=False))
    if not conversation:
        raise BadRequest("Nothing to compact: send 'input' or 'previous_response_id'",
                         param="input")
    run = hub.engine.summarise_messages(conversation)
    if run.status != COMPLETED:
        raise run.failure() if run.error else BadRequest("The summary was cancelled")
    key = run.id.removeprefix("run_")
    users = [{"id": f"msg_{key}_{i}", "type": "message", "role": "user",
              "status": "completed", "content": [{"type": "input_text",
                                                  "text": m["content"] if isinstance(
                                                      m["content"], str) else ""}]}
             for i, m in enumerate(conversation) if m["role"] == "user"]
    summary = {"id": f"cmp_{key}", "type": "compaction", "created_by": "llmhub",
               "encrypted_content": run.transcript.text.strip()}
    usage = run.usage
    return JSONResponse({"id": "resp_" + key, "object": "response.compaction",
                         "created_at": run.created, "output": users + [summary],
                         "usage": usage_json(usage.input_tokens, usage.output_tokens, None)
                         if usage else usage_json(0, 0, None)})


# --- the stream ------------------------------------------------------------------------------

class ResponseEvents(StreamRenderer):
    """Renders run events as the Responses stream. Sequence numbers count the SSE events
    from the run's first, so a resume (`starting_after`) renders the run again and sends
    only what comes after; item ids follow response_items.output_items."""

    def __init__(self, record: dict, starting_after: int | None = None,
                 tools: Toolbox | None = None) -> None:
        self.record = record
        self.after = -1 if starting_after is None else starting_after
        self.key = record["id"].removeprefix("resp_").replace("-", "")
        self.seq = -1
        self.items: list[dict] = []     # every output item so far, as the stream built it
        self.open: dict | None = None   # the item that is still growing (the last one)
        # Its text (a message's, reasoning's, a call's arguments) in pieces, joined when it
        # closes: `+=` on a string held in a dict copies it whole, a long answer's every
        # token. And its delta events' templates, made at its first delta of each kind.
        self.growing: list[str] = []
        self.templates: dict[str, SSETemplate] = {}
        self.finish_reason: str | None = None
        self.body_template: JSONTemplate | None = None
        self.tools = tools if tools is not None else Toolbox(record["request"].get("tools"))
        self.summarise = wants_summary(record["request"])
        self.model = record["model"]
        self.usage: Usage | None = None
        self.error: HubError | None = None
        self.counts = {"message": 0, "reasoning": 0}

    @property
    def eager(self) -> bool:
        """A background response exists before any model answers: its stream says so at
        once, and every stream of it (a resume too) counts these first two events."""
        return bool(self.record["request"].get("background"))

    def opening(self, run) -> bytes:
        body = self._body("queued")
        return self._response("response.created", body) + \
            self._response("response.queued", body)

    def render(self, event) -> bytes:
        kind = event.kind
        if kind == "start":
            self.model = event.model      # what retrieve names too, not the alias asked for
            body = self._body("in_progress")
            created = b"" if self.eager else self._response("response.created", body)
            return created + self._response("response.in_progress", body)
        if kind == "delta" and event.text and not event.choice:
            return self._text(event.text)
        if kind == "reasoning" and event.text and not event.choice:
            return self._reasoning(event.text)
        if kind == "tool_call" and not event.choice:
            return self._tool_call(event)
        if kind == "usage":
            self.usage = event
        elif kind == "finish" and not event.choice:
            self.finish_reason = event.reason
        elif kind == "error":
            self.error = error = error_of(event)
            return self._emit("error", code=error.code, message=error.message,
                              param=error.param)
        elif kind == "done":
            return self._close() + self._end(event)
        return b""

    # -- items -------------------------------------------------------------------------------
    def _open(self, item: dict) -> bytes:
        """Close the item that was growing, and start this one (announced empty)."""
        out = self._close()
        self.open = item
        self.items.append(item)
        self.templates = {}
        empty: dict = {"content": []} if "content" in item else {}
        return out + self._emit("response.output_item.added", output_index=self._index(),
                                item=sent(dict(item, status="in_progress", **empty)))

    def _text(self, text: str) -> bytes:
        out, item = b"", self.open
        if item is None or item["type"] != "message":
            item = self._new_message()
            out = self._open(item)
            out += self._emit("response.content_part.added", **self._at(), content_index=0,
                              part={"type": "output_text", "text": "", "annotations": []})
        self.growing.append(text)
        return out + self._delta("response.output_text.delta", text, content_index=0,
                                 delta=SSETemplate.TEXT, logprobs=[])

    def _reasoning(self, text: str) -> bytes:
        out, item = b"", self.open
        if item is None or item["type"] != "reasoning":
            item = reasoning_item(self._id("rs", "reasoning"), "", self.record["request"])
            out = self._open(item)
            if self.summarise:
                out += self._emit("response.reasoning_summary_part.added", **self._at(),
                                  summary_index=0, part={"type": "summary_text", "text": ""})
                item["summary"] = [{"type": "summary_text", "text": ""}]
        self.growing.append(text)
        out += self._delta("response.reasoning_text.delta", text, content_index=0,
                           delta=SSETemplate.TEXT)
        if self.summarise:
            out += self._delta("response.reasoning_summary_text.delta", text,
                               summary_index=0, delta=SSETemplate.TEXT)
        return out

    def _tool_call(self, event) -> bytes:
        """A function call streams its arguments; a custom tool's input is the `input`
        inside them, so it is sent whole when the call is complete."""
        out, item = b"", self.open
        if item is None or item.get("index") != event.index:
            call = {"id": event.id, "function": {"name": event.name or "", "arguments": ""}}
            item = self.tools.call_item(self.key, event.index, call, "in_progress")
            out = self._open(item)
            item["index"], item["raw"] = event.index, ""   # the hub's, not sent
        if event.arguments:
            self.growing.append(event.arguments)
            if item["type"] == "function_call":
                out += self._delta("response.function_call_arguments.delta", event.arguments,
                                   delta=SSETemplate.TEXT)
        return out

    def _close(self) -> bytes:
        item, self.open = self.open, None
        if item is None:
            return b""
        self._settle(item)
        at = {"item_id": item["id"], "output_index": self._index()}
        item["status"] = "completed"
        if item["type"] == "message":
            part = item["content"][0]
            out = self._emit("response.output_text.done", **at, content_index=0,
                             text=part["text"], logprobs=[])
            out += self._emit("response.content_part.done", **at, content_index=0, part=part)
        elif item["type"] == "reasoning":
            out = self._reasoning_done(item, at)
        elif item["type"] == "custom_tool_call":
            item["input"] = custom_input(item["raw"])
            out = self._emit("response.custom_tool_call_input.delta", **at,
                             delta=item["input"])
            out += self._emit("response.custom_tool_call_input.done", **at, input=item["input"])
        else:
            out = self._emit("response.function_call_arguments.done", **at,
                             name=item["name"], arguments=item["arguments"])
        item = sent(item)
        self.items[at["output_index"]] = item
        return out + self._emit("response.output_item.done", output_index=at["output_index"],
                                item=item)

    def _settle(self, item: dict) -> None:
        """Put the closing item's text, kept in pieces while it grew, where it belongs."""
        text, self.growing = "".join(self.growing), []
        if item["type"] in ("message", "reasoning"):
            item["content"][0]["text"] = text
            if item.get("summary"):             # reasoning, summarised as it came
                item["summary"][0]["text"] = text
        else:                                   # a call: its arguments as the model sent them
            item["raw"] = text
            if item["type"] == "function_call":
                item["arguments"] = text

    def _reasoning_done(self, item: dict, at: dict) -> bytes:
        text = item["content"][0]["text"]
        if "encrypted_content" in item:
            item["encrypted_content"] = text
        out = self._emit("response.reasoning_text.done", **at, content_index=0, text=text)
        if self.summarise:
            part = item["summary"][0]
            out += self._emit("response.reasoning_summary_text.done", **at, summary_index=0,
                              text=part["text"])
            out += self._emit("response.reasoning_summary_part.done", **at, summary_index=0,
                              part=part)
        return out

    def _new_message(self) -> dict:
        return {"id": self._id("msg", "message"), "type": "message", "role": "assistant",
                "content": [{"type": "output_text", "text": "", "annotations": [],
                             "logprobs": []}]}

    def _id(self, prefix: str, kind: str) -> str:
        self.counts[kind] += 1
        n = self.counts[kind]
        return f"{prefix}_{self.key}" + (f"_{n}" if n > 1 else "")

    def _index(self) -> int:
        return len(self.items) - 1

    def _at(self) -> dict:
        """Where the growing item is, for an event about it."""
        item = self.open
        assert item is not None and item is self.items[-1], "asked while an item grows"
        return {"item_id": item["id"], "output_index": self._index()}

    # -- the response ------------------------------------------------------------------------
    def _end(self, done) -> bytes:
        status = STATUS.get(done.status, done.status)
        if status == "completed" and self.finish_reason == "length":
            status = "incomplete"
        name = {"completed": "response.completed", "failed": "response.failed"}.get(
            status, "response.incomplete")
        return self._response(name, self._body(status))

    def _body(self, status: str) -> bytes:
        """The response object's JSON. Its echo of a request with tools (an agent's: tens
        of KB, many small objects, hundreds of µs to encode) is encoded once a stream,
        around holes for what changes."""
        usage = self.usage                # published, so checked: None counts are gone
        body = response_body(self.record, {
            "status": status, "model": self.model, "output": list(self.items),
            "usage": usage_json(usage.input_tokens or 0, usage.output_tokens or 0,
                                usage.reasoning_tokens, usage.cached_tokens) if usage else None,
            "error": {"code": self.error.code, "message": self.error.message}
            if self.error is not None and status == "failed" else None})
        if not self.record["request"].get("tools"):
            return json_bytes(body)    # small: encoding it again costs less than a template
        if self.body_template is None:
            self.body_template = JSONTemplate(body, CHANGING)
        return self.body_template.fill(body)

    def _delta(self, event_type: str, text: str, **fields) -> bytes:
        """`_emit(event_type, **self._at(), **fields)` with `text` for the delta: from the
        growing item's template for the event type, which each of its tokens fills in."""
        template = self.templates.get(event_type)
        if template is None:
            template = self.templates[event_type] = SSETemplate(
                {"type": event_type, "sequence_number": SSETemplate.NUMBER, **self._at(),
                 **fields}, event_type)
        return b"" if self._sent_before() else template.fill(text, self.seq)

    def _response(self, event_type: str, body: bytes) -> bytes:
        """`_emit(event_type, response=...)` with the response object's JSON (`body`):
        the two events that open a stream carry the same one, encoded once."""
        if self._sent_before():
            return b""
        return SSETemplate({"type": event_type, "sequence_number": SSETemplate.NUMBER,
                            "response": SSETemplate.TEXT}, event_type).fill_json(body, self.seq)

    def _sent_before(self) -> bool:
        """Number the next event; True if the client had it before it reconnected
        (`starting_after`), so it is not sent again."""
        self.seq += 1
        return self.seq <= self.after

    def _emit(self, event_type: str, **fields) -> bytes:
        if self._sent_before():
            return b""
        return sse({"type": event_type, "sequence_number": self.seq, **fields},
                   event=event_type)


def sent(item: dict) -> dict:
    """An item as the client sees it: without the fields the stream keeps for itself."""
    return {k: v for k, v in item.items() if k not in ("index", "raw")}
