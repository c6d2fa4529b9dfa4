"""Service endpoints shared by every client: /, /health, /config, and runs by id.

Errors here, and for paths no route has, use the hub's generic shape:
`{"error": {"message", "code", "status", "param"}}`.
"""

import html
import json
import re
import time
from pathlib import Path

from llmhub.config import redacted
from llmhub.context import estimate_tokens
from llmhub.dialects import ollama
from llmhub.dialects.feed import Feed
from llmhub.engine import accounting
from llmhub.errors import NotFound
from llmhub.ids import utc_text
from llmhub.redaction import redact
from llmhub.wire import BytesResponse, JSONResponse, StreamRenderer, StreamResponse, sse

STATIC = Path(__file__).resolve().parent.parent / "static"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
         ".ico": "image/x-icon"}
SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,100}$")

__all__ = ["error_body", "index", "health", "show_config", "help_page", "get_run",
           "cancel_run", "static_file", "metrics", "openapi", "runs_page", "live_runs",
           "runs_events", "upstreams", "chat_page", "favicon"]

TITLE = "Service"


def error_body(error) -> dict:
    return {"error": {"message": error.message, "code": error.code, "status": error.status,
                      "param": error.param}}


def index(request):
    """The web chat page for browsers, the hub's status for a client that asks for JSON
    alone, and for everything else (curl, Ollama's clients, which probe it and compare the
    text; axios asks for JSON and text both) Ollama's answer."""
    accept = request.headers.get("Accept", "")
    if "text/html" in accept:
        return static_file(request, "index.html")
    if "application/json" not in accept or "text/plain" in accept:
        return ollama.running(request)
    hub = request.hub
    return JSONResponse({
        "name": "llmhub", "version": hub.version, "status": "ok",
        "upstreams": hub.engine.upstream_list(),
        "endpoints": [{"method": r.method, "path": r.path, "summary": r.summary}
                      for r in hub.routes],
    })


def chat_page(request, thread_id: str):
    """/c/<thread id>: the chat page; it reads the thread's id from its own address."""
    return static_file(request, "index.html")


def favicon(request):
    return static_file(request, "favicon.ico")


def help_page(request):
    """Every endpoint of every dialect, from the route table: JSON, or HTML for browsers."""
    base = f"http://{request.headers.get('Host', '127.0.0.1:8000')}"
    sections: dict[str, list] = {}
    for route in request.hub.routes:
        sections.setdefault(route.dialect.TITLE, []).append({
            "method": route.method, "path": route.path, "summary": route.summary,
            "example": route.example, "curl": curl(base, route)})
    if "text/html" in request.headers.get("Accept", ""):
        return BytesResponse(help_html(request.hub.version, sections).encode("utf-8"),
                             TYPES[".html"])
    return JSONResponse({"name": "llmhub", "version": request.hub.version,
                         "dialects": sections})


def curl(base: str, route) -> str:
    """The route's example as a command that runs as written (but for ids in its path): a
    route chosen by Accept (EDISON's /chat/stream) sends it, and streams unbuffered."""
    command = f"curl {base}{route.path}" if route.method == "GET" else \
        f"curl -X {route.method} {base}{route.path}"
    if route.accept is not None:
        command = command.replace("curl ", f"curl -N -H 'Accept: {route.accept}' ", 1)
    if route.example is not None:
        body = json.dumps(route.example, ensure_ascii=False)
        command += f" -H 'Content-Type: application/json' -d '{body}'"
    return command


def help_html(version: str, sections: dict) -> str:
    rows = []
    for title, routes in sections.items():
        rows.append(f"<h2>{html.escape(title)}</h2><table>")
        for r in routes:
            rows.append(f"<tr><td><b>{r['method']}</b></td><td><code>{html.escape(r['path'])}"
                        f"</code></td><td>{html.escape(r['summary'])}<pre>"
                        f"{html.escape(r['curl'])}</pre></td></tr>")
        rows.append("</table>")
    return ("<!doctype html><meta charset=utf-8><title>llmhub API</title><style>"
            "body{font:15px system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
            "td{vertical-align:top;padding:.3em .6em}pre{white-space:pre-wrap;background:#f4f4f4;"
            "padding:.4em;margin:.3em 0}</style>"
            f"<h1>llmhub {html.escape(version)}</h1><p>Every endpoint, by dialect. JSON at "
            "<code>GET /help</code> with <code>Accept: application/json</code>.</p>"
            + "".join(rows))


STREAMS = {"/chat/stream": "text/event-stream or application/x-ndjson",
           "/responses": "text/event-stream with ?stream=true",
           "/v1/chat/completions": "text/event-stream with stream: true",
           "/v1/messages": "text/event-stream with stream: true",
           "/v1/completions": "text/event-stream with stream: true",
           "/v1/responses": "text/event-stream with stream: true",
           "/v1/runs/events": "text/event-stream",
           "/v1/pipes/run": "text/event-stream with stream: true",
           "/v1/chat/completions/stream": "text/event-stream",
           "/responses/{response_id}/events": "text/event-stream"}


def openapi(request) -> JSONResponse:
    """OpenAPI 3.1 for every route, from the same table as /help."""
    paths: dict = {}
    for route in request.hub.routes:
        operations = paths.setdefault(route.path, {})
        method = route.method.lower()
        if method in operations:            # /chat/stream: one path, two dialects by Accept
            operations[method]["description"] += f" With any other Accept: {route.summary}."
            continue
        operations[method] = operation(route)
    spec = {"openapi": "3.1.0",
            "info": {"title": "llmhub", "version": request.hub.version,
                     "description": "One local hub for every LLM client: OpenAI, Langbase, "
                                    "Responses, LM Studio hub, EDISON and sessions dialects."},
            "servers": [{"url": f"http://{request.headers.get('Host', '127.0.0.1:8000')}"}],
            "paths": paths,
            "components": {"securitySchemes": {"bearer": {"type": "http",
                                                          "scheme": "bearer"}}}}
    if request.hub.config.server.api_keys:
        spec["security"] = [{"bearer": []}]
    return JSONResponse(spec)


def operation(route) -> dict:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", route.path).strip("_") or "root"
    op = {"operationId": f"{route.method.lower()}_{slug}",
          "summary": route.summary, "description": route.summary + ".",
          "tags": [route.dialect.TITLE],
          "responses": {"200": {"description": STREAMS.get(route.path, "Success")},
                        "default": {"description": f"An error, in the "
                                                   f"{route.dialect.TITLE} dialect's shape"}}}
    if route.accept:
        op["description"] = f"With Accept: {route.accept}: {route.summary}."
    names = re.findall(r"\{(\w+)\}", route.path)
    if names:
        op["parameters"] = [{"name": n, "in": "path", "required": True,
                             "schema": {"type": "string"}} for n in names]
    if route.example is not None:
        kind = "array" if isinstance(route.example, list) else "object"
        op["requestBody"] = {"content": {"application/json": {
            "schema": {"type": kind}, "example": route.example}}}
    if not route.auth:
        op["security"] = []
    return op


def metrics(request) -> BytesResponse:
    hub = request.hub
    text = hub.metrics.render(hub.engine.live_runs(), len(hub.sessions),
                              hub.engine.upstream_states(), hub.engine.storage_counters(),
                              hub.batches.progress())
    return BytesResponse(text.encode(), "text/plain; version=0.0.4; charset=utf-8")


def static_file(request, name: str) -> BytesResponse:
    """A file of the web page: a plain name in llmhub/static, never a path out of it."""
    path = STATIC / name
    if not SAFE_NAME.match(name) or path.suffix not in TYPES or not path.is_file():
        raise NotFound(f"No static file {name!r}")
    return BytesResponse(path.read_bytes(), TYPES[path.suffix],
                         headers={"Cache-Control": "no-cache"})


def upstreams(request) -> JSONResponse:
    """Every upstream: health state, breaker, what it has loaded, and its targets'
    counters (in flight, capacity, requests, errors, affinity hits, first-token time)."""
    return JSONResponse({"object": "list", "data": request.hub.engine.upstream_states()})


def health(request) -> JSONResponse:
    """200 even when the upstream is down: the hub itself is up, and says what is not. With
    keys configured, a caller without a valid one learns only that much: upstreams, their
    addresses and errors, and the runs are for key holders (DESIGN §10)."""
    hub = request.hub
    upstreams, database = hub.engine.health()
    healthy = database["status"] == "ok" and all(u["reachable"] for u in upstreams)
    status = "ok" if healthy else "degraded"
    if accounting.current.get().key == accounting.PUBLIC:   # keys are set, none valid came
        return JSONResponse({"status": status})
    for upstream in upstreams:      # a probe's error is the server's words: a second net
        if upstream.get("error"):
            upstream["error"] = redact(upstream["error"], hub.engine.secrets)
    return JSONResponse({
        "status": status,
        "time": utc_text(),
        "version": hub.version,
        "uptime_seconds": round(time.time() - hub.started, 1),
        "upstreams": upstreams,
        "database": database,
        "active_runs": len(hub.engine.live_runs()),
    })


def show_config(request) -> JSONResponse:
    return JSONResponse(redacted(request.hub.config))


def runs_page(request):
    """The live runs page: what runs now (with Cancel), the request log, usage by key."""
    return static_file(request, "runs.html")


def live_runs(request) -> JSONResponse:
    """?thread_id=: only the runs answering in that thread (the chat page on a second
    device finds the reply in progress there)."""
    thread_id = request.query.get("thread_id")
    return JSONResponse({"object": "list", "data": [
        run_json(run) for run in request.hub.engine.live_runs()
        if thread_id is None or run.thread_id == thread_id]})


def run_json(run) -> dict:
    """A live run as the runs page shows it: whose, which model, how far, how long."""
    return {"id": run.id, "dialect": run.info.get("dialect"), "key": run.info.get("key"),
            "requested_model": run.requested, "model": run.model, "status": run.status,
            "queue_position": run.queue_position,
            "elapsed_ms": round((time.monotonic() - run.started) * 1000),
            "tokens": estimate_tokens(run.transcript.text), "thread_id": run.thread_id}


def runs_events(request):
    """The runs page's feed: live runs, the newest records and usage, as they change
    (checked every half second), for as long as the page reads it. Every open page shares
    one computation per tick (feed.Feed); each sees its key's view of it: an admin's
    everything, a user key's its own runs, records and usage."""
    hub = request.hub
    feed = hub.feeds.get("runs")
    if feed is None:
        feed = hub.feeds.setdefault("runs", Feed(RunsSnapshot(hub.engine), every=0.5))
    caller = accounting.current.get()
    feed.compute.viewers[caller.only] = caller
    return StreamResponse(feed.subscribe(caller.only), SnapshotStream())


class RunsSnapshot:
    """What every runs page shows, computed once per tick for all of them: the live runs
    once (each view keeps the runs its key may see), and records and usage once per view,
    read again only when the request log has grown."""

    records = 25      # the newest records the page lists

    def __init__(self, engine) -> None:
        self.engine = engine
        self.viewers: dict = {}     # view (Caller.only) → a caller with that view
        self._log_version = None
        self._records: dict = {}    # view → (records, usage) at _log_version

    def __call__(self, views: set) -> dict:
        everyone = as_caller(ADMIN, lambda: [run_json(r) for r in self.engine.live_runs()])
        version = self.engine.request_log_version()
        if version != self._log_version:
            self._log_version, self._records = version, {}
        payloads = {}
        for view in views:
            if view not in self._records:
                self._records[view] = as_caller(self.viewers[view], self._logged)
            requests, usage = self._records[view]
            payloads[view] = {"runs": [r for r in everyone if view is None or r["key"] == view],
                              "requests": requests, "usage": usage}
        for view in set(self._records) - views:
            del self._records[view]
        return payloads

    def _logged(self) -> tuple:
        return (self.engine.requests(self.records, None, {}),
                {group: self.engine.usage(group, 0, float("inf")) for group in ("key", "model")})


ADMIN = accounting.Caller((accounting.LOCAL, "-", None))    # sees every run


def as_caller(caller, work):
    """`work()` as if `caller` had asked (engine listings narrow to their caller's)."""
    token = accounting.current.set(caller)
    try:
        return work()
    finally:
        accounting.current.reset(token)


class SnapshotStream(StreamRenderer):
    def render(self, event) -> bytes:
        return sse(event.data, event="snapshot")


def get_run(request, run_id: str) -> JSONResponse:
    return JSONResponse({"id": run_id, "status": request.hub.engine.run_status(run_id)})


def cancel_run(request, run_id: str) -> JSONResponse:
    return JSONResponse({"id": run_id, "status": request.hub.engine.cancel_run(run_id)})

