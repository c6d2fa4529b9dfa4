"""Langbase pipes and threads (`/v1/pipes/run`, `/v1/pipes`, `/v1/threads…`).

What the official SDKs send and read is in ../shared/reference/langbase.md; they break on
small differences, so these rules are kept exactly:
- run bodies come camelCase (TS SDK) or snake_case (Python SDK): `threadId`/`thread_id`,
  `apiKey`/`api_key`; `variables` as `[{name, value}]` or an object; `name` is optional;
- `lb-thread-id` is the only place the SDKs read the thread id, on both kinds of reply;
- a non-streaming reply is `{"completion", "raw": <chat.completion>}`;
- a stream is `data: <chat.completion.chunk>` events, each ending with an extra blank line
  (the TS SDK sees an event one event late otherwise), no `event:` lines, one id for all
  chunks, the first delta carrying role assistant (TS `getRunner` needs it), the final chunk
  carrying finish_reason and usage, then `data: [DONE]` and the end of the body;
- errors are `{"error": {"code", "status", "message"}}` with Langbase's codes.
"""

import re

from llmhub.config import PipeConfig
from llmhub.dialects.checks import SAMPLING, check_known, check_sampling, query_int
from llmhub.dialects.openai import completion_body, completion_id, openai_usage
from llmhub.engine.facade import Access, ChatRequest, ThreadTurn
from llmhub.engine.runs import CANCELLED, COMPLETED
from llmhub.errors import BadRequest, HubError, NotFound, error_of
from llmhub.messages import check_metadata, check_thread_id, normalise_message
from llmhub.transcript import Seen, choice, chunk, delta_of, finish_reason, finishes
from llmhub.wire import JSONResponse, RunResponse, StreamRenderer, StreamResponse, json_bytes

__all__ = ["name_thread", "error_body", "run_pipe", "list_pipes", "create_thread", "list_threads", "get_thread",
           "update_thread", "delete_thread", "append_messages", "list_messages", "PipeStream"]

TITLE = "Langbase"

CODES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
         409: "CONFLICT", 412: "PRECONDITION_FAILED", 429: "RATE_LIMITED"}
# Run-body fields that are Langbase's own; everything else goes upstream by OpenAI name.
LANGBASE_FIELDS = {"name", "apiKey", "api_key", "llmKey", "llm_key", "messages", "variables",
                   "threadId", "thread_id", "stream", "rawResponse", "raw_response",
                   "runTools", "run_tools", "json", "memory", "moderate", "store"}
VARIABLE = re.compile(r"\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}")


def error_body(error: HubError) -> dict:
    code = CODES.get(error.status, "BAD_REQUEST" if error.status < 500
                     else "INTERNAL_SERVER_ERROR")
    body = {"code": code, "status": error.status, "message": error.message}
    if error.param:
        body["param"] = error.param   # the Python SDK reads it
    return {"error": body}


# --- pipe runs -------------------------------------------------------------------------------

def run_pipe(request):
    body = request.json_object()
    check_known(body, LANGBASE_FIELDS | SAMPLING | {"model"})
    pipe = find_pipe(request.hub.config, body.get("name"))
    variables = {**pipe.variables, **parse_variables(body.get("variables"))}
    messages = parse_messages(body.get("messages"), variables)
    thread_id = body.get("threadId", body.get("thread_id"))
    if thread_id is not None:
        check_thread_id(thread_id)
    check_sampling(body)
    params = {k: v for k, v in body.items() if k not in LANGBASE_FIELDS and k != "model"}
    if pipe.temperature is not None:
        params.setdefault("temperature", pipe.temperature)
    if pipe.max_tokens is not None:
        params.setdefault("max_tokens", pipe.max_tokens)
    if body.get("json"):
        params.setdefault("response_format", {"type": "json_object"})
    system = substitute(pipe.system, variables) or None
    if not messages and not system and thread_id is None:
        raise BadRequest("'messages' is required", param="messages")
    run = request.hub.engine.prepare(ChatRequest(
        ThreadTurn(messages, thread_id, system), model=body.get("model") or pipe.model or None,
        params=params, dialect="langbase", run_id=request.run_id(),
        access=Access(api_key=llm_key(request, body))))
    headers = {"lb-thread-id": run.thread_id}
    if body.get("stream"):
        return StreamResponse(run, PipeStream(run), headers)
    return RunResponse(run, pipe_completion, headers)


def find_pipe(config, name) -> PipeConfig:
    """`[pipe:NAME]`; no name (a run with only a pipe key) is the default pipe."""
    if name is None:
        return config.pipes.get("default") or PipeConfig(name="default")
    if not isinstance(name, str):
        raise BadRequest("'name' must be a string", param="name")
    if name not in config.pipes:
        raise NotFound("Pipe not found", param="name", code="pipe_not_found")
    return config.pipes[name]


def parse_variables(variables) -> dict:
    if variables is None:
        return {}
    if isinstance(variables, dict):
        items = list(variables.items())
    elif isinstance(variables, list) and all(isinstance(v, dict) for v in variables):
        items = [(v.get("name"), v.get("value")) for v in variables]
    else:
        raise BadRequest("'variables' must be a list of {name, value} or an object",
                         param="variables")
    for name, value in items:
        if not isinstance(name, str) or not isinstance(value, (str, int, float)):
            raise BadRequest("each variable needs a string 'name' and a string 'value'",
                             param="variables")
    return {name: str(value) for name, value in items}


def substitute(text: str | None, variables: dict) -> str | None:
    """`{{name}}` → its value; unknown names are left as written."""
    if not text or "{{" not in text:
        return text
    return VARIABLE.sub(lambda m: variables.get(m.group(1), m.group(0)), text)


def parse_messages(messages, variables: dict) -> list[dict]:
    if messages is None:
        return []
    if not isinstance(messages, list):
        raise BadRequest("'messages' must be a list", param="messages")
    out = []
    for i, message in enumerate(messages):
        message = normalise_message(message, f"messages[{i}]")
        content = message["content"]
        if isinstance(content, str):
            message["content"] = substitute(content, variables)
        elif isinstance(content, list):
            message["content"] = [dict(p, text=substitute(p["text"], variables))
                                  if isinstance(p.get("text"), str) else p for p in content]
        out.append(message)
    return out


def llm_key(request, body: dict) -> str | None:
    key = request.headers.get("LB-LLM-Key") or body.get("llmKey") or body.get("llm_key")
    return key if isinstance(key, str) and key else None


def pipe_completion(run) -> JSONResponse:
    try:
        raw = completion_body(run)
    except HubError as error:
        error.headers["lb-thread-id"] = run.thread_id   # the turn was stored: keep going
        raise
    return JSONResponse({"completion": raw["choices"][0]["message"]["content"] or "",
                         "raw": raw})


class PipeStream(StreamRenderer):
    """Renders run events as Langbase's chat.completion.chunk stream (module docstring):
    an upstream's own chunk relayed once, other content events built into chunks."""

    def __init__(self, run) -> None:
        self.seen = Seen(run)
        self.id = completion_id(run)
        self.role_sent = False
        self.final: dict | None = None    # the finish chunk, held until usage can ride on it
        self.final_sent = False
        self.relayed = None               # the raw chunk sent last
        self.usage = None                 # the Usage event, once it came

    def render(self, event) -> bytes:
        self.seen.add(event)
        kind = event.kind
        if kind == "usage":
            self.usage = event
            return self._final()
        if kind == "error":
            return frame(error_body(error_of(event)))
        if kind == "done":
            return self._end(event.status)
        raw = getattr(event, "raw", None)
        if raw is not None:
            if raw is self.relayed:
                return b""
            self.relayed = raw
            return self._delta(dict(raw, id=self.id, object="chat.completion.chunk"))
        if kind == "finish":
            self.final = self._chunk({}, event.reason)
            return b""
        delta = delta_of(event)
        return self._delta(self._chunk(delta)) if delta is not None else b""

    def _end(self, status: str) -> bytes:
        if status not in (COMPLETED, CANCELLED):
            return b""
        if not self.final_sent and self.final is None:
            self.final = self._chunk({}, finish_reason(None, status))
        return self._final() + frame("[DONE]")

    def _delta(self, chunk: dict) -> bytes:
        if not self.role_sent:
            choices = chunk.get("choices") or [{"index": 0}]
            chunk["choices"] = [dict(choices[0], delta={"role": "assistant",
                                                        **(choices[0].get("delta") or {})}),
                                *choices[1:]]
            self.role_sent = True
        if finishes(chunk):
            held, self.final = self.final, chunk     # with n > 1, an earlier choice's finish
            return frame(held) if held is not None else b""
        return frame(chunk)

    def _final(self) -> bytes:
        if self.final is None:
            return b""
        final, self.final = dict(self.final, usage=openai_usage(self.usage, self.seen)), None
        self.final_sent = True
        return frame(final)

    def _chunk(self, delta: dict, finish_reason: str | None = None) -> dict:
        if not self.role_sent and finish_reason:
            delta = {"role": "assistant", **delta}
        return chunk(self.id, self.seen.created, self.seen.model, [choice(delta, finish_reason)])


def frame(data) -> bytes:
    """One event, ending with the extra blank line the TS SDK needs (reference §3.5)."""
    return b"data: " + (data.encode() if isinstance(data, str) else json_bytes(data)) + \
        b"\n\n\n"


def list_pipes(request) -> JSONResponse:
    return JSONResponse([{"name": p.name, "description": "", "model": p.model or None,
                          "system": p.system or None, "temperature": p.temperature,
                          "max_tokens": p.max_tokens,
                          "variables": [{"name": k, "value": v} for k, v in p.variables.items()]}
                         for p in request.hub.config.pipes.values()])


# --- threads ---------------------------------------------------------------------------------

def name_thread(request, thread_id: str) -> JSONResponse:
    """POST /v1/threads/{id}/title (llmhub's own): {"title"} renames; an empty body has the
    summary model name the thread from its first exchange. Answers {"id", "title"}."""
    body = request.json_object() if request.body.strip() else {}
    check_known(body, {"title"})
    title = body.get("title")
    if title is not None and (not isinstance(title, str) or not title.strip()
                              or len(title) > 200):
        raise BadRequest("'title' must be text of 1 to 200 characters", param="title")
    check_thread_id(thread_id, "thread_id")
    named = request.hub.engine.name_thread(thread_id, title.strip() if title else None)
    return JSONResponse({"id": thread_id, "title": named})


def create_thread(request) -> JSONResponse:
    body = request.json_object() if request.body.strip() else {}
    check_known(body, {"threadId", "thread_id", "metadata", "messages"})
    thread_id = body.get("threadId", body.get("thread_id"))
    if thread_id is not None:
        check_thread_id(thread_id)
    messages = parse_thread_messages(body.get("messages", []))
    thread = request.hub.engine.create_thread(thread_id, check_metadata(body.get("metadata")),
                                              messages)
    return JSONResponse(thread_json(thread))


def list_threads(request) -> JSONResponse:
    """GET /v1/threads?limit=&before=&q= (llmhub's own; Langbase has no list): newest
    first; `q` keeps threads whose title or messages hold it."""
    query = request.query
    limit = page_limit(query, 50, 500)
    search = query.get("q", "").strip() or None
    if search is not None and len(search) > 200:
        raise BadRequest("'q' is at most 200 characters", param="q")
    try:
        before = float(query["before"]) if query.get("before") else None
    except ValueError:
        raise BadRequest("'before' must be a time from 'updated_at'", param="before") from None
    if before is not None and before != before:
        raise BadRequest("'before' must be a time from 'updated_at'", param="before")
    threads = request.hub.engine.list_threads(limit + 1, before, search)
    data = [dict(thread_json(t), title=t["title"], updated_at=t["updated_at"])
            for t in threads[:limit]]
    return JSONResponse({"object": "list", "data": data, "has_more": len(threads) > limit})


def get_thread(request, thread_id: str) -> JSONResponse:
    return JSONResponse(thread_json(request.hub.engine.thread(check_thread_id(thread_id))))


def update_thread(request, thread_id: str) -> JSONResponse:
    body = request.json_object()
    check_known(body, {"metadata", "threadId", "thread_id"})   # the TS SDK sends threadId
    if "metadata" not in body:
        raise BadRequest("'metadata' is required", param="metadata")
    metadata = check_metadata(body["metadata"])
    return JSONResponse(thread_json(request.hub.engine.update_thread(check_thread_id(thread_id),
                                                                     metadata)))


def delete_thread(request, thread_id: str) -> JSONResponse:
    request.hub.engine.delete_thread(check_thread_id(thread_id))
    return JSONResponse({"success": True})


def append_messages(request, thread_id: str) -> JSONResponse:
    body = request.json()
    if isinstance(body, dict):
        check_known(body, {"messages"})
    messages = body.get("messages") if isinstance(body, dict) else body   # SDKs: bare array
    if messages is None:
        raise BadRequest("'messages' is required", param="messages")
    created = request.hub.engine.append_messages(check_thread_id(thread_id),
                                                 parse_thread_messages(messages))
    return JSONResponse([message_json(m) for m in created])


MESSAGES_PAGE, MESSAGES_MAX_PAGE = 1000, 5000


def list_messages(request, thread_id: str) -> JSONResponse:
    """GET …/messages?limit=&after=: a page of a thread, oldest first, as the bare array the
    SDKs read. A page that does not reach the end says so in `X-Has-More: true`, with the
    cursor for the next (`X-Next-After`, also as a `Link: rel="next"`), so no client takes
    part of a thread for all of it. The hub's `order=desc` (OpenAI's list order word) pages
    from the newest back, each page newest first: a long chat opens at its end."""
    thread_id = check_thread_id(thread_id)
    limit = page_limit(request.query, MESSAGES_PAGE, MESSAGES_MAX_PAGE)
    after = request.query.get("after") or None
    if after is not None:
        check_thread_id(after, "after")
    order = request.query.get("order") or "asc"
    if order not in ("asc", "desc"):
        raise BadRequest("'order' must be 'asc' or 'desc'", param="order")
    # `include=reasoning` (the chat page's): each reply's stored reasoning too, which
    # Langbase's message object has no field for
    reasoning = request.query.get("include") == "reasoning"
    messages, more = request.hub.engine.page_messages(thread_id, limit, after, order == "desc")
    headers = {"X-Has-More": "true" if more else "false"}
    if more:
        cursor = messages[-1]["id"]
        kept = ("&order=desc" if order == "desc" else "") + \
            ("&include=reasoning" if reasoning else "")     # the next page reads as this one
        headers["X-Next-After"] = cursor
        headers["Link"] = f'</v1/threads/{thread_id}/messages?limit={limit}{kept}' \
                          f'&after={cursor}>; rel="next"'
    return JSONResponse([dict(message_json(m), reasoning=m["reasoning"]) if reasoning
                         else message_json(m) for m in messages], headers=headers)


def thread_json(thread: dict) -> dict:
    """A thread record as Langbase's thread object, its fields in its order (reference §2)."""
    return {"id": thread["id"], "object": "thread", "created_at": thread["created_at"],
            "metadata": thread["metadata"]}


MESSAGE_FIELDS = ("id", "thread_id", "created_at", "role", "content", "tool_call_id",
                  "tool_calls", "name", "attachments", "metadata")


def message_json(message: dict) -> dict:
    """A message record as exactly the fields of Langbase's message object, in its order:
    the SDKs' types have no room for the rest (seq, reasoning)."""
    return {key: message[key] for key in MESSAGE_FIELDS}


def page_limit(query: dict, default: int, most: int) -> int:
    return query_int(query.get("limit"), "limit", default, hi=most)


def parse_thread_messages(messages) -> list[dict]:
    if not isinstance(messages, list):
        raise BadRequest("'messages' must be a list", param="messages")
    return [normalise_message(m, f"messages[{i}]") for i, m in enumerate(messages)]
