"""OpenAI-compatible upstreams (`kind = openai`), the streaming chat call they share, and
the adapter from their chat.completion.chunk objects to typed run events (events.py).

The hub always streams from the upstream and always asks for
`stream_options.include_usage`, even for a non-streaming client: streaming is what makes
cancel and disconnect work, and usage only comes in a stream when asked for (lmstudio.md §1.2).
What the parser tolerates, because real servers do it: a usage chunk with empty `choices`,
usage on the finish chunk, HTTP 200 with an `error` body, `event: error` frames, a JSON body
where a stream was asked for, and a stream that ends without `[DONE]` after its finish chunk.

The adapter reads `content` as text, `reasoning_content` and `reasoning` as reasoning (the
two names servers use), `tool_calls` as tool call pieces, `logprobs.content` as logprobs, a
`finish_reason` as the model's finish, and `usage` as usage; every event made from a chunk
keeps the chunk in `raw`, so the OpenAI dialect relays what the upstream sent. Usage carries
the cached prompt tokens (`prompt_tokens_details.cached_tokens`, else llama.cpp's
`timings.cache_n`), a finish llama.cpp's `stopping_word`, and an overflow error the token
numbers its message gives (overflow_counts). `count_input` counts a chat's prompt with
llama.cpp's own template and tokenizer, where the server has them.
"""

import base64
import json
import re
import time
from typing import Iterator
from urllib.parse import unquote, urlsplit

from llmhub.config import UpstreamConfig
from llmhub.errors import UpstreamError
from llmhub.events import (Finish, Logprobs, ReasoningDelta, TextDelta, ToolCallDelta, Usage,
                           token_count)
from llmhub.redaction import public_url, redact, upstream_secrets
from llmhub.transcript import UpstreamChunk, choice as build_choice, chunk as build_chunk, \
    finishes
from llmhub.upstream.base import Upstream
from llmhub.upstream.exchange import Exchange, Pool, Timeouts, retry_after
from llmhub.upstream.gate import Gate
from llmhub.upstream.sse import EventTooLarge, SSEParser
from llmhub.wire import json_pieces, json_value

__all__ = ["OpenAICompatible", "ChatCall", "error_message", "http_error", "stream_error",
           "sse_events", "chunk_events"]

_MODEL_MISSING = re.compile(r"no models? loaded|not found|invalid model|model_not_found|"
                            r"not loaded|does not exist|unknown model", re.I)
_NONE_LOADED = re.compile(r"no models? loaded", re.I)
REASONING_FIELDS = ("reasoning_content", "reasoning")


class OpenAICompatible:
    kind = "openai"
    label = "upstream"
    accepts_token_ids = True   # embeddings of token-id arrays (OpenAI, vLLM take them)
    tokenizer = True     # may have llama.cpp's /tokenize (count_tokens asks once)
    relays = True        # rerank, tokenize, audio, images may be passed on (passthrough.py)

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self.name = config.name
        self.base_url = public_url(self.normalise_url(config.base_url))   # shown everywhere
        self.prefix = urlsplit(self.base_url).path.rstrip("/")
        self.basic_auth = basic_auth(config.base_url)   # http://user:pw@host, used, never shown
        # A server echoes the key it refused: masked in every error made of what it said,
        # before a probe, a model load or the startup line shows that error.
        self.secrets = upstream_secrets(config)
        self.gate = Gate(config.max_concurrent, config.max_queued)
        self.pool = Pool()
        self.timeouts = Timeouts.of(config)
        self.has_tokenizer = self.tokenizer   # until it answers that it has none
        self.has_template = self.tokenizer    # llama.cpp's /apply-template, likewise

    @staticmethod
    def normalise_url(url: str) -> str:
        return url.rstrip("/")

    @property
    def provider(self) -> dict:
        return {"name": self.kind, "base_url": self.base_url}

    def headers(self, api_key: str | None = None) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if api_key or self.config.api_key:
            headers["Authorization"] = f"Bearer {api_key or self.config.api_key}"
        elif self.basic_auth:
            headers["Authorization"] = self.basic_auth
        return headers

    def prepare(self, body: dict) -> dict:
        """Kind-specific adjustments to an outgoing chat body (none for plain OpenAI)."""
        return body

    def chat(self, body: dict, api_key: str | None = None,
             extra_headers: dict | None = None) -> "ChatCall":
        """A call for this body; `api_key` replaces the configured key for this call only."""
        return ChatCall(self, self.prepare(streamed(body)), self._headers(api_key, extra_headers),
                        api_key or self.config.api_key)

    def complete(self, body: dict, api_key: str | None = None,
                 extra_headers: dict | None = None) -> "ChatCall":
        """A legacy text completion (`/completions`: a prompt, `suffix` for fill-in-the-
        middle), streamed and read into the same typed events as a chat."""
        return ChatCall(self, streamed(body), self._headers(api_key, extra_headers),
                        api_key or self.config.api_key, path="/completions",
                        adapt=text_events, unwrap=lambda whole: [whole])

    def embeddings(self, body: dict) -> dict:
        """`/embeddings`, answered whole; token-id input is refused here where the server
        cannot take it (`accepts_token_ids`)."""
        return self.get_json(self.prefix + "/embeddings", self.timeouts.total, body=body)

    def _headers(self, api_key: str | None, extra: dict | None) -> dict:
        return {**self.headers(api_key), **(extra or {})}

    # -- small JSON requests (models, probes, tokens) ----------------------------------------
    def get_json(self, path: str, timeout: float = 10.0, body: dict | None = None) -> dict:
        """GET `path` (POST with `body`) and read its JSON; UpstreamError on an error."""
        timeouts = Timeouts(min(timeout, self.timeouts.connect), timeout, timeout, timeout)
        exchange = Exchange(self.base_url, timeouts, self.label, self.pool)
        payload = json.dumps(body, ensure_ascii=False).encode() if body is not None else None
        try:
            response = exchange.send("POST" if payload else "GET", path, payload,
                                     self.headers())
            raw = exchange.read_all(self.config.max_reply_bytes)
            exchange.finish()
        finally:
            exchange.close()
        obj = _parse_json(raw)
        if response.status >= 400 or (isinstance(obj, dict) and "error" in obj):
            raise http_error(response.status, error_message(raw), self.label,
                             secrets=self.secrets)
        return obj if isinstance(obj, dict) else {}

    def count_input(self, body: dict) -> int | None:
        """The upstream's own count of a chat's prompt as the model sees it: llama.cpp's
        chat template rendered (`POST /apply-template`: the messages and tools → {"prompt"})
        and tokenized (`/tokenize`); a server without /apply-template (older llama.cpp)
        has the messages' text tokenized. None where it has no tokenizer."""
        if not self.has_tokenizer:
            return None
        prompt = self.rendered(body)
        if prompt is None:
            tools = json.dumps(body["tools"], ensure_ascii=False) if body.get("tools") else ""
            prompt = "\n".join(f"{m.get('role')}: {_text_of(m.get('content'))}"
                               for m in body.get("messages") or ()) + "\n" + tools
        return self.count_tokens(prompt)

    def rendered(self, body: dict) -> str | None:
        """The prompt llama.cpp's chat template makes of a chat; None without the endpoint
        (found out once) or when it refused this one (tools without --jinja)."""
        if not self.has_template:
            return None
        asked = {k: body[k] for k in ("messages", "tools", "tool_choice") if body.get(k)}
        try:
            prompt = self.get_json(self.prefix.removesuffix("/v1") + "/apply-template",
                                   body=asked).get("prompt")
        except UpstreamError as exc:
            # no such route: 404, or LM Studio's HTTP 200 "Unexpected endpoint"
            self.has_template = exc.upstream_status not in (200, 404, 405)
            return None
        return prompt if isinstance(prompt, str) else None

    def count_tokens(self, text: str) -> int | None:
        """The upstream's own count of `text`, from llama.cpp's `POST /tokenize`; None where
        the server has no tokenizer (found out once, then not asked again) or did not say."""
        if not self.has_tokenizer:
            return None
        try:
            tokens = self.get_json(self.prefix.removesuffix("/v1") + "/tokenize",
                                   body={"content": text}).get("tokens")
        except UpstreamError as exc:
            self.has_tokenizer = exc.upstream_status is None   # it answered: it has none
            return None
        if not isinstance(tokens, list):
            self.has_tokenizer = False
            return None
        return len(tokens)

    def list_models(self) -> list[dict]:
        data = self.get_json(self.prefix + "/models").get("data")
        return [m for m in data or () if isinstance(m, dict) and m.get("id")]

    def probe(self, timeout: float = 3.0) -> dict:
        started = time.perf_counter()
        try:
            self.get_json(self.prefix + "/models", timeout)
        except UpstreamError as exc:
            return {"reachable": False, "error": exc.message, "reason": exc.reason}
        return {"reachable": True,
                "latency_ms": round((time.perf_counter() - started) * 1000, 1)}

    def check(self, timeout: float) -> dict:
        """What a health probe learns (health.py reads it): the models listed, and, where
        the server says, which are loaded and how many requests each serves at once.
        Raises UpstreamError when the server cannot be asked."""
        listed = self.get_json(self.prefix + "/models", timeout).get("data") or ()
        return {"models": [m["id"] for m in listed if isinstance(m, dict) and m.get("id")],
                "loaded": None, "slots": {}}


class ChatCall:
    """One streamed chat completion: open(), then chunks(); abort() from any thread."""

    def __init__(self, upstream: OpenAICompatible, body: dict, headers: dict,
                 key: str = "", path: str = "/chat/completions", adapt=None,
                 unwrap=None) -> None:
        self.upstream = upstream
        self.body = body
        self.headers = headers
        self.key = key          # never repeated in an error message
        self.secrets = (key, *upstream.secrets) if key else upstream.secrets
        self.path = path
        self.adapt = adapt or chunk_events                  # a chunk → its typed events
        self.unwrap = unwrap or chunks_from_completion      # a whole reply → its chunks
        self.exchange = Exchange(upstream.base_url, upstream.timeouts, upstream.label,
                                 upstream.pool)
        self._whole: dict | None = None

    def open(self) -> None:
        """Send the request; raise UpstreamError unless the upstream accepted it."""
        payload = json_pieces(self.body)     # a large body is never held twice
        response = self.exchange.send("POST", self.upstream.prefix + self.path, payload,
                                      self.headers)
        del payload
        content_type = response.getheader("Content-Type", "") or ""
        if response.status >= 400:
            body = self.exchange.read_some()
            wait = retry_after(response.getheader("Retry-After")) \
                if response.status in (429, 503) else None
            raise http_error(response.status, error_message(body), self.upstream.label,
                             error_type(body), retry_after=wait, secrets=self.secrets)
        if "text/event-stream" not in content_type:
            # A JSON body where a stream was asked for: an error with HTTP 200 (LM Studio's
            # unknown routes), or a server that ignores `stream`.
            body = self.exchange.read_all(self.upstream.config.max_reply_bytes)
            obj = _parse_json(body)
            if not isinstance(obj, dict) or "error" in obj or "choices" not in obj:
                raise http_error(502, error_message(body), self.upstream.label,
                                 error_type(body), secrets=self.secrets)
            self.exchange.finish()
            self._whole = obj

    def events(self) -> Iterator:
        """The reply as typed run events."""
        for chunk in self.chunks():
            yield from self.adapt(chunk)

    def chunks(self) -> Iterator[dict]:
        if self._whole is not None:
            yield from self.unwrap(self._whole)
            return
        finished = False
        for event, payload in self._events():
            chunk = self._decode(event, payload)
            if chunk is None:                  # [DONE]
                self.exchange.finish()
                return
            finished = finished or finishes(chunk)
            yield chunk
        if not finished:
            raise UpstreamError(f"{self.upstream.label} at {self.upstream.base_url} ended the "
                                "stream before it finished", code="upstream_disconnected",
                                reason="disconnected", where=self.upstream.label)

    def _events(self) -> Iterator[tuple[str, str]]:
        return sse_events(self.exchange, self.upstream)

    def _decode(self, event: str, payload: str) -> dict | None:
        if payload.strip() == "[DONE]":
            return None
        try:
            obj = json_value(payload)
        except (ValueError, RecursionError):     # deep nesting is RecursionError
            raise UpstreamError(f"{self.upstream.label} sent a stream event that is not JSON: "
                                f"{redact(payload[:200], self.secrets)!r}",
                                code="upstream_garbage", reason="garbage",
                                where=self.upstream.label) from None
        if event == "error" or not isinstance(obj, dict) or \
                ("error" in obj and "choices" not in obj):
            raise stream_error(obj, self.upstream.label, self.secrets)
        chunk = UpstreamChunk(obj)
        chunk.text = payload
        return chunk

    def abort(self) -> None:
        self.exchange.abort()

    def close(self) -> None:
        self.exchange.close()


def streamed(body: dict) -> dict:
    """Always a stream, always with usage: what makes cancel and usage work (docstring)."""
    body = dict(body, stream=True)
    body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    return body


def basic_auth(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.username is None:
        return None
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def sse_events(exchange: Exchange, upstream: Upstream) -> Iterator[tuple[str, str]]:
    """An upstream reply's SSE events, each bounded by [upstream] max_event_bytes: past it
    the upstream is broken, and the run ends with a 502 rather than a growing buffer."""
    parser = SSEParser(upstream.config.max_event_bytes)
    try:
        while data := exchange.read():
            yield from parser.feed(data)
        yield from parser.close()
    except EventTooLarge as exc:
        raise UpstreamError(f"{upstream.label} at {upstream.base_url} sent {exc} "
                            "([upstream] max_event_bytes)", code="upstream_garbage",
                            reason="garbage", where=upstream.label) from None


# --- error shapes ----------------------------------------------------------------------------

def _parse_json(body: bytes):
    try:
        return json.loads(body.decode("utf-8", "replace"))
    except (ValueError, RecursionError):     # deep nesting is RecursionError
        return None


def error_message(body: bytes) -> str:
    """The message inside any of the error envelopes LM Studio and friends send."""
    message = _message_in(_parse_json(body))
    return message or body.decode("utf-8", "replace").strip()[:500] or "(empty body)"


def _message_in(obj) -> str | None:
    if not isinstance(obj, dict):
        return None
    error = obj.get("error", obj)
    if isinstance(error, str):
        return error
    if isinstance(error, dict):
        for key in ("message", "detail", "error"):
            if isinstance(error.get(key), str):
                return error[key]
    return None


def error_type(body: bytes) -> str:
    """The `type` inside an error envelope (llama.cpp's exceed_context_size_error), or ''."""
    obj = _parse_json(body)
    error = obj.get("error") if isinstance(obj, dict) else None
    return error.get("type") or "" if isinstance(error, dict) else ""


def http_error(status: int, message: str, label: str, kind: str = "",
               retry_after: float | None = None, secrets=()) -> UpstreamError:
    """Keep the upstream's message, with `secrets` (the keys it was sent) masked; keep 4xx
    statuses; a plain 500 becomes 502 Bad Gateway; a context overflow is a 400
    `context_length_exceeded`, whatever the upstream said."""
    message = redact(message, secrets)
    code = _code_for(f"{message} {kind}")
    missing = code != "context_length_exceeded" and bool(_MODEL_MISSING.search(message)) \
        and status in (400, 404)
    code = "model_not_found" if missing else code
    if code == "context_length_exceeded":
        status = 400
    tokens, limit = overflow_counts(message) if code == "context_length_exceeded" else (None,
                                                                                       None)
    return UpstreamError(message, status=502 if status == 500 or status < 400 else status,
                         code=code, param="model" if missing else None,
                         model_unavailable=missing or status >= 500,
                         reason=_reason(message, code), detail=message, where=label,
                         upstream_status=status, retry_after=retry_after,
                         prompt_tokens=tokens, context_length=limit)


def stream_error(obj, label: str, secrets=()) -> UpstreamError:
    """An error frame inside a stream, with `secrets` masked as in http_error."""
    message = redact(_message_in(obj) or json.dumps(obj)[:500], secrets)
    kind = (obj.get("error") or {}).get("type", "") if isinstance(obj, dict) and \
        isinstance(obj.get("error"), dict) else ""
    code = _code_for(f"{message} {kind}")
    status = 400 if code == "context_length_exceeded" else 502
    tokens, limit = overflow_counts(message) if status == 400 else (None, None)
    return UpstreamError(f"{label}: {message}" if status == 502 else message, status=status,
                         code=code, reason=_reason(message, code),
                         detail=message, where=label, prompt_tokens=tokens,
                         context_length=limit)


def _reason(message: str, code: str) -> str:
    if _NONE_LOADED.search(message):
        return "no_model_loaded"
    return {"model_not_found": "model_not_found",
            "context_length_exceeded": "context_length"}.get(code, "refused")


# How each server says the prompt does not fit: LM Studio ("context length", "context the
# overflows"), llama.cpp ("exceeds the available context size", exceed_context_size_error,
# n_ctx), vLLM ("maximum context length"), Anthropic ("prompt is too long"), OpenAI.
_OVERFLOW = re.compile(r"context length|context size|context window|n_ctx|context the "
                       r"overflows|exceed_context_size|context_length_exceeded|prompt is "
                       r"too long", re.I)


# The numbers in those messages, (tokens sent, tokens that fit) in the order each names them:
# llama.cpp "request (N tokens) exceeds the available context size (M tokens)"; LM Studio
# "(n_keep: N>= n_ctx: M)", "The input has N tokens, but the context length only supports
# M tokens", "Trying to keep the first N tokens when context the overflows" (no M);
# Anthropic "prompt is too long: N tokens > M maximum"; vLLM and OpenAI "maximum context
# length is M tokens. However, you requested N tokens" (or "your messages resulted in N").
_SENT_FIT = re.compile(r"request \((\d+) tokens\) exceeds the available context size \((\d+)|"
                       r"n_keep: (\d+)\s*>=?\s*n_ctx: (\d+)|input has (\d+) tokens, but the "
                       r"context length only supports (\d+)|too long: (\d+) tokens > (\d+)", re.I)
_FIT_SENT = re.compile(r"maximum context length is (\d+) tokens.*?(?:requested|resulted in|"
                       r"request has|contains?) (\d+)", re.I | re.S)
_SENT_ONLY = re.compile(r"keep the first (\d+) tokens", re.I)


def overflow_counts(message: str) -> tuple[int | None, int | None]:
    """(tokens sent, context length) as an overflow message says them; None where not."""
    if match := _SENT_FIT.search(message):
        numbers = [_count(n) for n in match.groups() if n is not None]
        return numbers[0], numbers[1]
    if match := _FIT_SENT.search(message):
        return _count(match.group(2)), _count(match.group(1))
    if match := _SENT_ONLY.search(message):
        return _count(match.group(1)), None
    fit = re.search(r"maximum context length is (\d+)", message, re.I)
    return None, _count(fit.group(1)) if fit else None


def _count(digits: str) -> int | None:
    """A number an upstream wrote in its message, if it is a sane count (thousands of
    digits would take int() itself past its limit)."""
    return token_count(int(digits)) if len(digits) <= 10 else None


def _code_for(message: str) -> str:
    return "context_length_exceeded" if _OVERFLOW.search(message) else "upstream_error"


# --- chunks as typed events ------------------------------------------------------------------

def chunk_events(chunk: dict) -> list:
    """One chat.completion.chunk as typed events, each keeping the chunk as `raw`."""
    usage = chunk.get("usage")
    events = []
    if chunk.get("choices"):
        raw = {k: v for k, v in chunk.items() if k != "usage"} if usage else chunk
        for one in chunk["choices"]:
            if isinstance(one, dict) and isinstance(one.get("index", 0), int):
                events += _choice_events(one, chunk, raw)
        if not events:               # a role-only chunk: relayed, so the client sees it
            events.append(TextDelta("", raw))
    if isinstance(usage, dict):
        events.append(usage_event(usage, chunk.get("timings")))
    return events


def _choice_events(choice: dict, chunk: dict, raw: dict) -> list:
    # Every chunk of a long stream comes through here: each test is a key lookup.
    delta = choice.get("delta") or choice.get("message") or {}
    index = choice.get("index", 0)
    events: list = []
    if "reasoning_content" in delta or "reasoning" in delta:
        events += [ReasoningDelta(delta[name], raw, choice=index) for name in REASONING_FIELDS
                   if isinstance(delta.get(name), str) and delta[name]]
    text = delta.get("content")
    if text and isinstance(text, str):
        events.append(TextDelta(text, raw, index))
    if "tool_calls" in delta:
        events += _tool_call_events(delta["tool_calls"], raw, index)
    logprobs = choice.get("logprobs")
    if logprobs and isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
        events.append(Logprobs(logprobs["content"], raw, index))
    if choice.get("finish_reason"):
        events.append(Finish(str(choice["finish_reason"]), chunk.get("model"),
                             chunk.get("system_fingerprint"), raw, index,
                             stopping_word(chunk, choice)))
    return events


def stopping_word(chunk: dict, choice: dict) -> str | None:
    """The stop sequence llama.cpp says it stopped at (`stopping_word`, with `stop_type`
    "word"), in its final chunk or choice in some versions, or in `__verbose`; OpenAI's
    finish_reason "stop" does not say which, or whether one did."""
    for where in (choice, chunk, chunk.get("__verbose")):
        word = where.get("stopping_word") if isinstance(where, dict) else None
        if isinstance(word, str) and word:
            return word
    return None


def _tool_call_events(calls, raw: dict, choice: int) -> list:
    events = []
    for position, call in enumerate(calls if isinstance(calls, list) else ()):
        if isinstance(call, dict):
            function = call.get("function") or {}
            events.append(ToolCallDelta(
                call.get("index", position), call.get("id"), _str(function.get("name")),
                _str(function.get("arguments")) or "", raw, choice))
    return events


def text_events(chunk: dict) -> list:
    """One legacy text_completion chunk as typed events: `text`, the legacy logprobs
    (parallel lists) as per-token entries, the finish, the usage."""
    usage = chunk.get("usage")
    raw = {k: v for k, v in chunk.items() if k != "usage"} if usage else chunk
    events: list = []
    for one in chunk.get("choices") or ():
        if not isinstance(one, dict) or not isinstance(one.get("index", 0), int):
            continue
        index, text = one.get("index", 0), one.get("text")
        events.append(TextDelta(text if isinstance(text, str) else "", raw, index))
        if isinstance(one.get("logprobs"), dict):
            events.append(Logprobs(per_token(one["logprobs"]), raw, index))
        if one.get("finish_reason"):
            events.append(Finish(str(one["finish_reason"]), chunk.get("model"),
                                 chunk.get("system_fingerprint"), raw, index))
    if isinstance(usage, dict):
        events.append(usage_event(usage, chunk.get("timings")))
    return events


def per_token(legacy: dict) -> list:
    """Legacy logprobs {tokens, token_logprobs, top_logprobs, text_offset} as entries."""
    lists = [legacy.get(k) or [] for k in ("tokens", "token_logprobs", "top_logprobs",
                                           "text_offset")]
    return [{"token": t, "logprob": lp, "top_logprobs": top, "text_offset": offset}
            for t, lp, top, offset in zip(lists[0], *[lst + [None] * (len(lists[0]) - len(lst))
                                                      for lst in lists[1:]])]


def _text_of(content) -> str:
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _str(value) -> str | None:
    return value if isinstance(value, str) else None


def usage_event(usage: dict, timings=None) -> Usage:
    """The upstream's counts as they came; one that is not a count is None, for the engine
    to estimate (it knows what was sent and said). Cached prompt tokens are OpenAI's
    `prompt_tokens_details.cached_tokens`, else llama.cpp's `timings.cache_n` (the
    prompt tokens it reused from its KV cache); both are part of `prompt_tokens`."""
    prompt, completion = (usage.get(k, 0) for k in ("prompt_tokens", "completion_tokens"))
    details = usage.get("completion_tokens_details")
    reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
    return Usage(prompt if is_count(prompt) else None,
                 completion if is_count(completion) else None,
                 reasoning if is_count(reasoning) else None, raw=usage,
                 cached_tokens=cached_of(usage, timings))


def cached_of(usage: dict, timings) -> int | None:
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if not is_count(cached) and isinstance(timings, dict):
        cached = timings.get("cache_n")
    return cached if is_count(cached) else None


def is_count(value) -> bool:
    return token_count(value) is not None


# --- chunk helpers ---------------------------------------------------------------------------

def chunks_from_completion(completion: dict) -> Iterator[dict]:
    """A whole chat.completion as the chunks a stream would have carried."""
    def whole(choices: list, **extra) -> dict:
        return build_chunk(completion.get("id"), completion.get("created"),
                           completion.get("model"), choices,
                           system_fingerprint=completion.get("system_fingerprint"), **extra)

    for one in completion.get("choices") or ():
        message = dict(one.get("message") or {})
        if message.get("tool_calls"):
            message["tool_calls"] = [dict(call, index=i)
                                     for i, call in enumerate(message["tool_calls"])]
        yield whole([build_choice(message)])
        yield whole([build_choice({}, one.get("finish_reason") or "stop", one.get("logprobs"))])
    if completion.get("usage"):
        yield whole([], usage=completion["usage"])
