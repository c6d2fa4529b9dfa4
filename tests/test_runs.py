"""Runs over real sockets: disconnect and cancel abort the upstream; ids, timeouts,
fallbacks, queueing and shutdown."""

import io
import json
import socket
import threading

from fake_lmstudio import Script
from http_client import call, connect, open_stream, sse_events
from support import closed_port

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "Hi"}]
NEVER = threading.Event()   # a hold that is never released


def read_events(response):
    return [json.loads(d) if d != "[DONE]" else d for _, d in sse_events(response)]


def test_disconnect_mid_stream_closes_the_upstream(hub, fake):
    fake.enqueue(Script(chunks=["one", "two"], hold_first=NEVER, hold_after=1))
    conn, response = open_stream(hub.url, CHAT, {"model": "q", "messages": USER,
                                                 "stream": True})
    run_id = response.getheader("X-Run-Id")
    assert b"one" in response.read1(1000)
    conn.sock.shutdown(socket.SHUT_RDWR)   # the client goes away while the model is silent
    conn.close()
    assert fake.aborted.wait(2)
    assert fake.chat_requests()[0].aborted
    assert call(hub.url, "GET", f"/v1/runs/{run_id}")[2]["status"] == "cancelled"


def test_cancel_before_first_token_ends_stream_within_a_second(hub, fake):
    fake.enqueue(Script(hold_first=NEVER))
    conn, response = open_stream(hub.url, CHAT, {"model": "q", "messages": USER,
                                                 "stream": True}, timeout=1)
    run_id = response.getheader("X-Run-Id")
    status, _, body = call(hub.url, "POST", f"/v1/runs/{run_id}/cancel")
    assert status == 200 and body == {"id": run_id, "status": "cancelled"}
    events = read_events(response)         # the 1 s socket timeout bounds this read
    assert events[-2]["choices"][0]["finish_reason"] == "cancelled"
    assert events[-1] == "[DONE]"
    assert fake.aborted.wait(1)
    conn.close()


def test_cancel_after_the_finish_chunk_sends_no_second_finish(hub, fake):
    # The model finished ("stop" relayed in its chunk), but the usage and [DONE] never came:
    # a cancel now ends the stream with [DONE] alone, not a "cancelled" finish after "stop".
    def chunk(delta, finish=None):
        return {"id": "up", "object": "chat.completion.chunk", "created": 1, "model": "q",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    fake.enqueue(Script(raw_chunks=[chunk({"role": "assistant", "content": "one"}),
                                    chunk({}, "stop")], hold_first=NEVER, hold_after=2))
    conn, response = open_stream(hub.url, CHAT, {"model": "q", "messages": USER,
                                                 "stream": True}, timeout=2)
    run_id = response.getheader("X-Run-Id")
    seen = b""
    while b'"stop"' not in seen:
        seen += response.read1(1000)
    assert call(hub.url, "POST", f"/v1/runs/{run_id}/cancel")[0] == 200
    rest = (seen + response.read()).decode()
    conn.close()
    events = [data for _, data in sse_events(io.BytesIO(rest.encode()))]
    assert events[-1] == "[DONE]"
    finishes = [json.loads(e)["choices"][0]["finish_reason"] for e in events[:-1]]
    assert finishes == [None, "stop"]


def test_run_id_arrives_before_the_upstream_answers(hub, fake):
    """Headers go out at the first ping even while the upstream has not even sent headers."""
    fake.enqueue(Script(hold_headers=NEVER))
    conn, response = open_stream(hub.url, CHAT, {"model": "q", "messages": USER,
                                                 "stream": True}, timeout=2)
    assert response.status == 200
    run_id = response.getheader("X-Run-Id")
    assert call(hub.url, "GET", f"/v1/runs/{run_id}")[2]["status"] == "queued"
    assert call(hub.url, "POST", f"/v1/runs/{run_id}/cancel")[2]["status"] == "cancelled"
    assert read_events(response)[-1] == "[DONE]"
    assert fake.aborted.wait(2)
    conn.close()


def test_non_streaming_client_disconnect_aborts_the_upstream(hub, fake):
    fake.enqueue(Script(hold_first=NEVER))
    conn = connect(hub.url)
    conn.request("POST", CHAT, body=json.dumps({"model": "q", "messages": USER}).encode(),
                 headers={"Content-Type": "application/json"})
    assert fake.wait_requests(1)
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    assert fake.aborted.wait(2)


def test_non_streaming_run_cancelled_by_client_chosen_id(hub, fake):
    fake.enqueue(Script(chunks=["partial", " more"], hold_first=NEVER, hold_after=1))
    result = {}
    worker = threading.Thread(target=lambda: result.update(reply=call(
        hub.url, "POST", CHAT, {"model": "q", "messages": USER},
        headers={"X-Run-Id": "my-run-1"})))
    worker.start()
    assert fake.wait_requests(1)
    for _ in range(100):   # the run exists from the moment the request was accepted
        if call(hub.url, "GET", "/v1/runs/my-run-1")[2]["status"] == "streaming":
            break
    assert call(hub.url, "POST", "/v1/runs/my-run-1/cancel")[2]["status"] == "cancelled"
    worker.join(5)
    status, headers, body = result["reply"]
    assert status == 200 and headers["X-Run-Id"] == "my-run-1"
    assert body["choices"][0]["finish_reason"] == "cancelled"
    assert body["choices"][0]["message"]["content"] == "partial"
    assert fake.aborted.wait(2)


def test_cancel_endpoint_is_idempotent_and_knows_finished_runs(hub):
    assert call(hub.url, "POST", "/v1/runs/run_nope/cancel")[0] == 404
    _, headers, _ = call(hub.url, "POST", CHAT, {"model": "q", "messages": USER})
    run_id = headers["X-Run-Id"]
    assert call(hub.url, "POST", f"/v1/runs/{run_id}/cancel")[2] == {"id": run_id,
                                                                    "status": "completed"}
    assert call(hub.url, "POST", f"/v1/runs/{run_id}/cancel")[2]["status"] == "completed"


def test_bad_or_duplicate_client_run_id(hub):
    assert call(hub.url, "POST", CHAT, {"model": "q", "messages": USER},
                headers={"X-Run-Id": "bad id\\x"})[0] == 400
    call(hub.url, "POST", CHAT, {"model": "q", "messages": USER}, headers={"X-Run-Id": "dup"})
    status, _, body = call(hub.url, "POST", CHAT, {"model": "q", "messages": USER},
                           headers={"X-Run-Id": "dup"})
    assert status == 409 and body["error"]["param"] == "X-Run-Id"


def test_upstream_down_is_503_with_the_message(make_hub):
    port = closed_port()
    hub = make_hub(upstream_url=f"http://127.0.0.1:{port}/v1")
    status, _, body = call(hub.url, "POST", CHAT, {"model": "q", "messages": USER})
    assert status == 503
    assert body["error"]["message"] == \
        f"Could not connect to LM Studio at http://127.0.0.1:{port}/v1: Connection refused"
    conn, response = open_stream(hub.url, CHAT, {"model": "q", "messages": USER,
                                                 "stream": True})
    assert response.status == 503      # streams too: nothing had been sent yet
    conn.close()


def test_first_byte_timeout_is_504_and_closes_the_upstream(make_hub, fake):
    hub = make_hub({"upstream": {"first_byte_timeout_seconds": 0.3}})
    fake.enqueue(Script(hold_headers=NEVER))
    status, _, body = call(hub.url, "POST", CHAT, {"model": "q", "messages": USER})
    assert status == 504 and "first-byte timeout" in body["error"]["message"]
    assert fake.aborted.wait(2)


def test_idle_timeout_mid_stream_is_an_error_frame(make_hub, fake):
    hub = make_hub({"upstream": {"idle_timeout_seconds": 0.3}})
    fake.enqueue(Script(chunks=["a", "b"], hold_first=NEVER, hold_after=1))
    conn, response = open_stream(hub.url, CHAT, {"model": "q", "messages": USER,
                                                 "stream": True})
    events = read_events(response)
    assert "idle timeout" in events[-1]["error"]["message"]
    assert events[-1]["error"]["code"] == "upstream_timeout"
    conn.close()


def test_aliases_and_fallback_before_the_first_byte(make_hub, fake):
    hub = make_hub({"aliases": {"gpt-4": "deep", "deep": "big-model"},
                    "fallbacks": {"deep": "small-model"}})
    fake.enqueue(Script(status=404, error={"message": 'Model "big-model" not found. Please '
                                           'specify a valid model.', "code": "model_not_found"}))
    status, _, body = call(hub.url, "POST", CHAT, {"model": "gpt-4", "messages": USER})
    assert status == 200
    assert [r.body["model"] for r in fake.chat_requests()] == ["big-model", "small-model"]
    assert body["model"] == "small-model"     # the response says which model served it


def test_fallback_to_another_upstream_when_the_first_is_down(make_hub, fake):
    hub = make_hub({"upstream:backup": {"base_url": fake.url},
                    "fallbacks": {"main-model": "backup:spare-model"}},
                   upstream_url=f"http://127.0.0.1:{closed_port()}/v1")
    status, _, body = call(hub.url, "POST", CHAT, {"model": "main-model", "messages": USER})
    assert status == 200 and body["model"] == "spare-model"


def test_all_fallbacks_failing_reports_each(make_hub, fake):
    hub = make_hub({"fallbacks": {"a": "b"}})
    fake.enqueue(Script(status=503, error="busy"), Script(status=503, error="also busy"))
    status, _, body = call(hub.url, "POST", CHAT, {"model": "a", "messages": USER})
    assert status == 503 and "fallback 'b': also busy" in body["error"]["message"]


def test_bad_request_does_not_fall_back(make_hub, fake):
    hub = make_hub({"fallbacks": {"a": "b"}})
    fake.enqueue(Script(status=400, error="'response_format.type' must be 'json_schema'"))
    assert call(hub.url, "POST", CHAT, {"model": "a", "messages": USER})[0] == 400
    assert len(fake.chat_requests()) == 1


def test_lm_prefix_names_the_lm_studio_upstream(hub, fake):
    call(hub.url, "POST", CHAT, {"model": "lm:qwen2.5-instruct", "messages": USER})
    assert fake.chat_requests()[0].body["model"] == "qwen2.5-instruct"


def test_no_model_uses_the_default_then_the_first_listed(make_hub, fake):
    hub = make_hub()
    call(hub.url, "POST", CHAT, {"messages": USER})
    assert fake.chat_requests()[-1].body["model"] == "qwen2.5-7b-instruct"
    hub2 = make_hub({"models": {"default": "chosen"}})
    call(hub2.url, "POST", CHAT, {"messages": USER})
    assert fake.chat_requests()[-1].body["model"] == "chosen"


def test_max_concurrent_queues_fifo_with_pings_and_cancel(make_hub, fake):
    hub = make_hub({"upstream": {"max_concurrent": 1}})
    release = threading.Event()
    fake.enqueue(Script(hold_first=release))
    first_conn, first = open_stream(hub.url, CHAT, {"model": "q", "messages": USER,
                                                    "stream": True})
    assert fake.wait_requests(1)
    conn, queued = open_stream(hub.url, CHAT, {"model": "q", "messages": USER,
                                               "stream": True})
    run_id = queued.getheader("X-Run-Id")       # headers came with the first ping
    assert call(hub.url, "GET", f"/v1/runs/{run_id}")[2]["status"] == "queued"
    assert queued.read1(100) == b": ping\n\n"   # a queued client is kept warm
    assert call(hub.url, "POST", f"/v1/runs/{run_id}/cancel")[2]["status"] == "cancelled"
    assert read_events(queued)[-1] == "[DONE]"
    release.set()
    assert read_events(first)[-1] == "[DONE]"
    assert len(fake.chat_requests()) == 1       # the cancelled run never reached upstream
    conn.close()
    first_conn.close()


def test_shutdown_cancels_live_runs_and_ends_their_streams(make_hub, fake):
    hub = make_hub()
    fake.enqueue(Script(hold_first=NEVER))
    conn, response = open_stream(hub.url, CHAT, {"model": "q", "messages": USER,
                                                 "stream": True}, timeout=3)
    assert fake.wait_requests(1)
    stopper = threading.Thread(target=hub.stop)
    stopper.start()
    events = read_events(response)
    assert events[-2]["choices"][0]["finish_reason"] == "cancelled" and events[-1] == "[DONE]"
    stopper.join(5)
    assert fake.aborted.wait(2)
    conn.close()


def test_the_mock_streams_words_in_min_to_max_chunks(make_hub):
    hub = make_hub({"upstream": {"kind": "mock"},
                    "mock": {"chunk_delay_seconds": 0, "min_chunks": 3, "max_chunks": 4}})
    for seed in range(5):
        conn, response = open_stream(hub.url, CHAT, {"model": "any", "messages": USER,
                                                     "stream": True, "seed": seed})
        events = read_events(response)
        pieces = [e["choices"][0]["delta"]["content"] for e in events[:-2]]
        assert 3 <= len(pieces) <= 4 and events[-1] == "[DONE]"
        assert events[-2]["choices"][0]["finish_reason"] == "stop"
        conn.close()


def test_the_hangup_watch_reports_a_closed_peer_and_drops_one_with_data_waiting():
    """Awaited runs are driven in their handler's thread; this watch notices their clients
    leaving. Data waiting (a pipelined request) is not a hangup, and must not spin."""
    from llmhub.http.sockets import HangupWatch
    watch = HangupWatch()
    leaving, leaving_peer = socket.socketpair()
    talking, talking_peer = socket.socketpair()
    hung_up = {"leaving": threading.Event(), "talking": threading.Event()}
    with watch.watching(leaving, hung_up["leaving"].set), \
            watch.watching(talking, hung_up["talking"].set):
        talking_peer.sendall(b"GET / HTTP/1.1\r\n\r\n")
        leaving_peer.close()
        assert hung_up["leaving"].wait(2)
        dropped = threading.Event()
        for _ in range(200):               # the talking socket leaves the watch unreported
            if talking not in watch._watched:
                dropped.set()
                break
            dropped.wait(0.01)
        assert dropped.is_set() and not hung_up["talking"].is_set()
    for sock in (leaving, talking, talking_peer):
        sock.close()


def test_ids_are_drawn_in_bulk_and_never_repeat(monkeypatch):
    import os
    import uuid
    from llmhub import ids
    draws = []
    real = os.urandom
    monkeypatch.setattr(ids.os, "urandom", lambda n: draws.append(n) or real(n))
    made = {ids.uuid4() for _ in range(1000)}
    assert len(made) == 1000 and all(u.version == 4 for u in made)
    assert len(draws) <= 1000 * 16 // ids._BATCH + 1    # one syscall per 16 ids
    assert isinstance(next(iter(made)), uuid.UUID)


def test_a_thread_drawing_ids_never_waits_for_another(monkeypatch):
    """Each thread draws its own bytes: a thread inside os.urandom (a syscall, the GIL
    released) holds up no other. A shared pool's lock was held across that call, and
    under load became a convoy every run's id queued in."""
    import os
    from llmhub import ids
    real, inside, release = os.urandom, threading.Event(), threading.Event()

    def urandom(n):
        if threading.current_thread().name == "slow draw":
            inside.set()
            release.wait(60)
        return real(n)
    monkeypatch.setattr(ids.os, "urandom", urandom)
    slow = threading.Thread(target=ids.uuid4_hex, name="slow draw")
    slow.start()
    assert inside.wait(10)
    drawn = threading.Event()
    other = threading.Thread(target=lambda: ids.uuid4_hex() and drawn.set())
    other.start()
    try:
        assert drawn.wait(5)    # (with a shared lock: until the slow draw ends)
    finally:
        release.set()
        slow.join()
        other.join()
