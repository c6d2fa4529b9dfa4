"""Resume for every stream: a request asks to be resumable, and a client that lost its
connection comes back for the rest, in the same wire format (docs/resume.md).

The wire, the same in every dialect:
- A streaming request asks with `X-Llmhub-Resumable: 1` (`[server] resumable_streams` makes
  that the default, and `X-Llmhub-Resumable: 0` then opts out). Its response carries the
  same header with the grace in seconds, and `X-Run-Id`, as every stream does.
- The client re-attaches by sending the request again (same method, path and Accept; the
  body may be left out) with `X-Llmhub-Resume: <run id>` and its position in
  `Last-Event-ID` (or `?last_event_id=`): how many units of the body it has.
- A unit is an SSE event (comments and pings are not counted) or an NDJSON line (those
  dialects send no ping lines). A resumable SSE stream numbers its events with an `id:` line
  (1, 2, 3 …), after the event's other lines, where clients that read `event:` or `data:`
  from a frame's first line still find it; so `Last-Event-ID` is the last id received. An
  NDJSON client counts its lines.
- The rest is rendered again from the run's event log by a copy of the renderer the stream
  began with, skipping what the client has: byte for byte what the first stream sent or
  would have sent from there on (a timestamp a dialect stamps as it renders, Ollama's
  `created_at`, is the time of rendering).

Rules: the run is the caller's key's (another key's id is the 404 of an unknown one); a
position past what the stream has sent is a 400 naming Last-Event-ID; a run whose log no
longer starts at its beginning (past `[responses] max_event_log_bytes`) is a 410. A
stream that was not asked to be resumable pays nothing but one header lookup: no copy, no
counting, and its client leaving cancels it, as before.
"""

import copy
import functools
from typing import Callable

from llmhub.dialects.checks import query_int
from llmhub.errors import BadRequest, Gone
from llmhub.wire import StreamRenderer, StreamResponse

__all__ = ["RESUMABLE", "RESUME", "resumable", "Numbered"]

RESUMABLE = "X-Llmhub-Resumable"   # request: asks (1) or declines (0); response: the grace
RESUME = "X-Llmhub-Resume"         # request: the run id of the stream to re-attach to
POSITION = "Last-Event-ID"
YES, NO = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def resumable(view: Callable, own: Callable | None = None) -> Callable:
    """`view`, whose streams are resumable when asked, and which re-attaches a client that
    sends X-Llmhub-Resume; `own`: a dialect's own re-attach view (/responses has one)."""
    @functools.wraps(view)
    def serve(request, **params):
        run_id = request.headers.get(RESUME)
        if run_id is not None:
            return (own or reattach)(request, run_id.strip())
        wanted = asked(request)          # before the view: a bad header makes no run
        result = view(request, **params)
        if wanted and type(result) is StreamResponse:
            keep(request, result)
        return result
    return serve


def asked(request) -> bool:
    value = request.headers.get(RESUMABLE)
    if value is None:
        return request.hub.config.server.resumable_streams
    flag = value.strip().lower()
    if flag in YES or flag in NO:
        return flag in YES
    raise BadRequest(f"{RESUMABLE} must be 1 or 0 (true or false), not {value!r}",
                     param=RESUMABLE)


def keep(request, response: StreamResponse) -> None:
    """Make a stream resumable: its run waits for its client, its renderer is kept as it
    is now (before it rendered anything), and its SSE events are numbered."""
    run = response.run
    if run.background or run.resume_grace is not None:
        return      # resumable its own way already (/v1/responses with store): as it was
    request.hub.engine.keep_resumable(run, where(request), pristine(response.renderer, run))
    if is_sse(response.renderer):      # NDJSON has no ids: its client counts lines
        response.renderer = Numbered(response.renderer)
    response.headers[RESUMABLE] = grace(request)


def reattach(request, run_id: str) -> StreamResponse:
    """The rest of a resumable stream, after the client's position."""
    position = position_of(request)
    entry = request.hub.engine.resumable(run_id)
    if entry.where != where(request):
        raise BadRequest(f"Run {run_id!r} is a stream of {entry.where[1]} "
                         f"({entry.where[0]}); re-attach to it there", param=RESUME)
    run = entry.run
    if run.base:
        raise Gone(f"The start of the stream of run {run_id!r} is no longer kept "
                   "([responses] max_event_log_bytes bounds it), so its rest cannot be "
                   "told apart from what was sent", code="events_expired", param=POSITION)
    sent = units_so_far(pristine(entry.renderer, run), run)
    if position > sent:
        raise BadRequest(f"{POSITION} {position} is past the end of the stream of run "
                         f"{run_id!r}: it has sent {sent} so far", param=POSITION,
                         code="position_out_of_range")
    renderer = Numbered(pristine(entry.renderer, run), skip=position)
    return StreamResponse(run, renderer, headers={RESUMABLE: grace(request)})


def position_of(request) -> int:
    """The last SSE id the client got, or how many NDJSON lines came."""
    value = request.headers.get(POSITION, request.query.get("last_event_id"))
    return query_int((value or "").strip(), POSITION, 0, lo=0)


def where(request) -> tuple:
    """The dialect and route a stream belongs to: /chat/stream is two dialects' (by Accept)."""
    state = request.handler.state
    return state.dialect.__name__.rpartition(".")[2], state.route


def grace(request) -> str:
    return "%g" % request.hub.config.responses.resume_grace_seconds


def pristine(renderer: StreamRenderer, run) -> StreamRenderer:
    """A copy of a renderer that has rendered nothing, sharing only the run: what the
    dialect made for the request. Made again later it would differ: it takes the run's
    model and thread as they are when it is made (transcript.Seen)."""
    return copy.deepcopy(renderer, {id(run): run})


def is_sse(renderer: StreamRenderer) -> bool:
    return renderer.content_type.startswith("text/event-stream")


def units_so_far(renderer: StreamRenderer, run) -> int:
    """How many units the stream's renderer makes of the run's events so far."""
    counted = Numbered(renderer, skip=1 << 62)
    if renderer.eager:
        counted.opening(run)
    for event in run.read(0, 0):
        counted.render(event)
    return counted.sent


class Numbered(StreamRenderer):
    """A dialect's renderer whose output is counted in units (module docstring): SSE events
    get an `id:` line with their number, and the first `skip` units are left out."""

    def __init__(self, inner: StreamRenderer, skip: int = 0) -> None:
        self.inner, self.skip, self.sent = inner, skip, 0
        self.content_type = inner.content_type
        self.sse = is_sse(inner)

    @property
    def eager(self) -> bool:
        return self.inner.eager

    def opening(self, run) -> bytes:
        return self._count(self.inner.opening(run))

    def ping(self) -> bytes:
        return self.inner.ping()       # never counted: pings come when they come

    def render(self, event) -> bytes:
        return self._count(self.inner.render(event))

    def _count(self, data: bytes) -> bytes:
        if not data:
            return data
        if self.sse:
            return self._events(data)
        if self.sent >= self.skip:
            return data                # NDJSON past the position: as it is, uncounted
        return self._lines(data)

    def _events(self, data: bytes) -> bytes:
        *frames, rest = data.split(b"\n\n")     # every frame ends with a blank line
        out = []
        for frame in frames:
            if frame.startswith(b":"):          # a comment is no event: no id, no count
                if self.sent >= self.skip:
                    out.append(frame + b"\n\n")
                continue
            self.sent += 1
            if self.sent > self.skip:
                out.append(b"%s\nid: %d\n\n" % (frame, self.sent))
        return b"".join(out) + rest

    def _lines(self, data: bytes) -> bytes:
        *lines, rest = data.split(b"\n")        # every line ends with a newline
        out = []
        for line in lines:
            self.sent += 1
            if self.sent > self.skip:
                out.append(line + b"\n")
        return b"".join(out) + rest
