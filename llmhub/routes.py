"""The whole API as one table: (method, path pattern) → view, its dialect, and a summary.

`match()` raises 404 for a path no route has, and 405 with `Allow` for a path that exists
under other methods. The dialect of the matched route decides the shape of its errors.
"""

import re
from dataclasses import dataclass, field
from typing import Callable

from llmhub.dialects import langbase, openai, responses, service
from llmhub.errors import MethodNotAllowed, NotFound

__all__ = ["Route", "ROUTES", "match", "methods_for", "dialect_for", "not_found"]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str                   # /v1/runs/{run_id}/cancel: {name} is one path segment
    view: Callable
    dialect: object                # the module whose error_body() shapes this route's errors
    summary: str
    auth: bool = True              # False: reachable without an API key
    regex: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = re.split(r"\{(\w+)\}", self.pattern)
        regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)"
                        for i, p in enumerate(parts))
        object.__setattr__(self, "regex", re.compile(f"^{regex}$"))


ROUTES = [
    Route("GET", "/", service.index, service, "Hub status and the list of endpoints"),
    Route("GET", "/health", service.health, service,
          "Liveness, upstream reachability, database state, active runs", auth=False),
    Route("GET", "/config", service.show_config, service,
          "The effective configuration, secrets redacted"),
    Route("GET", "/v1/runs/{run_id}", service.get_run, service, "A run's status"),
    Route("POST", "/v1/runs/{run_id}/cancel", service.cancel_run, service,
          "Cancel a run by id (idempotent)"),
    Route("POST", "/v1/chat/completions", openai.chat_completions, openai,
          "OpenAI chat completions, streaming and not"),
    Route("GET", "/v1/models", openai.list_models, openai, "Upstream models plus aliases"),
    Route("POST", "/v1/pipes/run", langbase.run_pipe, langbase,
          "Run a Langbase pipe, streaming or not; the thread id comes back in lb-thread-id"),
    Route("GET", "/v1/pipes", langbase.list_pipes, langbase, "The configured pipes"),
    Route("POST", "/v1/threads", langbase.create_thread, langbase,
          "Create a thread (optional threadId, metadata, messages)"),
    Route("GET", "/v1/threads/{thread_id}", langbase.get_thread, langbase, "A thread"),
    Route("POST", "/v1/threads/{thread_id}", langbase.update_thread, langbase,
          "Merge metadata into a thread"),
    Route("DELETE", "/v1/threads/{thread_id}", langbase.delete_thread, langbase,
          "Delete a thread and its messages"),
    Route("POST", "/v1/threads/{thread_id}/messages", langbase.append_messages, langbase,
          "Append messages (a bare array or {messages})"),
    Route("GET", "/v1/threads/{thread_id}/messages", langbase.list_messages, langbase,
          "A thread's messages, oldest first"),
    Route("POST", "/responses", responses.create_response, responses,
          "Create a response; ?stream=true (or \"stream\": true) for SSE events"),
    Route("GET", "/responses/{response_id}", responses.get_response, responses,
          "A stored response, finished or not"),
    Route("POST", "/responses/{response_id}/cancel", responses.cancel_response, responses,
          "Cancel a response (idempotent)"),
    Route("GET", "/responses/{response_id}/events", responses.response_events, responses,
          "A response's events after Last-Event-ID, then live until done"),
]


def match(method: str, path: str) -> tuple[Route, dict]:
    allowed = []
    for route in ROUTES:
        found = route.regex.match(path)
        if found is None:
            continue
        if route.method == method:
            return route, found.groupdict()
        allowed.append(route.method)
    if allowed:
        allow = ", ".join(sorted(set(allowed) | {"OPTIONS"} |
                                 ({"HEAD"} if "GET" in allowed else set())))
        raise MethodNotAllowed(f"Method {method} is not allowed for {path}; allowed: {allow}",
                               headers={"Allow": allow})
    raise not_found(path)


def dialect_for(path: str):
    """The dialect of any route at this path (a 405 still answers in the path's shape)."""
    return next((r.dialect for r in ROUTES if r.regex.match(path)), None)


def methods_for(path: str) -> list[str]:
    return [r.method for r in ROUTES if r.regex.match(path)]


def not_found(path: str) -> NotFound:
    return NotFound(f"No endpoint at {path}; GET / lists them")
