"""Folding streamed `chat.completion.chunk` objects into one assistant message (sans-IO).

The engine feeds every upstream chunk to a Transcript; dialects read the text, tool calls and
finish reason from it, and the store saves it. Unknown string fields of a delta (reasoning,
reasoning_content, refusal, …) are concatenated and kept, so nothing the model said is lost.
"""

__all__ = ["Transcript"]


class Transcript:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.extra: dict[str, str] = {}
        self.tool_calls: dict[int, dict] = {}
        self.finish_reason: str | None = None
        self.usage: dict | None = None
        self.model: str | None = None
        self.system_fingerprint: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def add(self, chunk: dict) -> str:
        """Fold one chunk in; returns the content text it carried ('' if none)."""
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        self.model = chunk.get("model") or self.model
        self.system_fingerprint = chunk.get("system_fingerprint") or self.system_fingerprint
        text = ""
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue                   # the hub asks for one choice; ignore strays
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            delta = choice.get("delta") or choice.get("message") or {}
            text += self._fold_delta(delta)
        return text

    def _fold_delta(self, delta: dict) -> str:
        text = ""
        for key, value in delta.items():
            if key == "content":
                if isinstance(value, str) and value:
                    self.parts.append(value)
                    text = value
            elif key == "tool_calls" and isinstance(value, list):
                self._fold_tool_calls(value)
            elif key != "role" and isinstance(value, str) and value:
                self.extra[key] = self.extra.get(key, "") + value
        return text

    def _fold_tool_calls(self, calls: list) -> None:
        for position, call in enumerate(calls):
            if not isinstance(call, dict):
                continue
            slot = self.tool_calls.setdefault(call.get("index", position), {
                "id": None, "type": "function", "function": {"name": "", "arguments": ""}})
            if call.get("id"):
                slot["id"] = call["id"]
            if call.get("type"):
                slot["type"] = call["type"]
            function = call.get("function") or {}
            for part in ("name", "arguments"):
                if isinstance(function.get(part), str):
                    slot["function"][part] += function[part]

    def message(self) -> dict:
        """The assistant message in OpenAI's chat.completion shape."""
        # OpenAI sends content null for a pure tool-call turn, and "" for an empty answer
        content = None if self.tool_calls and not self.parts else self.text
        message = {"role": "assistant", "content": content}
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        message.update(self.extra)
        return message
