"""The whole API as one table: (method, path pattern) → view, its dialect, a summary and an
example request. /help and / are generated from it, so the documentation cannot drift.

`match()` raises 404 for a path no route has, and 405 with `Allow` for a path that exists
under other methods. The dialect of the matched route decides the shape of its errors.
"""

import re
from dataclasses import dataclass, field
from functools import partial
from types import ModuleType
from typing import Callable

from llmhub.dialects import (anthropic, batches, completions, conversations, edison,
                             embeddings,
                             langbase, ollama, openai, openai_responses, responses,
                             service, sessions, studio, usage)
from llmhub.errors import MethodNotAllowed, NotFound

from llmhub.dialects import relays   # apart from the list above: the relays block stands alone
from llmhub.dialects.reattach import resumable   # every stream's resume (X-Llmhub-Resumable)

__all__ = ["Route", "ROUTES", "match", "methods_for", "dialect_for", "not_found"]

HELLO = [{"role": "user", "content": "Hello!"}]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str                   # /v1/runs/{run_id}/cancel: {name} is one path segment,
                                   # {name:path} the rest of the path, slashes and all
    view: Callable
    dialect: ModuleType            # the module whose error_body() shapes this route's errors
    summary: str
    example: object = None         # a request body, for /help
    auth: bool = True              # False: reachable without an API key
    admin: bool = False            # True: with keys set, an admin key's only (403 otherwise)
    accept: str | None = None      # set: matches only requests whose Accept names it
    regex: re.Pattern = field(init=False, repr=False, compare=False)

    @property
    def path(self) -> str:
        """The pattern as documentation shows it: /v1/models/{model_id}."""
        return self.pattern.replace(":path}", "}")

    def __post_init__(self) -> None:
        parts = re.split(r"\{(\w+(?::path)?)\}", self.pattern)
        regex = "".join(re.escape(p) if i % 2 == 0 else _group(p)
                        for i, p in enumerate(parts))
        object.__setattr__(self, "regex", re.compile(f"^{regex}$"))


def _group(name: str) -> str:
    name, _, kind = name.partition(":")
    return f"(?P<{name}>.+)" if kind == "path" else f"(?P<{name}>[^/]+)"


STUDIO_CHAT = {"messages": [{"role": "user", "content": "What is 2+2?"}],
               "config": {"temperature": 0.7, "maxTokens": 100}}
# A real image (one white pixel, PNG), so the example runs as written; send your own.
PIXEL = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4//8/AAX+Av4N70a4AAAAAEl"
         "FTkSuQmCC")
STUDIO_VISION = {"messages": [{"role": "user", "content": "What is in this image?",
                               "images": [{"data_base64": PIXEL, "mime_type": "image/png"}]}]}

ROUTES = [
    # service
    Route("GET", "/", service.index, service,
          "The web chat page for browsers; hub status and endpoints as JSON otherwise",
          auth=False),
    Route("GET", "/static/{name}", service.static_file, service,
          "The web page's files", auth=False),
    Route("GET", "/c/{thread_id}", service.chat_page, service,
          "The web chat page, opened on one thread", auth=False),
    Route("GET", "/favicon.ico", service.favicon, service, "The hub's icon", auth=False),
    Route("GET", "/health", service.health, service,
          "Liveness, upstream reachability, database state, active runs", auth=False),
    Route("GET", "/config", service.show_config, service,
          "The effective configuration, secrets redacted", admin=True),
    Route("GET", "/help", service.help_page, service,
          "This documentation: JSON, or HTML for browsers"),
    Route("GET", "/metrics", service.metrics, service,
          "Prometheus metrics: requests, runs, tokens, time to first token, hub overhead"),
    Route("GET", "/openapi.json", service.openapi, service,
          "OpenAPI 3.1 description of every endpoint, from this same table"),
    Route("GET", "/v1/requests", usage.list_requests, usage,
          "The request log: every finished run's record, newest first, filterable"),
    Route("GET", "/v1/requests/{run_id}", usage.get_request, usage, "One run's record"),
    Route("GET", "/v1/usage", usage.usage, usage,
          "Requests, tokens, errors, cancels and first-token p50 by key, model or day"),
    Route("GET", "/runs", service.runs_page, service,
          "The live runs page: runs now (with Cancel), the request log, usage by key",
          auth=False),
    Route("GET", "/v1/upstreams", service.upstreams, service,
          "Every model server: health, circuit breaker, loaded models, targets' load",
          admin=True),
    Route("GET", "/v1/runs", service.live_runs, service, "The runs alive now"),
    Route("GET", "/v1/runs/events", service.runs_events, service,
          "The runs page's feed: live runs, newest records and usage, twice a second"),
    Route("GET", "/v1/runs/{run_id}", service.get_run, service, "A run's status"),
    Route("POST", "/v1/runs/{run_id}/cancel", service.cancel_run, service,
          "Cancel a run by id (idempotent)"),
    # OpenAI
    Route("POST", "/v1/chat/completions", resumable(openai.chat_completions), openai,
          "OpenAI chat completions, streaming and not",
          {"model": "fast", "messages": HELLO, "stream": False}),
    Route("GET", "/v1/models", openai.list_models, openai, "Upstream models plus aliases"),
    Route("GET", "/v1/models/{model_id:path}", openai.get_model, openai,
          "One model or alias (ids may hold slashes: qwen/qwen3-4b-2507)"),
    Route("POST", "/v1/embeddings", embeddings.create_embeddings, embeddings,
          "OpenAI embeddings: strings or token ids, float or base64",
          {"model": "text-embedding-nomic-embed-text-v1.5", "input": ["Hello", "world"]}),
    Route("POST", "/v1/completions", resumable(completions.create_completion), completions,
          "OpenAI legacy text completions, with suffix for fill-in-the-middle",
          {"model": "fast", "prompt": "def add(a, b):", "max_tokens": 32}),
    # OpenAI Files and Batch
    Route("POST", "/v1/files", batches.upload_file, batches,
          "Upload a file: a multipart form with file and purpose (batch or user_data)"),
    Route("GET", "/v1/files", batches.list_files, batches,
          "Your files, newest first (?purpose=batch&limit=&after=&order=asc|desc)"),
    Route("GET", "/v1/files/{file_id}", batches.get_file, batches, "One file's object"),
    Route("GET", "/v1/files/{file_id}/content", batches.file_content, batches,
          "A file's bytes (a batch's output or error file too)"),
    Route("DELETE", "/v1/files/{file_id}", batches.delete_file, batches, "Delete a file"),
    Route("POST", "/v1/batches", batches.create_batch, batches,
          "Run a JSONL file of requests in the background, below interactive requests; "
          "durable across restarts",
          {"input_file_id": "file-abc123", "endpoint": "/v1/chat/completions",
           "completion_window": "24h"}),
    Route("GET", "/v1/batches", batches.list_batches, batches,
          "Your batches, newest first (?limit=20&after=)"),
    Route("GET", "/v1/batches/{batch_id}", batches.get_batch, batches,
          "A batch: status, request_counts, output_file_id, error_file_id"),
    Route("POST", "/v1/batches/{batch_id}/cancel", batches.cancel_batch, batches,
          "Cancel a batch: lines in flight stop; answered lines stay in its output"),
    # OpenAI Responses and Conversations
    Route("POST", "/v1/responses", resumable(openai_responses.create), openai_responses,
          "OpenAI Responses: stored, streamed or background, cancellable, resumable",
          {"model": "fast", "input": "Hello!"}),
    Route("POST", "/v1/responses/input_tokens", openai_responses.input_tokens,
          openai_responses, "Estimated input tokens of a Responses request",
          {"model": "fast", "input": "Hello!"}),
    Route("POST", "/v1/responses/compact", openai_responses.compact, openai_responses,
          "The conversation so far as one compaction item (a summary)",
          {"model": "fast", "input": "Hello!"}),
    Route("GET", "/v1/responses/{response_id}", openai_responses.retrieve, openai_responses,
          "A response; ?stream=true&starting_after=N replays its events and follows it"),
    Route("DELETE", "/v1/responses/{response_id}", openai_responses.delete, openai_responses,
          "Delete a stored response"),
    Route("POST", "/v1/responses/{response_id}/cancel", openai_responses.cancel,
          openai_responses, "Cancel a response: the model stops; the partial output stays"),
    Route("GET", "/v1/responses/{response_id}/input_items", openai_responses.input_items,
          openai_responses, "A response's input items, paged"),
    Route("POST", "/v1/conversations", conversations.create, conversations,
          "Create a conversation (a thread), optionally with items",
          {"metadata": {"topic": "demo"}}),
    Route("GET", "/v1/conversations/{conversation_id}", conversations.retrieve, conversations,
          "A conversation"),
    Route("POST", "/v1/conversations/{conversation_id}", conversations.update, conversations,
          "Replace a conversation's metadata", {"metadata": {"topic": "demo"}}),
    Route("DELETE", "/v1/conversations/{conversation_id}", conversations.delete,
          conversations, "Delete a conversation and its items"),
    Route("GET", "/v1/conversations/{conversation_id}/items", conversations.list_items,
          conversations, "A conversation's items, paged"),
    Route("POST", "/v1/conversations/{conversation_id}/items", conversations.create_items,
          conversations, "Append items to a conversation",
          {"items": [{"type": "message", "role": "user", "content": "Hello!"}]}),
    Route("GET", "/v1/conversations/{conversation_id}/items/{item_id}", conversations.get_item,
          conversations, "One item of a conversation"),
    Route("DELETE", "/v1/conversations/{conversation_id}/items/{item_id}",
          conversations.delete_item, conversations, "Delete an item (its message)"),
    # Anthropic Messages
    Route("POST", "/v1/messages", resumable(anthropic.create_message), anthropic,
          "Anthropic Messages API, streaming and not, over any upstream",
          {"model": "claude-sonnet-4-5", "max_tokens": 256, "messages": HELLO}),
    Route("POST", "/v1/messages/count_tokens", anthropic.count_tokens, anthropic,
          "Estimated input tokens of a Messages request",
          {"model": "claude-sonnet-4-5", "messages": HELLO}),
    # sessions (nash)
    Route("POST", "/v1/chat/completions/stream", resumable(sessions.chat_stream), sessions,
          "Session-id stream, provider chosen per request (allow-listed)",
          {"messages": HELLO, "model": "fast"}),   # + api_base_url, api_key: a provider
    Route("POST", "/v1/chat/summarize", sessions.summarize, sessions,
          "Summarise a conversation to fewer tokens",
          {"messages": HELLO, "model": "fast"}),   # + api_base_url, api_key: a provider
    # Langbase
    Route("POST", "/v1/pipes/run", resumable(langbase.run_pipe), langbase,
          "Run a Langbase pipe, streaming or not; the thread id comes back in lb-thread-id",
          {"messages": HELLO, "stream": True}),
    Route("GET", "/v1/pipes", langbase.list_pipes, langbase, "The configured pipes"),
    Route("POST", "/v1/threads", langbase.create_thread, langbase,
          "Create a thread (optional threadId, metadata, messages)",
          {"threadId": "custom-thread-123", "metadata": {"department": "billing"}}),
    Route("GET", "/v1/threads", langbase.list_threads, langbase,
          "Threads by last activity, newest first (?limit=50&before=<updated_at>); "
          "llmhub's own, for the web page"),
    Route("GET", "/v1/threads/{thread_id}", langbase.get_thread, langbase, "A thread"),
    Route("POST", "/v1/threads/{thread_id}", langbase.update_thread, langbase,
          "Merge metadata into a thread", {"metadata": {"vip": "yes"}}),
    Route("DELETE", "/v1/threads/{thread_id}", langbase.delete_thread, langbase,
          "Delete a thread and its messages"),
    Route("POST", "/v1/threads/{thread_id}/title", langbase.name_thread, langbase,
          "Rename a thread ({\"title\"}), or with no body have the summary model name it"),
    Route("POST", "/v1/threads/{thread_id}/messages", langbase.append_messages, langbase,
          "Append messages (a bare array or {messages})",
          [{"role": "user", "content": "Can you help me with billing?"}]),
    Route("GET", "/v1/threads/{thread_id}/messages", langbase.list_messages, langbase,
          "A page of a thread's messages, oldest first (?limit=1000&after=<message id>; "
          "X-Has-More says if more follow)"),
    # Responses hub
    Route("POST", "/responses",
          resumable(responses.create_response, own=responses.response_events), responses,
          "Create a response; ?stream=true (or \"stream\": true) for SSE events",
          {"model": "lm:qwen2.5-instruct", "input": "Скажи привет", "create_thread": True}),
    Route("GET", "/responses/{response_id}", responses.get_response, responses,
          "A stored response, finished or not"),
    Route("POST", "/responses/{response_id}/cancel", responses.cancel_response, responses,
          "Cancel a response (idempotent)"),
    Route("GET", "/responses/{response_id}/events", responses.response_events, responses,
          "A response's events after Last-Event-ID, then live until done"),
    # LM Studio hub
    Route("GET", "/models", studio.list_models, studio,
          "Models LM Studio has: loaded and available, with instances and context"),
    Route("POST", "/models/load", studio.load_model, studio,
          "Load a model (exclusive unloads the others; never a :2 duplicate)",
          {"model_key": "qwen/qwen3-4b-2507", "exclusive": True}),
    Route("POST", "/models/unload", studio.unload_model, studio,
          "Unload a model, or all of them; 409 while runs use it unless force",
          {"model_key": "qwen/qwen3-4b-2507"}),
    Route("POST", "/chat", studio.chat, studio, "Chat with model_key or the default model",
          {"model_key": "my-custom-model", "messages": HELLO}),
    # EDISON: /chat/stream is claimed by two seeds; SSE clients get EDISON's events
    Route("POST", "/chat/stream", resumable(edison.chat_stream), edison,
          "EDISON chat stream (Accept: text/event-stream): init, token, done events",
          {"message": "Hello!", "model": "fast"}, accept="text/event-stream"),
    Route("POST", "/chat/cancel", edison.cancel, edison,
          "Stop an EDISON stream by request_id; the model stops too",
          {"request_id": "<request_id from init>"}),
    Route("POST", "/chat/stream", resumable(studio.chat_stream), studio,
          "Streaming chat: NDJSON fragments (any other Accept)", STUDIO_CHAT),
    Route("POST", "/chat/regular", partial(studio.chat, kind="regular"), studio,
          "Text-only chat with [models] regular", STUDIO_CHAT),
    Route("POST", "/chat/regular/stream",
          resumable(partial(studio.chat_stream, kind="regular")), studio,
          "Text-only streaming chat (NDJSON)", STUDIO_CHAT),
    Route("POST", "/chat/vision", partial(studio.chat, kind="vision"), studio,
          "Chat with images, with [models] vision", STUDIO_VISION),
    Route("POST", "/chat/vision/stream",
          resumable(partial(studio.chat_stream, kind="vision")), studio,
          "Streaming chat with images (NDJSON)", STUDIO_VISION),
    # Ollama
    Route("GET", "/api/version", ollama.version, ollama, "The Ollama version the hub speaks",
          auth=False),
    Route("GET", "/api/tags", ollama.tags, ollama,
          "Every model and alias, as Ollama lists them (name:tag, details)"),
    Route("POST", "/api/show", ollama.show, ollama,
          "One model: capabilities (tools, vision, thinking), context length, details",
          {"model": "fast"}),
    Route("GET", "/api/ps", ollama.ps, ollama, "The models loaded now"),
    Route("POST", "/api/chat", resumable(ollama.chat), ollama,
          "Ollama chat: NDJSON stream unless \"stream\": false; tools, images, think, format",
          {"model": "fast", "messages": HELLO}),
    Route("POST", "/api/generate", resumable(ollama.generate), ollama,
          "Ollama generate: prompt, suffix, system, raw; an empty prompt loads the model",
          {"model": "fast", "prompt": "Why is the sky blue?", "stream": False}),
    Route("POST", "/api/embed", ollama.embed, ollama, "Ollama embeddings: input, a string or list",
          {"model": "text-embedding-nomic-embed-text-v1.5", "input": ["Hello", "world"]}),
    Route("POST", "/api/embeddings", ollama.embeddings, ollama,
          "Ollama's older embeddings: one prompt, one embedding",
          {"model": "text-embedding-nomic-embed-text-v1.5", "prompt": "Hello"}),
    Route("POST", "/api/pull", ollama.pull, ollama,
          "A model an upstream has, at once; another downloaded by LM Studio 0.4+",
          {"model": "fast"}),
    Route("POST", "/api/push", ollama.unsupported, ollama, "Refused: use the model server"),
    Route("POST", "/api/create", ollama.unsupported, ollama, "Refused: use the model server"),
    Route("POST", "/api/copy", ollama.unsupported, ollama, "Refused: use the model server"),
    Route("DELETE", "/api/delete", ollama.unsupported, ollama,
          "Refused: use the model server"),
    Route("POST", "/api/blobs/{digest}", ollama.unsupported, ollama,
          "Refused: model files are the model server's"),
    # relays: passed to an upstream that serves them (llama.cpp, vLLM, LocalAI, another hub)
    Route("POST", "/v1/rerank", relays.rerank, relays,
          "Rerank documents by relevance to a query (Jina/Cohere shape), relayed upstream",
          relays.RERANK_EXAMPLE),
    Route("POST", "/rerank", relays.rerank, relays, "The same as /v1/rerank",
          relays.RERANK_EXAMPLE),
    Route("POST", "/tokenize", relays.tokenize, relays,
          "Text to token ids by the upstream's tokenizer (llama.cpp's; vLLM's prompt)",
          {"content": "Hello world"}),
    Route("POST", "/detokenize", relays.detokenize, relays,
          "Token ids to text by the upstream's tokenizer", {"tokens": [9707, 1879]}),
    Route("POST", "/v1/audio/transcriptions", relays.transcriptions, relays,
          "Speech to text: a multipart form with file (and model), relayed as it came"),
    Route("POST", "/v1/audio/translations", relays.translations, relays,
          "Speech to English text: a multipart form with file (and model)"),
    Route("POST", "/v1/audio/speech", relays.speech, relays,
          "Text to speech: the audio streams back as the upstream makes it",
          {"model": "kokoro", "input": "Hello!", "voice": "af_heart"}),
    Route("POST", "/v1/images/generations", relays.image_generations, relays,
          "Images from a prompt, relayed upstream",
          {"model": "sd-turbo", "prompt": "a lighthouse at dusk", "size": "512x512"}),
    Route("POST", "/v1/images/edits", relays.image_edits, relays,
          "Edit an image: a multipart form with image and prompt (and model)"),
]


# (the table it was built for, exact path → routes, the routes with {parameters},
#  (method, exact path) → routes)
_index: tuple = (None, {}, [], {})


def _indexed() -> tuple[dict, list, dict]:
    """Exact paths as dicts (most requests are one lookup) and the pattern routes; rebuilt
    if ROUTES is replaced (tests do)."""
    global _index
    if _index[0] is not ROUTES:
        static: dict[str, list[Route]] = {}
        patterns: list[Route] = []
        by_method: dict[tuple[str, str], list[Route]] = {}
        for route in ROUTES:
            if "{" in route.pattern:
                patterns.append(route)
            else:
                static.setdefault(route.pattern, []).append(route)
                by_method.setdefault((route.method, route.pattern), []).append(route)
        _index = (ROUTES, static, patterns, by_method)
    return _index[1], _index[2], _index[3]


def _candidates(method: str, path: str) -> list:
    """The exact-path routes when one has this method; else those and every pattern route."""
    static, patterns, _ = _indexed()
    exact = static.get(path, [])
    if any(route.method == method for route in exact):
        return exact
    return exact + patterns


def match(method: str, path: str, accept: str = "") -> tuple[Route, dict]:
    for route in _indexed()[2].get((method, path), ()):   # the usual request: an exact path
        if not route.accept or route.accept in accept:
            return route, {}
    allowed = []
    for route in _candidates(method, path):
        found = route.regex.match(path)
        if found is None:
            continue
        if route.method == method:
            if route.accept and route.accept not in accept:
                continue                       # a later route at this path serves the rest
            return route, found.groupdict()
        allowed.append(route.method)
    if allowed:
        allow = ", ".join(sorted(set(allowed) | {"OPTIONS"} |
                                 ({"HEAD"} if "GET" in allowed else set())))
        raise MethodNotAllowed(f"Method {method} is not allowed for {path}; allowed: {allow}",
                               headers={"Allow": allow})
    raise not_found(path)


def dialect_for(path: str):
    """The dialect of any route at this path (a 405 still answers in the path's shape);
    under /api/, Ollama's, so its clients read a 404 as a string too."""
    found = next((r.dialect for r in ROUTES if r.regex.match(path)), None)
    return found or (ollama if path.startswith("/api/") else None)


def methods_for(path: str) -> list[str]:
    return [r.method for r in ROUTES if r.regex.match(path)]


def not_found(path: str) -> NotFound:
    return NotFound(f"No endpoint at {path}; GET /help lists them")
