"""Anthropic's Messages API (`kind = anthropic`), translated to and from the neutral chunks.

Outgoing: the system prompt is taken out of the messages (Anthropic wants it apart), a
default `max_tokens` is supplied (Anthropic requires one), `stop` becomes `stop_sequences`,
and the key goes in `x-api-key` with `anthropic-version`. Incoming SSE events
(message_start, content_block_delta, message_delta, message_stop, error, ping) become
chat.completion.chunk dicts, with a usage chunk at the end, so every dialect renders an
Anthropic answer exactly like an OpenAI one.
"""

import json
import time
from typing import Iterator
from urllib.parse import urlsplit

from llmhub.cancellation import Gate
from llmhub.context import content_text
from llmhub.errors import UpstreamError
from llmhub.redaction import public_url
from llmhub.upstream.http import Exchange, Pool, Timeouts
from llmhub.upstream.openai import error_message, http_error, sse_events, stream_error

__all__ = ["Anthropic", "to_anthropic"]

VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
          "tool_use": "tool_calls"}


class Anthropic:
    kind = "anthropic"
    label = "Anthropic"

    def __init__(self, config) -> None:
        self.config = config
        self.name = config.name
        self.base_url = public_url(config.base_url.rstrip("/"))   # shown everywhere
        path = urlsplit(self.base_url).path.rstrip("/")
        self.prefix = path[:-3] if path.endswith("/v1") else path
        self.gate = Gate(config.max_concurrent)
        self.pool = Pool()
        self.timeouts = Timeouts.of(config)

    @property
    def provider(self) -> dict:
        return {"name": self.kind, "base_url": self.base_url}

    def headers(self, api_key: str | None = None) -> dict:
        return {"Content-Type": "application/json", "Accept": "text/event-stream",
                "x-api-key": api_key or self.config.api_key, "anthropic-version": VERSION}

    def chat(self, body: dict, api_key: str | None = None,
             extra_headers: dict | None = None) -> "AnthropicCall":
        headers = {**self.headers(api_key), **(extra_headers or {})}
        return AnthropicCall(self, to_anthropic(body), headers, api_key or self.config.api_key)

    def list_models(self) -> list[dict]:
        exchange = Exchange(self.base_url, self.timeouts, self.label, self.pool)
        try:
            response = exchange.send("GET", self.prefix + "/v1/models", None, self.headers())
            raw = exchange.read_all()
            exchange.finish()
        finally:
            exchange.close()
        if response.status >= 400:
            raise http_error(response.status, error_message(raw), self.label)
        return [{"id": m["id"], "object": "model", "created": 0, "owned_by": "anthropic"}
                for m in json.loads(raw).get("data") or () if m.get("id")]

    def probe(self, timeout: float = 3.0) -> dict:
        started = time.perf_counter()
        try:
            self.list_models()
        except UpstreamError as exc:
            return {"reachable": False, "error": exc.message}
        return {"reachable": True,
                "latency_ms": round((time.perf_counter() - started) * 1000, 1)}


def to_anthropic(body: dict) -> dict:
    """An OpenAI chat body as a Messages API body."""
    system, messages = [], []
    for message in body.get("messages") or ():
        if message.get("role") in ("system", "developer"):
            system.append(content_text(message.get("content")))
        else:
            role = "assistant" if message.get("role") == "assistant" else "user"
            messages.append({"role": role, "content": _content(message.get("content"))})
    out = {"model": body.get("model"), "messages": messages, "stream": True,
           "max_tokens": body.get("max_tokens") or body.get("max_completion_tokens")
           or DEFAULT_MAX_TOKENS}
    if system:
        out["system"] = "\n\n".join(system)
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stop"):
        out["stop_sequences"] = [body["stop"]] if isinstance(body["stop"], str) else body["stop"]
    return out


def _content(content):
    if not isinstance(content, list):
        return content or ""
    blocks = []
    for part in content:
        if part.get("type") == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            head, _, data = url.partition(",")
            media = head.removeprefix("data:").removesuffix(";base64")
            blocks.append({"type": "image", "source": {"type": "base64",
                                                       "media_type": media, "data": data}})
    return blocks


class AnthropicCall:
    def __init__(self, upstream: Anthropic, body: dict, headers: dict, key: str) -> None:
        self.upstream, self.body, self.headers, self.key = upstream, body, headers, key
        self.exchange = Exchange(upstream.base_url, upstream.timeouts, upstream.label,
                                 upstream.pool)

    def open(self) -> None:
        response = self.exchange.send("POST", self.upstream.prefix + "/v1/messages",
                                      json.dumps(self.body).encode(), self.headers)
        if response.status >= 400 or "text/event-stream" not in \
                response.getheader("Content-Type", ""):
            message = error_message(self.exchange.read_all())
            raise http_error(response.status if response.status >= 400 else 502, message,
                             self.upstream.label)

    def chunks(self) -> Iterator[dict]:
        state = {"id": "msg", "model": self.body["model"], "input": 0, "output": 0,
                 "finish": None, "role_sent": False}
        for event, payload in sse_events(self.exchange, self.upstream):
            yield from self._translate(event, _decode(payload, self.upstream.label), state)
            if event == "message_stop":
                self.exchange.finish()
                return
        raise UpstreamError(f"{self.upstream.label} ended the stream before message_stop",
                            code="upstream_disconnected")

    def _translate(self, event: str, data: dict, state: dict) -> Iterator[dict]:
        if event == "message_start":
            message = data.get("message") or {}
            state["id"], state["model"] = message.get("id", "msg"), message.get("model",
                                                                               state["model"])
            state["input"] = (message.get("usage") or {}).get("input_tokens", 0)
        elif event == "content_block_delta" and (data.get("delta") or {}).get("type") == \
                "text_delta":
            delta = {"content": data["delta"]["text"]}
            if not state["role_sent"]:
                delta, state["role_sent"] = {"role": "assistant", **delta}, True
            yield self._chunk(state, delta)
        elif event == "message_delta":
            reason = (data.get("delta") or {}).get("stop_reason")
            state["finish"] = FINISH.get(reason, reason)
            state["output"] = (data.get("usage") or {}).get("output_tokens", state["output"])
        elif event == "message_stop":
            yield self._chunk(state, {}, state["finish"] or "stop")
            yield dict(self._chunk(state, {}), choices=[], usage={
                "prompt_tokens": state["input"], "completion_tokens": state["output"],
                "total_tokens": state["input"] + state["output"]})
        elif event == "error":
            raise stream_error(data, self.upstream.label)

    @staticmethod
    def _chunk(state: dict, delta: dict, finish_reason=None) -> dict:
        return {"id": state["id"], "object": "chat.completion.chunk",
                "created": int(time.time()), "model": state["model"],
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish_reason}]}

    def abort(self) -> None:
        self.exchange.abort()

    def close(self) -> None:
        self.exchange.close()


def _decode(payload: str, label: str) -> dict:
    try:
        data = json.loads(payload)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise UpstreamError(f"{label} sent a stream event that is not a JSON object: "
                            f"{payload[:200]!r}", code="upstream_garbage")
    return data
