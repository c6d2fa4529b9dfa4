"""EDISON's chat stream and cancel (`POST /chat/stream` with `Accept: text/event-stream`,
`POST /chat/cancel`), after the seed of that name (tasks 11–12).

Wire rules kept here:
- events are `init` {request_id, thread_id, model} (before the upstream answers), `token`
  {t} per piece of text, `error` {message}, then `done` {ok: true, response, request_id,
  thread_id, usage} — or {ok: false, stopped: true, response: <partial>} after a cancel;
  pings are SSE comments;
- the request id is the run id, so `/chat/cancel` stops the model itself, not just the
  page's reading of it; cancel is idempotent and says when the run had already finished;
- the turn is stored in a thread (a new one unless `thread_id` was given);
- while a run waits for a `max_concurrent` slot, pings are `queue` events with its position;
- errors are `{"error": "<message>", "code"}`.
"""

from llmhub import ids
from llmhub.dialects.checks import check_int, check_known, check_number, check_type
from llmhub.engine.facade import ChatRequest, ThreadTurn
from llmhub.engine.runs import CANCELLED, COMPLETED, QUEUED
from llmhub.errors import BadRequest, HubError
from llmhub.messages import check_thread_id, normalise_message
from llmhub.transcript import Seen
from llmhub.wire import JSONResponse, StreamRenderer, StreamResponse, sse

__all__ = ["TITLE", "error_body", "chat_stream", "cancel", "EdisonStream"]

TITLE = "EDISON"
# EDISON's config, in both spellings its UI and scripts use, → the OpenAI name
CONFIG = {"temperature": "temperature", "max_tokens": "max_tokens",
          "maxTokens": "max_tokens", "top_p": "top_p", "topP": "top_p"}


def error_body(error: HubError) -> dict:
    body = {"error": error.message, "code": error.code}
    if error.param:
        body["param"] = error.param
    return body


def chat_stream(request):
    body = request.json_object()
    chat = parse_request(body)
    chat.run_id = request.run_id() or str(ids.uuid4())   # X-Run-Id, as every dialect
    run = request.hub.engine.prepare(chat)
    return StreamResponse(run, EdisonStream(run))


def parse_request(body: dict) -> ChatRequest:
    check_known(body, {"message", "messages", "model", "thread_id", "config"})
    check_type(body, "message", str, "a string")
    check_type(body, "messages", list, "a list")
    check_type(body, "model", str, "a string")
    check_type(body, "config", dict, "an object")
    messages = [normalise_message(m, f"messages[{i}]")
                for i, m in enumerate(body.get("messages") or [])]
    if body.get("message"):
        messages.append(normalise_message({"role": "user", "content": body["message"]},
                                          "message"))
    if not messages:
        raise BadRequest("Send 'message' (a string) or 'messages' (a list)", param="message")
    thread_id = body.get("thread_id")
    if thread_id is not None:
        check_thread_id(thread_id, "thread_id")
    config = body.get("config") or {}
    check_known(config, set(CONFIG), "config")
    for name in ("temperature", "top_p", "topP"):
        check_number(config, name, 0, 2 if name == "temperature" else 1)
    for name in ("max_tokens", "maxTokens"):
        check_int(config, name, 1)
    params = {CONFIG[k]: v for k, v in config.items() if k in CONFIG and v is not None}
    return ChatRequest(ThreadTurn(messages, thread_id), model=body.get("model"), params=params,
                       dialect="edison")


def cancel(request) -> JSONResponse:
    body = request.json_object()
    check_known(body, {"request_id"})
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise BadRequest("'request_id' is required", param="request_id")
    run = request.hub.engine.run(request_id)
    if run is not None and run.cancel("stop", wait=5) == CANCELLED:
        return JSONResponse({"ok": True, "cancelled": True})
    # finished already (or just now, by itself); NotFound if it never existed
    return JSONResponse({"ok": True, "cancelled": False,
                         "status": request.hub.engine.run_status(request_id)})


class EdisonStream(StreamRenderer):
    eager = True   # init goes out before the upstream answers

    def __init__(self, run) -> None:
        self.seen = Seen(run, fold=True)
        self.line = run          # only where it waits in line: no event says that

    def _ids(self) -> dict:
        return {"request_id": self.seen.id, "thread_id": self.seen.thread_id}

    def opening(self, run) -> bytes:
        return sse({**self._ids(), "model": self.seen.model}, event="init")

    def ping(self) -> bytes:
        position = self.line.queue_position if self.seen.status == QUEUED else None
        if position:
            return sse({"position": position}, event="queue")
        return b": ping\n\n"

    def render(self, event) -> bytes:
        self.seen.add(event)
        kind = event.kind
        if kind == "delta" and event.text:
            return sse({"t": event.text}, event="token")
        if kind == "error":
            return sse({"message": event.message}, event="error")
        if kind == "done":
            return sse(self._done(event.status), event="done")
        return b""

    def _done(self, status: str) -> dict:
        text = self.seen.transcript.text
        if status == COMPLETED:
            usage = self.seen.usage
            return {"ok": True, "response": text, **self._ids(),
                    "model": self.seen.model,
                    "usage": usage.counts() if usage else
                    dict.fromkeys(("input_tokens", "output_tokens", "total_tokens"))}
        return {"ok": False, "stopped": status == CANCELLED, "response": text, **self._ids()}
