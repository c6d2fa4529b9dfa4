"""A run's life at its edges (issue 23), over real sockets: who ends it, how it is counted
whatever its end, limits that hold while it streams, and a cancel racing its natural end."""

import json
import logging
import socket
import threading

import pytest

from fake_lmstudio import Script
from http_client import call, connect, open_stream
from llmhub.engine.runs import Registry
from support import read_until, wait_for

NEVER = threading.Event()      # a hold that is never released
USER = [{"role": "user", "content": "Hi"}]
LONG_GRACE = {"responses": {"resume_grace_seconds": "60"}}


def drop(conn) -> None:
    """The client goes away the way Ctrl-C or an abort does: the socket closes."""
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()


def live(hub) -> list:
    return hub.hub.engine.live_runs()


def stored_stream_dropped(hub, fake, release) -> tuple[str, list]:
    """A stored /v1/responses stream held after its first delta, whose client then goes:
    (the response id, the events it had seen)."""
    fake.enqueue(Script(chunks=["one", " two"], hold_first=release, hold_after=1))
    conn, response = open_stream(hub.url, "/v1/responses",
                                 {"model": "m", "input": "Hi", "stream": True})
    seen = read_until(response, "response.output_text.delta")
    drop(conn)
    return seen[0]["data"]["response"]["id"], seen


# --- 1. who ends a run -------------------------------------------------------------------------

# Every stream that nothing can resume: its client going away cancels it at once, even with a
# long resume grace configured (a grace would hold the model for a minute here).
UNRESUMABLE = {
    "chat completions": ("/v1/chat/completions", {"model": "m", "messages": USER,
                                                  "stream": True}, {}),
    "completions": ("/v1/completions", {"model": "m", "prompt": "Hi", "stream": True}, {}),
    "messages": ("/v1/messages", {"model": "m", "max_tokens": 50, "messages": USER,
                                  "stream": True}, {}),
    "langbase": ("/v1/pipes/run", {"messages": USER, "stream": True}, {}),
    "responses store false": ("/v1/responses", {"model": "m", "input": "Hi", "stream": True,
                                                "store": False}, {}),
    "studio": ("/chat/stream", {"model_key": "m", "messages": USER}, {}),
    "edison": ("/chat/stream", {"message": "Hi"}, {"Accept": "text/event-stream"}),
    "sessions": ("/v1/chat/completions/stream", {"model": "m", "messages": USER}, {}),
}


@pytest.mark.parametrize("name", UNRESUMABLE)
def test_a_stream_nothing_can_resume_is_cancelled_when_its_client_goes(make_hub, fake, name):
    hub = make_hub(LONG_GRACE)
    path, body, headers = UNRESUMABLE[name]
    fake.enqueue(Script(chunks=["one", " two"], hold_first=NEVER, hold_after=1))
    conn, response = open_stream(hub.url, path, body, headers)
    assert response.status == 200
    assert wait_for(lambda: fake.requests)  # the upstream has it
    drop(conn)
    assert fake.aborted.wait(2)             # the model stopped: not after the grace
    assert wait_for(lambda: not live(hub))


def test_a_stored_responses_stream_waits_for_its_client_and_a_resume_keeps_it(make_hub, fake):
    hub = make_hub({"responses": {"resume_grace_seconds": "0.3"}})
    release = threading.Event()
    response_id, seen = stored_stream_dropped(hub, fake, release)
    # a second reader attaches within the grace and stays: the first one's timer must
    # not end the run under it
    again = connect(hub.url)
    again.request("GET", f"/v1/responses/{response_id}?stream=true"
                         f"&starting_after={seen[-1]['data']['sequence_number']}")
    resumed = again.getresponse()
    assert resumed.status == 200
    assert not fake.aborted.wait(1.0)       # three graces: still generating
    release.set()
    assert read_until(resumed, "response.completed")
    again.close()
    _, _, body = call(hub.url, "GET", f"/v1/responses/{response_id}")
    assert body["status"] == "completed" and body["output"][0]["content"][0]["text"] == \
        "one two"


def test_a_stored_responses_stream_left_alone_is_cancelled_after_the_grace(make_hub, fake):
    hub = make_hub({"responses": {"resume_grace_seconds": "0.2"}})
    response_id, _ = stored_stream_dropped(hub, fake, NEVER)
    assert fake.aborted.wait(3)
    assert wait_for(lambda: call(hub.url, "GET", f"/v1/responses/{response_id}")[2]["status"]
                    == "cancelled")


def test_only_the_last_departure_starts_the_grace():
    """A reader that left, a reader that came back and left again: the first one's timer
    finds the run alone but must leave it to the second one's."""
    run = Registry().create()
    run.allow_resume(0.15)
    first = run.follow(0)
    run.unfollow(first)                     # timer 1
    second = run.follow(0)
    assert not run.wait(0.3)                # timer 1 fired: a reader is there
    run.unfollow(second)                    # timer 2
    third = run.follow(0)
    run.unfollow(third)                     # timer 3: only this one may end it
    assert run.wait(2) and run.status == "cancelled" and run.cancel_reason == "client_gone"


def test_a_reader_leaving_an_awaited_response_leaves_it_to_its_caller(make_hub, fake):
    """Someone follows a stored response that its caller awaits whole, then leaves: the
    caller, still waiting, gets the whole reply."""
    hub = make_hub({"responses": {"resume_grace_seconds": "0.1"}})
    release = threading.Event()
    fake.enqueue(Script(chunks=["all", " of", " it"], hold_first=release, hold_after=1))
    result = {}
    caller = threading.Thread(target=lambda: result.update(reply=call(
        hub.url, "POST", "/v1/responses", {"model": "m", "input": "Hi"})))
    caller.start()
    assert wait_for(lambda: any(r.transcript.text for r in live(hub)))
    response_id = live(hub)[0].id
    reader = connect(hub.url)
    reader.request("GET", f"/v1/responses/{response_id}?stream=true")
    read_until(reader.getresponse(), "response.output_text.delta")
    drop(reader)
    assert not fake.aborted.wait(0.5)
    release.set()
    caller.join(5)
    status, _, body = result["reply"]
    assert status == 200 and body["status"] == "completed"
    assert body["output"][0]["content"][0]["text"] == "all of it"


def test_a_background_run_outlives_every_reader(make_hub, fake):
    hub = make_hub({"responses": {"resume_grace_seconds": "0.1"}})
    release = threading.Event()
    fake.enqueue(Script(chunks=["slow", " answer"], hold_first=release, hold_after=1))
    status, _, created = call(hub.url, "POST", "/v1/responses",
                              {"model": "m", "input": "Hi", "background": True})
    assert status == 200 and created["status"] in ("queued", "in_progress")
    for _ in range(3):                      # readers come and go
        conn = connect(hub.url)
        conn.request("GET", f"/v1/responses/{created['id']}?stream=true")
        read_until(conn.getresponse(), "response.output_text.delta")
        drop(conn)
    assert not fake.aborted.wait(0.6)       # six graces: nobody's leaving ended it
    release.set()
    assert wait_for(lambda: call(hub.url, "GET", f"/v1/responses/{created['id']}")[2]
                    ["status"] == "completed")
    assert not fake.chat_requests()[0].aborted


def test_background_with_stream_answers_with_the_event_stream_and_resumes(make_hub, fake):
    hub = make_hub({"responses": {"resume_grace_seconds": "0.1"}})
    release = threading.Event()
    fake.enqueue(Script(chunks=["one", " two", " three"], hold_first=release, hold_after=1))
    conn, response = open_stream(hub.url, "/v1/responses", {
        "model": "m", "input": "Count.", "background": True, "stream": True})
    assert response.status == 200
    assert response.getheader("Content-Type").startswith("text/event-stream")
    seen = [e["data"] for e in read_until(response, "response.output_text.delta")]
    assert [e["type"] for e in seen[:3]] == ["response.created", "response.queued",
                                            "response.in_progress"]
    assert [e["sequence_number"] for e in seen] == list(range(len(seen)))
    assert seen[0]["response"]["background"] is True
    assert seen[0]["response"]["status"] == "queued"
    drop(conn)                              # a background run: leaving ends nothing
    assert not fake.aborted.wait(0.5)
    release.set()
    last = seen[-1]["sequence_number"]
    again = connect(hub.url)
    again.request("GET", f"/v1/responses/{seen[0]['response']['id']}?stream=true"
                         f"&starting_after={last}")
    rest = [e["data"] for e in read_until(again.getresponse(), "response.completed")]
    again.close()
    assert rest[0]["sequence_number"] == last + 1
    assert "".join(e.get("delta", "") for e in rest
                   if e["type"] == "response.output_text.delta") == " two three"
    assert rest[-1]["response"]["output"][0]["content"][0]["text"] == "one two three"


def test_the_openai_client_streams_a_background_response(hub, fake):
    openai = pytest.importorskip("openai", reason="the openai package is not installed")
    client = openai.OpenAI(api_key="x", base_url=hub.url + "/v1", max_retries=0)
    events = list(client.responses.create(model="m", input="Hi", background=True,
                                          stream=True))
    assert events[0].type == "response.created" and events[0].response.background
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "Hello from the fake!"


# --- 2. every run is counted once, whatever its end ---------------------------------------------

def usage_by_key(hub, headers=None) -> dict:
    return {row["group"]: row for row in
            call(hub.url, "GET", "/v1/usage?group_by=key", headers=headers)[2]["data"]}


def tokens_metric(hub, direction: str) -> float:
    _, _, text = call(hub.url, "GET", "/metrics")
    line = next(line for line in text.decode().splitlines()
                if line.startswith(f'llmhub_tokens_total{{direction="{direction}"}}'))
    return float(line.rsplit(" ", 1)[1])


def test_a_cancelled_stream_counts_what_it_delivered(hub, fake):
    fake.enqueue(Script(chunks=["twelve chars", " and more"], hold_first=NEVER, hold_after=1))
    conn, response = open_stream(hub.url, "/v1/chat/completions",
                                 {"model": "m", "messages": USER, "stream": True})
    run_id = response.getheader("X-Run-Id")
    assert b"twelve chars" in response.read1(65536) or b"twelve" in response.read1(65536)
    drop(conn)
    assert fake.aborted.wait(2)
    assert wait_for(lambda: call(hub.url, "GET", f"/v1/requests/{run_id}")[0] == 200)
    record = call(hub.url, "GET", f"/v1/requests/{run_id}")[2]
    assert record["status"] == "cancelled" and record["estimated"]
    assert record["input_tokens"] > 0 and record["output_tokens"] == 3   # "twelve chars"
    usage = usage_by_key(hub)["local"]
    assert usage["cancels"] == 1 and usage["output_tokens"] == 3
    assert tokens_metric(hub, "out") == 3
    feed = connect(hub.url)                 # the runs page's feed shows the same record
    feed.request("GET", "/v1/runs/events")
    snapshot = read_until(feed.getresponse(), "snapshot")[0]["data"]
    feed.close()
    shown = next(r for r in snapshot["requests"] if r["run_id"] == run_id)
    assert (shown["status"], shown["output_tokens"]) == ("cancelled", 3)


def test_a_run_failed_mid_stream_counts_what_it_delivered(hub, fake):
    fake.enqueue(Script(chunks=["abcdefgh", " never"], cut_after=1))
    status, headers, body = call(hub.url, "POST", "/v1/chat/completions",
                                 {"model": "m", "messages": USER})
    assert status == 502
    run_id = headers["X-Run-Id"]
    record = call(hub.url, "GET", f"/v1/requests/{run_id}")[2]
    assert record["status"] == "failed" and record["output_tokens"] == 2
    assert record["input_tokens"] > 0 and record["estimated"]


def test_a_cancelled_background_response_keeps_its_usage(hub, fake):
    fake.enqueue(Script(chunks=["partial", " rest"], hold_first=NEVER, hold_after=1))
    _, _, created = call(hub.url, "POST", "/v1/responses",
                         {"model": "m", "input": "Hi", "background": True})
    assert wait_for(lambda: any(r.transcript.text for r in live(hub)))
    _, _, cancelled = call(hub.url, "POST", f"/v1/responses/{created['id']}/cancel")
    assert cancelled["status"] == "cancelled"
    assert cancelled["usage"]["output_tokens"] == 2 and cancelled["usage"]["input_tokens"] > 0


def test_a_run_cancelled_while_queued_spent_nothing(make_hub, fake):
    hub = make_hub({"concurrency": {"m": 1}})
    fake.enqueue(Script(hold_first=NEVER))
    first, first_response = open_stream(hub.url, "/v1/chat/completions",
                                        {"model": "m", "messages": USER, "stream": True})
    assert fake.wait_requests(1)
    second, response = open_stream(hub.url, "/v1/chat/completions",
                                   {"model": "m", "messages": USER, "stream": True})
    run_id = response.getheader("X-Run-Id")
    assert call(hub.url, "POST", f"/v1/runs/{run_id}/cancel")[2]["status"] == "cancelled"
    record = call(hub.url, "GET", f"/v1/requests/{run_id}")[2]
    assert (record["input_tokens"], record["output_tokens"]) == (0, 0)
    drop(first)
    second.close()


# --- 3. limits hold during a run ---------------------------------------------------------------

BUDGET = {"keys": {"thrifty": "sk-thrifty", "steady": "sk-steady"},
          "key:thrifty": {"tokens_per_day": "40"},
          "key:steady": {"requests_per_minute": "3"}}
THRIFTY = {"Authorization": "Bearer sk-thrifty"}


def test_a_budget_crossed_mid_stream_ends_the_run_there_and_says_why(make_hub, fake):
    hub = make_hub(BUDGET)
    fake.enqueue(Script(chunks=["word " * 4] * 40, delay=0))    # 40 × 5 tokens
    conn, response = open_stream(hub.url, "/v1/chat/completions",
                                 {"model": "m", "messages": USER, "stream": True}, THRIFTY)
    frames = [json.loads(line[6:]) for line in response.read().decode().split("\n")
              if line.startswith("data: {")]
    conn.close()
    text = "".join(f["choices"][0]["delta"].get("content") or "" for f in frames
                   if f.get("choices"))
    assert 0 < len(text) < 40 * 20          # cut, not the whole reply
    assert frames[-1]["error"]["code"] == "tokens_per_day_exceeded"
    assert "tokens" in frames[-1]["error"]["message"]
    run_id = response.getheader("X-Run-Id")
    record = call(hub.url, "GET", f"/v1/requests/{run_id}", headers=THRIFTY)[2]
    assert record["input_tokens"] + record["output_tokens"] <= 40 + 5
    status, headers, body = call(hub.url, "POST", "/v1/chat/completions",
                                 {"model": "m", "messages": USER}, headers=THRIFTY)
    assert status == 429 and int(headers["Retry-After"]) >= 1


def test_a_budget_cuts_a_messages_stream_with_its_error_event(make_hub, fake):
    hub = make_hub(BUDGET)
    fake.enqueue(Script(chunks=["word " * 4] * 40))
    conn, response = open_stream(hub.url, "/v1/messages", {
        "model": "m", "max_tokens": 1000, "messages": USER, "stream": True},
        {"x-api-key": "sk-thrifty"})
    raw = response.read().decode()
    conn.close()
    assert "event: error" in raw and "tokens_per_day_exceeded" not in raw.split("event: error")[0]
    error = json.loads(raw.split("event: error\ndata: ")[1].split("\n")[0])
    assert error["type"] == "error" and "tokens" in error["error"]["message"]


def test_an_input_over_the_budget_is_refused_before_it_runs(make_hub, fake):
    hub = make_hub(BUDGET)
    big = [{"role": "user", "content": "x" * 400}]        # about 100 tokens
    status, _, body = call(hub.url, "POST", "/v1/chat/completions",
                           {"model": "m", "messages": big}, headers=THRIFTY)
    assert status == 429 and body["error"]["code"] == "tokens_per_day_exceeded"
    assert not fake.chat_requests()
    status, _, body = call(hub.url, "POST", "/v1/embeddings",
                           {"model": "m", "input": ["y" * 400]}, headers=THRIFTY)
    assert status == 429 and body["error"]["param"] == "tokens_per_day"


def test_embeddings_count_their_input_tokens(make_hub, fake):
    hub = make_hub(BUDGET)
    for _ in range(2):
        status, _, _ = call(hub.url, "POST", "/v1/embeddings",
                            {"model": "m", "input": ["z" * 60]}, headers=THRIFTY)
        assert status == 200                # 15 tokens each, 30 of 40
    status, _, body = call(hub.url, "POST", "/v1/embeddings",
                           {"model": "m", "input": ["z" * 60]}, headers=THRIFTY)
    assert status == 429 and body["error"]["code"] == "tokens_per_day_exceeded"
    assert usage_by_key(hub, THRIFTY)["thrifty"]["input_tokens"] == 30


def test_requests_per_minute_counts_background_runs(make_hub, fake):
    hub = make_hub(BUDGET)
    steady = {"Authorization": "Bearer sk-steady"}
    for _ in range(3):
        status, _, _ = call(hub.url, "POST", "/v1/responses",
                            {"model": "m", "input": "Hi", "background": True}, headers=steady)
        assert status == 200
    status, headers, _ = call(hub.url, "POST", "/v1/responses",
                              {"model": "m", "input": "Hi", "background": True},
                              headers=steady)
    assert status == 429 and headers["Retry-After"]


def test_requests_per_minute_counts_the_hubs_retries(make_hub, fake):
    second = type(fake)().start()
    try:
        hub = make_hub({**BUDGET, "upstream:b": {"base_url": second.url},
                        "pool:m": {"targets": "default:m, b:m"}, "routing": {"retries": "1"}})
        steady = {"Authorization": "Bearer sk-steady"}
        fake.enqueue(Script(status=503, error="warming up"))
        second.enqueue(Script(status=503, error="warming up"))
        status, _, _ = call(hub.url, "POST", "/v1/chat/completions",
                            {"model": "m", "messages": USER}, headers=steady)
        assert status == 503                # one request, two targets tried
        assert call(hub.url, "GET", "/v1/models", headers=steady)[0] == 200
        assert call(hub.url, "GET", "/v1/models", headers=steady)[0] == 429
    finally:
        second.stop()


# --- 4. a cancel racing the natural end --------------------------------------------------------

def test_a_cancel_racing_the_end_ends_the_run_once(hub, fake):
    """Many times over: whoever wins, the run ends once, is recorded once, and its stored
    reply is either whole or marked cancelled."""
    recorded = []
    real = hub.hub.request_log.record
    hub.hub.request_log.record = lambda run: recorded.append(run.id) or real(run)
    ids = []
    for i in range(40):
        fake.enqueue(Script(chunks=["a", "b", "c"]))
        _, _, created = call(hub.url, "POST", "/v1/responses",
                             {"model": "m", "input": f"Q{i}", "background": True})
        ids.append(created["id"])
        cancelled = call(hub.url, "POST", f"/v1/responses/{created['id']}/cancel")[2]
        text = "".join(part["text"] for item in cancelled["output"]
                       for part in item.get("content") or ())
        if cancelled["status"] == "completed":
            assert text == "abc"
        else:
            assert cancelled["status"] == "cancelled" and text in ("", "a", "ab", "abc")
        again = call(hub.url, "GET", f"/v1/responses/{created['id']}")[2]
        assert (again["status"], again["output"]) == (cancelled["status"], cancelled["output"])
    assert wait_for(lambda: not live(hub))
    assert sorted(recorded) == sorted(ids)   # each once
    hub.hub.request_log.record = real


def test_cancels_racing_turns_on_one_thread_leave_it_whole(hub, fake):
    """A turn cancelled while it waited for the one before stores nothing; every turn that
    was stored has exactly one reply after it, whole or partial."""
    _, _, conversation = call(hub.url, "POST", "/v1/conversations", {})
    for i in range(20):
        fake.enqueue(Script(chunks=["a", "b", "c"]))
        _, _, created = call(hub.url, "POST", "/v1/responses", {
            "model": "m", "input": f"Q{i}", "background": True,
            "conversation": conversation["id"]})
        status = call(hub.url, "POST", f"/v1/responses/{created['id']}/cancel")[2]["status"]
        assert status in ("completed", "cancelled")
    assert wait_for(lambda: not live(hub))
    items = call(hub.url, "GET", f"/v1/conversations/{conversation['id']}/items?limit=100"
                                 "&order=asc")[2]["data"]
    roles = [item.get("role") for item in items]
    assert roles and roles == ["user", "assistant"] * (len(roles) // 2)
    for reply in items[1::2]:
        text = reply["content"][0]["text"] if reply["content"] else ""
        assert text in ("", "a", "ab", "abc")


# --- 5. a replayed response's log line -----------------------------------------------------------

def test_a_replayed_response_logs_its_access_line(hub, fake, caplog):
    _, _, created = call(hub.url, "POST", "/v1/responses", {"model": "m", "input": "Hi"})
    fake.enqueue(Script(chunks=["x"]))
    _, _, seed = call(hub.url, "POST", "/responses", {"model": "m", "input": "Hi"})
    with caplog.at_level(logging.INFO):
        status, _, _ = call(hub.url, "GET", f"/v1/responses/{created['id']}?stream=true")
        assert status == 200
        status, _, _ = call(hub.url, "GET", f"/responses/{seed['id']}/events")
        assert status == 200
        # the access line is written once the reply is out: the client may read it first
        wanted = {f"/v1/responses/{created['id']}", f"/responses/{seed['id']}/events"}
        assert wait_for(lambda: wanted <= {getattr(r, "fields", {}).get("path")
                                           for r in caplog.records})
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    lines = [r for r in caplog.records if r.name == "llmhub.access"]
    paths = [r.fields["path"] for r in lines]
    assert f"/v1/responses/{created['id']}" in paths and f"/responses/{seed['id']}/events" \
        in paths
    replayed = next(r for r in lines if r.fields["path"] == f"/v1/responses/{created['id']}")
    assert replayed.fields["run_id"] == created["id"]
