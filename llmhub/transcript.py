"""A run's answer, folded from its typed events, and the chat.completion shapes (sans-IO).

The engine folds every content event into the run's Transcript; dialects read the text,
reasoning, tool calls and finish reason from it, and the store saves it. A stream renderer
keeps its own `Seen`: the run as the events it has rendered tell it, never the live run,
whose driver moves on meanwhile (and a replay has no live run). Unknown string
fields of an upstream's raw delta (refusal, a server's own extras) are concatenated and
kept, so nothing the model said is lost. `chunk` is the one builder of a
chat.completion.chunk, which the OpenAI and Langbase dialects share; `UpstreamChunk` is one
as an upstream sent it, which `relayed_text` relays without encoding it again.
"""

import re
from typing import Any

from llmhub.events import ReasoningDelta, TextDelta, ToolCallDelta
from llmhub.wire import surrogate_escaped

__all__ = ["Transcript", "Seen", "UpstreamChunk", "chunk", "choice", "delta_of",
           "finish_reason", "finishes", "relayed_text"]

KNOWN_DELTA = {"content", "role", "tool_calls"}


class Transcript:
    def __init__(self, index: int = 0) -> None:
        self.index = index                      # which choice it folds
        self.parts: list[str] = []
        self.reasoning_parts: list[str] = []
        self.signature: str | None = None       # an Anthropic upstream's, for its thinking
        self.extra: dict[str, str] = {}         # the raw deltas' other string fields
        self.tool_calls: dict[int, dict] = {}
        self.logprobs: list = []
        self.finish_reason: str | None = None
        self.stop_sequence: str | None = None   # the request's stop sequence that ended it
        self.model: str | None = None           # as the upstream reported it
        self.system_fingerprint: str | None = None
        self._raw = None                        # the last raw chunk folded for `extra`
        self.others: dict[int, "Transcript"] = {}   # choices after the first, when n > 1

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def reasoning(self) -> str:
        return "".join(self.reasoning_parts)

    def add(self, event) -> None:
        """Fold one event in (events with nothing to fold are passed by); an event of
        another choice than the first goes to that choice's own Transcript."""
        choice = getattr(event, "choice", 0)
        if choice != self.index:
            if self.index == 0:            # the run's transcript keeps the others'
                self.other(choice).add(event)
            return
        kind = event.kind
        if kind == "delta":
            if event.text:
                self.parts.append(event.text)
        elif kind == "reasoning":
            self.reasoning_parts.append(event.text)
            self.signature = event.signature or self.signature
        elif kind == "tool_call":
            self._fold_tool_call(event)
        elif kind == "logprobs":
            self.logprobs += event.content
        elif kind == "finish":
            self.finish_reason = event.reason
            self.stop_sequence = event.stop_sequence
            self.model = event.model or self.model
            self.system_fingerprint = event.system_fingerprint or self.system_fingerprint
        raw = getattr(event, "raw", None)
        if raw is not None and raw is not self._raw and kind != "usage":
            self._raw = raw
            self._fold_raw(raw)

    def _fold_raw(self, raw: dict) -> None:
        self.model = raw.get("model") or self.model
        self.system_fingerprint = raw.get("system_fingerprint") or self.system_fingerprint
        for one in raw.get("choices") or ():
            if not isinstance(one, dict) or one.get("index", 0) != self.index:
                continue
            delta = one.get("delta") or one.get("message") or {}
            if delta.keys() <= KNOWN_DELTA:
                continue                 # the usual chunk: nothing unknown to keep
            for key, value in delta.items():
                if key not in KNOWN_DELTA and isinstance(value, str) and value:
                    self.extra[key] = self.extra.get(key, "") + value

    def _fold_tool_call(self, event: ToolCallDelta) -> None:
        slot = self.tool_calls.setdefault(event.index, {
            "id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        if event.id:
            slot["id"] = event.id
        if event.name:
            slot["function"]["name"] += event.name
        slot["function"]["arguments"] += event.arguments

    def other(self, index: int) -> "Transcript":
        if index not in self.others:
            self.others[index] = Transcript(index)
        return self.others[index]

    def choices(self) -> list[tuple[int, "Transcript"]]:
        """Every choice's transcript by index, the first (this one) first."""
        return [(0, self)] + sorted(self.others.items())

    def calls(self) -> list[dict]:
        return [self.tool_calls[i] for i in sorted(self.tool_calls)]

    @property
    def content(self) -> str | None:
        # OpenAI sends content null for a pure tool-call turn, and "" for an empty answer
        return None if self.tool_calls and not self.parts else self.text

    def message(self) -> dict:
        """The assistant message in OpenAI's chat.completion shape."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = self.calls()
        message.update(self.extra)
        if self.reasoning_parts and not any(k in self.extra for k in REASONING_NAMES):
            message["reasoning_content"] = self.reasoning   # LM Studio's and DeepSeek's name
        return message


REASONING_NAMES = ("reasoning_content", "reasoning")


class Seen:
    """A run as a renderer knows it: its identity (given when the renderer is made, before
    any event) and what its events have said so far. `fold`: keep the whole transcript
    (for renderers that repeat the text at the end); without it, only what a chunk's
    header needs (the model the upstream names), which keeps relaying cheap."""

    __slots__ = ("id", "created", "thread_id", "input_estimate", "usage", "status",
                 "transcript", "_model", "_raw", "_fold")

    def __init__(self, run, fold: bool = False) -> None:
        self.id, self.created, self.thread_id = run.id, run.created, run.thread_id
        self._model = run.model            # the model it resolved to, until Start says
        self.input_estimate = 0
        self.usage = None
        self.status = "queued"
        self.transcript = Transcript()
        self._raw: dict | None = None      # the last upstream chunk seen
        self._fold = fold

    def add(self, event) -> None:
        kind = event.kind
        if kind == "start":
            self._model, self.input_estimate = event.model, event.input_tokens or 0
            self.status = "streaming"
        elif kind == "usage":
            self.usage = event
        elif kind == "done":
            self.status = event.status
        elif self._fold or kind == "finish":
            self.transcript.add(event)
        elif getattr(event, "raw", None) is not None:
            self._raw = event.raw

    @property
    def model(self) -> str | None:
        """The model as the upstream reported it last, else the one it was asked for."""
        reported = self._raw.get("model") if self._raw is not None else None
        return reported or self.transcript.model or self._model


# --- the chunk shape -------------------------------------------------------------------------

def finish_reason(reason: str | None, status: str, otherwise: str = "stop") -> str:
    """Why a choice ended, as the OpenAI-shaped replies say it: the model's own reason, else
    "cancelled" for a run ended before the model finished, else `otherwise`."""
    return reason or ("cancelled" if status == "cancelled" else otherwise)


def finishes(chunk: dict) -> bool:
    """Whether a chat.completion.chunk ends a choice (one of its choices has a
    finish_reason). Asked of every relayed chunk until one does: a loop, not any() over a
    generator, which costs twice as much."""
    for one in chunk.get("choices") or ():
        if isinstance(one, dict) and one.get("finish_reason"):
            return True
    return False


class UpstreamChunk(dict):
    """A chat.completion.chunk as parsed from an upstream's stream, with `text`, the JSON it
    was parsed from. Encoding a relayed chunk again costs about a third of all the hub does
    for it; `relayed_text` says when the upstream's own text may be sent instead."""

    __slots__ = ("text",)
    text: str         # set by whoever parsed it: dict's own __init__ is 5× faster than one here


_ID_FIRST = re.compile(r'\{[ \t]*"id"[ \t]*:[ \t]*"([^"\\]*)"')


def relayed_text(raw: dict, start: str) -> str | None:
    """An upstream chunk's own JSON text with its id replaced: `start` is `{"id":` and the
    new id as JSON. None where that would not say exactly what encoding the chunk with the
    new id says: the chunk has no text (one the hub built or changed), or its text has a
    line break (an SSE data line cannot hold one), or escapes a surrogate (a lone one was
    parsed as U+FFFD), or the id is not its first member, or is escaped, or is not its only
    "id" (a second one, in a tool call or as a duplicate key, would need finding; such
    chunks are rare, and are encoded). A quote inside a JSON string is escaped, so `"id"`
    in the text is always a key or a whole value."""
    text = getattr(raw, "text", None)
    if text is None or "\n" in text or "\r" in text or text.count('"id"') != 1 or \
            ("\\" in text and surrogate_escaped(text)):
        return None
    match = _ID_FIRST.match(text)
    if match is None or match.group(1) != raw.get("id"):
        return None
    return start + text[match.end():]


def chunk(chunk_id: str | None, created: int | None, model: str | None, choices: list,
          **extra) -> dict:
    """A chat.completion.chunk; `choices` is [] for the usage chunk."""
    return {"id": chunk_id, "object": "chat.completion.chunk", "created": created,
            "model": model, "choices": choices, **extra}


def choice(delta: dict, finish_reason: str | None = None, logprobs=None) -> dict:
    return {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}


def delta_of(event) -> dict | None:
    """A content event as a chunk's delta; None for events that are not content, or say
    nothing (an Anthropic thinking block's closing signature)."""
    if isinstance(event, TextDelta):
        return {"content": event.text} if event.text else None
    if isinstance(event, ReasoningDelta):
        return {"reasoning_content": event.text} if event.text else None
    if isinstance(event, ToolCallDelta):
        call = {"index": event.index, "function": {"arguments": event.arguments}}
        if event.id is not None:
            call = {"index": event.index, "id": event.id, "type": "function",
                    "function": {"name": event.name or "", "arguments": event.arguments}}
        return {"tool_calls": [call]}
    return None
