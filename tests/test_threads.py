"""The threads API (Langbase reference §2) and the store under it, over real sockets."""

import json
import sqlite3
import threading

import pytest

from fake_lmstudio import Script
from http_client import call, connect, open_stream
from llmhub.errors import HubError
from llmhub.store.database import MIGRATIONS, Database
from llmhub.store.threads import ThreadStore, normalise_message

THREAD_FIELDS = ["id", "object", "created_at", "metadata"]
MESSAGE_FIELDS = ["id", "thread_id", "created_at", "role", "content", "tool_call_id",
                  "tool_calls", "name", "attachments", "metadata"]


def open_threads(path) -> ThreadStore:
    """A thread store on a database of its own (`.db.close()` closes it)."""
    return ThreadStore(Database(path))


def test_create_with_metadata_and_messages(hub):
    status, _, thread = call(hub.url, "POST", "/v1/threads", {
        "metadata": {"userId": "user123", "topic": "support"},
        "messages": [{"role": "user", "content": "Hello, I need help!"}]})
    assert status == 200 and list(thread) == THREAD_FIELDS
    assert thread["object"] == "thread" and thread["metadata"]["topic"] == "support"
    assert len(thread["id"]) == 36 and thread["id"].count("-") == 4      # a UUID
    _, _, messages = call(hub.url, "GET", f"/v1/threads/{thread['id']}/messages")
    assert [list(m) for m in messages] == [MESSAGE_FIELDS]
    assert messages[0] | {"id": None, "created_at": None} == {
        "id": None, "thread_id": thread["id"], "created_at": None, "role": "user",
        "content": "Hello, I need help!", "tool_call_id": None, "tool_calls": [],
        "name": None, "attachments": [], "metadata": {}}


def test_create_without_a_body_and_with_a_custom_id(hub):
    conn = connect(hub.url)
    conn.request("POST", "/v1/threads")          # the Python SDK sends no body at all
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["metadata"] == {}
    status, _, thread = call(hub.url, "POST", "/v1/threads", {"threadId": "custom-thread-123"})
    assert status == 200 and thread["id"] == "custom-thread-123"
    status, _, error = call(hub.url, "POST", "/v1/threads", {"threadId": "custom-thread-123"})
    assert status == 409 and error == {"error": {
        "code": "CONFLICT", "status": 409, "message": "Thread 'custom-thread-123' already exists",
        "param": "threadId"}}


@pytest.mark.parametrize("method, path, body", [
    ("GET", "/v1/threads/nope", None), ("POST", "/v1/threads/nope", {"metadata": {}}),
    ("DELETE", "/v1/threads/nope", None), ("GET", "/v1/threads/nope/messages", None),
    ("POST", "/v1/threads/nope/messages", [{"role": "user", "content": "x"}]),
])
def test_unknown_thread_is_404_not_found(hub, method, path, body):
    status, _, error = call(hub.url, method, path, body)
    assert status == 404 and error["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize("body, param", [
    ({"threadId": "bad id"}, "threadId"),
    ({"threadId": "x" * 129}, "threadId"),
    ({"metadata": {"a": 1}}, "metadata"),
    ({"metadata": "text"}, "metadata"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 7}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"text": "no type"}]}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "x", "metadata": {"k": 2}}]},
     "messages[0].metadata"),
    ({"messages": {"role": "user"}}, "messages"),
])
def test_invalid_input_is_400_naming_the_field(hub, body, param):
    status, _, error = call(hub.url, "POST", "/v1/threads", body)
    assert status == 400 and error["error"]["code"] == "BAD_REQUEST"
    assert error["error"]["param"] == param


def test_invalid_id_in_the_path_is_400(hub):
    assert call(hub.url, "GET", "/v1/threads/bad%20id")[0] == 400


def test_update_merges_metadata_get_and_delete(hub):
    _, _, thread = call(hub.url, "POST", "/v1/threads", {"metadata": {"a": "1", "b": "2"},
                                                         "messages": [{"role": "user",
                                                                       "content": "hi"}]})
    path = f"/v1/threads/{thread['id']}"
    status, _, updated = call(hub.url, "POST", path, {"threadId": thread["id"],  # TS sends it
                                                      "metadata": {"b": "3", "c": "4"}})
    assert status == 200 and updated["metadata"] == {"a": "1", "b": "3", "c": "4"}
    assert call(hub.url, "GET", path)[2] == updated
    assert call(hub.url, "POST", path, {})[0] == 400
    assert call(hub.url, "DELETE", path)[2] == {"success": True}
    assert call(hub.url, "GET", path)[0] == 404
    assert call(hub.url, "GET", path + "/messages")[0] == 404
    assert not hub.hub.db.read("SELECT * FROM messages WHERE thread_id = ?",
                               (thread["id"],))   # the messages went with it


def test_append_takes_a_bare_array_or_an_object_and_returns_the_created(hub):
    _, _, thread = call(hub.url, "POST", "/v1/threads", {"threadId": "t1"})
    tool_call = {"id": "call_1", "type": "function",
                 "function": {"name": "f", "arguments": "{}"}}
    status, _, created = call(hub.url, "POST", "/v1/threads/t1/messages", [
        {"role": "assistant", "content": None, "tool_calls": [tool_call]},
        {"role": "tool", "content": "42", "tool_call_id": "call_1", "name": "f"}])
    assert status == 200 and [m["role"] for m in created] == ["assistant", "tool"]
    assert created[0]["content"] is None and created[0]["tool_calls"] == [tool_call]
    status, _, more = call(hub.url, "POST", "/v1/threads/t1/messages", {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "parts"}],
         "metadata": {"source": "test"}, "attachments": [{"kind": "x"}]}]})
    assert status == 200 and more[0]["content"] == [{"type": "text", "text": "parts"}]
    _, _, listed = call(hub.url, "GET", "/v1/threads/t1/messages")
    assert listed == created + more


def test_fifty_concurrent_appenders_lose_nothing_and_keep_order(hub):
    """Each client appends five messages one after another; all 250 are there, each
    client's in its own order, with the ids the acknowledgements gave."""
    call(hub.url, "POST", "/v1/threads", {"threadId": "busy"})
    acked, lock = {}, threading.Lock()

    def client(n):
        for i in range(5):
            status, _, created = call(hub.url, "POST", "/v1/threads/busy/messages",
                                      [{"role": "user", "content": f"{n}:{i}"}])
            assert status == 200
            with lock:
                acked[created[0]["id"]] = (n, i)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    _, _, listed = call(hub.url, "GET", "/v1/threads/busy/messages")
    assert len(listed) == len(acked) == 250
    assert {m["id"]: tuple(map(int, m["content"].split(":"))) for m in listed} == acked
    for n in range(50):
        mine = [m["content"] for m in listed if m["content"].startswith(f"{n}:")]
        assert mine == [f"{n}:{i}" for i in range(5)]
    seqs = [r[0] for r in hub.hub.db.read(
        "SELECT seq FROM messages WHERE thread_id = 'busy' ORDER BY seq")]
    assert seqs == list(range(1, 251))


def test_store_survives_a_restart_and_migrations_are_recorded(tmp_path):
    store = open_threads(tmp_path / "db" / "hub.db")
    store.create_thread("kept", {"k": "v"}, [{"role": "user", "content": "x", "name": None,
                                              "tool_call_id": None, "tool_calls": [],
                                              "attachments": [], "metadata": {}}])
    store.db.close()
    again = open_threads(tmp_path / "db" / "hub.db")   # migrations do not run twice
    assert again.get_thread("kept")["metadata"] == {"k": "v"}
    assert [m["content"] for m in again.list_messages("kept")] == ["x"]
    names = [r["name"] for r in again.db.read("SELECT name FROM migrations ORDER BY rowid")]
    assert names == [name for name, _ in MIGRATIONS]
    mode = again.db.read("PRAGMA journal_mode")[0][0]
    assert mode == "wal"
    again.db.close()
    with pytest.raises(HubError, match="shutting down"):
        again.get_thread("kept")


def test_writers_never_see_database_locked(tmp_path):
    store = open_threads(tmp_path / "hub.db")
    store.create_thread("w")
    errors = []

    def writer():
        try:
            for _ in range(20):
                store.append_messages("w", [{"role": "user", "content": "x", "name": None,
                                             "tool_call_id": None, "tool_calls": [],
                                             "attachments": [], "metadata": {}}])
        except sqlite3.Error as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(store.list_messages("w")) == 160
    store.db.close()


def test_threads_list_newest_activity_first_with_pages(hub):
    for name in ("a", "b", "c"):
        call(hub.url, "POST", "/v1/threads", {"threadId": name, "messages": [
            {"role": "user", "content": f"Question {name}"}]})
    call(hub.url, "POST", "/v1/threads/a/messages", [{"role": "user", "content": "bump"}])
    status, _, page = call(hub.url, "GET", "/v1/threads?limit=2")
    assert status == 200 and page["has_more"] is True
    assert [(t["id"], t["title"]) for t in page["data"]] == [("a", "Question a"),
                                                             ("c", "Question c")]
    assert list(page["data"][0]) == ["id", "object", "created_at", "metadata", "title",
                                     "updated_at"]
    rest = call(hub.url, "GET", f"/v1/threads?limit=2&before={page['data'][-1]['updated_at']}")
    assert [t["id"] for t in rest[2]["data"]] == ["b"] and rest[2]["has_more"] is False
    for query in ("limit=0", "limit=x", "before=yesterday"):
        assert call(hub.url, "GET", f"/v1/threads?{query}")[0] == 400


def test_a_long_first_message_makes_a_short_title(hub):
    call(hub.url, "POST", "/v1/threads", {"threadId": "long", "messages": [
        {"role": "system", "content": "not a title"},
        {"role": "user", "content": "word " * 40}]})
    title = call(hub.url, "GET", "/v1/threads")[2]["data"][0]["title"]
    assert len(title) == 60 and title.endswith("…") and title.startswith("word word")


def test_migrations_upgrade_a_database_from_an_older_schema(tmp_path, monkeypatch):
    """A database made before add_thread_activity gains updated_at from its messages."""
    from llmhub.store import database
    old = MIGRATIONS[:[name for name, _ in MIGRATIONS].index("add_thread_activity")]
    monkeypatch.setattr(database, "MIGRATIONS", old)
    store = open_threads(tmp_path / "old.db")
    with store.db.write_tx() as tx:
        tx.execute("INSERT INTO threads (id, created_at, metadata) VALUES ('t', 100, '{}')")
        tx.execute("INSERT INTO messages (id, thread_id, seq, role, content, created_at) "
                   "VALUES ('m', 't', 1, 'user', '\"hi\"', 250)")
    store.db.close()
    monkeypatch.setattr(database, "MIGRATIONS", MIGRATIONS)
    upgraded = open_threads(tmp_path / "old.db")
    assert upgraded.list_threads()[0]["updated_at"] == 250
    assert [r["name"] for r in upgraded.db.read("SELECT name FROM migrations ORDER BY rowid")] \
        == [name for name, _ in MIGRATIONS]
    upgraded.db.close()


def test_running_token_counts_are_filled_in_on_upgrade_and_kept_on_append(tmp_path,
                                                                            monkeypatch):
    """add_running_tokens: each message carries its thread's tokens so far, so a turn's
    window and totals are index look-ups (issue 18, point 9)."""
    from llmhub.store import database
    from llmhub.context import message_tokens
    old = MIGRATIONS[:[name for name, _ in MIGRATIONS].index("add_running_tokens")]
    monkeypatch.setattr(database, "MIGRATIONS", old)
    store = open_threads(tmp_path / "old.db")
    texts = ["one", "two two", "three " * 50]
    with store.db.write_tx() as tx:              # as the older code wrote them
        tx.execute("INSERT INTO threads (id, created_at, metadata) VALUES ('t', 1, '{}')")
        for seq, text in enumerate(texts, 1):
            tx.execute("INSERT INTO messages (id, thread_id, seq, role, content, created_at) "
                       "VALUES (?, 't', ?, 'user', ?, 1)", (f"m{seq}", seq, json.dumps(text)))
    store.db.close()
    monkeypatch.setattr(database, "MIGRATIONS", MIGRATIONS)
    store = open_threads(tmp_path / "old.db")
    store.append_messages("t", [normalise_message({"role": "assistant", "content": "four"})])
    running = [r[0] for r in store.db.read("SELECT cum_tokens FROM messages ORDER BY seq")]
    sizes = [message_tokens({"content": t}) for t in texts + ["four"]]
    assert running == [sum(sizes[:i + 1]) for i in range(4)]
    seen = {}
    store.begin_turn("t", [], lambda history, summary, totals: seen.update(
        history=[m["content"] for m in history], totals=totals), budget=sizes[-1] + sizes[-2])
    assert seen["totals"] == {"messages": 4, "tokens": sum(sizes)}
    assert seen["history"] == ["three " * 50, "four"]      # only what the budget can hold
    store.db.close()


def test_a_tool_call_turn_continued_in_another_dialect_replays_in_order(hub, fake):
    """Langbase stores the model's tool call and its reasoning; the client appends the
    tool's result; EDISON continues the thread, and the model sees call and result."""
    call_ = {"id": "call_7", "name": "lookup", "arguments": "{\"q\": \"Oslo\"}"}
    fake.enqueue(Script(chunks=[], reasoning=["Look it up."], tool_calls=[call_]),
                 Script(chunks=["4 °C."]))
    status, headers, body = call(hub.url, "POST", "/v1/pipes/run", {
        "messages": [{"role": "user", "content": "Weather?"}], "tools": [
            {"type": "function", "function": {"name": "lookup", "parameters": {}}}]})
    thread_id = headers["lb-thread-id"]
    assert status == 200 and body["raw"]["choices"][0]["finish_reason"] == "tool_calls"
    call(hub.url, "POST", f"/v1/threads/{thread_id}/messages", [
        {"role": "tool", "tool_call_id": "call_7", "content": "4"}])
    conn, response = open_stream(hub.url, "/chat/stream", {
        "thread_id": thread_id, "message": "And so?", "model": "m"},
        headers={"Accept": "text/event-stream"})
    response.read()
    conn.close()
    sent = fake.chat_requests()[-1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "user"]
    assert sent[1]["tool_calls"][0]["id"] == "call_7" and "reasoning_content" not in sent[1]
    assert sent[2] == {"role": "tool", "content": "4", "tool_call_id": "call_7"}
    stored = call(hub.url, "GET", f"/v1/threads/{thread_id}/messages")[2]
    assert list(stored[1]) == MESSAGE_FIELDS          # Langbase's shape: no reasoning field
    assert [m["content"] for m in stored] == ["Weather?", None, "4", "And so?", "4 °C."]



def test_the_kept_window_follows_appends_and_deletes(tmp_path):
    """A turn's window is served from memory after the first read; what is appended since
    joins it, and a deleted message leaves it; a deleted or swept thread leaves nothing."""
    store = open_threads(tmp_path / "w.db")
    store.create_thread("w", {}, [normalise_message({"role": "user", "content": f"m{i}"})
                                  for i in range(5)])

    def window() -> list:
        seen = {}
        store.begin_turn("w", [normalise_message({"role": "user", "content": "next"})],
                         lambda history, summary, totals: seen.setdefault("h", history), None)
        return [m["content"] for m in seen["h"]]

    assert window() == ["m0", "m1", "m2", "m3", "m4"]
    store.append_messages("w", [normalise_message({"role": "assistant", "content": "a"})])
    assert window() == ["m0", "m1", "m2", "m3", "m4", "next", "a"]
    victim = store.list_messages("w")[1]["id"]
    store.delete_message("w", victim)
    assert window() == ["m0", "m2", "m3", "m4", "next", "a", "next"]
    store.delete_thread("w")
    store.create_thread("w", {}, [normalise_message({"role": "user", "content": "fresh"})])
    assert window() == ["fresh"]
    assert store.sweep_threads(0, 1, set()) == 1      # past the size bound: the thread goes
    store.create_thread("w", {}, [normalise_message({"role": "user", "content": "again"})])
    assert window() == ["again"]
