"""The Responses hub (/responses) over real sockets: events, cancel, resume, retention,
threads across dialects."""

import json
import socket
import threading
import time

import pytest

from fake_lmstudio import Script
from http_client import call, connect, open_stream
from llmhub.dialects.responses import created_at, new_response_id
from support import parse_sse, read_until

NEVER = threading.Event()
RESPONSE_FIELDS = ["id", "object", "created", "model", "provider", "status", "output_text",
                   "usage", "metadata", "context"]


def test_non_streaming_reply_has_the_seed_shape(hub, fake):
    status, headers, body = call(hub.url, "POST", "/responses", {
        "model": "lm:qwen2.5-instruct", "input": "Скажи привет одному предложению",
        "system": "Ты лаконичный ассистент.", "temperature": 0.3, "max_output_tokens": 128,
        "metadata": {"user": "u1"}})
    assert status == 200 and list(body) == RESPONSE_FIELDS
    assert body["id"].startswith("resp_") and body["object"] == "response"
    assert body["status"] == "completed" and body["output_text"] == "Hello from the fake!"
    assert body["model"] == "qwen2.5-instruct"
    assert body["provider"] == {"name": "lmstudio", "base_url": fake.url}
    assert body["usage"] == {"input_tokens": 55, "output_tokens": 5, "total_tokens": 60}
    assert body["metadata"] == {"thread_id": None, "user": "u1"}
    assert body["context"]["messages"] == {"included": 0, "dropped": 0, "new": 1}
    sent = fake.chat_requests()[0].body
    assert sent["model"] == "qwen2.5-instruct" and sent["max_tokens"] == 128
    assert sent["messages"] == [
        {"role": "system", "content": "Ты лаконичный ассистент."},
        {"role": "user", "content": "Скажи привет одному предложению"}]


@pytest.mark.parametrize("query, flag", [("?stream=true", None), ("", True)])
def test_stream_events_are_exactly_the_seeds(hub, fake, query, flag):
    body = {"model": "m", "input": "Hi"} | ({"stream": flag} if flag else {})
    conn = connect(hub.url)
    conn.request("POST", "/responses" + query, body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.getheader("Content-Type") == "text/event-stream; charset=utf-8"
    events = parse_sse(response.read())
    conn.close()
    names = [e["event"] for e in events]
    assert names[0] == "meta" and names[-2:] == ["usage", "done"]
    assert set(names[1:-2]) == {"delta"}
    meta = events[0]["data"]
    assert list(meta) == ["id", "created", "model", "provider", "status"]
    assert meta["status"] == "in_progress" and meta["id"].startswith("resp_")
    assert events[1]["data"] == {"index": 0, "type": "output_text.delta", "text": "Hello"}
    assert "".join(e["data"]["text"] for e in events if e["event"] == "delta") == \
        "Hello from the fake!"
    assert events[-2]["data"] == {"input_tokens": 2, "output_tokens": 5, "total_tokens": 7}
    assert events[-1]["data"] == {"status": "completed"}
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_meta_and_pings_come_before_the_upstream_answers(hub, fake):
    release = threading.Event()
    fake.enqueue(Script(hold_headers=release))
    conn, response = open_stream(hub.url, "/responses?stream=true", {"model": "m",
                                                                     "input": "Hi"})
    events = read_until(response, "ping")
    assert events[0]["event"] == "meta"
    ping = next(e for e in events if e["event"] == "ping")
    assert ping["data"]["ts"].endswith("Z") and ping["id"] == "0"
    release.set()
    assert parse_sse(response.read())[-1]["data"] == {"status": "completed"}
    conn.close()


def test_cancel_during_a_silent_upstream(hub, fake):
    fake.enqueue(Script(chunks=["Partial", " more"], hold_first=NEVER, hold_after=1))
    conn, response = open_stream(hub.url, "/responses?stream=true",
                                 {"model": "m", "input": "Hi", "create_thread": True},
                                 timeout=1)
    events = read_until(response, "delta")
    response_id = events[0]["data"]["id"]
    status, _, body = call(hub.url, "POST", f"/responses/{response_id}/cancel")
    assert status == 200 and body == {"id": response_id, "status": "cancelled"}
    rest = parse_sse(response.read())            # bounded by the 1 s socket timeout
    assert rest[-1]["event"] == "done" and rest[-1]["data"] == {"status": "cancelled"}
    assert fake.aborted.wait(1)
    conn.close()
    stored = call(hub.url, "GET", f"/responses/{response_id}")[2]
    assert stored["status"] == "cancelled" and stored["output_text"] == "Partial"
    thread = stored["metadata"]["thread_id"]
    reply = call(hub.url, "GET", f"/v1/threads/{thread}/messages")[2][-1]
    assert reply["content"] == "Partial" and reply["metadata"]["status"] == "cancelled"


def test_cancel_is_idempotent_and_knows_finished_and_unknown(hub):
    _, _, body = call(hub.url, "POST", "/responses", {"model": "m", "input": "Hi"})
    for _ in range(2):
        assert call(hub.url, "POST", f"/responses/{body['id']}/cancel")[2] == {
            "id": body["id"], "status": "completed"}
    status, _, error = call(hub.url, "POST", f"/responses/{new_response_id()}/cancel")
    assert status == 404 and error["error"]["code"] == "response_not_found"
    assert call(hub.url, "GET", "/responses/resp_nonsense")[0] == 404


def test_reconnect_with_last_event_id_loses_no_token(hub, fake):
    release = threading.Event()
    fake.enqueue(Script(chunks=["one", " two", " three", " four"], hold_first=release,
                        hold_after=2))
    conn, response = open_stream(hub.url, "/responses?stream=true", {"model": "m",
                                                                     "input": "Hi"})
    seen = read_until(response, "delta", count=2)
    conn.sock.shutdown(socket.SHUT_RDWR)           # the connection drops mid-generation
    conn.close()
    last_id = seen[-1]["id"]
    release.set()
    conn = connect(hub.url)
    conn.request("GET", f"/responses/{seen[0]['data']['id']}/events",
                 headers={"Last-Event-ID": last_id})
    rest = parse_sse(conn.getresponse().read())
    conn.close()
    assert rest[0]["event"] != "meta" and int(rest[0]["id"]) > int(last_id)
    text = "".join(e["data"]["text"] for e in seen + rest if e["event"] == "delta")
    assert text == "one two three four"
    assert rest[-1]["data"] == {"status": "completed"}


def test_a_finished_response_replays_with_the_same_ids(hub):
    conn, response = open_stream(hub.url, "/responses?stream=true", {"model": "m",
                                                                     "input": "Hi"})
    live = parse_sse(response.read())
    conn.close()
    response_id = live[0]["data"]["id"]
    conn = connect(hub.url)
    conn.request("GET", f"/responses/{response_id}/events")
    replay = parse_sse(conn.getresponse().read())
    conn.request("GET", f"/responses/{response_id}/events?last_event_id={live[2]['id']}")
    tail = parse_sse(conn.getresponse().read())
    conn.close()
    strip = [(e["id"], e["event"], e["data"]) for e in live if e["event"] != "ping"]
    assert [(e["id"], e["event"], e["data"]) for e in replay] == strip
    assert [(e["id"], e["event"], e["data"]) for e in tail] == strip[3:]


def test_a_dropped_stream_keeps_running_for_the_grace_period(make_hub, fake):
    hub = make_hub({"responses": {"resume_grace_seconds": 30}})
    release = threading.Event()
    fake.enqueue(Script(chunks=["a", "b"], hold_first=release, hold_after=1))
    conn, response = open_stream(hub.url, "/responses?stream=true", {"model": "m",
                                                                     "input": "Hi"})
    events = read_until(response, "delta")
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    response_id = events[0]["data"]["id"]
    release.set()                      # the run goes on without a listener …
    conn = connect(hub.url)
    conn.request("GET", f"/responses/{response_id}/events",
                 headers={"Last-Event-ID": events[-1]["id"]})
    rest = parse_sse(conn.getresponse().read())
    conn.close()
    assert rest[-1]["data"] == {"status": "completed"}
    assert not fake.chat_requests()[0].aborted


def test_nobody_reattaching_cancels_after_the_grace_period(make_hub, fake):
    hub = make_hub({"responses": {"resume_grace_seconds": 0.2}})
    fake.enqueue(Script(chunks=["kept", "lost"], hold_first=NEVER, hold_after=1))
    conn, response = open_stream(hub.url, "/responses?stream=true", {"model": "m",
                                                                     "input": "Hi"})
    response_id = read_until(response, "delta")[0]["data"]["id"]
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    assert fake.aborted.wait(5)
    run = hub.hub.registry.get(response_id)
    assert run is None or run.wait(5)
    stored = call(hub.url, "GET", f"/responses/{response_id}")[2]
    assert stored["status"] == "cancelled" and stored["output_text"] == "kept"


def test_other_dialects_still_cancel_at_once(hub, fake):
    fake.enqueue(Script(chunks=["a", "b"], hold_first=NEVER, hold_after=1))
    conn, response = open_stream(hub.url, "/v1/pipes/run", {"messages": [
        {"role": "user", "content": "Hi"}], "stream": True})
    response.read1(4096)
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    assert fake.aborted.wait(2)


def test_retention_tells_expired_from_unknown(make_hub):
    hub = make_hub({"responses": {"keep_count": 2}})
    ids = [call(hub.url, "POST", "/responses", {"model": "m", "input": "Hi"})[2]["id"]
           for _ in range(3)]
    status, _, error = call(hub.url, "GET", f"/responses/{ids[0]}")
    assert status == 410 and error["error"]["code"] == "response_expired"
    assert "kept" in error["error"]["message"]
    assert call(hub.url, "GET", f"/responses/{ids[2]}")[0] == 200
    assert call(hub.url, "GET", f"/responses/{new_response_id()}")[0] == 404


def test_response_ids_carry_their_creation_time():
    assert abs(created_at(new_response_id()) - time.time()) < 5
    assert created_at("resp_not-a-uuid") is None


def test_threads_are_created_continued_and_shared_across_dialects(hub, fake):
    first = call(hub.url, "POST", "/responses", {"model": "m", "input": "Привет!",
                                                 "create_thread": True})[2]
    thread_id = first["metadata"]["thread_id"]
    second = call(hub.url, "POST", "/responses", {"model": "m", "input": "Продолжай.",
                                                  "thread_id": thread_id})[2]
    assert second["metadata"]["thread_id"] == thread_id
    assert [m["content"] for m in fake.chat_requests()[-1].body["messages"]] == [
        "Привет!", "Hello from the fake!", "Продолжай."]
    # the same thread continues through the Langbase dialect, and back
    _, headers, _ = call(hub.url, "POST", "/v1/pipes/run", {
        "threadId": thread_id, "messages": [{"role": "user", "content": "Langbase here"}]})
    assert headers["lb-thread-id"] == thread_id
    call(hub.url, "POST", "/responses", {"model": "m", "input": "Back", "thread_id": thread_id})
    assert [m["content"] for m in fake.chat_requests()[-1].body["messages"]][-3:] == [
        "Langbase here", "Hello from the fake!", "Back"]
    status, _, error = call(hub.url, "POST", "/responses", {"model": "m", "input": "x",
                                                            "thread_id": "ghost"})
    assert status == 404 and error == {"error": {"message": "Thread 'ghost' not found",
                                                 "code": "not_found"}}


@pytest.mark.parametrize("body, param", [
    ({"model": "m"}, "input"), ({"input": ""}, "input"), ({"input": 5}, "input"),
    ({"input": [{"role": "bot", "content": "x"}]}, "input[0].role"),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "x", "temperature": "warm"}, "temperature"),
    ({"input": "x", "create_thread": "yes"}, "create_thread"),
    ({"input": "x", "metadata": []}, "metadata"),
    ({"input": "x", "thread_id": "a b"}, "thread_id"),
])
def test_bad_bodies_are_400_naming_the_field(hub, fake, body, param):
    status, _, error = call(hub.url, "POST", "/responses", body)
    assert status == 400 and param in error["error"]["message"]
    assert not fake.chat_requests()


def test_upstream_failure_is_an_error_with_a_status_or_an_error_event(make_hub, fake):
    hub = make_hub(upstream_url="http://127.0.0.1:9/v1")
    status, _, error = call(hub.url, "POST", "/responses", {"model": "m", "input": "x"})
    assert status == 503 and "Could not connect" in error["error"]["message"]
    conn, response = open_stream(hub.url, "/responses?stream=true", {"model": "m",
                                                                     "input": "x"})
    events = parse_sse(response.read())
    conn.close()
    assert [e["event"] for e in events] == ["meta", "error", "done"]
    assert events[-1]["data"] == {"status": "failed"}
    stored = call(hub.url, "GET", f"/responses/{events[0]['data']['id']}")[2]
    assert stored["status"] == "failed" and "Could not connect" in stored["error"]["message"]


def test_powershell_bodies_work(hub, fake):
    """ConvertTo-Json output: four-space indentation, Cyrillic, sometimes a BOM."""
    body = ('{\r\n    "model":  "lm:qwen2.5-instruct",\r\n    "input":  "Скажи привет",\r\n'
            '    "create_thread":  true\r\n}').encode("utf-8")
    for payload in (body, b"\xef\xbb\xbf" + body):
        status, _, reply = call(hub.url, "POST", "/responses", payload)
        assert status == 200 and reply["metadata"]["thread_id"]
    assert fake.chat_requests()[-1].body["messages"][-1]["content"] == "Скажи привет"


def test_event_source_reconnecting_after_done_is_told_to_stop(hub):
    conn, response = open_stream(hub.url, "/responses?stream=true", {"model": "m",
                                                                     "input": "Hi"})
    events = parse_sse(response.read())
    conn.close()
    status, headers, _ = call(hub.url, "GET", f"/responses/{events[0]['data']['id']}/events",
                              headers={"Last-Event-ID": events[-1]["id"]})
    assert status == 204     # EventSource stops reconnecting on 204 No Content


def test_a_declared_charset_is_honoured(hub, fake):
    body = '{"model": "m", "input": "Привет"}'.encode("cp1251")
    status, _, _ = call(hub.url, "POST", "/responses", body,
                        headers={"Content-Type": "application/json; charset=windows-1251"})
    assert status == 200
    assert fake.chat_requests()[-1].body["messages"][-1]["content"] == "Привет"
    status, _, error = call(hub.url, "POST", "/responses", body,
                            headers={"Content-Type": "application/json; charset=klingon"})
    assert status == 415 and "klingon" in error["error"]["message"]
