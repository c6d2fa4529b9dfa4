"""OpenAI chat completions (`/v1/chat/completions`, `/v1/models`), for the `openai` client.

Wire rules kept here:
- every field of the request except `model`, `messages` and `stream` goes upstream as-is, so
  tools, response_format, seed, LM Studio's own extras (top_k, ttl, …) and whatever field
  a newer SDK adds (verbosity, prompt_cache_key, …) all work; the fields the hub reads are
  type-checked by name, and `[openai] drop_fields` are removed;
- upstream chunks are relayed with their unknown delta fields untouched (tool_calls,
  reasoning, reasoning_content); only `id` is rewritten, so every chunk shares one id; an
  upstream that speaks no chunks (Anthropic, the mock) gets its typed events built into
  chunks: text as `content`, reasoning as `reasoning_content`, tool calls as `tool_calls`;
- the usage chunk (`choices: []`) goes out only when the client asked with
  `stream_options.include_usage`; the stream ends with `data: [DONE]`; usage is the
  upstream's object with the engine's checked counts in it (a count the upstream sent as a
  string, a negative or an absurd number is estimated; such a detail field is left out);
- errors before the first byte are OpenAI's error JSON with a real status; after it, one
  `data: {"error": {...}}` frame and the end of the stream;
- a cancelled run ends with `finish_reason: "cancelled"` (there is no OpenAI value for it).
"""

from llmhub.context import estimate_tokens
from llmhub.dialects import anthropic
from llmhub.dialects.checks import check_sampling
from llmhub.engine.facade import ChatRequest, Stateless
from llmhub.engine.runs import CANCELLED, FAILED
from llmhub.errors import BadRequest, HubError, NotFound, error_of
from llmhub.events import Usage, token_count
from llmhub.transcript import Seen, choice, chunk, delta_of, finish_reason, relayed_text
from llmhub.wire import JSONResponse, RunResponse, StreamRenderer, StreamResponse, json_str, sse

__all__ = ["error_body", "chat_completions", "list_models", "get_model", "ChunkStream",
           "completion_body",
           "check_messages",
           "completion_id", "openai_usage"]

TITLE = "OpenAI"

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
DONE = b"data: [DONE]\n\n"


def error_body(error: HubError) -> dict:
    message = error.message
    if error.code == OVERFLOW and OVERFLOW not in message:
        # LangChain tells an overflow (ContextOverflowError) by this text in the message,
        # which is all the openai client prints of an error body
        message = f"{message} ({OVERFLOW})"
    return {"error": {"message": message, "type": _error_type(error.status),
                      "param": error.param, "code": error.code}}


OVERFLOW = "context_length_exceeded"


def _error_type(status: int) -> str:
    return {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
            429: "rate_limit_error"}.get(status, "invalid_request_error" if status < 500
                                         else "api_error")


# --- views -----------------------------------------------------------------------------------

def chat_completions(request):
    body = request.json_object()
    chat = parse_chat(body, request.hub.config.openai.drop_fields)
    chat.run_id = request.run_id()
    run = request.hub.engine.prepare(chat)
    if body.get("stream"):
        options = body.get("stream_options") or {}
        return StreamResponse(run, ChunkStream(run, bool(options.get("include_usage"))))
    return RunResponse(run, completion)


def list_models(request) -> JSONResponse:
    """OpenAI's model list; Anthropic's, for a client that sends `anthropic-version`."""
    hub = request.hub
    listed = upstream_models(hub)
    if request.headers.get("anthropic-version"):
        return JSONResponse(anthropic.model_list(listed, hub.config.aliases))
    return JSONResponse({"object": "list", "data": model_entries(hub, listed)})


def get_model(request, model_id: str) -> JSONResponse:
    """One model or alias, as `models.retrieve` reads it; 404 model_not_found otherwise."""
    hub = request.hub
    entry = next((e for e in model_entries(hub, upstream_models(hub)) if e["id"] == model_id),
                 None)
    if entry is None:
        raise NotFound(f"The model '{model_id}' does not exist", param="model",
                       code="model_not_found")
    return JSONResponse(entry)


def upstream_models(hub) -> list[dict]:
    listed, errors = hub.engine.list_models()
    if errors and not listed:
        raise errors[0]
    return listed


def model_entries(hub, listed: list[dict]) -> list[dict]:
    """The upstreams' models, with what LM Studio knows of each (loaded, context length)
    as extra fields the OpenAI shape leaves room for; then every alias."""
    details = hub.engine.model_details()
    data = [{"object": "model", "created": 0, "owned_by": "organization_owner", **m,
             **details.get(m["id"], {})} for m in listed]
    data += [{"id": alias, "object": "model", "created": 0, "owned_by": "llmhub",
              "alias_of": target} for alias, target in hub.config.aliases.items()
             if "*" not in alias]
    return data


# --- request validation ----------------------------------------------------------------------

def parse_chat(body: dict, drop: tuple = ()) -> ChatRequest:
    """Fields the hub reads are checked by name; every other one goes upstream as it came
    (an OpenAI-compatible server ignores what it does not know), but for `drop`."""
    check_messages(body.get("messages"))
    check_sampling(body)
    return ChatRequest(Stateless(body["messages"]), model=body.get("model") or None,
                       params=upstream_params(body, ("model", "messages", "stream"), drop),
                       dialect="openai")


def upstream_params(body: dict, read: tuple, drop: tuple) -> dict:
    """The body's fields for the upstream: all but those the hub reads, and `[openai]
    drop_fields`."""
    params = {k: v for k, v in body.items() if k not in read and k not in drop}
    if params.get("stream_options") is None:
        params.pop("stream_options", None)
    return params


def check_messages(messages) -> None:
    if messages is None:
        raise BadRequest("'messages' is required", param="messages", code="missing_field")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list", param="messages",
                         code="invalid_type")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise BadRequest(f"'{where}' must be an object", param=where, code="invalid_type")
        if message.get("role") not in ROLES:
            raise BadRequest(f"'{where}.role' must be one of {', '.join(ROLES)}",
                             param=f"{where}.role", code="invalid_value")
        if not isinstance(message.get("content"), (str, list, type(None))):
            raise BadRequest(f"'{where}.content' must be a string, a list of parts, or null",
                             param=f"{where}.content", code="invalid_type")


# --- rendering -------------------------------------------------------------------------------

def completion_id(run) -> str:
    return "chatcmpl-" + run.id.removeprefix("run_")


def openai_usage(usage: Usage | None, run) -> dict:
    """A Usage event as OpenAI's usage object: the upstream's own when it sent one (its
    extra fields intact, its counts the checked ones). A run that ended before its usage
    was known is estimated."""
    if usage is not None and usage.raw:
        return dict(sane_counts(usage.raw), prompt_tokens=usage.input_tokens,
                    completion_tokens=usage.output_tokens, total_tokens=usage.total_tokens)
    prompt = usage.input_tokens or 0 if usage else run.input_estimate   # checked: a count
    output = usage.output_tokens or 0 if usage else estimate_tokens(run.transcript.text)
    body = {"prompt_tokens": prompt, "completion_tokens": output,
            "total_tokens": prompt + output}
    if usage is not None and usage.cached_tokens is not None:   # an Anthropic upstream's
        body["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    return body


def sane_counts(raw: dict) -> dict:
    """The upstream's usage object without a `*_tokens` field that is not a count (a string,
    a negative, 10**30: events.token_count), at any depth (prompt_tokens_details): a client
    adding them up must get numbers."""
    return {k: sane_counts(v) if isinstance(v, dict) else v for k, v in raw.items()
            if not k.endswith("_tokens") or token_count(v) is not None}


def completion(run) -> JSONResponse:
    return JSONResponse(completion_body(run))


def completion_body(run) -> dict:
    """The whole run as one chat.completion object; raises the run's error if it failed."""
    if run.status == FAILED:
        raise run.failure()
    transcript = run.transcript
    choices = [{"index": index, "message": one.message(),
                "logprobs": {"content": one.logprobs} if one.logprobs else None,
                "finish_reason": finish_reason(one.finish_reason, run.status)}
               for index, one in transcript.choices()]
    body = {"id": completion_id(run), "object": "chat.completion", "created": run.created,
            "model": transcript.model or run.model, "choices": choices,
            "usage": openai_usage(run.usage, run)}
    if transcript.system_fingerprint:
        body["system_fingerprint"] = transcript.system_fingerprint
    return body


class ChunkStream(StreamRenderer):
    """Renders run events as OpenAI `chat.completion.chunk` SSE frames.

    An event made from an upstream chunk relays that chunk (once, with the run's id: the
    upstream's own text where `relayed_text` allows, else encoded); any other content event
    is built into a chunk from its fields, the first with the role."""

    object = "chat.completion.chunk"
    chunk_id = staticmethod(completion_id)

    def __init__(self, run, include_usage: bool) -> None:
        self.seen = Seen(run)
        self.id = self.chunk_id(run)
        self.start = '{"id":' + json_str(self.id)     # of a relayed chunk's text
        self.include_usage = include_usage
        self.finish_sent = False
        self.role_sent = False
        self.relayed: dict | None = None   # the raw chunk sent last: its other events are in it

    def render(self, event) -> bytes:
        self.seen.add(event)
        kind = event.kind
        if kind == "usage":
            if not self.include_usage:
                return b""
            return sse(self._chunk([], usage=openai_usage(event, self.seen)))
        if kind == "error":
            return sse(error_body(error_of(event)))
        if kind == "done":
            return self._end(event.status)
        if kind == "finish":
            self.finish_sent = True      # in its upstream chunk, relayed, or built below
        raw = getattr(event, "raw", None)
        if raw is not None:
            return self._relay(raw)
        return self._build(event)

    def _relay(self, raw: dict) -> bytes:
        if raw is self.relayed:
            return b""
        self.relayed, self.role_sent = raw, True
        text = relayed_text(raw, self.start) if "object" in raw else None
        if text is not None:
            return b"data: %s\n\n" % text.encode("utf-8")
        chunk = dict(raw, id=self.id)
        chunk.setdefault("object", self.object)
        return sse(chunk)

    def _build(self, event) -> bytes:
        if event.kind == "finish":
            return sse(self._chunk([choice({}, event.reason)]))
        if event.kind == "logprobs":
            return sse(self._chunk([choice({}, logprobs={"content": event.content})]))
        delta = delta_of(event)
        if delta is None:
            return b""
        if not self.role_sent:
            delta, self.role_sent = {"role": "assistant", **delta}, True
        return sse(self._chunk([choice(delta)]))

    def _end(self, status: str) -> bytes:
        if status == FAILED:
            return b""    # the error frame said it all; the stream just ends
        if status == CANCELLED and not self.finish_sent:
            return sse(self._chunk([self._cancelled()])) + DONE
        return DONE

    def _cancelled(self) -> dict:
        return choice({}, "cancelled")

    def _chunk(self, choices: list, **extra) -> dict:
        return dict(chunk(self.id, self.seen.created, self.seen.model, choices, **extra),
                    object=self.object)
