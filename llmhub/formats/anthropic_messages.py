"""Anthropic's Messages API ↔ the neutral chat form, in both directions (sans-IO).

The neutral form is OpenAI's chat shape, which every store record and dialect already
speaks: messages with `content` (a string or parts), assistant `tool_calls`, `tool`
messages with `tool_call_id`, and `reasoning` on an assistant message. The upstream adapter
(upstream/anthropic.py) sends `to_messages_body` and reads replies with `StreamReader`; the
Messages dialect reads requests with `from_messages_body` and answers with
`message_to_anthropic` and `stop_reason`.

What maps to what:
- system and developer messages ↔ the top-level `system`;
- text and image parts ↔ `text` and `image` blocks (base64 data URIs or URLs);
- assistant `tool_calls` (JSON text arguments) ↔ `tool_use` blocks (a JSON object input);
- `tool` messages ↔ `tool_result` blocks, in the user turn that follows the call (OpenAI
  has no `is_error`: such a result's text starts "Error: ");
- `reasoning` (or `reasoning_content`) with `reasoning_signature` ↔ `thinking` blocks:
  Anthropic refuses thinking it did not sign, so unsigned reasoning is not sent;
- tools, tool_choice, stop, max_tokens ↔ their Messages names; finish reasons ↔ stop
  reasons (with the stop sequence named); usage ↔ usage, where Anthropic's `input_tokens`
  leave out the cache's reads and writes and the neutral input (OpenAI's) includes them.
Consecutive turns of one role are merged into one: the Messages API alternates roles, and
the results of parallel tool calls must all sit in the one user turn after the calls.
"""

import json
from typing import Any

from llmhub.context import content_text
from llmhub.errors import BadRequest
from llmhub.events import Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage, token_count

__all__ = ["to_messages_body", "from_messages_body", "message_to_anthropic",
           "message_from_anthropic", "finish_reason", "stop_reason", "usage_from_anthropic",
           "usage_to_anthropic", "StreamReader", "DEFAULT_MAX_TOKENS"]

DEFAULT_MAX_TOKENS = 1024     # Anthropic requires max_tokens; OpenAI clients rarely send it
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
          "tool_use": "tool_calls", "pause_turn": "stop", "refusal": "content_filter"}
STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
        "content_filter": "refusal"}
SAMPLING = ("temperature", "top_p", "top_k")


def finish_reason(stop: str | None) -> str | None:
    """An Anthropic stop_reason as an OpenAI finish_reason."""
    return FINISH.get(stop, stop) if stop else None


def stop_reason(finish: str | None) -> str | None:
    """An OpenAI finish_reason as an Anthropic stop_reason."""
    return STOP.get(finish, finish) if finish else None


# --- neutral → Anthropic ---------------------------------------------------------------------

def to_messages_body(chat: dict) -> dict:
    """A neutral chat body (messages and OpenAI-named params) as a Messages API body."""
    system, messages = to_anthropic_messages(chat.get("messages") or ())
    out = {"model": chat.get("model"), "messages": messages, "stream": True,
           "max_tokens": chat.get("max_tokens") or chat.get("max_completion_tokens")
           or DEFAULT_MAX_TOKENS}
    if system:
        out["system"] = system
    for name in SAMPLING:
        if chat.get(name) is not None:
            out[name] = chat[name]
    if chat.get("stop"):
        out["stop_sequences"] = [chat["stop"]] if isinstance(chat["stop"], str) else chat["stop"]
    if chat.get("tools"):
        out["tools"] = [tool_to_anthropic(t, i) for i, t in enumerate(chat["tools"])]
        choice = tool_choice_to_anthropic(chat.get("tool_choice"),
                                          chat.get("parallel_tool_calls"))
        if choice:
            out["tool_choice"] = choice
    if chat.get("user"):
        out["metadata"] = {"user_id": chat["user"]}
    if chat.get("thinking"):
        out["thinking"] = chat["thinking"]    # passed through by the Messages dialect
    return out


def to_anthropic_messages(messages) -> tuple[str, list]:
    system: list[str] = []
    turns: list[tuple] = []
    for i, message in enumerate(messages):
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(content_text(message.get("content")))
            continue
        if role == "tool":
            turn = ("user", [tool_result_block(message)])
        elif role == "assistant":
            turn = ("assistant", assistant_blocks(message, f"messages[{i}]"))
        else:
            turn = ("user", message.get("content"))
        _merge(turns, *turn)
    return "\n\n".join(s for s in system if s), [
        {"role": role, "content": _blocks_or_text(content)} for role, content in turns]


def _merge(turns: list, role: str, content) -> None:
    if turns and turns[-1][0] == role:
        turns[-1] = (role, _as_blocks(turns[-1][1]) + _as_blocks(content))
    else:
        turns.append((role, content))


def _as_blocks(content) -> list:
    if isinstance(content, list):
        return [b for part in content for b in _block(part)]
    return [{"type": "text", "text": content}] if content else []


def _blocks_or_text(content):
    """A plain string stays a string (the common case, and what Anthropic's docs show)."""
    if isinstance(content, str):
        return content
    return _as_blocks(content) if content else ""


def _block(part: dict) -> list:
    kind = part.get("type")
    if kind in ("text", "input_text", "output_text"):
        return [{"type": "text", "text": part.get("text", "")}]
    if kind == "image_url":
        return [image_block((part.get("image_url") or {}).get("url", ""))]
    if kind in ("tool_use", "tool_result", "image", "thinking", "redacted_thinking",
                "document"):
        return [part]                  # already an Anthropic block
    return []


def image_block(url: str) -> dict:
    if not url.startswith("data:"):
        return {"type": "image", "source": {"type": "url", "url": url}}
    head, _, data = url.partition(",")
    media = head.removeprefix("data:").removesuffix(";base64")
    return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}


def assistant_blocks(message: dict, where: str) -> list:
    blocks = []
    reasoning = message.get("reasoning") or message.get("reasoning_content")
    if reasoning and message.get("reasoning_signature"):   # unsigned thinking is refused
        blocks.append({"type": "thinking", "thinking": reasoning,
                       "signature": message["reasoning_signature"]})
    blocks += _as_blocks(message.get("content"))
    for j, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        blocks.append({"type": "tool_use", "id": call.get("id") or f"toolu_{j}",
                       "name": function.get("name", ""),
                       "input": _arguments(function.get("arguments"),
                                           f"{where}.tool_calls[{j}].function.arguments")})
    return blocks


def _arguments(text, where: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        value = None
    if not isinstance(value, dict):
        raise BadRequest(f"'{where}' must be a JSON object to go to an Anthropic upstream",
                         param=where)
    return value


def tool_result_block(message: dict) -> dict:
    content = message.get("content")
    block = {"type": "tool_result", "tool_use_id": message.get("tool_call_id") or ""}
    if content:
        block["content"] = content if isinstance(content, str) else _as_blocks(content)
    return block


def tool_to_anthropic(tool: dict, i: int) -> dict:
    if tool.get("type") not in (None, "function") or "input_schema" in tool:
        return tool                    # an Anthropic tool already (or a server tool)
    function = tool.get("function") or {}
    if not function.get("name"):
        raise BadRequest(f"'tools[{i}].function.name' is required", param=f"tools[{i}]")
    out = {"name": function["name"],
           "input_schema": function.get("parameters") or {"type": "object", "properties": {}}}
    if function.get("description"):
        out["description"] = function["description"]
    return out


def tool_choice_to_anthropic(choice, parallel) -> dict | None:
    if isinstance(choice, dict) and choice.get("type") == "function":
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name", "")}
    elif isinstance(choice, dict):
        out = dict(choice)             # already Anthropic's
    else:
        out = {"type": {"none": "none", "required": "any"}.get(choice, "auto")}
    if parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out if choice is not None or parallel is False else None


# --- Anthropic → neutral ---------------------------------------------------------------------

def from_messages_body(body: dict) -> dict:
    """A Messages API request as a neutral chat body."""
    messages = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": content_text(system)
                         if isinstance(system, list) else system})
    for message in body.get("messages") or ():
        messages += from_anthropic_message(message)
    chat = {"model": body.get("model"), "messages": messages}
    for name in SAMPLING + ("max_tokens",):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("stop_sequences"):
        chat["stop"] = body["stop_sequences"]
    if body.get("tools"):
        chat["tools"] = [tool_from_anthropic(t) for t in body["tools"]]
    if body.get("tool_choice"):
        chat.update(tool_choice_from_anthropic(body["tool_choice"]))
    return chat


def from_anthropic_message(message: dict) -> list[dict]:
    """One Messages turn as neutral messages: a user turn's tool results become `tool`
    messages (before any text it also carries), an assistant turn one message."""
    role, content = message.get("role"), message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    blocks = content or []
    if role == "assistant":
        return [message_from_anthropic({"content": blocks})]
    out = [{"role": "tool", "tool_call_id": b.get("tool_use_id"),
            "content": ("Error: " if b.get("is_error") else "") + _result_text(b.get("content"))}
           for b in blocks if b.get("type") == "tool_result"]
    parts = [_part(b) for b in blocks if b.get("type") in ("text", "image")]
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _result_text(content) -> str:
    return content_text(content) if isinstance(content, list) else content or ""


def _part(block: dict) -> dict:
    if block["type"] == "text":
        return {"type": "text", "text": block.get("text", "")}
    source = block.get("source") or {}
    url = source.get("url") if source.get("type") == "url" else \
        f"data:{source.get('media_type')};base64,{source.get('data', '')}"
    return {"type": "image_url", "image_url": {"url": url}}


def message_from_anthropic(reply: dict) -> dict:
    """An Anthropic assistant message (blocks) as a neutral assistant message."""
    text, reasoning, calls, signature = [], [], [], None
    for block in reply.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text", ""))
        elif kind == "thinking":
            reasoning.append(block.get("thinking", ""))
            signature = block.get("signature") or signature
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function", "function": {
                "name": block.get("name", ""),
                "arguments": json.dumps(block.get("input") or {}, ensure_ascii=False)}})
    message: dict[str, Any] = {"role": "assistant",
                               "content": "".join(text) if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning"] = "".join(reasoning)
    if signature:
        message["reasoning_signature"] = signature
    return message


def message_to_anthropic(message: dict) -> list:
    """A neutral assistant message as Anthropic content blocks (a Messages reply)."""
    blocks = []
    if message.get("reasoning"):
        blocks.append({"type": "thinking", "thinking": message["reasoning"],
                       "signature": message.get("reasoning_signature", "")})
    if message.get("content"):
        blocks += _as_blocks(message["content"])
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError:
            arguments = {}             # the model wrote broken JSON; the block needs an object
        blocks.append({"type": "tool_use", "id": call.get("id"),
                       "name": function.get("name", ""), "input": arguments})
    return blocks


def tool_from_anthropic(tool: dict) -> dict:
    if "input_schema" not in tool:
        return tool                    # a server tool: passed on as it came
    function = {"name": tool.get("name"), "parameters": tool["input_schema"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def tool_choice_from_anthropic(choice: dict) -> dict:
    kind = choice.get("type")
    out: dict[str, Any] = {"tool_choice": {"type": "function",
                                           "function": {"name": choice.get("name")}}
                           if kind == "tool" else "required" if kind == "any" else kind}
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False
    return out


def usage_from_anthropic(usage: dict, previous: Usage | None = None) -> Usage:
    """Anthropic counts input apart from cache reads and writes; the neutral input is all
    (OpenAI's prompt_tokens), with the cache's parts of it kept beside it. A later event
    (message_delta) repeats or leaves out what an earlier one (message_start) said. A count
    given that is not a count (events.token_count: negative, a string, absurdly large) is
    unknown (None), and the engine estimates it; it never falls back to an earlier number."""
    base = previous or Usage(None, None)
    before = [None if base.input_tokens is None else
              base.input_tokens - (base.cached_tokens or 0) - (base.cache_creation_tokens or 0),
              base.cached_tokens, base.cache_creation_tokens]
    parts = [token_count(usage[k]) if k in usage else known for k, known in zip(
        ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"), before)]
    output = token_count(usage["output_tokens"]) if "output_tokens" in usage \
        else base.output_tokens
    return Usage(None if parts[0] is None else token_count(sum(n or 0 for n in parts)),
                 output, cached_tokens=parts[1], cache_creation_tokens=parts[2])


def usage_to_anthropic(usage: Usage) -> dict:
    """Anthropic's usage: its `input_tokens` are those neither read from nor written to
    the cache, so the neutral (OpenAI-style, all-inclusive) input has both taken off."""
    read, written = usage.cached_tokens or 0, usage.cache_creation_tokens or 0
    return {"input_tokens": max((usage.input_tokens or 0) - read - written, 0),
            "cache_creation_input_tokens": written, "cache_read_input_tokens": read,
            "output_tokens": usage.output_tokens}


# --- the stream, Anthropic → typed events ------------------------------------------------------

class StreamReader:
    """Reads one Messages stream's events into typed events.

    Content blocks are numbered by Anthropic across kinds; tool calls are numbered among
    tool calls only, as OpenAI's `index` is. Usage comes at message_start (input) and
    message_delta (output); it is reported once, at the end. An `error` event is the
    adapter's to raise: it knows the upstream's name.
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self.tool_index: dict[int, int] = {}   # content block index → tool call index
        self.usage = Usage(0, 0)
        self.stop: str | None = None
        self.stop_sequence: str | None = None
        self.stopped = False

    def read(self, event: str, data: dict) -> list:
        handler = getattr(self, "_" + event, None)
        return handler(data) if handler is not None else []

    def _message_start(self, data: dict) -> list:
        message = data.get("message") or {}
        self.model = message.get("model") or self.model
        self.usage = usage_from_anthropic(message.get("usage") or {})
        return []

    def _content_block_start(self, data: dict) -> list:
        block = data.get("content_block") or {}
        if block.get("type") != "tool_use":
            return []
        index = self.tool_index[data.get("index", 0)] = len(self.tool_index)
        return [ToolCallDelta(index, id=block.get("id"), name=block.get("name", ""))]

    def _content_block_delta(self, data: dict) -> list:
        delta = data.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            return [TextDelta(delta.get("text", ""))]
        if kind == "thinking_delta":
            return [ReasoningDelta(delta.get("thinking", ""))]
        if kind == "signature_delta":
            return [ReasoningDelta("", signature=delta.get("signature") or "")]
        if kind == "input_json_delta" and data.get("index", 0) in self.tool_index:
            return [ToolCallDelta(self.tool_index[data["index"]],
                                  arguments=delta.get("partial_json", ""))]
        return []

    def _message_delta(self, data: dict) -> list:
        delta = data.get("delta") or {}
        self.stop = delta.get("stop_reason") or self.stop
        self.stop_sequence = delta.get("stop_sequence") or self.stop_sequence
        self.usage = usage_from_anthropic(data.get("usage") or {}, self.usage)
        return []

    def _message_stop(self, data: dict) -> list:
        self.stopped = True
        return [Finish(finish_reason(self.stop) or "stop", model=self.model,
                       stop_sequence=self.stop_sequence), self.usage]
