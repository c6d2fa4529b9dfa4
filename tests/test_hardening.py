"""Trust (issue 11, points 3, 4, 5, 7, 8, 9, 10 and hostile JSON): other web pages and DNS
rebinding, runs that always end, bounded buffers, storage failures reported as failures,
secrets kept, one run per thread, and pages that say they are pages."""

import base64
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import pytest

from fake_lmstudio import Script
from http_client import call, connect, open_stream, raw_exchange, sse_events
from support import wait_for

from llmhub.engine.runs import Registry
from llmhub.http.server import CANCELLED_WRITE_GRACE, Handler, Phase, RequestState

HI = [{"role": "user", "content": "hi"}]
CHAT = {"model": "m", "messages": HI}


def live_runs(hub) -> list:
    return hub.hub.registry.live()


def active_runs_metric(hub) -> str:
    text = call(hub.url, "GET", "/metrics")[2].decode()
    return next(line for line in text.splitlines() if line.startswith("llmhub_runs_active "))


# --- point 3: other web pages and DNS rebinding ----------------------------------------------

@pytest.mark.parametrize("method, path, body", [
    ("POST", "/v1/chat/completions", json.dumps(CHAT).encode()),
    ("GET", "/v1/threads", None), ("DELETE", "/v1/threads/t", None), ("GET", "/config", None),
    ("OPTIONS", "/v1/chat/completions", None),
])
def test_a_page_from_another_origin_is_refused_before_anything_runs(hub, fake, method, path,
                                                                    body):
    status, headers, reply = call(hub.url, method, path, body, headers={
        "Origin": "http://evil.example", "Content-Type": "text/plain"})
    assert status == 403 and "cors_origins" in json.dumps(reply)   # in the route's dialect
    assert "Access-Control-Allow-Origin" not in headers
    assert not fake.chat_requests()


@pytest.mark.parametrize("origin", ["http://localhost:5173", "http://127.0.0.1:3000",
                                    "http://[::1]:8080", "http://localhost"])
def test_pages_served_from_loopback_are_allowed(hub, fake, origin):
    status, headers, _ = call(hub.url, "POST", "/v1/chat/completions", CHAT,
                              headers={"Origin": origin})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == origin


def test_the_hubs_own_page_is_allowed_however_it_is_reached(make_hub, fake):
    hub = make_hub({"server": {"allowed_hosts": "mybox.lan"}})
    port = hub.server_address[1]
    status, headers, _ = call(hub.url, "GET", "/v1/threads", headers={
        "Host": f"mybox.lan:{port}", "Origin": f"http://mybox.lan:{port}"})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == f"http://mybox.lan:{port}"


@pytest.mark.parametrize("host, allowed", [
    ("evil.example", False), ("evil.example:8000", False), ("127.0.0.1.evil.example", False),
    ("localhost", True), ("localhost:8000", True), ("app.localhost", True),
    ("127.0.0.2:9", True), ("[::1]:8000", True), ("10.0.0.5", False),
])
def test_host_must_be_loopback_or_allowed(hub, host, allowed):
    status, _, body = call(hub.url, "GET", "/health", headers={"Host": host})
    assert (status == 200) == allowed, body
    if not allowed:
        assert status == 403 and body["error"]["code"] == "host_not_allowed"


def test_allowed_hosts_take_names_and_wildcards(make_hub):
    hub = make_hub({"server": {"allowed_hosts": "gpu.lan, *.home.arpa"}})
    for host, status in (("gpu.lan", 200), ("a.home.arpa:8000", 200), ("home.arpa", 403),
                         ("other.lan", 403)):
        assert call(hub.url, "GET", "/health", headers={"Host": host})[0] == status, host


def test_star_allows_every_origin_and_warns_without_keys(make_hub, fake, tmp_path):
    hub = make_hub({"server": {"cors_origins": "*"}})
    status, headers, _ = call(hub.url, "POST", "/v1/chat/completions", CHAT,
                              headers={"Origin": "http://evil.example"})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
    from support import ended, start
    from conftest import ROOT
    process, line, _ = start([str(ROOT / "main.py"), "--upstream", "mock"], tmp_path,
                             env={"CORS_ORIGINS": "*"})
    try:
        assert "listening on" in line
        process.terminate()
        _, errors = ended(process)
    finally:
        process.kill()
    assert "warning: cors_origins = * and no api_keys" in errors


def test_the_startup_warning_names_the_risk():
    from dataclasses import replace
    from llmhub.config import ServerConfig
    from llmhub.http.origins import startup_warnings
    base = ServerConfig(cors_origins=("*",), api_keys=())
    assert "any web page" in startup_warnings(base)[0]
    assert startup_warnings(replace(base, api_keys=("k",))) == []
    assert startup_warnings(replace(base, cors_origins=("http://localhost:*",))) == []


# --- point 4: every run ends -----------------------------------------------------------------

def usage_chunk(usage: dict) -> dict:
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage}


TEXT_CHUNK = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
              "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hello"},
                           "finish_reason": None}]}


@pytest.mark.parametrize("usage", [
    {"prompt_tokens": "5", "completion_tokens": 2},
    {"prompt_tokens": 5, "completion_tokens": [2]},
    {"prompt_tokens": -1, "completion_tokens": 10 ** 30},
    {"prompt_tokens": True, "completion_tokens": 2.5},
])
def test_bad_upstream_token_counts_are_estimated_and_the_run_ends(hub, fake, usage):
    fake.enqueue(Script(raw_chunks=[TEXT_CHUNK, usage_chunk(usage)]))
    status, _, body = call(hub.url, "POST", "/v1/chat/completions", CHAT, timeout=5)
    assert status == 200 and body["choices"][0]["message"]["content"] == "Hello"
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert type(body["usage"][key]) is int and body["usage"][key] >= 0
    assert active_runs_metric(hub) == "llmhub_runs_active 0"


def test_a_metric_that_raises_still_ends_the_run(hub, fake):
    def broken(run):
        raise RuntimeError("metric bug")

    hub.hub.registry._on_retire = broken
    status, _, body = call(hub.url, "POST", "/v1/chat/completions", CHAT, timeout=5)
    assert status == 200 and body["choices"][0]["message"]["content"]
    conn, response = open_stream(hub.url, "/v1/chat/completions", {**CHAT, "stream": True})
    assert response.read().rstrip().endswith(b"data: [DONE]")
    conn.close()
    assert not live_runs(hub)


def test_a_finish_hook_that_raises_fails_the_run_and_frees_the_thread(hub, fake, monkeypatch):
    store, calls = hub.hub.threads, []
    real = store.record_reply

    def broken_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("hook bug")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "record_reply", broken_once)
    status, headers, body = call(hub.url, "POST", "/v1/pipes/run", {"messages": HI}, timeout=5)
    assert status == 500 and body["error"]["status"] == 500     # never a silent success
    thread = headers["lb-thread-id"]
    status, _, body = call(hub.url, "POST", "/v1/pipes/run",     # the thread's line moved on
                           {"messages": HI, "threadId": thread}, timeout=5)
    assert status == 200 and body["completion"] == "Hello from the fake!"
    assert not live_runs(hub)


def test_a_renderer_that_raises_ends_the_run_and_the_stream(hub, fake, monkeypatch):
    from llmhub.dialects import openai

    def broken(self, event):
        if event.kind == "delta":
            raise RuntimeError("renderer bug")
        return b""

    monkeypatch.setattr(openai.ChunkStream, "render", broken)
    fake.enqueue(Script(hold_first=threading.Event(), hold_after=1))   # then never more
    conn, response = open_stream(hub.url, "/v1/chat/completions", {**CHAT, "stream": True},
                                 timeout=5)
    try:
        received = response.read()   # a 500 if nothing had gone out yet (a ping may have)
    except http.client.IncompleteRead as cut:
        received = cut.partial       # … else the stream is cut
    assert b"[DONE]" not in received
    conn.close()
    assert fake.aborted.wait(5)                 # the run ended and stopped the model
    assert wait_for(lambda: not live_runs(hub))
    assert wait_for(lambda: hub.connections == 0)
    assert [type(e) for e in hub.errors] == [RuntimeError]
    hub.errors.clear()                          # the injected failure, seen


# --- point 5: bounded memory per stream -------------------------------------------------------

def test_a_held_stream_costs_one_hub_thread(make_hub, fake):
    # The handler that writes a stream also reads its upstream (issue 31): a held stream
    # is one thread, not a handler and a worker. Threads counted in this process: each
    # stream also has the fake's handler; the hub's tickers are a few more at most.
    hub = make_hub()
    release, count = threading.Event(), 16
    for _ in range(count):
        fake.enqueue(Script(chunks=["a", "b"], hold_first=release, hold_after=1))
    before = threading.active_count()
    streams = [open_stream(hub.url, "/v1/chat/completions", {**CHAT, "stream": True})
               for _ in range(count)]
    seen = []
    for _, response in streams:                    # each has its first token: all held
        seen.append(b"")
        while b'"content"' not in seen[-1]:
            seen[-1] += response.read1(65536)
    grown = threading.active_count() - before
    release.set()
    for (conn, response), start in zip(streams, seen):
        assert (start + response.read()).decode().rstrip().endswith("data: [DONE]")
        conn.close()
    assert grown <= 2 * count + 6, f"{grown} threads for {count} held streams"   # 3 each: 50


def stalled_stream(hub, fake, resumable: bool) -> socket.socket:
    """A client that asks for a long stream (~25 MB) and reads none of it."""
    fake.enqueue(Script(chunks=["x" * 200] * 100_000, unbatched=True))
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(hub.server_address[:2])
    body = json.dumps({**CHAT, "stream": True}).encode()
    extra = b"X-Llmhub-Resumable: 1\r\n" if resumable else b""
    stalled.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                    b"application/json\r\n%sContent-Length: %d\r\n\r\n%s"
                    % (extra, len(body), body))
    assert fake.wait_requests(1)
    return stalled


def blocked_writing(hub, for_at_least: float = 0.0) -> bool:
    """A handler has been in one write to its client for `for_at_least` seconds."""
    now = time.monotonic()
    return any(clock.phase is Phase.WRITING and now - clock.since >= for_at_least
               for clock in (handler.clock for handler in hub.deadlines.holders()))


@pytest.mark.parametrize("resumable", [False, True], ids=["driven", "followed"])
def test_a_client_that_stops_reading_stops_the_upstream_too(make_hub, fake, resumable):
    # Driven: the handler's thread reads the upstream and blocks writing to the client, so
    # the upstream waits with it. Followed (a resumable stream, read by a worker): the
    # run's log holds the worker back at stream_buffer_bytes.
    hub = make_hub({"server": {"read_timeout_seconds": 2, "stream_buffer_bytes": 65536},
                    "responses": {"resume_grace_seconds": 0}})
    stalled = stalled_stream(hub, fake, resumable)
    assert wait_for(lambda: live_runs(hub))
    run = live_runs(hub)[0]
    received = fake.chat_requests()[0]
    if resumable:   # what the client has not taken stays near the bound
        assert wait_for(lambda: run.log.followed and run.log.untaken() > run.log.buffer_limit,
                        10)
        assert run.log.untaken() < run.log.buffer_limit + 10_000
    assert not received.finished.is_set()       # the model server is held back
    # read_timeout_seconds without reading: the client is dropped and the run cancelled
    assert fake.aborted.wait(15)
    assert run.status == "cancelled" and run.cancel_reason == "client_gone"
    assert not received.finished.is_set() and received.sent_bytes < 10 << 20   # of ~25 MB
    stalled.close()


@pytest.mark.parametrize("resumable", [False, True], ids=["driven", "followed"])
def test_a_cancel_by_id_concludes_a_stream_whose_client_stopped_reading(make_hub, fake,
                                                                       resumable):
    # Driven, the thread blocked writing to that client is the run's driver: a cancel by id
    # must not leave it, and the run unstored, for read_timeout_seconds (a minute here).
    # Followed, the worker concludes the run and the pump's write keeps its deadline.
    hub = make_hub({"server": {"stream_buffer_bytes": 65536},
                    "responses": {"resume_grace_seconds": 0}})
    stalled = stalled_stream(hub, fake, resumable)
    assert wait_for(lambda: live_runs(hub))
    run = live_runs(hub)[0]
    assert wait_for(lambda: blocked_writing(hub, for_at_least=0.5), 10)   # the buffers full
    status, _, body = call(hub.url, "POST", f"/v1/runs/{run.id}/cancel")
    assert status == 200 and body["status"] == "cancelled"
    assert run.wait(10) and run.cancel_reason == "cancelled"     # concluded: stored
    assert fake.aborted.wait(10)                                 # the model stopped
    if not resumable:
        assert wait_for(lambda: not blocked_writing(hub), 10)    # the driver gave way
    stalled.close()


def test_only_a_cancelled_runs_unconcluded_write_gets_the_short_grace():
    # Once the run is stored nothing waits on the write: a slow reader of a cancelled
    # reply (awaited, or replayed) keeps the whole read_timeout_seconds.
    handler = Handler.__new__(Handler)
    handler.read_timeout, handler.state = 60.0, RequestState(None)
    handler.phases = {Phase.WRITING: (60.0, None)}
    run = Registry().create()
    run.start("m", {})
    handler.state.run = run
    handler.enter(Phase.WRITING)
    clock = handler.clock
    assert handler.expires_at == clock.expires                  # live: the usual deadline
    run.finish("cancel", reason="cancelled")                    # no driver: concluded now
    assert run.concluded and handler.expires_at == clock.expires
    live = Registry().create()
    live.start("m", {})
    live._driver = -1                                           # a driver elsewhere, busy
    live.finish("cancel", reason="cancelled")
    handler.state.run = live
    assert not live.concluded
    assert handler.expires_at == clock.since + CANCELLED_WRITE_GRACE


def test_the_resumable_log_is_bounded_and_says_so(make_hub, fake):
    hub = make_hub({"responses": {"max_event_log_bytes": 4096}})
    fake.enqueue(Script(chunks=["tok"] * 200))
    status, _, created = call(hub.url, "POST", "/responses", {"model": "m", "input": "hi"})
    assert status == 200 and created["output_text"] == "tok" * 200     # the text is all kept
    path = f"/responses/{created['id']}/events"
    status, _, body = call(hub.url, "GET", path, headers={"Last-Event-ID": "1"})
    assert status == 410 and body["error"]["code"] == "events_expired"
    assert call(hub.url, "GET", path)[0] == 410                          # from the start too
    conn = connect(hub.url)
    conn.request("GET", path, headers={"Last-Event-ID": "199"})
    response = conn.getresponse()
    assert response.status == 200
    assert [e for e, _ in sse_events(response)][-1] == "done"
    conn.close()


def test_a_live_resume_from_before_the_window_is_410(make_hub, fake):
    hub = make_hub({"responses": {"max_event_log_bytes": 4096}})
    release = threading.Event()
    fake.enqueue(Script(chunks=["tok"] * 200, hold_first=release, hold_after=150))
    conn, response = open_stream(hub.url, "/responses", {"model": "m", "input": "hi",
                                                         "stream": True})
    assert wait_for(lambda: live_runs(hub) and live_runs(hub)[0].base > 1)
    run_id = live_runs(hub)[0].id
    status, _, body = call(hub.url, "GET", f"/responses/{run_id}/events",
                           headers={"Last-Event-ID": "1"})
    assert status == 410 and body["error"]["code"] == "events_expired"
    release.set()
    assert [e for e, _ in sse_events(response)][-1] == "done"
    conn.close()


def test_an_upstream_line_without_end_is_cut_at_max_event_bytes(make_hub, fake):
    hub = make_hub({"upstream": {"max_event_bytes": 1024}})
    fake.enqueue(Script(raw_body=b"data: " + b"x" * 100_000))
    status, _, body = call(hub.url, "POST", "/v1/chat/completions", CHAT)
    assert status == 502 and body["error"]["code"] == "upstream_garbage"
    assert "max_event_bytes" in body["error"]["message"]
    big_event = b"".join(b"data: " + b"y" * 500 + b"\n" for _ in range(10)) + b"\n"
    fake.enqueue(Script(raw_body=big_event))
    assert call(hub.url, "POST", "/v1/chat/completions", CHAT)[0] == 502


# --- point 7: storage failures are failures ---------------------------------------------------

def read_only(db) -> None:
    """SQLite's own read-only mode on every connection from now on: writes fail as they do on
    a read-only file (SQLITE_READONLY). Root ignores file modes, and a mount with the file
    open cannot be remounted read-only, so this is the read-only database a test can make."""
    db.pragmas = ("PRAGMA query_only=ON",)
    db.reopen()


@pytest.mark.parametrize("dialect", ["edison", "responses", "langbase-stream", "langbase"])
def test_a_reply_that_cannot_be_stored_is_reported_failed(hub, fake, dialect):
    release = threading.Event()
    fake.enqueue(Script(hold_first=release))
    if dialect == "edison":
        conn, response = open_stream(hub.url, "/chat/stream", {"message": "hi", "model": "m"},
                                     headers={"Accept": "text/event-stream"})
    elif dialect == "responses":
        conn, response = open_stream(hub.url, "/responses", {"model": "m", "input": "hi",
                                                             "stream": True})
    else:
        conn = connect(hub.url)
        conn.request("POST", "/v1/pipes/run", body=json.dumps(
            {"messages": HI, "stream": dialect == "langbase-stream"}).encode(),
            headers={"Content-Type": "application/json"})
    assert fake.wait_requests(1)                 # the turn is stored; the reply is not yet
    read_only(hub.hub.db)
    release.set()
    if dialect == "langbase":
        response = conn.getresponse()
        body = json.loads(response.read())
        assert response.status == 503 and body["error"]["status"] == 503
        assert "database" in body["error"]["message"]
    else:
        response = response if dialect != "langbase-stream" else conn.getresponse()
        events = sse_events(response)
        if dialect == "edison":
            assert events[-1][0] == "done" and json.loads(events[-1][1])["ok"] is False
        elif dialect == "responses":
            assert json.loads(events[-1][1]) == {"status": "failed"}
            assert "error" in [e for e, _ in events]
        else:
            assert events[-1][1] != "[DONE]" and "error" in json.loads(events[-1][1])
    conn.close()
    health = call(hub.url, "GET", "/health")[2]
    assert health["database"]["status"] == "error" and health["status"] == "degraded"


def test_a_turn_that_cannot_be_stored_is_a_503_and_nothing_runs(hub, fake):
    read_only(hub.hub.db)
    status, _, body = call(hub.url, "POST", "/v1/pipes/run", {"messages": HI})
    assert status == 503 and body["error"]["status"] == 503
    status, _, body = call(hub.url, "POST", "/v1/threads", {})
    assert status == 503
    assert not fake.chat_requests()


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs to fill; skipped where this machine cannot mount one."""
    where = tmp_path / "disk"
    where.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
                              capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("cannot run mount here")
    if done.returncode != 0 or sys.platform == "win32":
        pytest.skip("cannot mount a tmpfs here (needs root on Linux)")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=10)


def fill(path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                continue
    finally:
        os.close(fd)


def test_a_full_disk_fails_the_reply_and_the_store_recovers(make_hub, fake, small_disk):
    hub = make_hub({"server": {"db_path": small_disk / "hub.db"}})
    release = threading.Event()
    fake.enqueue(Script(chunks=["word " * 200] * 300, hold_first=release))   # ~300 KB
    conn = connect(hub.url)
    conn.request("POST", "/v1/pipes/run", body=json.dumps({"messages": HI, "stream": True})
                 .encode(), headers={"Content-Type": "application/json"})
    assert fake.wait_requests(1)
    fill(small_disk / "filler")
    release.set()
    events = sse_events(conn.getresponse())
    conn.close()
    last = json.loads(events[-1][1])
    assert last["error"]["status"] == 507 and "[DONE]" not in [d for _, d in events]
    assert call(hub.url, "GET", "/health")[2]["database"]["status"] == "error"
    os.remove(small_disk / "filler")
    for _ in range(10):            # every pooled connection writes again: none was left
        assert call(hub.url, "POST", "/v1/threads", {})[0] == 200   # inside a transaction
    assert call(hub.url, "GET", "/health")[2]["database"]["status"] == "ok"


def test_a_read_only_database_file_stops_startup_with_one_clear_line(small_disk, tmp_path):
    from llmhub.store.database import Database
    Database(small_disk / "hub.db").close()
    done = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True,
                          timeout=10)
    if done.returncode != 0:
        pytest.skip("cannot remount the tmpfs read-only here")
    from conftest import ROOT
    started = subprocess.run([sys.executable, str(ROOT / "main.py"), "--port", "0", "--db",
                              str(small_disk / "hub.db"), "--upstream", "mock"],
                             capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert started.returncode == 2
    assert started.stderr.strip().splitlines()[-1].startswith(
        f"llmhub: cannot open the database {small_disk / 'hub.db'}")
    assert "Traceback" not in started.stderr


# --- point 8: secrets never reach a client ----------------------------------------------------

UPSTREAM_KEY = "sk-upstream-echoed-4411"


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {**CHAT, "stream": True}),
    ("/v1/pipes/run", {"messages": HI, "stream": True}),
    ("/responses", {"model": "m", "input": "hi", "stream": True}),
    ("/chat/stream", {"message": "hi", "model": "m"}),
])
def test_an_upstream_key_echoed_mid_stream_is_redacted_everywhere(make_hub, fake, path, body):
    hub = make_hub({"upstream": {"api_key": UPSTREAM_KEY}})
    fake.enqueue(Script(error_event=f"Incorrect API key provided: {UPSTREAM_KEY}"))
    conn, response = open_stream(hub.url, path, body, headers={"Accept": "text/event-stream"})
    streamed = response.read().decode()
    conn.close()
    assert "Incorrect API key provided: ***" in streamed and UPSTREAM_KEY not in streamed
    for thread in hub.hub.threads.list_threads(100):
        assert UPSTREAM_KEY not in json.dumps(hub.hub.threads.list_messages(thread["id"]))
    with hub.hub.db.connection() as db:
        stored = [tuple(row) for row in db.execute("SELECT * FROM responses")]
    assert UPSTREAM_KEY not in json.dumps(stored, default=str)


def test_credentials_in_an_upstream_url_are_used_and_never_shown(make_hub, fake):
    parts = urlsplit(fake.url)
    hub = make_hub(upstream_url=f"http://llm-user:pw-8c1e-secret@{parts.netloc}{parts.path}")
    shown = json.dumps([call(hub.url, "GET", path, headers={"Accept": "application/json"})[2]
                        for path in ("/", "/health", "/config")])
    assert "pw-8c1e-secret" not in shown and "***@" in shown
    assert call(hub.url, "POST", "/v1/chat/completions", CHAT)[0] == 200
    sent = fake.chat_requests()[0].headers["Authorization"]
    assert base64.b64decode(sent.split()[1]) == b"llm-user:pw-8c1e-secret"
    fake.enqueue(Script(status=401, error="bad password pw-8c1e-secret"))
    status, _, body = call(hub.url, "POST", "/v1/chat/completions", CHAT)
    assert status == 401 and "pw-8c1e-secret" not in json.dumps(body)


def test_health_does_not_show_the_database_path(hub):
    health = call(hub.url, "GET", "/health")[2]
    assert "path" not in health["database"] and ".db" not in json.dumps(health)


# --- point 9: one run at a time per thread ----------------------------------------------------

def test_runs_on_one_thread_go_one_at_a_time_in_order(hub, fake):
    assert call(hub.url, "POST", "/v1/threads", {"threadId": "t9"})[0] == 200
    release = threading.Event()
    fake.enqueue(Script(chunks=["answer A"], hold_first=release), Script(chunks=["answer B"]))
    first = connect(hub.url)
    first.request("POST", "/v1/pipes/run", body=json.dumps(
        {"threadId": "t9", "messages": [{"role": "user", "content": "question A"}]}).encode(),
        headers={"Content-Type": "application/json"})
    assert fake.wait_requests(1)
    second = {}
    waiter = threading.Thread(target=lambda: second.update(reply=call(
        hub.url, "POST", "/v1/pipes/run",
        {"threadId": "t9", "messages": [{"role": "user", "content": "question B"}]})))
    waiter.start()
    assert wait_for(lambda: hub.hub.engine.turns.waiting("t9") == 2)
    assert len(fake.chat_requests()) == 1            # B waits for A's answer to be stored
    release.set()
    assert json.loads(first.getresponse().read())["completion"] == "answer A"
    first.close()
    waiter.join(10)
    assert second["reply"][2]["completion"] == "answer B"
    stored = call(hub.url, "GET", "/v1/threads/t9/messages")[2]
    assert [m["content"] for m in stored] == ["question A", "answer A", "question B", "answer B"]
    sent_b = [m["content"] for m in fake.chat_requests()[1].body["messages"]]
    assert sent_b[-3:] == ["question A", "answer A", "question B"]


def test_a_run_cancelled_while_it_waits_for_its_turn_stores_nothing(hub, fake):
    assert call(hub.url, "POST", "/v1/threads", {"threadId": "t10"})[0] == 200
    release = threading.Event()
    fake.enqueue(Script(chunks=["answer A"], hold_first=release))
    first = connect(hub.url)
    first.request("POST", "/v1/pipes/run", body=json.dumps(
        {"threadId": "t10", "messages": [{"role": "user", "content": "A"}]}).encode(),
        headers={"Content-Type": "application/json"})
    assert fake.wait_requests(1)
    conn, response = open_stream(hub.url, "/v1/pipes/run", {
        "threadId": "t10", "stream": True, "messages": [{"role": "user", "content": "B"}]},
        headers={"X-Run-Id": "run-b-waits"})
    assert wait_for(lambda: hub.hub.engine.turns.waiting("t10") == 2)
    assert call(hub.url, "POST", "/v1/runs/run-b-waits/cancel")[2]["status"] == "cancelled"
    conn.close()
    release.set()
    first.getresponse().read()
    first.close()
    stored = call(hub.url, "GET", "/v1/threads/t10/messages")[2]
    assert [m["content"] for m in stored] == ["A", "answer A"]
    assert hub.hub.engine.turns.waiting("t10") == 0


# --- point 10: no unbounded replies -----------------------------------------------------------

def test_thread_messages_come_in_pages_that_say_so(hub):
    batch = [{"role": "user", "content": f"m{i}"} for i in range(600)]
    assert call(hub.url, "POST", "/v1/threads", {"threadId": "long", "messages": batch})[0] == 200
    assert call(hub.url, "POST", "/v1/threads/long/messages",
                [dict(m, content="n" + m["content"]) for m in batch])[0] == 200
    status, headers, page = call(hub.url, "GET", "/v1/threads/long/messages")
    assert status == 200 and len(page) == 1000 and headers["X-Has-More"] == "true"
    after = headers["X-Next-After"]
    assert after == page[-1]["id"] and f"after={after}" in headers["Link"]
    status, headers, rest = call(hub.url, "GET", f"/v1/threads/long/messages?after={after}")
    assert len(rest) == 200 and headers["X-Has-More"] == "false" and "Link" not in headers
    assert [m["content"] for m in page + rest][599:602] == ["m599", "nm0", "nm1"]
    status, headers, few = call(hub.url, "GET", "/v1/threads/long/messages?limit=3")
    assert [m["content"] for m in few] == ["m0", "m1", "m2"] and headers["X-Has-More"] == "true"
    for query, param in (("limit=0", "limit"), ("limit=5001", "limit"), ("limit=x", "limit"),
                         ("after=msg_nope", "after")):
        status, _, body = call(hub.url, "GET", f"/v1/threads/long/messages?{query}")
        assert status == 400 and body["error"]["param"] == param, query


# --- point 11: hostile JSON -------------------------------------------------------------------

@pytest.mark.parametrize("raw, param", [
    (b'{"model": "m", "max_tokens": ' + b"9" * 5000 + b', "messages": []}', "max_tokens"),
    (b'{"model": "m", "temperature": NaN, "messages": []}', "temperature"),
    (b'{"model": "m", "temperature": Infinity, "messages": []}', "temperature"),
    (b'{"model": "m", "top_p": -Infinity, "messages": []}', "top_p"),
    (b'{"model": "m", "temperature": 1e400, "messages": []}', "temperature"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "x", "n": NaN}]}',
     "messages[0].n"),
], ids=["5000-digits", "nan", "infinity", "minus-infinity", "1e400", "nested-nan"])
def test_numbers_json_cannot_carry_are_400_naming_the_field(hub, fake, raw, param):
    status, _, body = call(hub.url, "POST", "/v1/chat/completions", raw)
    assert status == 400 and body["error"]["param"] == param, body
    assert not fake.chat_requests()
    assert call(hub.url, "GET", "/health")[0] == 200


def test_a_huge_integer_gets_400_on_every_dialect(hub):
    raw = b'{"x": ' + b"1" * 5000 + b"}"
    for path in ("/v1/pipes/run", "/responses", "/chat", "/v1/threads"):
        status, _, _ = call(hub.url, "POST", path, raw)
        assert status in (400, 422), path
    reply = raw_exchange(hub.url, b"POST /v1/threads HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\nConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(raw), raw))
    assert reply.startswith(b"HTTP/1.1 400")
