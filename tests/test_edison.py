"""EDISON's /chat/stream (SSE) and /chat/cancel, aliases and fallbacks, per-model queues."""

import threading

import pytest

from fake_lmstudio import Script
from http_client import call, open_stream
from support import parse_sse, read_until

SSE = {"Accept": "text/event-stream"}
NEVER = threading.Event()


def edison(hub, body, **kwargs):
    return open_stream(hub.url, "/chat/stream", body, headers=SSE, **kwargs)


def test_events_are_init_tokens_done(hub, fake):
    release = threading.Event()
    fake.enqueue(Script(hold_headers=release))
    conn, response = edison(hub, {"message": "Hello!", "model": "qwen"})
    assert response.getheader("Content-Type") == "text/event-stream; charset=utf-8"
    init = read_until(response, "init")[0]              # before the upstream answers
    release.set()
    events = [init] + parse_sse(response.read())
    conn.close()
    names = [e["event"] for e in events]
    assert names[0] == "init" and names[-1] == "done"
    assert set(names[1:-1]) == {"token"}
    request_id, thread_id = init["data"]["request_id"], init["data"]["thread_id"]
    assert init["data"] == {"request_id": request_id, "thread_id": thread_id, "model": "qwen"}
    assert "".join(e["data"]["t"] for e in events if e["event"] == "token") == \
        "Hello from the fake!"
    assert events[-1]["data"] == {
        "ok": True, "response": "Hello from the fake!", "request_id": request_id,
        "thread_id": thread_id, "model": "qwen",
        "usage": {"input_tokens": 6, "output_tokens": 5, "total_tokens": 11}}
    stored = call(hub.url, "GET", f"/v1/threads/{thread_id}/messages")[2]
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", "Hello!"), ("assistant", "Hello from the fake!")]


def test_without_the_sse_accept_header_chat_stream_is_ndjson(hub):
    conn, response = open_stream(hub.url, "/chat/stream", {"model_key": "m", "messages": [
        {"role": "user", "content": "Hi"}]})
    assert response.getheader("Content-Type") == "application/x-ndjson"
    conn.close()


def test_cancel_stops_the_model_and_says_so(hub, fake):
    fake.enqueue(Script(chunks=["Partial", " rest"], hold_first=NEVER, hold_after=1))
    conn, response = edison(hub, {"message": "Hi", "model": "m"}, timeout=1)
    events = read_until(response, "token")
    request_id = events[0]["data"]["request_id"]
    status, _, body = call(hub.url, "POST", "/chat/cancel", {"request_id": request_id})
    assert status == 200 and body == {"ok": True, "cancelled": True}
    done = parse_sse(response.read())[-1]
    assert done["event"] == "done" and done["data"] == {
        "ok": False, "stopped": True, "response": "Partial", "request_id": request_id,
        "thread_id": events[0]["data"]["thread_id"]}
    assert fake.aborted.wait(1)
    conn.close()
    assert call(hub.url, "POST", "/chat/cancel", {"request_id": request_id})[2] == {
        "ok": True, "cancelled": False, "status": "cancelled"}
    reply = call(hub.url, "GET", f"/v1/threads/{done['data']['thread_id']}/messages")[2][-1]
    assert reply["content"] == "Partial" and reply["metadata"]["status"] == "cancelled"


def test_cancel_of_a_finished_or_unknown_run(hub):
    conn, response = edison(hub, {"message": "Hi", "model": "m"})
    request_id = parse_sse(response.read())[0]["data"]["request_id"]
    conn.close()
    assert call(hub.url, "POST", "/chat/cancel", {"request_id": request_id})[2] == {
        "ok": True, "cancelled": False, "status": "completed"}
    status, _, body = call(hub.url, "POST", "/chat/cancel", {"request_id": "nope"})
    assert status == 404 and body["error"].startswith("No run with id")
    assert call(hub.url, "POST", "/chat/cancel", {})[0] == 400


def test_the_clients_x_run_id_is_the_request_id_so_stop_can_be_sent_at_once(hub, fake):
    """As in every dialect: a client that names its run can cancel it before init arrives."""
    fake.enqueue(Script(chunks=["Partial", " rest"], hold_first=NEVER, hold_after=1))
    conn, response = open_stream(hub.url, "/chat/stream", {"message": "Hi", "model": "m"},
                                 headers={**SSE, "X-Run-Id": "my-chat-1"}, timeout=1)
    assert read_until(response, "token")[0]["data"]["request_id"] == "my-chat-1"
    assert call(hub.url, "POST", "/chat/cancel", {"request_id": "my-chat-1"})[2] == {
        "ok": True, "cancelled": True}
    assert fake.aborted.wait(1)
    conn.close()


def test_a_thread_continues_and_messages_may_be_a_list(hub, fake):
    conn, response = edison(hub, {"message": "First", "model": "m"})
    thread_id = parse_sse(response.read())[0]["data"]["thread_id"]
    conn.close()
    conn, response = edison(hub, {"messages": [{"role": "user", "content": "Second"}],
                                  "model": "m", "thread_id": thread_id,
                                  "config": {"temperature": 0.5, "maxTokens": 64}})
    response.read()
    conn.close()
    sent = fake.chat_requests()[-1].body
    assert [m["content"] for m in sent["messages"]] == ["First", "Hello from the fake!",
                                                        "Second"]
    assert sent["temperature"] == 0.5 and sent["max_tokens"] == 64


@pytest.mark.parametrize("body, param", [
    ({}, "message"), ({"message": 5}, "message"), ({"messages": "x"}, "messages"),
    ({"message": "x", "thread_id": "a b"}, "thread_id"),
    ({"message": "x", "config": {"temperature": 7}}, "temperature"),
])
def test_bad_bodies_are_400_in_edisons_shape(hub, body, param):
    status, _, error = call(hub.url, "POST", "/chat/stream", body, headers=SSE)
    assert status == 400 and error["param"] == param and error["code"]


def test_aliases_and_fallbacks_say_which_model_served(make_hub, fake):
    hub = make_hub({"aliases": {"gpt-4": "deep", "deep": "big", "medium": "mid"},
                    "fallbacks": {"deep": "medium"}})
    fake.enqueue(Script(status=404, error={"message": 'Model "big" not found',
                                           "code": "model_not_found"}))
    conn, response = edison(hub, {"message": "Hi", "model": "gpt-4"})
    events = parse_sse(response.read())
    conn.close()
    assert events[0]["data"]["model"] == "big"          # the first choice, announced at init
    assert events[-1]["data"]["model"] == "mid"         # the one that served
    assert [r.body["model"] for r in fake.chat_requests()] == ["big", "mid"]


def test_per_model_queue_reports_position_and_can_be_cancelled(make_hub, fake):
    hub = make_hub({"concurrency": {"busy-model": 1}})
    release = threading.Event()
    fake.enqueue(Script(hold_first=release))
    first_conn, first = edison(hub, {"message": "one", "model": "busy-model"})
    assert fake.wait_requests(1)
    conn, queued = edison(hub, {"message": "two", "model": "busy-model"})
    events = read_until(queued, "queue")
    assert events[-1]["data"] == {"position": 1}
    # no global lock: another model goes straight through meanwhile
    other_conn, other = edison(hub, {"message": "three", "model": "free-model"})
    assert parse_sse(other.read())[-1]["data"]["ok"] is True
    other_conn.close()
    request_id = events[0]["data"]["request_id"]
    assert call(hub.url, "POST", "/chat/cancel", {"request_id": request_id})[2]["cancelled"]
    assert parse_sse(queued.read())[-1]["data"]["stopped"] is True
    conn.close()
    release.set()
    assert parse_sse(first.read())[-1]["data"]["ok"] is True
    first_conn.close()
    assert [r.body["model"] for r in fake.chat_requests()] == ["busy-model", "free-model"]


def test_queued_runs_go_first_in_first_out(make_hub, fake):
    hub = make_hub({"concurrency": {"m": 1}})
    release = threading.Event()
    fake.enqueue(Script(hold_first=release))
    streams = [edison(hub, {"message": "first", "model": "m"})]
    assert fake.wait_requests(1)
    for n in range(3):
        streams.append(edison(hub, {"message": f"queued {n}", "model": "m"}))
        assert read_until(streams[-1][1], "queue")[-1]["data"]["position"] == n + 1
    release.set()
    for conn, response in streams:
        response.read()
        conn.close()
    assert [r.body["messages"][-1]["content"] for r in fake.chat_requests()] == [
        "first", "queued 0", "queued 1", "queued 2"]
