"""nash-llm-server's session streams and summaries (`/v1/chat/completions/stream`,
`/v1/chat/summarize`), with providers chosen per request.

Wire rules kept here:
- the stream is exactly `data: {"session_id"}`, then `data: {"content"}` per piece of text,
  then `data: {"session_id"}` again, then `data: [DONE]` (an error is a `data: {"error"}`
  line before the closing session id: the id is preserved even then);
- a given `session_id` must be a UUID and is echoed; without one a UUID v4 is made;
- nothing of the conversation is stored (the client keeps its history);
- `api_base_url` must be on the allow-list (providers.py); `api_key` goes to that provider
  only and is never logged or echoed; a `Helicone-Auth` header is passed through;
- errors are `{"error": "<message>", "code"}`; a failed summary is `{"success": false,
  "error"}`.
"""

import uuid

from llmhub.context import estimate_messages
from llmhub.dialects.checks import check_known, check_type
from llmhub.dialects.openai import check_messages
from llmhub.engine.facade import Access, ChatRequest, Stateless, Summary, summary_prompt
from llmhub.engine.runs import COMPLETED
from llmhub.errors import BadRequest, HubError
from llmhub.wire import JSONResponse, RunResponse, StreamRenderer, StreamResponse, sse

__all__ = ["TITLE", "error_body", "chat_stream", "summarize", "SessionStream"]

TITLE = "Sessions (nash)"


def error_body(error: HubError) -> dict:
    return {"error": error.message, "code": error.code}


def parse_request(request) -> tuple[ChatRequest, str]:
    body = request.json_object()
    check_known(body, {"messages", "model", "api_key", "api_base_url", "session_id"})
    check_messages(body.get("messages"))
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequest("'model' is required", param="model")
    for name in ("api_key", "api_base_url", "session_id"):
        check_type(body, name, str, "a string")
    session_id = body.get("session_id") or str(uuid.uuid4())
    try:
        uuid.UUID(session_id)
    except ValueError:
        raise BadRequest("'session_id' must be a UUID", param="session_id") from None
    hub = request.hub
    upstream = hub.engine.provider(body["api_base_url"]) if body.get("api_base_url") else None
    headers = {"Helicone-Auth": request.headers["Helicone-Auth"]} \
        if request.headers.get("Helicone-Auth") else {}
    hub.sessions.seen(session_id)
    access = Access(api_key=body.get("api_key") or None, headers=headers, provider=upstream)
    return ChatRequest(Stateless(body["messages"]), model=body["model"], dialect="sessions",
                       run_id=request.run_id(), access=access), session_id


def chat_stream(request):
    chat, session_id = parse_request(request)
    run = request.hub.engine.prepare(chat)
    return StreamResponse(run, SessionStream(session_id))


def summarize(request):
    try:
        chat, session_id = parse_request(request)
        assert isinstance(chat.input, Stateless)       # as parse_request made it
        before = estimate_messages(chat.input.messages)
        chat.input = Summary(summary_prompt(None, chat.input.messages))
        run = request.hub.engine.prepare(chat)
    except HubError as error:
        return JSONResponse({"success": False, "error": error.message}, status=error.status)
    return RunResponse(run, lambda run: summary_reply(run, session_id, before))


def summary_reply(run, session_id: str, before: int) -> JSONResponse:
    if run.status != COMPLETED:
        error = run.error or HubError("The summary was cancelled", status=409,
                                      code="cancelled")
        return JSONResponse({"success": False, "error": error.message}, status=error.status)
    summary = run.transcript.text.strip()
    messages = [{"role": "assistant",
                 "content": f"Previous conversation summary:\n{summary}"}]
    return JSONResponse({"success": True, "summary": summary, "messages": messages,
                         "token_reduction": {"before": before,
                                             "after": estimate_messages(messages)},
                         "session_id": session_id})


class SessionStream(StreamRenderer):
    def __init__(self, session_id: str) -> None:
        self.session = sse({"session_id": session_id})
        self.opened = False

    def _open(self) -> bytes:
        if self.opened:
            return b""
        self.opened = True
        return self.session

    def render(self, event) -> bytes:
        kind = event.kind
        if kind == "start":
            return self._open()
        if kind == "delta" and event.text:
            return self._open() + sse({"content": event.text})
        if kind == "error":
            return self._open() + sse({"error": event.message})
        if kind == "done":
            return self._open() + self.session + b"data: [DONE]\n\n"
        return b""
