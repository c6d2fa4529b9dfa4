"""Anthropic's Messages API as an upstream (`kind = anthropic`).

The translation both ways is formats/anthropic_messages.py's: a neutral chat body goes out as a
Messages body (system apart, a default `max_tokens`, tools, tool results, `stop_sequences`),
and the SSE events that come back (message_start, content_block_*, message_delta,
message_stop, error, ping) become typed run events, so every dialect renders an Anthropic
answer, tool calls and thinking included, exactly like an OpenAI one. The key goes in
`x-api-key`, with `anthropic-version`.

A Messages client's own request (generation.Native) is relayed instead of rebuilt: the
neutral form has no room for `cache_control`, system blocks, `context_management` and the
other fields Anthropic adds, and without the cache marks every turn of an agent pays full
price for its long prefix. `relay` sends that body as it came (the model renamed, always
streamed), with the client's `anthropic-version` and `anthropic-beta` headers.
"""

import json
import time
from typing import Iterator
from urllib.parse import urlsplit

from llmhub.config import UpstreamConfig
from llmhub.errors import UpstreamError
from llmhub.events import token_count
from llmhub.formats.anthropic_messages import StreamReader, to_messages_body
from llmhub.redaction import public_url, redact, upstream_secrets
from llmhub.upstream.exchange import Exchange, Pool, Timeouts
from llmhub.upstream.gate import Gate
from llmhub.upstream.openai import error_message, http_error, sse_events, stream_error
from llmhub.wire import json_pieces, json_value

__all__ = ["Anthropic"]

# What /v1/messages/count_tokens takes: it refuses the rest (max_tokens, stream, sampling)
COUNTED = ("model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers",
           "context_management")
VERSION = "2023-06-01"


class Anthropic:
    kind = "anthropic"
    label = "Anthropic"
    speaks = "anthropic"     # a Messages client's request is relayed as it came (relay)
    relays = False           # no rerank, audio or images endpoints to pass requests on to

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self.name = config.name
        self.base_url = public_url(config.base_url.rstrip("/"))   # shown everywhere
        path = urlsplit(self.base_url).path.rstrip("/")
        self.prefix = path[:-3] if path.endswith("/v1") else path
        self.gate = Gate(config.max_concurrent, config.max_queued)
        self.pool = Pool()
        self.timeouts = Timeouts.of(config)
        self.secrets = upstream_secrets(config)   # masked in what the server echoes

    @property
    def provider(self) -> dict:
        return {"name": self.kind, "base_url": self.base_url}

    def headers(self, api_key: str | None = None) -> dict:
        return {"Content-Type": "application/json", "Accept": "text/event-stream",
                "x-api-key": api_key or self.config.api_key, "anthropic-version": VERSION}

    def chat(self, body: dict, api_key: str | None = None,
             extra_headers: dict | None = None) -> "AnthropicCall":
        headers = {**self.headers(api_key), **(extra_headers or {})}
        return AnthropicCall(self, to_messages_body(body), headers, api_key or self.config.api_key)

    def relay(self, body: dict, api_key: str | None = None,
              extra_headers: dict | None = None) -> "AnthropicCall":
        """A Messages body as the client sent it; the client's `anthropic-version` and
        `anthropic-beta` (in `extra_headers`) win over the hub's default version."""
        headers = {**self.headers(api_key), **(extra_headers or {})}
        return AnthropicCall(self, dict(body, stream=True), headers,
                             api_key or self.config.api_key)

    def count_input(self, body: dict) -> int | None:
        """Anthropic's own count of a neutral chat's prompt (POST /v1/messages/count_tokens)."""
        return self.count_native(to_messages_body(body))

    def count_native(self, body: dict, extra_headers: dict | None = None) -> int | None:
        """Anthropic's count of a Messages body; None if it could not be asked (the hub
        estimates then); a request it refuses is the client's error, with its status."""
        exchange = Exchange(self.base_url, self.timeouts, self.label, self.pool)
        payload = json.dumps({k: body[k] for k in COUNTED if k in body}).encode()
        headers = {**self.headers(), "Accept": "application/json", **(extra_headers or {})}
        try:
            response = exchange.send("POST", self.prefix + "/v1/messages/count_tokens",
                                     payload, headers)
            raw = exchange.read_all(self.config.max_reply_bytes)
            exchange.finish()
        except UpstreamError:
            return None
        finally:
            exchange.close()
        if response.status in (400, 413):
            raise http_error(response.status, error_message(raw), self.label,
                             secrets=self.secrets)
        tokens = (_json_object(raw) or {}).get("input_tokens")
        return token_count(tokens) if response.status == 200 else None

    def list_models(self) -> list[dict]:
        exchange = Exchange(self.base_url, self.timeouts, self.label, self.pool)
        try:
            response = exchange.send("GET", self.prefix + "/v1/models", None, self.headers())
            raw = exchange.read_all(self.config.max_reply_bytes)
            exchange.finish()
        finally:
            exchange.close()
        if response.status >= 400:
            raise http_error(response.status, error_message(raw), self.label,
                             secrets=self.secrets)
        return [{"id": m["id"], "object": "model", "created": 0, "owned_by": "anthropic"}
                for m in json.loads(raw).get("data") or () if m.get("id")]

    def check(self, timeout: float) -> dict:
        return {"models": [m["id"] for m in self.list_models()], "loaded": None, "slots": {}}

    def probe(self, timeout: float = 3.0) -> dict:
        started = time.perf_counter()
        try:
            self.list_models()
        except UpstreamError as exc:
            return {"reachable": False, "error": exc.message, "reason": exc.reason}
        return {"reachable": True,
                "latency_ms": round((time.perf_counter() - started) * 1000, 1)}


class AnthropicCall:
    def __init__(self, upstream: Anthropic, body: dict, headers: dict, key: str) -> None:
        self.upstream, self.body, self.headers, self.key = upstream, body, headers, key
        self.secrets = (key, *upstream.secrets) if key else upstream.secrets
        self.exchange = Exchange(upstream.base_url, upstream.timeouts, upstream.label,
                                 upstream.pool)

    def open(self) -> None:
        response = self.exchange.send("POST", self.upstream.prefix + "/v1/messages",
                                      json_pieces(self.body), self.headers)
        if response.status >= 400 or "text/event-stream" not in \
                (response.getheader("Content-Type", "") or ""):
            message = error_message(self.exchange.read_some())
            raise http_error(response.status if response.status >= 400 else 502, message,
                             self.upstream.label, secrets=self.secrets)

    def events(self) -> Iterator:
        """The reply as typed run events (anthropic_messages.StreamReader)."""
        reader = StreamReader(self.body["model"])
        for event, payload in sse_events(self.exchange, self.upstream):
            data = _decode(payload, self.upstream.label, self.secrets)
            if event == "error":
                raise stream_error(data, self.upstream.label, self.secrets)
            yield from reader.read(event, data)
            if reader.stopped:
                self.exchange.finish()
                return
        raise UpstreamError(f"{self.upstream.label} ended the stream before message_stop",
                            code="upstream_disconnected", reason="disconnected",
                            where=self.upstream.label)

    def abort(self) -> None:
        self.exchange.abort()

    def close(self) -> None:
        self.exchange.close()


def _json_object(raw: bytes) -> dict | None:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):     # deep nesting is RecursionError, not ValueError
        return None
    return value if isinstance(value, dict) else None


def _decode(payload: str, label: str, secrets=()) -> dict:
    """One stream event's JSON object; anything else (not JSON, not an object, nested past
    what Python's json can read) is a 502 upstream_garbage, as on the OpenAI path."""
    try:
        data = json_value(payload)
    except (ValueError, RecursionError):     # 50,000 deep: RecursionError
        data = None
    if not isinstance(data, dict):
        raise UpstreamError(f"{label} sent a stream event that is not a JSON object: "
                            f"{redact(payload[:200], secrets)!r}", code="upstream_garbage",
                            reason="garbage", where=label)
    return data
