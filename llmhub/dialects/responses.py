"""The Local Responses Hub (`/responses`), after the seed of that name (DESIGN §9).

Wire rules kept here:
- a stream is SSE with `event:` names meta, delta, usage, done, ping and error, their fields
  exactly as the seed gives them; `meta` goes out before the upstream answers;
- every event has an `id:`, its position in the run's event log (meta is 0, a ping repeats
  the last position), so `Last-Event-ID` says exactly where to resume and nothing is lost;
- a client that drops a stream does not cancel the run at once: it may re-attach with
  `GET /responses/{id}/events` within `[responses] resume_grace_seconds`;
- response ids are `resp_<UUIDv7>`: the id carries its creation time, so a response gone
  from the store can be told apart as expired (410) or unknown (404);
- errors are `{"error": {"message", "code"}}`.
"""

import time
import uuid

from llmhub import ids
from llmhub.dialects.checks import check_int, check_known, check_number, check_type, query_int
from llmhub.engine.facade import Chain, ChatRequest, ThreadTurn
from llmhub.engine.runs import FAILED, TRIMMED, EventsGone, RunContract
from llmhub.errors import BadRequest, Gone, HubError, NotFound
from llmhub.events import Done, Usage, from_stored
from llmhub.messages import check_thread_id, normalise_message
from llmhub.transcript import Transcript
from llmhub.wire import JSONResponse, RunResponse, StreamRenderer, StreamResponse, sse

__all__ = ["error_body", "create_response", "get_response", "cancel_response",
           "response_events", "ResponseStream", "new_response_id"]

TITLE = "Responses hub"


def error_body(error: HubError) -> dict:
    return {"error": {"message": error.message, "code": error.code}}


# --- ids -------------------------------------------------------------------------------------

def new_response_id() -> str:
    """resp_ + a UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits."""
    millis = int(time.time() * 1000)
    rand = int.from_bytes(ids.random_bytes(10), "big")
    value = (millis << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64 | \
        (0b10 << 62) | (rand & ((1 << 62) - 1))
    return "resp_" + str(uuid.UUID(int=value))


def created_at(response_id: str) -> float | None:
    """When a response id was minted, if it is one of ours."""
    try:
        value = uuid.UUID(response_id.removeprefix("resp_"))
    except ValueError:
        return None
    return (value.int >> 80) / 1000 if value.version == 7 else None


# --- POST /responses -------------------------------------------------------------------------

def create_response(request):
    hub, body = request.hub, request.json_object()
    chat = parse_request(body)
    chat.run_id = new_response_id()
    run = hub.engine.prepare(chat)
    hub.engine.keep_response(run, body.get("metadata") or {})
    if body.get("stream") or request.query.get("stream", "").lower() in ("1", "true", "yes"):
        run.allow_resume(hub.config.responses.resume_grace_seconds)   # it is stored
        return StreamResponse(run, ResponseStream(run_meta(run)))
    return RunResponse(run, lambda run: finished(hub, run))


KNOWN = {"model", "input", "system", "temperature", "max_output_tokens", "top_p", "stop",
         "thread_id", "create_thread", "metadata", "stream"}


def parse_request(body: dict) -> ChatRequest:
    check_known(body, KNOWN)
    check_type(body, "model", str, "a string")
    check_type(body, "system", str, "a string")
    check_type(body, "metadata", dict, "an object")
    check_type(body, "create_thread", bool, "true or false")
    check_type(body, "stream", bool, "true or false")
    check_number(body, "temperature", 0, 2)
    check_number(body, "top_p", 0, 1)
    check_int(body, "max_output_tokens", 1)
    check_type(body, "stop", (str, list), "a string or a list of strings")
    thread_id = body.get("thread_id")
    if thread_id is not None:
        check_thread_id(thread_id, "thread_id")
    params = {k: body[k] for k in ("temperature", "top_p", "stop") if body.get(k) is not None}
    if body.get("max_output_tokens") is not None:
        params["max_tokens"] = body["max_output_tokens"]
    messages, system = parse_input(body.get("input")), body.get("system")
    plan = ThreadTurn(messages, thread_id, system) \
        if thread_id is not None or body.get("create_thread") else \
        Chain(messages, system=system, budget=True)
    return ChatRequest(plan, model=body.get("model"), params=params, dialect="responses")


def parse_input(value) -> list[dict]:
    if isinstance(value, str) and value.strip():
        return [normalise_message({"role": "user", "content": value}, "input")]
    if isinstance(value, list) and value:
        return [normalise_message(m, f"input[{i}]") for i, m in enumerate(value)]
    raise BadRequest("'input' is required: a string, or a list of {role, content}",
                     param="input", code="missing_field" if value is None else "invalid_type")


# --- stored responses ------------------------------------------------------------------------

def find(hub, response_id: str) -> dict:
    """The stored record, or the clearest reason there is none."""
    record = hub.engine.response(response_id)
    if record is not None:
        return record
    minted = created_at(response_id)
    oldest = hub.engine.oldest_response_time()
    keep = hub.config.responses
    if minted is not None and (minted < time.time() - keep.keep_days * 86400 or
                               oldest is None or minted < oldest):
        raise Gone(f"Response {response_id} has expired: responses are kept "
                   f"{keep.keep_days:g} days, {keep.keep_count} at most",
                   code="response_expired")
    raise NotFound(f"No response with id {response_id!r}", code="response_not_found")


def body(record: dict, live=None) -> dict:
    """A response as the seed shapes it, from its record (and the live run's text, if any)."""
    out = {"id": record["id"], "object": "response", "created": int(record["created_at"]),
           "model": record["model"], "provider": record["provider"],
           "status": record["status"],
           "output_text": live.transcript.text if live else record["output"],
           "usage": record["usage"],
           "metadata": {"thread_id": record["thread_id"], **record["metadata"]},
           "context": record["context"]}
    error = failure(record)
    if error is not None:
        out["error"] = {"message": error.message, "code": error.code}
    return out


def failure(record: dict) -> HubError | None:
    errors = [data for kind, data in record["events"] or () if kind == "error"]
    return HubError.from_dict(errors[-1]) if record["status"] == FAILED and errors else None


def finished(hub, run) -> JSONResponse:
    """The non-streaming reply: the stored response, or its error with a real status."""
    record = find(hub, run.id)
    error = failure(record)
    if error is not None:
        raise error
    return JSONResponse(body(record))


def get_response(request, response_id: str) -> JSONResponse:
    hub = request.hub
    return JSONResponse(body(find(hub, response_id), hub.engine.run(response_id)))


def cancel_response(request, response_id: str) -> JSONResponse:
    hub = request.hub
    run = hub.engine.run(response_id)
    status = run.cancel("cancelled", wait=5) if run else find(hub, response_id)["status"]
    return JSONResponse({"id": response_id, "status": status})


def response_events(request, response_id: str):
    """Replay a response's events after Last-Event-ID, then follow it live until done."""
    hub = request.hub
    after = request.headers.get("Last-Event-ID", request.query.get("last_event_id"))
    after = after.strip() if after is not None else None
    cursor = query_int(after, "Last-Event-ID", 0, lo=0)
    run = hub.engine.run(response_id)
    if run is None:
        run = Replay(find(hub, response_id))
        if after is not None and cursor >= run.base + len(run.events):
            # All sent already. 204 is what tells an EventSource to stop reconnecting
            # (WHATWG HTML, server-sent events, "204 No Content").
            return JSONResponse(None, status=204)
    if cursor < run.base:
        raise EventsGone(cursor, run.base)
    renderer = ResponseStream(run_meta(run), cursor=cursor, with_meta=after is None)
    return StreamResponse(run, renderer, cursor=cursor)


class Replay(RunContract):
    """A finished response read back from the store, the way a live run is read
    (runs.RunContract)."""

    job = None        # nothing left to do: Engine.launch() passes it by
    secrets = ()

    def __init__(self, record: dict) -> None:
        self.info: dict = {}          # no request-log record: the live run had that
        self.id, self.created = record["id"], int(record["created_at"])
        self.model, self.provider, self.status = record["model"], record["provider"], \
            record["status"]
        self.thread_id, self.cancel_reason = record["thread_id"], None
        counts = record["usage"]
        self.usage = Usage(counts["input_tokens"], counts["output_tokens"]) if counts else None
        self.transcript = Transcript()
        self.transcript.parts.append(record["output"])
        stored = list(record["events"] or ())
        self.base = 0
        if stored and stored[0][0] == TRIMMED:        # the log was bounded while it ran
            self.base = stored.pop(0)[1]["count"]
        events = [from_stored(kind, data) for kind, data in stored]
        if not events or events[-1].kind != "done":   # a process died mid-run
            events.append(Done(self.status))
        self.events = events

    def read(self, cursor: int, timeout: float, reader: int | None = None) -> list:
        if cursor < self.base:
            raise EventsGone(cursor, self.base)
        return self.events[cursor - self.base:]

    def follow(self, cursor: int, driving: bool = False) -> int:
        return 0

    def unfollow(self, reader: int) -> None:
        pass

    def wait(self, timeout: float | None) -> bool:
        return True

    def cancel(self, reason: str = "", wait: float = 0.0) -> str:
        return self.status


# --- the stream ------------------------------------------------------------------------------

def run_meta(run) -> dict:
    return {"id": run.id, "created": run.created, "model": run.model,
            "provider": run.provider, "status": "in_progress"}


class ResponseStream(StreamRenderer):
    """Renders run events as the seed's meta/delta/usage/done/ping/error SSE events."""

    eager = True   # meta goes out before the upstream answers

    def __init__(self, meta: dict, cursor: int = 0, with_meta: bool = True) -> None:
        self.meta = meta
        self.position = cursor
        self.with_meta = with_meta

    def opening(self, run) -> bytes:
        return sse(self.meta, event="meta", id=0) if self.with_meta else b""

    def ping(self) -> bytes:
        return sse({"ts": ids.utc_text()}, event="ping", id=self.position)

    def render(self, event) -> bytes:
        self.position += 1
        kind = event.kind
        if kind == "delta" and event.text:
            return self._event("delta", {"index": 0, "type": "output_text.delta",
                                         "text": event.text})
        if kind == "usage":
            return self._event("usage", event.counts())
        if kind == "error":
            return self._event("error", {"message": event.message})
        if kind == "done":
            return self._event("done", {"status": event.status})
        return b""

    def _event(self, name: str, data: dict) -> bytes:
        return sse(data, event=name, id=self.position)
