"""Resume for every stream (issue 32, point 2): a stream asked to be resumable
(X-Llmhub-Resumable) outlives its client for the grace period, and the client re-attaches by
repeating its request with X-Llmhub-Resume and its position, getting the rest in the same
wire format, nothing repeated or lost. Without the header a drop cancels, as before."""

import json
import socket
import threading
from dataclasses import dataclass, field

import pytest

from fake_lmstudio import Script
from http_client import call, connect, open_stream
from llmhub.dialects.reattach import Numbered
from llmhub.wire import StreamRenderer
from support import ALICE, BOB, TEAM, wait_for

MODEL = "qwen2.5-7b-instruct"
HI = [{"role": "user", "content": "Hi"}]
CHUNKS = ["Alpha", " beta", " gamma", " delta"]
NEVER = threading.Event()
RESUMABLE = {"X-Llmhub-Resumable": "1"}


# --- each dialect: where it streams, and how its units say text -------------------------------

def openai_text(unit):
    choices = unit.get("choices") or [{}]
    return (choices[0].get("delta") or {}).get("content") or choices[0].get("text") or ""


def anthropic_text(unit):
    return (unit.get("delta") or {}).get("text") or "" \
        if unit.get("type") == "content_block_delta" else ""


@dataclass
class Dialect:
    path: str
    body: dict
    text: object                       # a parsed unit → the text it carries
    ndjson: bool = False
    headers: dict = field(default_factory=dict)
    own_ids: bool = False              # /responses: its ids are its log's positions


DIALECTS = {
    "openai": Dialect("/v1/chat/completions",
                      {"model": MODEL, "messages": HI, "stream": True}, openai_text),
    "completions": Dialect("/v1/completions",
                           {"model": MODEL, "prompt": "Hi", "stream": True}, openai_text),
    "anthropic": Dialect("/v1/messages", {"model": MODEL, "max_tokens": 64, "messages": HI,
                                          "stream": True}, anthropic_text),
    "langbase": Dialect("/v1/pipes/run", {"messages": HI, "stream": True}, openai_text),
    "responses": Dialect("/responses?stream=true", {"model": MODEL, "input": "Hi"},
                         lambda u: u.get("text") or "", own_ids=True),
    "v1_responses_unstored": Dialect(
        "/v1/responses", {"model": MODEL, "input": "Hi", "stream": True, "store": False},
        lambda u: u.get("delta") or "" if u.get("type") == "response.output_text.delta"
        else ""),
    "studio": Dialect("/chat/stream", {"messages": HI}, lambda u: u.get("content") or "",
                      ndjson=True),
    "edison": Dialect("/chat/stream", {"message": "Hi"}, lambda u: u.get("t") or "",
                      headers={"Accept": "text/event-stream"}),
    "sessions": Dialect("/v1/chat/completions/stream", {"messages": HI, "model": MODEL},
                        lambda u: u.get("content") or ""),
    "ollama_chat": Dialect("/api/chat", {"model": MODEL, "messages": HI},
                           lambda u: (u.get("message") or {}).get("content") or "",
                           ndjson=True),
    "ollama_generate": Dialect("/api/generate", {"model": MODEL, "prompt": "Hi"},
                               lambda u: u.get("response") or "", ndjson=True),
}
GENERIC = [name for name, d in DIALECTS.items() if not d.own_ids]


# --- reading units off the wire --------------------------------------------------------------

def units_of(raw: bytes, ndjson: bool) -> tuple[list[dict], bytes]:
    """The complete units in `raw` (SSE events without comments and pings, or NDJSON
    lines), each {"id", "data", "raw"}; and what is left of an incomplete one."""
    if ndjson:
        *lines, rest = raw.split(b"\n")
        return [{"id": None, "data": json.loads(line), "raw": line + b"\n"}
                for line in lines], rest
    *frames, rest = raw.split(b"\n\n")
    units = []
    for frame in frames:
        fields = dict(line.split(": ", 1) for line in frame.decode().split("\n")
                      if line and not line.startswith(":"))   # Langbase's extra blank line
        if not fields or fields.get("event") in ("ping", "queue"):
            continue
        data = fields.get("data", "")
        units.append({"id": fields.get("id"), "event": fields.get("event"),
                      "data": {} if data == "[DONE]" else json.loads(data),
                      "raw": frame + b"\n\n"})
    return units, rest


def text_of(dialect: Dialect, units: list[dict]) -> str:
    return "".join(dialect.text(unit["data"]) for unit in units)


def read_until_text(response, dialect: Dialect, prefix: str) -> list[dict]:
    """Read a live stream until its complete units carry `prefix`."""
    raw = b""
    while True:
        raw += response.read1(65536)
        units, _ = units_of(raw, dialect.ndjson)
        if text_of(dialect, units) == prefix:
            return units
        assert len(text_of(dialect, units)) < len(prefix), text_of(dialect, units)


def position(dialect: Dialect, units: list[dict]) -> str:
    """What the client sends back: the last SSE id it got, or how many lines."""
    return str(len(units)) if dialect.ndjson else units[-1]["id"]


def drop(conn) -> None:
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()


def start(hub, dialect: Dialect, headers: dict = RESUMABLE):
    return open_stream(hub.url, dialect.path, dialect.body,
                       headers={**dialect.headers, **headers})


def resume(hub, dialect: Dialect, run_id: str, at: str | None, headers: dict | None = None,
           body: bool = True):
    """The request again, with X-Llmhub-Resume and the position; (status, headers, bytes)."""
    conn = connect(hub.url)
    extra = {"X-Llmhub-Resume": run_id, **({"Last-Event-ID": at} if at is not None else {})}
    conn.request("POST", dialect.path, body=json.dumps(dialect.body).encode() if body else None,
                 headers={"Content-Type": "application/json", **dialect.headers, **extra,
                          **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, response.headers, data


def left(hub, run_id: str) -> bool:
    """The hub saw the client go: nobody follows the run any more (or it is over)."""
    run = hub.hub.registry.get(run_id)
    return run is None or not run.log.followed


# --- the feature -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(DIALECTS))
def test_a_dropped_stream_is_reattached_and_nothing_is_lost_or_repeated(hub, fake, name):
    dialect = DIALECTS[name]
    release = threading.Event()
    fake.enqueue(Script(chunks=CHUNKS, hold_first=release, hold_after=2))
    conn, response = start(hub, dialect)
    run_id = response.getheader("X-Run-Id")
    first = read_until_text(response, dialect, "Alpha beta")
    drop(conn)
    assert wait_for(lambda: left(hub, run_id))     # the hub saw it go, and kept the run
    assert not fake.aborted.is_set()
    release.set()
    status, headers, raw = resume(hub, dialect, run_id, position(dialect, first))
    assert status == 200, raw
    rest, tail = units_of(raw, dialect.ndjson)
    assert tail.strip() == b""                     # (Langbase ends on a blank line)
    assert text_of(dialect, first) + text_of(dialect, rest) == "".join(CHUNKS)
    if not dialect.ndjson and not dialect.own_ids:  # ids go on from where the client was
        ids = [int(u["id"]) for u in first + rest]
        assert ids == list(range(ids[0], ids[0] + len(ids)))
    if not dialect.own_ids:
        assert headers["X-Llmhub-Resumable"] == "15" and headers["X-Run-Id"] == run_id
    assert not fake.aborted.is_set()


@pytest.mark.parametrize("name", ["openai", "anthropic", "edison", "sessions", "langbase"])
def test_the_rest_is_byte_for_byte_what_the_stream_sent(hub, fake, name):
    """A finished resumable stream, re-attached from 0 and from the middle, sends exactly
    the bytes the first stream sent from there (pings aside)."""
    dialect = DIALECTS[name]
    fake.enqueue(Script(chunks=CHUNKS))
    conn, response = start(hub, dialect)
    run_id = response.getheader("X-Run-Id")
    sent, _ = units_of(response.read(), dialect.ndjson)
    conn.close()
    everything = b"".join(u["raw"] for u in sent)
    assert [u["id"] for u in sent] == [str(i) for i in range(1, len(sent) + 1)]
    for at in (None, "0", "3", str(len(sent))):
        status, _, raw = resume(hub, dialect, run_id, at, body=False)
        skip = int(at or 0)
        assert status == 200
        assert b"".join(u["raw"] for u in units_of(raw, False)[0]) == \
            b"".join(u["raw"] for u in sent[skip:])
    assert everything.count(b"\nid: ") == len(sent)


def test_a_stream_nobody_asked_to_resume_is_as_it_was(hub, fake):
    """No header, default off: no ids, no resumable header, and no re-attach."""
    conn, response = start(hub, DIALECTS["openai"], headers={})
    raw = response.read()
    conn.close()
    assert b"id:" not in raw and response.getheader("X-Llmhub-Resumable") is None
    status, _, body = resume(hub, DIALECTS["openai"], response.getheader("X-Run-Id"), "1")
    assert status == 404 and body and json.loads(body)["error"]["code"] == "run_not_found"


@pytest.mark.parametrize("name", GENERIC)
def test_without_the_header_a_drop_still_cancels(hub, fake, name):
    dialect = DIALECTS[name]
    fake.enqueue(Script(chunks=CHUNKS, hold_first=NEVER, hold_after=2))
    conn, response = start(hub, dialect, headers={})
    read_until_text(response, dialect, "Alpha beta")
    drop(conn)
    assert fake.aborted.wait(5)                     # the upstream connection was closed


def test_the_hub_wide_default_makes_streams_resumable_and_0_declines(make_hub, fake):
    hub = make_hub({"server": {"resumable_streams": "true"}})
    dialect = DIALECTS["ollama_chat"]
    release = threading.Event()
    fake.enqueue(Script(chunks=CHUNKS, hold_first=release, hold_after=2),
                 Script(chunks=CHUNKS, hold_first=NEVER, hold_after=2))
    conn, response = start(hub, dialect, headers={})
    run_id = response.getheader("X-Run-Id")
    assert response.getheader("X-Llmhub-Resumable") == "15"
    first = read_until_text(response, dialect, "Alpha beta")
    drop(conn)
    assert wait_for(lambda: left(hub, run_id))
    release.set()
    status, _, raw = resume(hub, dialect, run_id, str(len(first)))
    assert text_of(dialect, first) + text_of(dialect, units_of(raw, True)[0]) == \
        "".join(CHUNKS)
    conn, response = start(hub, dialect, headers={"X-Llmhub-Resumable": "0"})
    assert response.getheader("X-Llmhub-Resumable") is None
    read_until_text(response, dialect, "Alpha beta")
    drop(conn)
    assert fake.aborted.wait(5)


def test_nobody_back_in_the_grace_period_cancels_and_counts_the_run(make_hub, fake):
    """The run is cancelled (client_gone) once the grace is over, its partial reply counted
    in the request log; a client back just after still gets the stream's end, then 404."""
    hub = make_hub({"responses": {"resume_grace_seconds": 0.3}})
    dialect = DIALECTS["openai"]
    fake.enqueue(Script(chunks=CHUNKS, hold_first=NEVER, hold_after=2))
    conn, response = start(hub, dialect)
    run_id = response.getheader("X-Run-Id")
    first = read_until_text(response, dialect, "Alpha beta")
    run = hub.hub.registry.get(run_id)
    drop(conn)
    assert fake.aborted.wait(5) and run.wait(5)    # cancelled, stored and recorded
    assert call(hub.url, "GET", f"/v1/runs/{run_id}")[2]["status"] == "cancelled"
    record = call(hub.url, "GET", f"/v1/requests/{run_id}")[2]
    assert record["status"] == "cancelled" and record["output_tokens"] > 0
    status, _, raw = resume(hub, dialect, run_id, position(dialect, first))
    if status == 200:                  # within the grace after its end: the end it had
        rest = units_of(raw, False)[0]
        assert rest[0]["data"]["choices"][0]["finish_reason"] == "cancelled"
    assert wait_for(lambda: resume(hub, dialect, run_id, "0")[0] == 404)


def test_a_resumable_run_can_still_be_cancelled(hub, fake):
    dialect = DIALECTS["anthropic"]
    fake.enqueue(Script(chunks=CHUNKS, hold_first=NEVER, hold_after=2))
    conn, response = start(hub, dialect)
    run_id = response.getheader("X-Run-Id")
    read_until_text(response, dialect, "Alpha beta")
    drop(conn)
    assert wait_for(lambda: left(hub, run_id))
    assert not fake.aborted.is_set()
    status, _, body = call(hub.url, "POST", f"/v1/runs/{run_id}/cancel")
    assert status == 200 and body["status"] == "cancelled" and fake.aborted.wait(5)


def test_another_keys_reattach_is_the_404_of_an_unknown_run(make_hub, fake):
    hub = make_hub(TEAM)
    dialect = DIALECTS["openai"]
    release = threading.Event()
    fake.enqueue(Script(chunks=CHUNKS, hold_first=release, hold_after=2))
    conn, response = start(hub, dialect, headers={**RESUMABLE, **ALICE})
    run_id = response.getheader("X-Run-Id")
    first = read_until_text(response, dialect, "Alpha beta")
    drop(conn)
    assert wait_for(lambda: left(hub, run_id))
    theirs = resume(hub, dialect, run_id, "1", headers=BOB)
    unknown = resume(hub, dialect, "run_unknown", "1", headers=BOB)
    assert theirs[0] == unknown[0] == 404
    assert json.loads(theirs[2].replace(run_id.encode(), b"ID")) == \
        json.loads(unknown[2].replace(b"run_unknown", b"ID"))
    release.set()
    status, _, raw = resume(hub, dialect, run_id, position(dialect, first), headers=ALICE)
    assert status == 200 and text_of(dialect, first + units_of(raw, False)[0]) == \
        "".join(CHUNKS)


# --- bad re-attaches: a clear 4xx in the dialect's own shape -----------------------------------

INVALID = (400, 422)    # the LM Studio hub's validation errors are 422s
SHAPES = {   # the dialect's error body → (its message, the field it names, if it says)
    "openai": lambda b: (b["error"]["message"], b["error"]["param"]),
    "anthropic": lambda b: (b["error"]["message"], None),
    "langbase": lambda b: (b["error"]["message"], None),
    "edison": lambda b: (b["error"], b.get("param")),
    "studio": lambda b: (str(b["detail"]), None),
    "ollama_chat": lambda b: (b["error"], None),
    "ollama_generate": lambda b: (b["error"], None),
    "completions": lambda b: (b["error"]["message"], b["error"]["param"]),
    "v1_responses_unstored": lambda b: (b["error"]["message"], b["error"]["param"]),
    "sessions": lambda b: (b["error"], None),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_unknown_runs_and_positions_past_the_end_are_4xx_in_the_dialects_shape(hub, fake,
                                                                                 name):
    dialect, shape = DIALECTS[name], SHAPES[name]
    status, _, body = resume(hub, dialect, "run_nobody", "1")
    message, param = shape(json.loads(body))
    assert status == 404 and "run_nobody" in message and param in (None, "X-Llmhub-Resume")
    fake.enqueue(Script(chunks=CHUNKS))
    conn, response = start(hub, dialect)
    run_id = response.getheader("X-Run-Id")
    sent, _ = units_of(response.read(), dialect.ndjson)
    conn.close()
    status, _, body = resume(hub, dialect, run_id, str(len(sent) + 1))
    message, param = shape(json.loads(body))
    assert status in INVALID and "past the end" in message and \
        param in (None, "Last-Event-ID")
    status, _, body = resume(hub, dialect, run_id, "soon")
    message, param = shape(json.loads(body))
    assert status in INVALID and "Last-Event-ID" in message


def test_a_run_is_reattached_where_it_streams(hub, fake):
    """/chat/stream is two dialects' (by Accept): a run of one is not re-rendered as the
    other's, nor at another path."""
    fake.enqueue(Script(chunks=CHUNKS))
    conn, response = start(hub, DIALECTS["edison"])
    run_id = response.getheader("X-Run-Id")
    response.read()
    conn.close()
    for other in ("studio", "openai"):
        status, _, body = resume(hub, DIALECTS[other], run_id, "0")
        assert status in INVALID and b"re-attach to it there" in body


def test_a_bad_resumable_header_is_refused_before_any_run(hub, fake):
    status, _, body = call(hub.url, "POST", "/v1/chat/completions", DIALECTS["openai"].body,
                           headers={"X-Llmhub-Resumable": "maybe"})
    assert status == 400 and body["error"]["param"] == "X-Llmhub-Resumable"
    assert not fake.chat_requests() and not hub.hub.registry.live()


# --- what a resumable run leaves behind ---------------------------------------------------------

def test_a_run_nobody_comes_back_to_is_stored_and_counted_whole(hub, fake):
    """With nobody reading, a resumable run goes on to its end within the grace: its reply
    is stored in its thread and its record counts all of it, as for any finished run."""
    dialect = DIALECTS["edison"]
    release = threading.Event()
    fake.enqueue(Script(chunks=CHUNKS, hold_first=release, hold_after=2))
    conn, response = start(hub, dialect)
    run_id = response.getheader("X-Run-Id")
    first = read_until_text(response, dialect, "Alpha beta")
    thread_id = first[0]["data"]["thread_id"]          # EDISON's init event
    run = hub.hub.registry.get(run_id)
    drop(conn)
    assert wait_for(lambda: left(hub, run_id))
    release.set()
    assert run.wait(5) and run.status == "completed"   # stored and recorded
    messages = call(hub.url, "GET", f"/v1/threads/{thread_id}/messages")[2]
    assert messages[-1]["role"] == "assistant" and messages[-1]["content"] == "".join(CHUNKS)
    record = call(hub.url, "GET", f"/v1/requests/{run_id}")[2]
    assert record["status"] == "completed" and record["output_tokens"] == len(CHUNKS)


def test_a_stream_dropped_twice_is_reattached_twice(hub, fake):
    """A re-attached stream is as resumable as the first: its ids go on, and it may be
    dropped and re-attached again."""
    dialect = DIALECTS["openai"]
    release = threading.Event()
    fake.enqueue(Script(chunks=CHUNKS, hold_first=release, hold_after=1))
    conn, response = start(hub, dialect)
    run_id = response.getheader("X-Run-Id")
    first = read_until_text(response, dialect, "Alpha")
    drop(conn)
    assert wait_for(lambda: left(hub, run_id))
    conn = connect(hub.url)
    conn.request("POST", dialect.path, headers={"X-Llmhub-Resume": run_id,
                                                "Last-Event-ID": position(dialect, first)})
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("X-Run-Id") == run_id
    release.set()
    second = read_until_text(response, dialect, " beta gamma delta")
    drop(conn)
    assert wait_for(lambda: left(hub, run_id))
    status, _, raw = resume(hub, dialect, run_id, position(dialect, second))
    everything = first + second + units_of(raw, False)[0]   # the third may be only the end
    assert status == 200 and text_of(dialect, everything) == "".join(CHUNKS)
    assert [int(u["id"]) for u in everything] == list(range(1, len(everything) + 1))
    assert [u["raw"] for u in everything].count(b"data: [DONE]\nid: %d\n\n" %
                                                len(everything)) == 1
    assert not fake.aborted.is_set()


# --- the numbering, sans I/O -------------------------------------------------------------------

class Frames(StreamRenderer):
    """A renderer whose every event renders as the bytes it carries."""

    def __init__(self, content_type: str = StreamRenderer.content_type) -> None:
        self.content_type = content_type

    def render(self, event) -> bytes:
        return event


SSE_TABLE = [   # what a dialect's renderer wrote, per event → the same, numbered
    ([b"data: a\n\n", b"event: x\ndata: b\n\n"],
     [b"data: a\nid: 1\n\n", b"event: x\ndata: b\nid: 2\n\n"]),
    ([b"data: a\n\ndata: b\n\n"], [b"data: a\nid: 1\n\ndata: b\nid: 2\n\n"]),   # two at once
    ([b"data: a\n\n\n", b"data: b\n\n\n"],                                      # Langbase's
     [b"data: a\nid: 1\n\n\n", b"data: b\nid: 2\n\n\n"]),                      # blank line
    ([b": note\n\n", b"data: a\n\n", b""], [b": note\n\n", b"data: a\nid: 1\n\n", b""]),
]


@pytest.mark.parametrize("written, numbered", SSE_TABLE)
def test_sse_events_are_numbered_in_place(written, numbered):
    renderer = Numbered(Frames())
    assert [renderer.render(data) for data in written] == numbered


@pytest.mark.parametrize("skip", [0, 1, 2, 3])
def test_a_skip_leaves_out_exactly_that_many_units(skip):
    sse = Numbered(Frames(), skip=skip)
    out = b"".join(sse.render(d) for d in (b"data: a\n\n", b"data: b\n\ndata: c\n\n"))
    assert out == b"".join([b"data: a\nid: 1\n\n", b"data: b\nid: 2\n\n",
                            b"data: c\nid: 3\n\n"][skip:])
    lines = Numbered(Frames("application/x-ndjson"), skip=skip)
    out = b"".join(lines.render(d) for d in (b'{"a":1}\n', b'{"b":2}\n{"c":3}\n'))
    assert out == b"".join([b'{"a":1}\n', b'{"b":2}\n', b'{"c":3}\n'][skip:])
