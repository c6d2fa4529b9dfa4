"""Anthropic's Messages API inbound (`POST /v1/messages`, `/v1/messages/count_tokens`), so
Claude-style clients (the `anthropic` SDKs, Claude Code) run on any upstream.

Wire rules kept here (the SDK's types are the ground truth):
- a request needs `model`, `max_tokens` and `messages`; content is a string or blocks (text,
  image, tool_use, tool_result, thinking, redacted_thinking); `system` is a string or text
  blocks; fields the hub does not read (`cache_control`, `context_management`,
  `output_config`, `thinking`, …) are accepted, the ones it reads are type-checked; a server
  tool (any `type` but custom) is a 400 naming its type, except before an Anthropic upstream;
- same wire, same bytes: to a target on an Anthropic upstream the client's own body goes
  (facade.Native; the model renamed, system-role messages folded into `system` blocks), with
  its `anthropic-version` and `anthropic-beta` headers, so Claude Code's cache marks, system
  blocks and context management reach Anthropic and its prompt cache hits; other targets get
  the neutral form, and the thread store keeps neutral messages either way;
- what local servers choke on is cleaned first: `system`-role messages inside `messages` are
  folded into `system`, and Claude Code's `x-anthropic-billing-header:` block (a checksum
  that changes every request) is dropped before any upstream but Anthropic;
- a reply is a `message` with text, tool_use and thinking blocks, a stop reason and usage;
  a stream is message_start, then per block content_block_start / _delta / _stop, then
  message_delta and message_stop; `ping` events while the model is silent; a failure after
  the first byte is an `error` event;
- a base64 `image` block is checked as Anthropic checks it (one of its four media types,
  data that decodes): a 400 naming `messages.N.content.M.image.source.base64`;
- errors are `{"type": "error", "error": {"type", "message"}}` with Anthropic's types.
The translation to and from the neutral form is formats/anthropic_messages.py's, shared with the
Anthropic upstream.
"""

import re

from llmhub.dialects.checks import check_int, check_number, check_type, decoded_size
from llmhub.engine.facade import ChatRequest, Native, Resent, Stateless
from llmhub.engine.runs import CANCELLED, FAILED
from llmhub.errors import BadRequest, HubError, error_of
from llmhub.formats import anthropic_messages as translator
from llmhub.transcript import Seen
from llmhub.wire import (JSONResponse, RunResponse, SSETemplate, StreamRenderer,
                         StreamResponse, sse, token_count_header)

__all__ = ["TITLE", "error_body", "create_message", "count_tokens", "model_list",
           "MessageStream"]

TITLE = "Anthropic Messages"
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error"}
BLOCKS = {"text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking"}
BILLING = "x-anthropic-billing-header:"
SESSION = re.compile(r"[^A-Za-z0-9_.:-]")
OVERFLOW = "context_length_exceeded"     # the engine's code for a prompt that does not fit
RELAYED_HEADERS = ("anthropic-version", "anthropic-beta")   # to an Anthropic upstream


def error_body(error: HubError):
    """Anthropic's error shape; a full queue is its 529, what it answers when overloaded."""
    return (529, error_json(error)) if error.code == "queue_full" else error_json(error)


def error_json(error: HubError) -> dict:
    kind = "overloaded_error" if error.code == "queue_full" else ERROR_TYPES.get(
        error.status) or ("invalid_request_error" if error.status < 500 else "api_error")
    message = too_long(error) if error.code == OVERFLOW else error.message
    return {"type": "error", "error": {"type": kind, "message": message}}


def too_long(error: HubError) -> str:
    """Anthropic's words for a context overflow, which Claude Code and LangChain match
    (and compact by the gap): the tokens sent and the context length, as the upstream or
    the engine counted them. A context length nobody knows is given as one less than was
    sent: all that is known is that it did not fit."""
    sent = getattr(error, "prompt_tokens", None)
    fits = getattr(error, "context_length", None)
    if sent is None:
        return f"prompt is too long: {error.message}"
    fits = fits if fits is not None else max(sent - 1, 0)
    return f"prompt is too long: {sent} tokens > {fits} maximum"


# --- views -----------------------------------------------------------------------------------

def create_message(request):
    body = request.json_object()
    chat = parse_request(body, request.hub, require_max_tokens=True)
    chat.run_id = request.run_id()
    keep_in = session_thread(request, body)
    assert isinstance(chat.input, Stateless)       # as parse_request made it
    if keep_in is not None:       # the conversation, resent each turn, is kept in a thread
        chat.input = Resent(chat.input.messages, keep_in)
    chat.session = keep_in or session_of(request, body)   # the same box, turn by turn
    model, stream = body["model"], body.get("stream")
    if request.hub.engine.may_reach(model, "anthropic"):
        chat.native = Native("anthropic", native_body(body), relayed_headers(request))
    else:
        release_images(body)      # each is a data: URL in the neutral body now
    run = request.hub.engine.prepare(chat)
    if stream:
        return StreamResponse(run, MessageStream(run, model))
    return RunResponse(run, lambda run: JSONResponse(message_body(run, model)))


def release_images(body: dict) -> None:
    """Let go of the client's base64 images once the neutral body holds them as data:
    URLs and no Anthropic target can want the client's own body: a large image is then
    held once while the request runs, not twice."""
    for message in body["messages"]:
        content = message.get("content")
        for block in content if isinstance(content, list) else ():
            nested = block.get("content") if block.get("type") == "tool_result" else None
            for one in [block] + (nested if isinstance(nested, list) else []):
                source = one.get("source") if one.get("type") == "image" else None
                if isinstance(source, dict) and source.get("type") == "base64":
                    source["data"] = ""


def count_tokens(request) -> JSONResponse:
    """The prompt's tokens (messages, system, tools' definitions): counted by the upstream's
    tokenizer where it has one, else the hub's estimate; `X-Llmhub-Token-Count` says which
    (facade.Engine.count_input), the body keeps Anthropic's exact shape."""
    body = request.json_object()
    chat = parse_request(body, request.hub, require_max_tokens=False)
    chat.native = Native("anthropic", native_body(body), relayed_headers(request))
    assert isinstance(chat.input, Stateless)       # as parse_request made it
    tokens, counted = request.hub.engine.count_input(chat, chat.input.messages)
    return JSONResponse({"input_tokens": tokens}, headers=token_count_header(counted))


def native_body(body: dict) -> dict:
    """The request as an Anthropic upstream gets it: as the client sent it, but for the
    system-role messages newer Claude Code puts in `messages`, which the Messages API
    refuses; they join `system` as blocks, after its own, as `clean` folds them."""
    messages = [m for m in body["messages"] if m["role"] != "system"]
    if len(messages) == len(body["messages"]):
        return body
    folded = [b for m in body["messages"] if m["role"] == "system"
              for b in _blocks(m.get("content"))]
    return dict(body, system=_blocks(body.get("system")) + folded, messages=messages)


def relayed_headers(request) -> dict:
    """The client's Anthropic headers, for an Anthropic upstream: its betas (Claude Code's
    prompt caching and context management ride on them) and the version it speaks."""
    return {name: request.headers[name] for name in RELAYED_HEADERS
            if request.headers.get(name)}


def session_thread(request, body: dict) -> str | None:
    """With [anthropic] store, the thread a session's conversation is kept in."""
    if not request.hub.config.anthropic.store:
        return None
    session = session_of(request, body)
    return "claude-" + SESSION.sub("-", session)[:100] if session else None


def session_of(request, body: dict) -> str | None:
    """Claude Code's session id, or the Messages API's metadata.user_id."""
    session = request.headers.get("X-Claude-Code-Session-Id") or \
        (body.get("metadata") or {}).get("user_id")
    return session if isinstance(session, str) and session else None


def model_list(listed: list[dict], aliases: dict) -> dict:
    """GET /v1/models as Anthropic's SDK reads it (asked with an anthropic-version header)."""
    names = [m["id"] for m in listed] + [a for a in aliases if "*" not in a]
    data = [{"type": "model", "id": name, "display_name": name,
             "created_at": "1970-01-01T00:00:00Z"} for name in dict.fromkeys(names)]
    return {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


# --- the request -----------------------------------------------------------------------------

def parse_request(body: dict, hub, require_max_tokens: bool) -> ChatRequest:
    check_model(body)
    anthropic_upstream = hub.engine.upstream_kind(body["model"]) == "anthropic"
    check_fields(body, require_max_tokens, anthropic_upstream)
    body = clean(body, strip=hub.config.anthropic.strip_billing_header and
                 not anthropic_upstream)
    chat = translator.from_messages_body(body)
    messages = chat.pop("messages")
    replay = hub.config.context.replay_reasoning
    for message in messages:
        reasoning = message.pop("reasoning", None)
        signature = message.pop("reasoning_signature", None)
        if reasoning and (replay or anthropic_upstream and signature):
            message["reasoning_content"] = reasoning
            if anthropic_upstream and signature:
                message["reasoning_signature"] = signature
    chat.pop("model", None)
    if anthropic_upstream and isinstance(body.get("thinking"), dict):
        chat["thinking"] = body["thinking"]   # only Anthropic knows what to do with it
    return ChatRequest(Stateless(messages), model=body["model"], params=chat,
                       dialect="anthropic")


def check_model(body: dict) -> None:
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequest("'model' is required: a string", param="model")


def check_fields(body: dict, require_max_tokens: bool, anthropic_upstream: bool) -> None:
    """What the hub reads, checked; Anthropic itself judges the blocks and server tools
    it is sent (documents, web search), which local models cannot take."""
    if require_max_tokens and body.get("max_tokens") is None:
        raise BadRequest("'max_tokens' is required", param="max_tokens")
    check_int(body, "max_tokens", 1)
    check_number(body, "temperature", 0, 1)
    check_number(body, "top_p", 0, 1)
    check_int(body, "top_k", 0)
    check_type(body, "stream", bool, "true or false")
    check_type(body, "metadata", dict, "an object")
    check_type(body, "stop_sequences", list, "a list of strings")
    check_type(body, "system", (str, list), "a string or a list of text blocks")
    check_messages(body.get("messages"), None if anthropic_upstream else BLOCKS)
    check_tools(body.get("tools"), body.get("tool_choice"), not anthropic_upstream)


def check_messages(messages, blocks: set | None) -> None:
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list", param="messages")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant",
                                                                        "system"):
            raise BadRequest(f"'{where}.role' must be user or assistant", param=f"{where}.role")
        content = message.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise BadRequest(f"'{where}.content' must be a string or a list of blocks",
                             param=f"{where}.content")
        for j, block in enumerate(content):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind is None or blocks is not None and kind not in blocks:
                raise BadRequest(f"'{where}.content[{j}].type' {kind!r} is not supported: "
                                 f"use one of {', '.join(sorted(BLOCKS))}",
                                 param=f"{where}.content[{j}].type")
            if kind == "image":
                check_image(block, f"messages.{i}.content.{j}")


IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")   # what Anthropic takes


def check_image(block: dict, where: str) -> None:
    """A base64 image source is checked as Anthropic checks it, with its 400 in its words
    (`messages.0.content.0.image.source.base64: invalid base64 data`): no upstream is
    sent bytes that are no image."""
    source = block.get("source")
    if not isinstance(source, dict) or source.get("type") != "base64":
        return                                  # a URL or file: the upstream fetches it
    path = f"{where}.image.source.base64"
    if source.get("media_type") not in IMAGE_TYPES:
        raise BadRequest(f"{path}.media_type: Input should be "
                         f"{', '.join(map(repr, IMAGE_TYPES))}", param=f"{path}.media_type")
    data = source.get("data")
    try:
        if not isinstance(data, str):
            raise ValueError
        decoded_size(data)
    except ValueError:                          # binascii.Error is one
        raise BadRequest(f"{path}: invalid base64 data", param=f"{path}.data") from None


def check_tools(tools, choice, local: bool) -> None:
    if tools is not None and not isinstance(tools, list):
        raise BadRequest("'tools' must be a list", param="tools")
    for i, tool in enumerate(tools or ()):
        if not isinstance(tool, dict):
            raise BadRequest(f"'tools[{i}]' must be an object", param=f"tools[{i}]")
        if tool.get("type") not in (None, "custom") and not local:
            continue                   # a server tool, which Anthropic runs itself
        if tool.get("type") not in (None, "custom"):
            raise BadRequest(f"'tools[{i}].type' {tool['type']!r} is a server tool, which "
                             "local models cannot run; send custom tools with an "
                             "input_schema", param=f"tools[{i}].type")
        if not isinstance(tool.get("name"), str) or not isinstance(tool.get("input_schema"),
                                                                   dict):
            raise BadRequest(f"'tools[{i}]' needs a 'name' and an 'input_schema' object",
                             param=f"tools[{i}]")
    if choice is not None and (not isinstance(choice, dict) or choice.get("type") not in
                               ("auto", "any", "tool", "none")):
        raise BadRequest("'tool_choice.type' must be auto, any, tool or none",
                         param="tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "tool" and \
            not isinstance(choice.get("name"), str):
        raise BadRequest("'tool_choice.name' is required with type tool",
                         param="tool_choice.name")


def clean(body: dict, strip: bool) -> dict:
    """System-role messages folded into `system`; with `strip`, the billing-header block
    dropped (it changes every request, so a local server's prompt cache never hits)."""
    system = _blocks(body.get("system"))
    messages = []
    for message in body["messages"]:
        if message["role"] == "system":
            system += _blocks(message.get("content"))
        else:
            messages.append(message)
    if strip:
        system = [b for b in system if not (b.get("type") == "text" and
                                            b.get("text", "").startswith(BILLING))]
    text = "\n\n".join(b.get("text", "") for b in system if b.get("type") == "text")
    return dict(body, system=text or None, messages=messages)


def _blocks(content) -> list:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [b for b in content or () if isinstance(b, dict)]


# --- the reply -------------------------------------------------------------------------------

def message_id(run) -> str:
    return "msg_" + run.id.removeprefix("run_")


def message_body(run, model: str) -> dict:
    if run.status == FAILED:
        raise run.failure()
    transcript = run.transcript
    usage = run.usage
    message = {"content": transcript.text, "tool_calls": transcript.calls(),
               "reasoning": transcript.reasoning,
               "reasoning_signature": transcript.signature or ""}
    return {"id": message_id(run), "type": "message", "role": "assistant", "model": model,
            "content": translator.message_to_anthropic(message),
            "stop_reason": stop(run.status, transcript.finish_reason, transcript.stop_sequence),
            "stop_sequence": transcript.stop_sequence,
            "usage": translator.usage_to_anthropic(usage) if usage else
            {"input_tokens": run.input_estimate, "output_tokens": 0}}


def stop(status: str, finish_reason: str | None, sequence: str | None = None) -> str | None:
    """A cancelled run has no stop reason: Anthropic has none for it. A finish that named
    the request's stop sequence it reached is `stop_sequence` (the engine named it)."""
    if status == CANCELLED:
        return None
    if sequence:
        return "stop_sequence"
    return translator.stop_reason(finish_reason or "stop")


class MessageStream(StreamRenderer):
    """Renders run events as the Messages stream the SDK's `messages.stream()` assembles:
    each run of text, reasoning or one tool call's pieces is one content block."""

    def __init__(self, run, model: str) -> None:
        self.seen, self.model = Seen(run), model
        self.started = False
        self.block: tuple | None = None   # (kind, tool call index) of the open block
        self.index = -1                   # the open block's position in the message
        self.templates: dict[str, SSETemplate] = {}   # the open block's deltas, by type
        self.signed = False               # the open thinking block has had its signature
        self.finish: str | None = None
        self.stop_sequence: str | None = None
        self.usage = None

    def ping(self) -> bytes:
        return sse({"type": "ping"}, event="ping")

    def render(self, event) -> bytes:
        self.seen.add(event)
        kind = event.kind
        if kind == "start":
            return self._start()
        if kind == "delta" and event.text:
            return self._open(("text", None)) + self._delta("text_delta", "text", event.text)
        if kind == "reasoning":
            return self._thinking(event)
        if kind == "tool_call":
            return self._tool_call(event)
        if kind == "finish" and event.choice == 0:
            self.finish, self.stop_sequence = event.reason, event.stop_sequence
        elif kind == "usage":
            self.usage = event
        elif kind == "error":
            return self._event("error", error_json(error_of(event)))
        elif kind == "done" and event.status != FAILED:
            return self._end(event.status)
        return b""

    def _start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        return self._event("message_start", {"message": {
            "id": message_id(self.seen), "type": "message", "role": "assistant",
            "model": self.model, "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self.seen.input_estimate, "output_tokens": 0}}})

    def _open(self, block: tuple, id_: str | None = None, name: str = "") -> bytes:
        if self.block == block:
            return b""
        out = self._close()
        self.block, self.index, self.templates = block, self.index + 1, {}
        content = {"text": {"type": "text", "text": ""},
                   "thinking": {"type": "thinking", "thinking": "", "signature": ""},
                   "tool_use": {"type": "tool_use", "id": id_, "name": name, "input": {}}}
        return out + self._event("content_block_start", {"index": self.index,
                                                         "content_block": content[block[0]]})

    def _thinking(self, event) -> bytes:
        out = self._open(("thinking", None))
        if event.text:
            out += self._delta("thinking_delta", "thinking", event.text)
        if event.signature is not None:
            self.signed = True
            out += self._delta("signature_delta", "signature", event.signature)
        return out

    def _tool_call(self, event) -> bytes:
        block = ("tool_use", event.index)
        out = b""
        if self.block != block:
            out = self._open(block, event.id or f"toolu_{event.index}", event.name or "")
        if event.arguments:
            out += self._delta("input_json_delta", "partial_json", event.arguments)
        return out

    def _delta(self, kind: str, field: str, text: str) -> bytes:
        """The open block's content_block_delta {"type": kind, field: text}, from its
        template for the kind, which each token fills in (wire.SSETemplate)."""
        template = self.templates.get(kind)
        if template is None:
            template = self.templates[kind] = SSETemplate(
                {"type": "content_block_delta", "index": self.index,
                 "delta": {"type": kind, field: SSETemplate.TEXT}}, "content_block_delta")
        return template.fill(text)

    def _close(self) -> bytes:
        if self.block is None:
            return b""
        unsigned = self.block[0] == "thinking" and not self.signed
        out = self._delta("signature_delta", "signature", "") if unsigned else b""
        self.block, self.signed = None, False
        return out + self._event("content_block_stop", {"index": self.index})

    def _end(self, status: str) -> bytes:
        usage = self.usage
        return self._start() + self._close() + self._event("message_delta", {
            "delta": {"stop_reason": stop(status, self.finish, self.stop_sequence),
                      "stop_sequence": self.stop_sequence},
            "usage": translator.usage_to_anthropic(usage) if usage else
            {"output_tokens": 0}}) + self._event("message_stop", {})

    @staticmethod
    def _event(name: str, data: dict) -> bytes:
        return sse({"type": name, **data}, event=name)
