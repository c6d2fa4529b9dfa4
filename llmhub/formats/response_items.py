"""OpenAI Responses items ↔ the neutral messages, both ways (sans-IO).

The Responses API speaks in items; the engine and the store speak in chat messages:

- `message` (user, system, developer, assistant; content a string or `input_text`,
  `output_text`, `input_image` parts) ↔ a message with text and `image_url` parts;
- `function_call` (call_id, name, arguments) ↔ an assistant message's `tool_calls`
  (consecutive calls, and a call right after the assistant's text, share one message);
  `custom_tool_call` (call_id, name, input) is one too, its input the function's one
  argument, and a call's `namespace` is part of the function's name (response_tools.py);
- `function_call_output` and `custom_tool_call_output` ↔ a `tool` message;
- `reasoning` ↔ the `reasoning` of the assistant message that follows it;
- `compaction` (what /v1/responses/compact returns) ↔ a system message with the summary.

Item ids are derived from what they belong to (`msg_<response>`, `fc_<response>_<n>`), so a
stream and the stored response name the same items the same way.
"""

import re
import uuid

from llmhub.context import SUMMARY_PREFIX, content_text
from llmhub.errors import BadRequest
from llmhub.formats.response_tools import Toolbox, custom_arguments, upstream_name

__all__ = ["items_to_messages", "messages_to_items", "output_items", "ITEM_TYPES"]

ITEM_TYPES = ("message", "function_call", "function_call_output", "custom_tool_call",
              "custom_tool_call_output", "reasoning", "compaction")
CALLS = ("function_call", "custom_tool_call")
OUTPUTS = ("function_call_output", "custom_tool_call_output")
ROLES = ("user", "assistant", "system", "developer")
# the ids output_items and the record's input give: the response's key in each
OUTPUT_ID = re.compile(r"(?:rs|msg|fc|ctc)_([0-9a-f]{32})(?:_\d+)?")
INPUT_ID = re.compile(r"in_([0-9a-f-]{36})_\d+")


# --- items → messages ------------------------------------------------------------------------

def items_to_messages(items, where: str = "input") -> list[dict]:
    """Input items as neutral messages (every optional field present, as the store keeps
    them); a bad item is a 400 naming `input[i]…`."""
    if isinstance(items, str):
        return [message("user", items)]
    messages, reasoning = [], None
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"'{at}' must be an item object", param=at)
        kind = item.get("type", "message" if "role" in item else None)
        if kind not in ITEM_TYPES:
            raise BadRequest(f"'{at}.type' {kind!r} is not supported: use one of "
                             f"{', '.join(ITEM_TYPES)}", param=f"{at}.type")
        if kind == "reasoning":
            reasoning = reasoning_text(item)
        elif kind == "message":
            messages.append(_message_item(item, at))
        elif kind in CALLS:
            _add_call(messages, item, at)
        elif kind in OUTPUTS:
            messages.append(dict(message("tool", _output_text(item.get("output"))),
                                 tool_call_id=_required(item, "call_id", at)))
        else:
            messages.append(message("system", SUMMARY_PREFIX + str(item.get(
                "encrypted_content") or "")))
        if reasoning and messages and messages[-1]["role"] == "assistant" and \
                kind != "reasoning":
            messages[-1]["reasoning"], reasoning = reasoning, None
    return messages


def message(role: str, content, **fields) -> dict:
    return {"role": role, "content": content, "name": None, "tool_call_id": None,
            "tool_calls": [], "attachments": [], "metadata": {}, "reasoning": None, **fields}


def _message_item(item: dict, at: str) -> dict:
    role = item.get("role")
    if role not in ROLES:
        raise BadRequest(f"'{at}.role' must be one of {', '.join(ROLES)}", param=f"{at}.role")
    content = item.get("content")
    if isinstance(content, str):
        return message("system" if role == "developer" else role, content)
    if not isinstance(content, list):
        raise BadRequest(f"'{at}.content' must be a string or a list of parts",
                         param=f"{at}.content")
    parts = [_part(p, f"{at}.content[{j}]") for j, p in enumerate(content)]
    if all(p["type"] == "text" for p in parts):     # plain text, as every server takes it
        return message("system" if role == "developer" else role,
                       "\n".join(p["text"] for p in parts))
    return message("system" if role == "developer" else role, parts)


def _part(part, at: str) -> dict:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "text", "summary_text"):
        return {"type": "text", "text": part.get("text", "")}
    if kind == "input_image":
        url = part.get("image_url") or (part.get("file_id") and f"file:{part['file_id']}")
        if not isinstance(url, str):
            raise BadRequest(f"'{at}.image_url' is required: a data: or http(s) URL",
                             param=f"{at}.image_url")
        return {"type": "image_url", "image_url": {"url": url, "detail": part.get("detail",
                                                                                 "auto")}}
    if kind == "refusal":
        return {"type": "text", "text": part.get("refusal", "")}
    raise BadRequest(f"'{at}.type' {kind!r} is not supported: use input_text, output_text "
                     "or input_image", param=f"{at}.type")


def _add_call(messages: list, item: dict, at: str) -> None:
    name = upstream_name(item.get("namespace"), _required(item, "name", at))
    arguments = custom_arguments(str(item.get("input") or "")) \
        if item["type"] == "custom_tool_call" else item.get("arguments") or "{}"
    call = {"id": _required(item, "call_id", at), "type": "function",
            "function": {"name": name, "arguments": arguments}}
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last["tool_calls"] = last["tool_calls"] + [call]
        if last["content"] == "":
            last["content"] = None
    else:
        messages.append(message("assistant", None, tool_calls=[call]))


def _required(item: dict, name: str, at: str) -> str:
    value = item.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"'{at}.{name}' is required", param=f"{at}.{name}")
    return value


def _output_text(output) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return " ".join(p.get("text", "") for p in output if isinstance(p, dict))
    return "" if output is None else str(output)


def reasoning_text(item: dict) -> str:
    """The reasoning an item carries: its text, else its summary, else the copy the hub
    gave as `encrypted_content` (a store: false client sends only that back)."""
    for parts in (item.get("content"), item.get("summary")):
        text = "".join(p.get("text", "") for p in parts or () if isinstance(p, dict))
        if text:
            return text
    opaque = item.get("encrypted_content")
    return opaque if isinstance(opaque, str) else ""


# --- messages → items ------------------------------------------------------------------------

def messages_to_items(messages: list[dict]) -> list[dict]:
    """Stored messages as conversation items: one item per message, and one per tool call;
    each keeps the message's id."""
    items = []
    for m in messages:
        items += _items_of(m)
    return items


def _items_of(m: dict) -> list[dict]:
    base = m.get("id") or ""
    if m["role"] == "tool":
        return [{"id": base, "type": "function_call_output", "call_id": m["tool_call_id"],
                 "output": content_text(m["content"]), "status": "completed"}]
    items = []
    if m["role"] == "assistant" and m.get("reasoning"):
        items.append({"id": f"rs_{base}", "type": "reasoning", "summary": [],
                      "content": [{"type": "reasoning_text", "text": m["reasoning"]}]})
    if m["content"] not in (None, "") or not m.get("tool_calls"):
        items.append({"id": base, "type": "message", "role": m["role"], "status": "completed",
                      "content": _parts_out(m["role"], m["content"])})
    items += [function_call(f"fc_{base}_{i}", call)
              for i, call in enumerate(m.get("tool_calls") or ())]
    return items


def _parts_out(role: str, content) -> list[dict]:
    kind = "output_text" if role == "assistant" else "input_text"
    if not isinstance(content, list):
        text = {"type": kind, "text": content or ""}
        return [dict(text, annotations=[])] if kind == "output_text" else [text]
    parts = []
    for part in content:
        if part.get("type") == "image_url":
            parts.append({"type": "input_image", "image_url": (part.get("image_url") or {})
                          .get("url"), "detail": "auto"})
        else:
            parts.append({"type": kind, "text": part.get("text", "")})
    return parts


def function_call(item_id: str, call: dict, status: str = "completed") -> dict:
    function = call.get("function") or {}
    return {"id": item_id, "type": "function_call", "status": status,
            "call_id": call.get("id"), "name": function.get("name", ""),
            "arguments": function.get("arguments", "")}


def output_items(response_id: str, transcript, tools: Toolbox | None = None,
                 request: dict | None = None) -> list[dict]:
    """A run's answer as output items, in the order a stream sends them: reasoning, the
    message, then each tool call (read back through the request's tools)."""
    key = response_id.removeprefix("resp_").replace("-", "")
    tools = tools or Toolbox(())
    items = []
    if transcript.reasoning:
        items.append(dict(reasoning_item(f"rs_{key}", transcript.reasoning, request or {}),
                          status="completed"))
    if transcript.content is not None:          # a pure tool-call turn has no message
        items.append({"id": f"msg_{key}", "type": "message", "role": "assistant",
                      "status": "completed",
                      "content": [{"type": "output_text", "text": transcript.text,
                                   "annotations": [], "logprobs": []}]})
    items += [tools.call_item(key, i, call) for i, call in enumerate(transcript.calls())]
    return items


def response_of(item_id: str) -> str | None:
    """The id of the response an item id the hub gave belongs to; None for another's."""
    if found := OUTPUT_ID.fullmatch(item_id):
        return "resp_" + str(uuid.UUID(hex=found[1]))
    if found := INPUT_ID.fullmatch(item_id):
        return "resp_" + found[1]
    return None


def reasoning_item(item_id: str, text: str, request: dict) -> dict:
    """Reasoning as its text; as a summary too when the request asks for one, or says
    nothing of reasoning (the AI SDK and Codex read only the summary, and the AI SDK asks
    for none for a model name it does not know); and as `encrypted_content` when
    `include` asks for it, which a store: false client sends back next turn."""
    item = {"id": item_id, "type": "reasoning",
            "summary": [{"type": "summary_text", "text": text}]
            if wants_summary(request) and text else [],
            "content": [{"type": "reasoning_text", "text": text}]}
    if "reasoning.encrypted_content" in (request.get("include") or ()):
        item["encrypted_content"] = text
    return item


def wants_summary(request: dict) -> bool:
    wanted = request.get("reasoning")
    return wanted is None or bool(wanted.get("summary"))
