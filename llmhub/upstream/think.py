"""`<think>…</think>` in a model's text, split out as reasoning (`[models] think_tags`), or
reasoning put back inline as such a block (`[models] think_inline`).

Models such as QwQ and the DeepSeek-R1 distills write their reasoning into the answer,
inside a `<think>` block at its start, when the server does not separate it. For the models
named in `think_tags`, the block becomes ReasoningDelta events and the rest TextDelta
events, however the tags are cut across chunks. Only a block that opens the answer counts:
a `<think>` later in the text is the model talking about tags. The split events have no
`raw`, so the OpenAI dialect sends them as `reasoning_content` and `content` fields.

The reverse is for clients that show reasoning only inline (older chat UIs): for the
models in `think_inline`, reasoning becomes text wrapped in `<think>…</think>` before the
answer. Every content event then loses its raw chunk, which would carry the reasoning a
second time.
"""

from fnmatch import fnmatchcase
from typing import Iterable, Iterator

import dataclasses

from llmhub.events import ReasoningDelta, TextDelta

__all__ = ["split_think", "join_think", "ThinkSplit", "wants_split"]

OPEN, CLOSE = "<think>", "</think>"


def wants_split(model: str, patterns: tuple) -> bool:
    return any(fnmatchcase(model.lower(), p.lower()) for p in patterns)


def split_think(events: Iterable) -> Iterator:
    splitter = ThinkSplit()
    for event in events:
        if isinstance(event, TextDelta) and not event.choice:
            yield from splitter.feed(event.text)
        else:
            yield from splitter.flush()
            yield event
    yield from splitter.flush()


def join_think(events: Iterable) -> Iterator:
    thinking = False
    for event in events:
        if getattr(event, "choice", 0) or not hasattr(event, "raw") or event.kind == "usage":
            yield event
        elif isinstance(event, ReasoningDelta):
            if event.text:
                yield TextDelta(("" if thinking else OPEN) + event.text)
                thinking = True
        else:
            if thinking:
                yield TextDelta(CLOSE + "\n\n")
                thinking = False
            yield dataclasses.replace(event, raw=None)
    if thinking:
        yield TextDelta(CLOSE)


class ThinkSplit:
    def __init__(self) -> None:
        self.state = "start"     # start → think → after → text, or start → text
        self.pending = ""

    def feed(self, text: str) -> list:
        self.pending += text
        out: list = []
        while self.pending and self._step(out):
            pass
        return out

    def _step(self, out: list) -> bool:
        """Move on as far as the pending text allows; False when it must wait for more."""
        if self.state == "start":
            head = self.pending.lstrip()
            if OPEN.startswith(head):
                return False                     # may still become <think>
            self.state = "think" if head.startswith(OPEN) else "text"
            if self.state == "think":
                self.pending = head[len(OPEN):]
            return True
        if self.state == "think":
            end = self.pending.find(CLOSE)
            if end < 0:
                keep = _partial_tag(self.pending)
                self._emit(out, ReasoningDelta, len(self.pending) - keep)
                return False
            self._emit(out, ReasoningDelta, end)
            self.pending, self.state = self.pending[len(CLOSE):], "after"
            return True
        if self.state == "after":                # the blank lines after </think>
            self.pending = self.pending.lstrip()
            if not self.pending:
                return False
            self.state = "text"
        self._emit(out, TextDelta, len(self.pending))
        return False

    def _emit(self, out: list, kind, length: int) -> None:
        if length > 0:
            out.append(kind(self.pending[:length]))
        self.pending = self.pending[length:]

    def flush(self) -> list:
        """What is held back, as what it turned out to be."""
        if not self.pending:
            return []
        kind = ReasoningDelta if self.state == "think" else TextDelta
        held, self.pending = self.pending, ""
        if self.state == "start":
            self.state = "text"
        return [kind(held)] if self.state != "after" else []


def _partial_tag(text: str) -> int:
    """How many of text's last characters could be the start of `</think>`."""
    for size in range(min(len(CLOSE) - 1, len(text)), 0, -1):
        if CLOSE.startswith(text[-size:]):
            return size
    return 0
