"""Storage: a store that fails is a failure a client can see, nothing a run made is
lost without a count, conversations cost what a page or a turn reads, and every table that
grows has a retention a workstation can leave running."""

import json
import sqlite3
import threading
import time

from fake_lmstudio import Script
from http_client import call
from test_hardening import read_only

from llmhub.store.database import Database
from llmhub.store.responses import ResponseStore

HI = [{"role": "user", "content": "hi"}]


def writable(db) -> None:
    """The disk is back: new connections write again."""
    db.pragmas = ()
    db.reopen()


def stored_row(hub, table: str, row_id: str) -> dict:
    with sqlite3.connect(hub.hub.db.path) as conn:
        conn.row_factory = sqlite3.Row
        return dict(conn.execute(f"SELECT * FROM {table} WHERE id = ?", (row_id,)).fetchone())


# --- point 1: a run whose storage fails ends failed, and says so at once ---------------------

def test_seed_responses_json_answers_the_storage_error_not_in_progress(hub, fake):
    """POST /responses without stream, the store refusing the end: the reply is the 503,
    and GET /responses/{id} shows failed with that error, before any restart."""
    release = threading.Event()
    fake.enqueue(Script(chunks=["Hello", " there"], hold_first=release))
    answer = {}
    caller = threading.Thread(target=lambda: answer.update(reply=call(
        hub.url, "POST", "/responses", {"model": "m", "input": "hi"})))
    caller.start()
    assert fake.wait_requests(1)                  # the run is stored as in_progress
    read_only(hub.hub.db)
    release.set()
    caller.join(10)
    status, _, body = answer["reply"]
    assert status == 503 and body["error"]["code"] == "storage_failed", body
    response_id = hub.hub.db.read("SELECT id FROM responses")[0][0]
    status, _, got = call(hub.url, "GET", f"/responses/{response_id}")
    assert status == 200
    assert got["status"] == "failed" and got["error"]["code"] == "storage_failed"
    assert got["output_text"] == "Hello there"    # what the model said is kept
    writable(hub.hub.db)
    assert hub.hub.db.retry_held() == 0        # the disk is back: the end is written
    row = stored_row(hub, "responses", response_id)
    assert row["status"] == "failed" and row["output"] == "Hello there"


def test_background_response_fails_with_the_storage_error_at_once(hub, fake):
    """A background /v1/responses whose end the store refuses: a poller sees failed with
    the store's error as soon as the run is over, not queued until a restart."""
    release = threading.Event()
    fake.enqueue(Script(chunks=["Hello"], hold_first=release))
    status, _, created = call(hub.url, "POST", "/v1/responses",
                              {"model": "m", "input": "hi", "background": True})
    # On a busy machine the worker may take the run before the reply is written.
    assert status == 200 and created["status"] in ("queued", "in_progress")
    assert fake.wait_requests(1)
    read_only(hub.hub.db)
    release.set()
    run = hub.hub.registry.get(created["id"])
    assert run is None or run.wait(10)
    status, _, got = call(hub.url, "GET", f"/v1/responses/{created['id']}")
    assert status == 200 and got["status"] == "failed", got
    assert got["error"]["code"] == "storage_failed" and got["output"]
    metrics = call(hub.url, "GET", "/metrics")[2].decode()
    assert "llmhub_store_held_ends 1" in metrics
    writable(hub.hub.db)
    assert hub.hub.db.retry_held() == 0
    row = stored_row(hub, "api_responses", created["id"])
    assert row["status"] == "failed" and json.loads(row["error"])["code"] == "storage_failed"


def test_a_response_a_restart_interrupted_says_why(make_hub, fake, tmp_path):
    """A response left queued by a process that died is failed at the next start with an
    error that says so (not `error: null`)."""
    hub = make_hub()
    release = threading.Event()
    fake.enqueue(Script(chunks=["Hello"], hold_first=release))
    created = call(hub.url, "POST", "/v1/responses",
                   {"model": "m", "input": "hi", "background": True})[2]
    assert fake.wait_requests(1)
    ResponseStore(Database(hub.hub.db.path)).fail_interrupted_api_responses()   # a restart
    row = stored_row(hub, "api_responses", created["id"])
    assert row["status"] == "failed"
    assert json.loads(row["error"])["code"] == "interrupted"
    release.set()


def test_request_log_records_wait_for_the_disk_and_losses_are_counted(hub, fake):
    """Stateless runs' records survive a store that refuses them (kept, written when it is
    back); past max_pending the oldest are dropped and counted in /metrics."""
    log = hub.hub.request_log
    read_only(hub.hub.db)
    for _ in range(3):
        assert call(hub.url, "POST", "/v1/chat/completions",
                    {"model": "m", "messages": HI})[0] == 200
    log.flush()
    assert log.pending() == 3
    log.max_pending = 2
    assert call(hub.url, "POST", "/v1/chat/completions", {"model": "m", "messages": HI})[0] \
        == 200
    log.flush()
    metrics = call(hub.url, "GET", "/metrics")[2].decode()
    assert "llmhub_request_log_dropped_total 2" in metrics
    assert "llmhub_request_log_pending 2" in metrics
    writable(hub.hub.db)
    status, _, records = call(hub.url, "GET", "/v1/requests")
    assert status == 200 and len(records["data"]) == 2
    assert log.pending() == 0


# --- point 2: a page or a turn reads what it needs ------------------------------------------

def counting(db) -> list:
    """Count the SQLite VM steps every connection of `db` makes from now on: rows read
    show in them, and time on a loaded machine does not."""
    steps, opened = [0], db._open

    def tick():
        steps[0] += 1
        return 0

    def open_counted():
        conn = opened()
        conn.set_progress_handler(tick, 1)
        return conn
    db._open = open_counted
    db.reopen()
    return steps


def long_conversation(store, thread_id: str, size: int) -> None:
    """A conversation of `size` messages: user turns, replies with reasoning, tool calls and
    their outputs, so one message may be several items."""
    def message(role, content, **more):
        return {"role": role, "content": content, "name": None, "tool_call_id": None,
                "tool_calls": [], "attachments": [], "metadata": {}, **more}
    call_ = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    turn = [message("user", "question"), message("assistant", None, tool_calls=[call_]),
            message("tool", "42", tool_call_id="call_1"), message("assistant", "answer")]
    store.create_thread(thread_id)
    store.append_messages(thread_id, (turn * (size // 4 + 1))[:size])


def steps_of(hub, steps, path: str) -> tuple[int, dict]:
    before = steps[0]
    status, _, body = call(hub.url, "GET", path)
    assert status == 200, body
    return steps[0] - before, body


def test_a_page_of_items_reads_the_page_not_the_conversation(hub):
    """GET /v1/conversations/{id}/items?limit=20 on 4,000 messages costs what it costs on
    40 (within a small factor), and pages exactly as reading everything did."""
    store = hub.hub.threads
    long_conversation(store, "short", 40)
    long_conversation(store, "long", 4000)
    steps = counting(store.db)
    short, _ = steps_of(hub, steps, "/v1/conversations/short/items?limit=20")
    long, _ = steps_of(hub, steps, "/v1/conversations/long/items?limit=20")
    assert long < short * 3, (short, long)
    _, first = steps_of(hub, steps, "/v1/conversations/long/items?limit=20&order=asc")
    after = first["last_id"]
    paged, _ = steps_of(hub, steps, f"/v1/conversations/long/items?limit=20&order=asc"
                                    f"&after={after}")
    assert paged < short * 3, (short, paged)
    fc = next(i["id"] for i in first["data"] if i["id"].startswith("fc_"))
    one, item = steps_of(hub, steps, f"/v1/conversations/long/items/{fc}")
    assert one < short and item["type"] == "function_call"


def test_paged_items_are_what_reading_everything_gave(hub):
    """Every page, either order, from every kind of cursor, is the slice of all items."""
    from llmhub.dialects.openai_responses import page
    from llmhub.formats.response_items import messages_to_items
    store = hub.hub.threads
    long_conversation(store, "c", 37)
    everything = messages_to_items(store.list_messages("c"))
    for order in ("asc", "desc"):
        ordered = everything if order == "asc" else everything[::-1]
        for after in [None] + [i["id"] for i in ordered]:
            for limit in (1, 3, 20):
                query = {"limit": str(limit), "order": order, **({"after": after} if after
                                                                  else {})}
                expected = page(everything, query)
                got = call(hub.url, "GET", "/v1/conversations/c/items?" + "&".join(
                    f"{k}={v}" for k, v in query.items()))[2]
                assert got == expected, (order, after, limit)
    status, _, body = call(hub.url, "GET", "/v1/conversations/c/items?after=msg_nope")
    assert status == 400 and body["error"]["param"] == "after"


def chat_turns(size: int, reply: str = "Hello from the fake!") -> list[dict]:
    return [{"role": "user", "content": f"question {i}"} if i % 2 == 0 else
            {"role": "assistant", "content": reply} for i in range(size)]


def kept_session(make_hub):
    hub = make_hub({"anthropic": {"store": "true"}, "server": {"max_messages": 10_000}})
    return hub, lambda session, messages: call(
        hub.url, "POST", "/v1/messages", {"model": "m", "max_tokens": 50, "messages": messages},
        headers={"X-Claude-Code-Session-Id": session})


def test_a_resent_conversation_turn_reads_the_tail_not_the_thread(make_hub, fake):
    """A Claude session kept in a thread resends its whole conversation each turn; the turn
    on 4,000 stored messages costs what it costs on 40 (SQLite VM steps, within a small
    factor), and stores the new tail only."""
    hub, send = kept_session(make_hub)
    store = hub.hub.threads
    for session, size in (("short", 40), ("long", 4000)):
        store.append_new(f"claude-{session}", [dict(m, name=None, tool_call_id=None,
                                                    tool_calls=[], attachments=[],
                                                    metadata={}) for m in chat_turns(size)])
    steps = counting(store.db)
    cost = {}
    for session, size in (("short", 40), ("long", 4000)):
        before = steps[0]
        status, _, _ = send(session, chat_turns(size) + [{"role": "user", "content": "new"}])
        assert status == 200
        cost[session] = steps[0] - before
        stored = store.messages_from(f"claude-{session}", None, 3, newest_first=True)
        assert [m["content"] for m in stored[::-1]] == [
            "Hello from the fake!", "new", "Hello from the fake!"]
    assert cost["long"] < cost["short"] * 3, cost
    assert len(store.list_messages("claude-long")) == 4002


def test_a_rewritten_conversation_keeps_what_it_kept_before(hub):
    """append_new finds the longest stored prefix by the messages' chains, and appends
    what follows it, as comparing the whole stored thread did: a pure extension, a history
    rewritten in its middle or compacted to fewer turns, and a thread with a message
    deleted all keep what the whole comparison kept."""
    store = hub.hub.threads

    def turns(*texts):
        return [{"role": "user", "content": t, "name": None, "tool_call_id": None,
                 "tool_calls": [], "attachments": [], "metadata": {}} for t in texts]

    def kept(thread_id):
        return [m["content"] for m in store.list_messages(thread_id)]
    assert store.append_new("c", turns("a", "b", "c")) == 3
    assert store.append_new("c", turns("a", "b", "c", "d")) == 1
    assert store.append_new("c", turns("a", "b", "c", "d")) == 0
    assert store.append_new("c", turns("a", "B", "c", "d", "e")) == 4     # rewritten at 2
    assert kept("c") == ["a", "b", "c", "d", "B", "c", "d", "e"]
    assert store.append_new("c", turns("summary", "e")) == 2             # compacted
    assert kept("c")[-2:] == ["summary", "e"]
    assert store.append_new("d", turns("a", "b", "c", "d")) == 4
    store.delete_message("d", store.list_messages("d")[1]["id"])          # "b" goes
    assert store.append_new("d", turns("a", "c", "d", "e")) == 1          # the client's too
    assert kept("d") == ["a", "c", "d", "e"]
    assert store.append_new("d", turns("a", "b", "c", "d", "e", "f")) == 5
    assert kept("d") == ["a", "c", "d", "e", "b", "c", "d", "e", "f"]


def test_input_tokens_of_a_conversation_reads_what_the_turn_reads(hub, fake):
    """/v1/responses/input_tokens on a conversation counts what a turn would send (its
    summary and the messages after it), read as the turn reads them: on 4,000 messages
    with a recent summary it costs what it costs on 40, and counts what the turn sent."""
    from llmhub.context import estimate_messages
    store = hub.hub.threads
    steps = counting(store.db)
    cost = {}
    for thread_id, size in (("short", 40), ("long", 4000)):
        long_conversation(store, thread_id, size)
        store.save_summary(thread_id, size - 8, "They talked.", 3)
        ask = {"model": "m", "conversation": thread_id, "input": "and now?"}
        before = steps[0]
        status, _, counted = call(hub.url, "POST", "/v1/responses/input_tokens", ask)
        assert status == 200, counted
        cost[thread_id] = steps[0] - before
        assert call(hub.url, "POST", "/v1/responses", ask)[0] == 200
        sent = fake.chat_requests()[-1].body["messages"]
        assert sent[0]["content"].endswith("They talked.") and len(sent) == 10
        assert counted["input_tokens"] == estimate_messages(sent)
    assert cost["long"] < cost["short"] * 3, cost


# --- point 3: every table that grows is bounded, by a sweep ---------------------------------

def age(hub, table: str, column: str, days: float, where: str = "1") -> None:
    with sqlite3.connect(hub.hub.db.path) as conn:
        conn.execute(f"UPDATE {table} SET {column} = {column} - ? WHERE {where}",
                     (days * 86400,))


def test_old_threads_are_swept_but_never_one_with_a_live_run(hub, fake):
    """Stateless pipe runs each leave a thread; the sweep removes those untouched past
    threads_keep_days (365 by default), keeps recent ones, and never one a run is using."""
    for _ in range(3):
        assert call(hub.url, "POST", "/v1/pipes/run", {"messages": HI})[0] == 200
    status, headers, _ = call(hub.url, "POST", "/v1/pipes/run", {"messages": HI})
    busy = headers["lb-thread-id"]
    age(hub, "threads", "updated_at", 400)           # all four: a year and more ago
    release = threading.Event()
    fake.enqueue(Script(chunks=["later"], hold_first=release))
    caller = threading.Thread(target=call, args=(hub.url, "POST", "/v1/pipes/run",
                                                 {"messages": HI, "threadId": busy}))
    caller.start()
    assert fake.wait_requests(5)
    age(hub, "threads", "updated_at", 400, f"id = '{busy}'")   # its new turn bumped it
    assert call(hub.url, "POST", "/v1/threads", {"threadId": "fresh"})[0] == 200
    swept = hub.hub.upkeep.sweep()
    assert swept["removed"]["threads"] == 3
    release.set()
    caller.join(10)
    assert call(hub.url, "GET", f"/v1/threads/{busy}/messages")[0] == 200
    assert len(call(hub.url, "GET", f"/v1/threads/{busy}/messages")[2]) == 4
    assert call(hub.url, "GET", "/v1/threads/fresh")[0] == 200
    database = call(hub.url, "GET", "/health")[2]["database"]
    assert database["rows"]["threads"] == 2 and database["rows"]["messages"] == 4
    assert database["bytes"] > 0 and database["last_sweep"]["removed"]["threads"] == 3


def test_stored_responses_are_bounded_by_size(make_hub, fake):
    """api_responses past api_responses_max_mb go, oldest first (a long response's events
    weigh hundreds of KB: a count alone does not bound the file)."""
    hub = make_hub({"retention": {"api_responses_max_mb": 0.05}})     # ~52 KB
    ids = []
    for _ in range(4):
        fake.enqueue(Script(chunks=["word " * 400] * 10))            # ~20 KB of text each
        status, _, body = call(hub.url, "POST", "/v1/responses", {"model": "m", "input": "hi"})
        assert status == 200
        ids.append(body["id"])
    removed = hub.hub.upkeep.sweep()["removed"]
    assert removed["api_responses"] >= 1
    assert call(hub.url, "GET", f"/v1/responses/{ids[0]}")[0] == 404
    assert call(hub.url, "GET", f"/v1/responses/{ids[-1]}")[0] == 200


def test_a_running_background_response_is_never_swept(make_hub, fake):
    """The sweep never deletes live work: a background /v1/responses still running past
    keep_days (and past keep_count and the size bound) keeps its row, and its end lands in
    it; a finished response as old is swept."""
    hub = make_hub({"responses": {"keep_count": 1, "keep_days": 1},
                    "retention": {"api_responses_max_mb": 0.000001}})
    release = threading.Event()
    fake.enqueue(Script(chunks=["still", " going"], hold_first=release))
    status, _, live = call(hub.url, "POST", "/v1/responses",
                           {"model": "m", "input": "hi", "background": True})
    assert status == 200 and fake.wait_requests(1)
    status, _, done = call(hub.url, "POST", "/v1/responses", {"model": "m", "input": "hi"})
    assert status == 200 and done["status"] == "completed"
    age(hub, "api_responses", "created_at", 30)       # both a month old
    removed = hub.hub.upkeep.sweep()["removed"]
    assert removed["api_responses"] == 1, removed
    assert call(hub.url, "GET", f"/v1/responses/{done['id']}")[0] == 404
    release.set()
    run = hub.hub.registry.get(live["id"])
    assert run is None or run.wait(10)
    status, _, got = call(hub.url, "GET", f"/v1/responses/{live['id']}")
    assert status == 200 and got["status"] == "completed", got
    assert got["output"][0]["content"][0]["text"] == "still going"
    assert hub.hub.upkeep.sweep()["removed"]["api_responses"] == 1    # finished: it goes


def test_the_sweep_reads_indexes_not_tables(hub):
    """Each query a sweep runs walks an index (EXPLAIN QUERY PLAN), so a tick on a large
    table does not read every row, and never a stored input or a message's text."""
    db, plans = hub.hub.db, []
    opened = db._open

    def traced():
        conn = opened()
        conn.set_trace_callback(lambda sql: plans.append(sql) if sql.lstrip().startswith(
            ("SELECT", "DELETE")) else None)
        return conn
    db._open = traced
    db.reopen()
    hub.hub.upkeep.sweep()
    db._open = opened
    db.reopen()
    assert len(plans) >= 10
    with sqlite3.connect(db.path) as conn:
        for sql in plans:
            steps = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
            scans = [s for s in steps if s.startswith("SCAN") and "COVERING INDEX" not in s]
            assert not scans, (sql, steps)


def test_inserts_prune_by_count_every_sixteenth_of_it_and_the_sweep_exactly(tmp_path):
    """The count bound's DELETE skips keep_count index entries (SQLite's OFFSET is a walk):
    run on every insert it cost each stored response 50 µs at 1,000 kept. It runs once
    keep_count // 16 rows came since the last; in between the table holds at most that
    many more, and a sweep trims it to the count."""
    db, keep, statements = Database(tmp_path / "h.db"), 64, []
    store = ResponseStore(db)
    opened = db._open

    def traced():
        conn = opened()
        conn.set_trace_callback(statements.append)
        return conn
    db._open = traced
    db.reopen()
    counted, most, now = [], 0, time.time()
    for n in range(200):
        store.create_api_response({"id": f"resp_{n:03}", "created_at": now + n,
                                   "status": "completed", "previous_id": None,
                                   "conversation_id": None, "model": "m", "request": {},
                                   "input": "hi"}, keep, 86400)
        if any("OFFSET" in sql for sql in statements):   # (traced again per row deleted)
            counted.append(n)
        statements.clear()
        most = max(most, db.read("SELECT COUNT(*) FROM api_responses")[0][0])
    assert counted == list(range(3, 200, keep // 16))
    assert keep < most <= keep + keep // 16
    db.sweep_table("api_responses", keep, 86400, 0)
    assert db.read("SELECT COUNT(*), MIN(id) FROM api_responses")[0][:] == \
        (keep, f"resp_{200 - keep:03}")


def test_retention_keys_are_documented_with_defaults_for_a_year(tmp_path):
    from conftest import ROOT
    from dataclasses import fields
    from llmhub.config import load_config
    (tmp_path / "empty.ini").write_text("")
    retention = load_config(env={}, path=tmp_path / "empty.ini").retention
    assert retention.threads_keep_days == 365 and retention.sweep_interval_seconds > 0
    text = (ROOT / "config.ini").read_text()
    assert all(f"\n{f.name} = " in text for f in fields(retention))


# --- a large stored input is written in pieces -------------------------------------------

def test_a_large_stored_input_is_written_in_pieces_and_read_back_whole(make_hub, fake):
    """/v1/responses stores its input; one with a 3 MiB image is written as pieces of about
    1 MiB (the store never binds the whole JSON at once, nor copies it whole), reads back
    exactly, and its pieces go with their response, by a delete or a sweep."""
    import base64
    import os
    from llmhub.wire import PIECE
    hub = make_hub({"responses": {"keep_days": 1}})
    url = "data:image/png;base64," + base64.b64encode(os.urandom(3 << 20)).decode()
    given = [{"role": "user", "content": [{"type": "input_text", "text": "What is this? ✓"},
                                          {"type": "input_image", "image_url": url}]}]
    ids = []
    for _ in range(2):
        status, _, body = call(hub.url, "POST", "/v1/responses", {"model": "m", "input": given})
        assert status == 200, body
        ids.append(body["id"])
    sent = fake.chat_requests()[-1].body["messages"][0]["content"][1]["image_url"]["url"]
    assert sent == url
    with sqlite3.connect(hub.hub.db.path) as conn:
        assert conn.execute("SELECT input FROM api_responses WHERE id = ?",
                            (ids[0],)).fetchone()[0] == ""
        sizes = [row[0] for row in conn.execute(
            "SELECT length(piece) FROM api_response_input WHERE response_id = ?", (ids[0],))]
    assert len(sizes) >= 4 and max(sizes) <= PIECE + 1024, sizes
    status, _, items = call(hub.url, "GET", f"/v1/responses/{ids[0]}/input_items")
    assert status == 200 and items["data"][0]["content"][1]["image_url"] == url
    assert items["data"][0]["content"][0]["text"] == "What is this? ✓"
    assert call(hub.url, "DELETE", f"/v1/responses/{ids[0]}")[0] == 200
    age(hub, "api_responses", "created_at", 30)
    assert hub.hub.upkeep.sweep()["removed"]["api_responses"] == 1
    with sqlite3.connect(hub.hub.db.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM api_response_input").fetchone()[0] == 0
