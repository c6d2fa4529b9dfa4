"""OpenAI's Files and Batch APIs (`/v1/files`, `/v1/batches`), for overnight jobs on local
models with the official clients (issue 32). The work is engine/batches.py's; this module
reads the wire requests and runs each batch line through its endpoint's own view.

Wire rules kept here:
- an upload is multipart/form-data with `file` and `purpose` (`batch` or `user_data`);
  objects are OpenAI's FileObject, Batch and cursor pages (`first_id`, `last_id`,
  `has_more`); `GET /v1/files` takes `purpose`, `limit` (1-10,000, default 10,000),
  `after` and `order` (`asc` or `desc`, default `desc`); `GET /v1/batches` takes `limit`
  (1-100, default 20) and `after`;
- a line runs as the endpoint's HTTP route would run it (`run_line`): the same view, under
  the batch owner's key, its route's key limits checked; its answer is the status and the
  JSON body that route would have sent, errors in OpenAI's shape. `stream` and
  `background` are dropped from a line's body: a batch line is always awaited whole; a
  `/v1/responses` line runs with `store: false` (the batch's output file holds its answer,
  and a line run twice must not store two responses);
- errors are OpenAI's shape.
"""

from email.message import Message
from typing import Callable

from llmhub.dialects import completions, embeddings, openai, openai_responses
from llmhub.dialects.checks import query_int
from llmhub.dialects.openai import error_body
from llmhub.engine.batches import LineOutcome, Requeue, requeue_for
from llmhub.engine.runs import CANCELLED
from llmhub.errors import BadRequest, HubError
from llmhub.formats import multipart
from llmhub.wire import FileResponse, JSONResponse, RunResponse

__all__ = ["TITLE", "error_body", "upload_file", "list_files", "get_file", "file_content",
           "delete_file", "create_batch", "list_batches", "get_batch", "cancel_batch",
           "run_line"]

TITLE = "OpenAI"

VIEWS: dict[str, Callable] = {
    "/v1/chat/completions": openai.chat_completions,
    "/v1/responses": openai_responses.create,
    "/v1/embeddings": embeddings.create_embeddings,
    "/v1/completions": completions.create_completion,
}
AWAITED_ONLY = ("stream", "background")   # a line's fields that would not await its answer


# --- files -----------------------------------------------------------------------------------

def upload_file(request) -> JSONResponse:
    raw = request.body
    parts = multipart.parse(raw, multipart.boundary_of(request.headers.get("Content-Type")))
    file_part, purpose_part = multipart.find(parts, "file"), multipart.find(parts, "purpose")
    if file_part is None or file_part.filename is None:
        raise BadRequest("'file' is required: a form part with a filename", param="file",
                         code="missing_field")
    if purpose_part is None:
        raise BadRequest("'purpose' is required", param="purpose", code="missing_field")
    purpose = multipart.text(raw, purpose_part).strip()
    data = raw[file_part.start:file_part.end]
    return JSONResponse(request.hub.batches.upload(file_part.filename, purpose, data))


def list_files(request) -> JSONResponse:
    query = request.query
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadRequest("'order' must be asc or desc", param="order", code="invalid_value")
    return JSONResponse(request.hub.batches.list_files(
        query.get("purpose") or None, page_limit(query, 10000, 10000),
        query.get("after") or None, order))


def get_file(request, file_id: str) -> JSONResponse:
    return JSONResponse(request.hub.batches.file(file_id))


def file_content(request, file_id: str) -> FileResponse:
    return FileResponse(*request.hub.batches.content(file_id))


def delete_file(request, file_id: str) -> JSONResponse:
    return JSONResponse(request.hub.batches.delete_file(file_id))


# --- batches ---------------------------------------------------------------------------------

def create_batch(request) -> JSONResponse:
    body = request.json_object()
    for name in ("input_file_id", "endpoint", "completion_window"):
        if not isinstance(body.get(name), str):
            raise BadRequest(f"'{name}' is required: a string", param=name,
                             code="missing_field" if name not in body else "invalid_type")
    metadata = body.get("metadata")
    check_metadata(metadata)
    return JSONResponse(request.hub.batches.create(
        body["input_file_id"], body["endpoint"], body["completion_window"], metadata))


def check_metadata(metadata) -> None:
    """OpenAI's rule: at most 16 pairs, keys to 64 characters, string values to 512."""
    if metadata is None:
        return
    if not isinstance(metadata, dict) or len(metadata) > 16 or any(
            not isinstance(v, str) or len(k) > 64 or len(v) > 512 for k, v in metadata.items()):
        raise BadRequest("'metadata' must be an object of at most 16 string pairs (keys up "
                         "to 64 characters, values up to 512)", param="metadata",
                         code="invalid_value")


def list_batches(request) -> JSONResponse:
    query = request.query
    return JSONResponse(request.hub.batches.list_batches(page_limit(query, 20, 100),
                                                         query.get("after") or None))


def page_limit(query: dict, default: int, most: int) -> int:
    return query_int(query.get("limit"), "limit", default, hi=most, code="invalid_value")


def get_batch(request, batch_id: str) -> JSONResponse:
    return JSONResponse(request.hub.batches.batch(batch_id))


def cancel_batch(request, batch_id: str) -> JSONResponse:
    return JSONResponse(request.hub.batches.cancel(batch_id))


# --- running one line ------------------------------------------------------------------------

class LineRequest:
    """What a view reads of a request, for a batch line: its body already parsed."""

    def __init__(self, hub, path: str, body: dict) -> None:
        self.hub = hub
        self.method = "POST"
        self.path = path
        self.query: dict = {}
        self.headers = Message()
        self.headers["Content-Type"] = "application/json"
        self.body = b""
        self._json = body

    def json(self, messages: bool = True):
        return self._json

    def json_object(self, messages: bool = True) -> dict:
        return self._json

    def run_id(self) -> str | None:
        return None


def run_line(hub, owner: str, endpoint: str, body: dict,
             on_run: Callable[[str], None]) -> LineOutcome:
    """Run one line through its endpoint's view, as its HTTP route would under the batch
    owner's key (the engine's line thread runs as that key, below every interactive
    request: engine/batches.py). `on_run(run_id)` is told the run's id before it starts,
    so that a batch's cancel can cancel it. Raises Requeue when the line did not run to
    an answer: preempted, cancelled, the hub stopping, the key at its limit of runs or
    requests, no model server there (engine/batches.py requeue_for)."""
    body = {k: v for k, v in body.items() if k not in AWAITED_ONLY}
    if endpoint == "/v1/responses":
        body["store"] = False
    run = None
    try:
        hub.limits.admit(owner, "POST", endpoint)
        result = VIEWS[endpoint](LineRequest(hub, endpoint, body))
        if isinstance(result, RunResponse):
            run = result.run
            on_run(run.id)
            hub.engine.drive(run)
            run.wait(None)
            if run.status == CANCELLED:
                raise Requeue()
            result = result.finish(run)
        return outcome(result, run)
    except HubError as exc:
        answer = LineOutcome(exc.status, error_body(exc), run.id if run is not None else "",
                             *tokens(run))
        again = requeue_for(exc)
        if again is None:
            return answer
        if again.counted:              # its answer once the line has no tries left
            again.answer = answer
        raise again from None


def outcome(result, run) -> LineOutcome:
    if not isinstance(result, JSONResponse):
        raise HubError(f"a batch line's view returned {type(result).__name__}")
    body = result.body
    request_id = run.id if run is not None else (body.get("id") or "")
    return LineOutcome(result.status, body, request_id, *tokens(run, body))


def tokens(run, body: dict | None = None) -> tuple[int, int]:
    """(input, output) tokens of a line: its run's usage, or the body's (embeddings)."""
    usage = run.usage if run is not None else None
    if usage is not None:
        return usage.input_tokens or 0, usage.output_tokens or 0
    counted = (body or {}).get("usage") or {}
    return counted.get("prompt_tokens") or counted.get("input_tokens") or 0, 0
