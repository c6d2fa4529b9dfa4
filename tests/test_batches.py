"""OpenAI's Files and Batch APIs (issue 32), with the official `openai` client as the test:
uploads, batches run through the engine below interactive requests, cancel, owners,
limits, and a batch that survives the hub being killed mid-way."""

import io
import json
import signal
import threading

import pytest

from conftest import ROOT
from support import start, stop, wait_for
from fake_lmstudio import Script

openai = pytest.importorskip("openai", reason="the openai package is not installed")

MODEL = "qwen2.5-7b-instruct"
REPLY = "Hello from the fake!"


def client(url: str, key: str = "not-needed"):
    return openai.OpenAI(api_key=key, base_url=url + "/v1", max_retries=0)


def jsonl(*lines) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def chat_line(n: int, url: str = "/v1/chat/completions") -> dict:
    return {"custom_id": f"row-{n}", "method": "POST", "url": url,
            "body": {"model": MODEL, "messages": [{"role": "user", "content": f"row {n}"}]}}


def upload(api, data: bytes, name: str = "input.jsonl", purpose: str = "batch"):
    return api.files.create(file=(name, io.BytesIO(data)), purpose=purpose)


def settle(api, batch_id: str, timeout: float = 20.0, until=("completed", "failed",
                                                             "cancelled", "expired")):
    """Poll the batch (bounded) until it reaches one of `until`; the last Batch."""
    seen = []
    assert wait_for(lambda: seen.append(api.batches.retrieve(batch_id)) or
                    seen[-1].status in until, timeout), f"batch stuck: {seen[-1]}"
    return seen[-1]


def output_lines(api, file_id: str) -> list[dict]:
    return [json.loads(line) for line in api.files.content(file_id).text.splitlines()]


def asked(fake, n: int) -> int:
    """How many chat requests the fake received for line `n`."""
    return sum(1 for r in fake.chat_requests()
               if r.body["messages"][-1]["content"] == f"row {n}")


# --- files -----------------------------------------------------------------------------------

def test_files_upload_list_retrieve_content_delete(hub):
    api = client(hub.url)
    data = jsonl(chat_line(1))
    made = upload(api, data)
    assert made.object == "file" and made.purpose == "batch" and made.bytes == len(data)
    assert made.filename == "input.jsonl" and made.status == "processed"
    notes = upload(api, b"some notes", "notes.txt", "user_data")
    assert api.files.retrieve(made.id).id == made.id
    assert api.files.content(made.id).content == data
    listed = api.files.list()
    assert [f.id for f in listed.data] == [notes.id, made.id]        # newest first
    assert [f.id for f in api.files.list(purpose="batch").data] == [made.id]
    assert [f.id for f in api.files.list(order="asc", limit=1).data] == [made.id]
    deleted = api.files.delete(made.id)
    assert deleted.deleted and deleted.id == made.id
    with pytest.raises(openai.NotFoundError):
        api.files.retrieve(made.id)


def test_files_bad_purpose_and_format_are_400s(hub):
    api = client(hub.url)
    with pytest.raises(openai.BadRequestError) as info:
        upload(api, b"{}", purpose="fine-tune")
    assert info.value.body["param"] == "purpose"
    with pytest.raises(openai.BadRequestError) as info:
        upload(api, b"{}", name="input.csv")
    assert "jsonl" in info.value.body["message"]


def test_file_limits_are_413s_naming_the_setting(make_hub):
    hub = make_hub({"batches": {"max_file_bytes": 100, "max_total_bytes": 150}})
    api = client(hub.url)
    with pytest.raises(openai.APIStatusError) as info:
        upload(api, b"x" * 101, "big.txt", "user_data")
    assert info.value.status_code == 413
    assert "max_file_bytes" in info.value.body["message"]
    upload(api, b"x" * 100, "a.txt", "user_data")
    with pytest.raises(openai.APIStatusError) as info:
        upload(api, b"x" * 60, "b.txt", "user_data")
    assert info.value.status_code == 413
    assert "max_total_bytes" in info.value.body["message"]


# --- batches ---------------------------------------------------------------------------------

def test_batch_answers_every_line_once(hub, fake):
    api = client(hub.url)
    lines = [chat_line(n) for n in range(1, 8)]
    source = upload(api, jsonl(*lines))
    batch = api.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                               completion_window="24h", metadata={"job": "demo"})
    assert batch.status == "validating" and batch.object == "batch"
    assert batch.metadata == {"job": "demo"}
    done = settle(api, batch.id)
    assert done.status == "completed", done
    assert done.request_counts.total == 7 and done.request_counts.completed == 7
    assert done.request_counts.failed == 0 and done.error_file_id is None
    assert done.completed_at and done.in_progress_at and done.finalizing_at
    assert done.usage.total_tokens > 0
    out = output_lines(api, done.output_file_id)
    assert sorted(line["custom_id"] for line in out) == sorted(f"row-{n}" for n in range(1, 8))
    for line in out:
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200
        assert line["response"]["body"]["choices"][0]["message"]["content"] == REPLY
        assert line["response"]["request_id"]
    assert all(asked(fake, n) == 1 for n in range(1, 8))
    assert api.files.retrieve(done.output_file_id).purpose == "batch_output"
    assert [b.id for b in api.batches.list().data] == [batch.id]
    # its lines are runs like any other: in the request log, under the batch's route
    records = [r for r in _get(hub.url, "/v1/requests?limit=50")["data"]
               if r["route"] == "batch /v1/chat/completions"]
    assert len(records) == 7


def _get(url: str, path: str, key: str | None = None) -> dict:
    import urllib.request
    request = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {key}"}
                                     if key else {})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def test_embeddings_completions_and_responses_lines(hub):
    api = client(hub.url)
    for endpoint, body, check in (
            ("/v1/embeddings", {"model": MODEL, "input": "hello"},
             lambda b: b["data"][0]["object"] == "embedding"),
            ("/v1/completions", {"model": MODEL, "prompt": "Say hi"},
             lambda b: b["object"] == "text_completion"),
            ("/v1/responses", {"model": MODEL, "input": "Say hi"},
             lambda b: b["object"] == "response" and b["status"] == "completed")):
        source = upload(api, jsonl({"custom_id": "one", "method": "POST", "url": endpoint,
                                    "body": body}))
        batch = api.batches.create(input_file_id=source.id, endpoint=endpoint,
                                   completion_window="24h")
        done = settle(api, batch.id)
        assert done.status == "completed", (endpoint, done)
        [line] = output_lines(api, done.output_file_id)
        assert check(line["response"]["body"]), line


def test_a_line_the_endpoint_refuses_goes_to_the_error_file(hub):
    api = client(hub.url)
    bad = {"custom_id": "bad", "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": MODEL, "messages": "not a list"}}
    source = upload(api, jsonl(chat_line(1), bad))
    batch = api.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    done = settle(api, batch.id)
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 1)
    [good] = output_lines(api, done.output_file_id)
    [failed] = output_lines(api, done.error_file_id)
    assert good["custom_id"] == "row-1" and failed["custom_id"] == "bad"
    assert failed["response"]["status_code"] == 400
    assert failed["response"]["body"]["error"]["param"] == "messages"


def test_validation_failure_reports_each_bad_line(hub, fake):
    api = client(hub.url)
    data = (json.dumps(chat_line(1)) + "\n" + "{not json\n" +
            json.dumps(chat_line(1)) + "\n" +                       # a duplicate custom_id
            json.dumps(chat_line(4, url="/v1/embeddings")) + "\n" +
            json.dumps({"method": "POST", "url": "/v1/chat/completions", "body": {}}) + "\n")
    source = upload(api, data.encode())
    batch = api.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    done = settle(api, batch.id)
    assert done.status == "failed" and done.failed_at
    errors = [(e.code, e.line, e.param) for e in done.errors.data]
    assert errors == [("invalid_json_line", 2, None), ("duplicate_custom_id", 3, "custom_id"),
                      ("url_mismatch", 4, "url"),
                      ("missing_required_parameter", 5, "custom_id")]
    assert not fake.chat_requests()          # nothing ran
    empty = upload(api, b"\n")
    done = settle(api, api.batches.create(input_file_id=empty.id, endpoint="/v1/completions",
                                          completion_window="24h").id)
    assert done.status == "failed" and done.errors.data[0].code == "empty_file"


def test_bad_create_requests_are_400s_and_404s(hub):
    api = client(hub.url)
    source = upload(api, jsonl(chat_line(1)))
    with pytest.raises(openai.BadRequestError) as info:
        api.batches.create(input_file_id=source.id, endpoint="/v1/moderations",
                           completion_window="24h")
    assert info.value.body["param"] == "endpoint"
    with pytest.raises(openai.BadRequestError) as info:
        api.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                           completion_window="1h")
    assert info.value.body["param"] == "completion_window"
    with pytest.raises(openai.NotFoundError):
        api.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions",
                           completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        api.batches.retrieve("batch_nope")


def test_cancel_stops_the_lines_in_flight(make_hub, fake):
    hub = make_hub({"batches": {"max_parallel_lines": 1}})
    api = client(hub.url)
    held = threading.Event()
    fake.enqueue(Script(), Script(hold_first=held))
    source = upload(api, jsonl(*(chat_line(n) for n in range(1, 6))))
    batch = api.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    assert fake.wait_requests(2, timeout=10)             # line 2 is being answered
    cancelling = api.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
    done = settle(api, batch.id)
    held.set()
    assert done.status == "cancelled" and done.cancelled_at
    assert done.request_counts.completed == 1
    assert [line["custom_id"] for line in output_lines(api, done.output_file_id)] == ["row-1"]
    assert wait_for(lambda: fake.aborted.is_set())       # the model really stopped
    assert len(fake.chat_requests()) == 2                 # nothing after the cancel


def test_a_finished_batch_cannot_be_cancelled(hub):
    api = client(hub.url)
    source = upload(api, jsonl(chat_line(1)))
    batch = api.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    assert settle(api, batch.id).status == "completed"
    with pytest.raises(openai.ConflictError):
        api.batches.cancel(batch.id)


KEYS = {"keys": {"alice": "sk-alice-1", "bob": "sk-bob-2"}}


def test_another_keys_files_and_batches_are_404s(make_hub):
    hub = make_hub(KEYS)
    alice, bob = client(hub.url, "sk-alice-1"), client(hub.url, "sk-bob-2")
    source = upload(alice, jsonl(chat_line(1)))
    batch = alice.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                                 completion_window="24h")
    for call in (lambda: bob.files.retrieve(source.id), lambda: bob.files.content(source.id),
                 lambda: bob.files.delete(source.id), lambda: bob.batches.retrieve(batch.id),
                 lambda: bob.batches.cancel(batch.id),
                 lambda: bob.batches.create(input_file_id=source.id,
                                            endpoint="/v1/chat/completions",
                                            completion_window="24h")):
        with pytest.raises(openai.NotFoundError):
            call()
    assert bob.files.list().data == [] and bob.batches.list().data == []
    done = settle(alice, batch.id)
    assert done.status == "completed"
    with pytest.raises(openai.NotFoundError):
        bob.files.content(done.output_file_id)
    assert [r["key"] for r in _get(hub.url, "/v1/requests", "sk-alice-1")["data"]] == ["alice"]


def test_an_interactive_request_never_waits_behind_a_batch(make_hub, fake):
    """One slot upstream (max_concurrent 1), a batch line holding it: an interactive request
    takes it at once (the batch line is preempted and run again later), and is never
    queued behind batch lines, nor refused for a line (max_queued) full of them."""
    hub = make_hub({"upstream": {"max_concurrent": 1, "max_queued": 1},
                    "batches": {"max_parallel_lines": 3}})
    api = client(hub.url)
    held = threading.Event()
    fake.enqueue(Script(hold_first=held))
    source = upload(api, jsonl(*(chat_line(n) for n in range(1, 4))))
    batch = api.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    assert fake.wait_requests(1, timeout=10)             # a batch line holds the one slot
    gate = hub.hub.upstreams["default"].gate
    assert wait_for(lambda: gate.queued == 2)            # and two more wait for it
    answered = {}

    def interactive():
        answered["reply"] = api.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "interactive"}])
    thread = threading.Thread(target=interactive)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the interactive request waited for the batch line"
    assert not held.is_set()                             # the batch line was still held
    assert answered["reply"].choices[0].message.content == REPLY
    assert wait_for(fake.aborted.is_set)                 # the batch line's call was cut
    held.set()
    done = settle(api, batch.id)
    assert done.status == "completed" and done.request_counts.completed == 3
    out = output_lines(api, done.output_file_id)
    assert sorted(line["custom_id"] for line in out) == ["row-1", "row-2", "row-3"]
    preempted = [r for r in _get(hub.url, "/v1/requests?limit=50")["data"]
                 if r["status"] == "cancelled"]
    assert len(preempted) == 1 and preempted[0]["route"] == "batch /v1/chat/completions"


def test_a_batch_survives_the_hub_being_killed(tmp_path, fake):
    """SIGKILL while line 3 is being answered; the restarted hub (same database) runs line 3
    again, once, and the rest not at all: every line is in the output exactly once."""
    ini = tmp_path / "config.ini"
    ini.write_text(f"[upstream]\nbase_url = {fake.url}\nkind = lmstudio\n"
                   "[health]\ninterval_seconds = 0\n"
                   "[batches]\nmax_parallel_lines = 1\n", encoding="utf-8")
    held = threading.Event()
    fake.enqueue(Script(), Script(), Script(hold_first=held))
    process, line, url = start([str(ROOT / "main.py"), "--config", str(ini)], tmp_path)
    assert url, line
    try:
        api = client(url)
        source = upload(api, jsonl(*(chat_line(n) for n in range(1, 7))))
        batch = api.batches.create(input_file_id=source.id,
                                   endpoint="/v1/chat/completions", completion_window="24h")
        assert fake.wait_requests(3, timeout=15)         # line 3 is being answered
    finally:
        stop(process, signal.SIGKILL)
    held.set()
    process, line, url = start([str(ROOT / "main.py"), "--config", str(ini)], tmp_path)
    assert url, line
    try:
        api = client(url)
        done = settle(api, batch.id, timeout=30)
        assert done.status == "completed", done
        assert done.request_counts.completed == 6 and done.request_counts.total == 6
        out = output_lines(api, done.output_file_id)
        assert [line["custom_id"] for line in out] == [f"row-{n}" for n in range(1, 7)]
        assert [asked(fake, n) for n in range(1, 7)] == [1, 1, 2, 1, 1, 1]
    finally:
        stop(process)


def test_progress_in_metrics(hub):
    api = client(hub.url)
    source = upload(api, jsonl(chat_line(1), chat_line(2)))
    batch = api.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    assert settle(api, batch.id).status == "completed"
    import urllib.request
    with urllib.request.urlopen(hub.url + "/metrics", timeout=10) as reply:
        text = reply.read().decode()
    assert 'llmhub_batches{status="completed"} 1' in text
    assert 'llmhub_batch_lines_total{outcome="completed"} 2' in text
    assert "llmhub_batch_lines_pending 0" in text


def test_a_batch_fills_every_pool_target_and_yields_to_interactive(make_hub, fake):
    """A pool of two one-slot targets: a batch runs a line on each at once, and an
    interactive request for the pool preempts one of them rather than wait."""
    from fake_lmstudio import FakeLMStudio
    other = FakeLMStudio().start()
    try:
        for box in (fake, other):
            box.models, box.loaded = ["m"], {"m": ["m"]}
        hub = make_hub({"upstream": {"max_concurrent": 1},
                        "upstream:b": {"base_url": other.url, "kind": "lmstudio",
                                       "max_concurrent": 1},
                        "pool:qwen": {"targets": "default:m, b:m"},
                        "batches": {"max_parallel_lines": 4}})
        api = client(hub.url)
        held = threading.Event()
        fake.enqueue(Script(hold_first=held))
        other.enqueue(Script(hold_first=held))
        lines = [dict(chat_line(n), body={"model": "qwen", "messages": [
            {"role": "user", "content": f"row {n}"}]}) for n in range(1, 5)]
        batch = api.batches.create(input_file_id=upload(api, jsonl(*lines)).id,
                                   endpoint="/v1/chat/completions", completion_window="24h")
        assert fake.wait_requests(1, timeout=10) and other.wait_requests(1, timeout=10)
        reply = api.with_options(timeout=10).chat.completions.create(
            model="qwen", messages=[{"role": "user", "content": "interactive"}])
        assert reply.choices[0].message.content == REPLY
        assert not held.is_set()
        held.set()
        done = settle(api, batch.id)
        assert done.status == "completed" and done.request_counts.completed == 4
        out = output_lines(api, done.output_file_id)
        assert sorted(line["custom_id"] for line in out) == [f"row-{n}" for n in range(1, 5)]
        assert wait_for(lambda: fake.aborted.is_set() or other.aborted.is_set())
    finally:
        other.stop()


def test_interactive_waiters_go_before_batch_lines(make_hub, fake):
    """Every slot busy with an interactive run, batch lines waiting: a second interactive
    request is first in line (position 1, not behind the batch), and is answered first."""
    hub = make_hub({"upstream": {"max_concurrent": 1}, "batches": {"max_parallel_lines": 2}})
    api = client(hub.url)
    held = threading.Event()
    fake.enqueue(Script(hold_first=held))
    first = threading.Thread(target=lambda: api.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "first"}]))
    first.start()
    assert fake.wait_requests(1, timeout=10)
    source = upload(api, jsonl(*(chat_line(n) for n in (1, 2, 3))))
    batch = api.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    gate = hub.hub.upstreams["default"].gate
    assert wait_for(lambda: gate.queued == 2)            # two batch lines wait for the slot
    second = threading.Thread(target=lambda: api.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "second"}],
        extra_headers={"X-Run-Id": "second"}))
    second.start()
    assert wait_for(lambda: gate.queued == 3)
    positions = {r["id"]: r["queue_position"] for r in _get(hub.url, "/v1/runs")["data"]
                 if r["queue_position"]}
    assert positions.pop("second") == 1                  # ahead of both batch lines
    assert sorted(positions.values()) == [2, 3]
    held.set()
    first.join(10)
    second.join(10)
    assert not second.is_alive()
    order = [r.body["messages"][-1]["content"] for r in fake.chat_requests()]
    assert order[:2] == ["first", "second"], order
    assert settle(api, batch.id).status == "completed"


def test_a_batch_waits_for_its_model_server_rather_than_failing(make_hub, fake):
    """LM Studio closed: the lines are not failed one after another; the batch tries one
    line at a time, with a growing pause, and goes on when the server is back."""
    hub = make_hub({"batches": {"max_parallel_lines": 4}})
    hub.hub.batches.retry_seconds = 0.05
    api = client(hub.url)
    fake.kill()
    source = upload(api, jsonl(*(chat_line(n) for n in range(1, 5))))
    batch = api.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    assert wait_for(lambda: hub.hub.batches.progress()["lines_requeued"] >= 3)
    assert api.batches.retrieve(batch.id).request_counts.failed == 0
    fake.revive()
    done = settle(api, batch.id)
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (4, 0)


def test_lines_run_under_the_owner_keys_limits(make_hub, fake):
    """A key that may use only some models: its batch's line for another model is that
    key's 403, in the error file; the allowed one is answered."""
    hub = make_hub({**KEYS, "key:bob": {"models": "qwen*"}})
    bob = client(hub.url, "sk-bob-2")
    other = {"custom_id": "other", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "llama-3", "messages": [{"role": "user", "content": "hi"}]}}
    batch = bob.batches.create(input_file_id=upload(bob, jsonl(chat_line(1), other)).id,
                               endpoint="/v1/chat/completions", completion_window="24h")
    done = settle(bob, batch.id)
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 1)
    [refused] = output_lines(bob, done.error_file_id)
    assert refused["custom_id"] == "other"
    assert refused["response"]["status_code"] == 403
    assert refused["response"]["body"]["error"]["code"] == "model_not_allowed"
    assert [r["key"] for r in _get(hub.url, "/v1/requests", "sk-bob-2")["data"]] == ["bob"]


def test_results_are_read_a_page_at_a_time_in_line_order(tmp_path):
    from llmhub.store.batches import BatchStore
    from llmhub.store.database import Database
    store = BatchStore(Database(tmp_path / "hub.db"))
    store.create({"id": "batch_1", "created_at": 0, "status": "in_progress"}, "local")
    for line in (5, 1, 4, 2, 3):
        store.record_line("batch_1", line, line != 4, {"line": line}, 1, 2)
    store.record_line("batch_1", 2, True, {"line": "again"}, 1, 2)    # a second run: ignored
    assert [json.loads(r)["line"] for r in store.results("batch_1", True, page=2)] == \
        [1, 2, 3, 5]
    assert store.counts("batch_1") == {"completed": 4, "failed": 1, "input_tokens": 5,
                                       "output_tokens": 10}
    store.drop_lines()                       # an active batch keeps its lines
    assert store.done_lines("batch_1") == {1, 2, 3, 4, 5}
    store.drop_lines("batch_1")
    assert store.done_lines("batch_1") == set()


def test_a_cancel_at_once_is_never_undone_by_the_worker(hub, fake):
    """Cancelled while it is validating (or just after): it ends cancelled, whichever of
    the cancel and the worker moved it first."""
    held = threading.Event()
    fake.enqueue(*(Script(hold_first=held) for _ in range(8)))
    api = client(hub.url)
    source = upload(api, jsonl(*(chat_line(n) for n in range(1, 4))))
    for _ in range(3):
        batch = api.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                                   completion_window="24h")
        assert api.batches.cancel(batch.id).status in ("cancelling", "cancelled")
        done = settle(api, batch.id)
        assert done.status == "cancelled", done
        assert done.request_counts.completed == 0
    held.set()


def test_a_line_that_times_out_mid_answer_fails_at_once(make_hub, fake):
    """The answer began, then the server went silent (idle timeout): the server is there,
    so the line is not put back to wait for it; its 504 is its answer, in the error file."""
    hub = make_hub({"upstream": {"idle_timeout_seconds": 0.3}})
    api = client(hub.url)
    held = threading.Event()
    fake.enqueue(Script(hold_first=held, hold_after=1))
    try:
        batch = api.batches.create(input_file_id=upload(api, jsonl(chat_line(1))).id,
                                   endpoint="/v1/chat/completions", completion_window="24h")
        done = settle(api, batch.id)
    finally:
        held.set()
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (0, 1)
    [failed] = output_lines(api, done.error_file_id)
    assert failed["response"]["status_code"] == 504
    assert failed["response"]["body"]["error"]["code"] == "upstream_timeout"
    assert asked(fake, 1) == 1


def test_a_line_the_server_never_answers_fails_after_its_tries(make_hub, fake):
    """The server takes the line and sends nothing (first-byte timeout) every time: the
    line is tried MAX_ATTEMPTS times, then fails with its last error; never forever."""
    from llmhub.engine.batches import MAX_ATTEMPTS
    hub = make_hub({"upstream": {"first_byte_timeout_seconds": 0.2}})
    hub.hub.batches.retry_seconds = 0.05
    api = client(hub.url)
    held = threading.Event()
    fake.enqueue(*(Script(hold_headers=held) for _ in range(MAX_ATTEMPTS)))
    try:
        batch = api.batches.create(input_file_id=upload(api, jsonl(chat_line(1))).id,
                                   endpoint="/v1/chat/completions", completion_window="24h")
        done = settle(api, batch.id)
    finally:
        held.set()
    assert (done.status, done.request_counts.failed) == ("completed", 1), done
    [failed] = output_lines(api, done.error_file_id)
    assert failed["response"]["body"]["error"]["code"] == "upstream_timeout"
    assert asked(fake, 1) == MAX_ATTEMPTS


def test_a_batch_past_its_window_ends_expired(make_hub, fake):
    """Its 24h window closes with line 2 in flight: line 2 is cancelled, the batch ends
    `expired`, line 1's answer in the output file, lines 2 and 3 in the error file with
    OpenAI's `batch_expired`."""
    hub = make_hub({"batches": {"max_parallel_lines": 1}})
    api = client(hub.url)
    held = threading.Event()
    fake.enqueue(Script(), Script(hold_first=held))
    source = upload(api, jsonl(*(chat_line(n) for n in (1, 2, 3))))
    batch = api.batches.create(input_file_id=source.id,
                               endpoint="/v1/chat/completions", completion_window="24h")
    try:
        assert fake.wait_requests(2, timeout=10)         # line 2 is being answered
        store = hub.hub.batches.store
        stored = store.get(batch.id)[0]
        assert store.update(dict(stored, expires_at=0), expect="in_progress")   # time's up
        done = settle(api, batch.id)
    finally:
        held.set()
    assert done.status == "expired" and done.expired_at, done
    assert (done.request_counts.total, done.request_counts.completed,
            done.request_counts.failed) == (3, 1, 2)
    assert [line["custom_id"] for line in output_lines(api, done.output_file_id)] == ["row-1"]
    expired = output_lines(api, done.error_file_id)
    assert [line["custom_id"] for line in expired] == ["row-2", "row-3"]
    assert all(line["response"] is None and line["error"]["code"] == "batch_expired"
               for line in expired)
    assert wait_for(fake.aborted.is_set)                 # line 2's run was stopped
    assert (asked(fake, 2), asked(fake, 3)) == (1, 0)


def test_a_batch_never_completes_with_a_line_unanswered(make_hub, fake):
    """The worker's end check racing a line being put back (running → pending) must not
    complete the batch without that line: completing is refused unless every line has a
    stored result. Here the end is asked for while line 2 is still in flight."""
    hub = make_hub({"batches": {"max_parallel_lines": 1}})
    api = client(hub.url)
    held = threading.Event()
    fake.enqueue(Script(), Script(hold_first=held))
    batch = api.batches.create(input_file_id=upload(api, jsonl(chat_line(1), chat_line(2))).id,
                               endpoint="/v1/chat/completions", completion_window="24h")
    try:
        assert fake.wait_requests(2, timeout=10)         # line 2 is being answered
        stored, owner = hub.hub.batches.store.get(batch.id)
        hub.hub.batches._finalize(stored, owner, "completed")
        assert api.batches.retrieve(batch.id).status == "in_progress"
    finally:
        held.set()
    done = settle(api, batch.id)
    assert done.status == "completed" and done.request_counts.completed == 2
    assert [line["custom_id"] for line in output_lines(api, done.output_file_id)] == \
        ["row-1", "row-2"]


def test_responses_lines_store_nothing_and_never_continue_a_conversation(hub):
    """A line may run twice (preempted, a restart): a /v1/responses line is never stored
    (`store: false`, whatever it asked), and one naming a conversation or a previous
    response is refused at validation, naming the field."""
    api = client(hub.url)
    line = {"custom_id": "one", "method": "POST", "url": "/v1/responses",
            "body": {"model": MODEL, "input": "Say hi", "store": True}}
    batch = api.batches.create(input_file_id=upload(api, jsonl(line)).id,
                               endpoint="/v1/responses", completion_window="24h")
    done = settle(api, batch.id)
    [answer] = output_lines(api, done.output_file_id)
    assert answer["response"]["body"]["store"] is False
    with pytest.raises(openai.NotFoundError):
        api.responses.retrieve(answer["response"]["body"]["id"])
    refused = [dict(line, custom_id="conv", body=dict(line["body"], conversation="conv_1")),
               dict(line, custom_id="prev", body=dict(line["body"],
                                                      previous_response_id="resp_1"))]
    batch = api.batches.create(input_file_id=upload(api, jsonl(*refused)).id,
                               endpoint="/v1/responses", completion_window="24h")
    done = settle(api, batch.id)
    assert done.status == "failed"
    assert [(e.code, e.line, e.param) for e in done.errors.data] == [
        ("invalid_value", 1, "body.conversation"),
        ("invalid_value", 2, "body.previous_response_id")]


def test_a_running_batch_never_takes_its_owners_interactive_slot(make_hub, fake):
    """alice may run one request at once; her batch has a line in flight: her own chat
    completion is answered (batch lines are bounded by [batches] max_parallel_lines, not
    by her max_concurrent), not refused with 429."""
    hub = make_hub({**KEYS, "key:alice": {"max_concurrent": 1},
                    "batches": {"max_parallel_lines": 2}})
    alice = client(hub.url, "sk-alice-1")
    held = threading.Event()
    fake.enqueue(Script(hold_first=held), Script(hold_first=held))
    batch = alice.batches.create(
        input_file_id=upload(alice, jsonl(*(chat_line(n) for n in (1, 2, 3)))).id,
        endpoint="/v1/chat/completions", completion_window="24h")
    try:
        assert fake.wait_requests(2, timeout=10)         # two lines in flight
        reply = alice.with_options(timeout=10).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "interactive"}])
        assert reply.choices[0].message.content == REPLY
    finally:
        held.set()
    assert settle(alice, batch.id).request_counts.completed == 3


def test_a_line_with_unicode_line_separators_is_one_line(hub):
    """JSON may hold U+2028, U+2029 and U+0085 unescaped; JSONL lines end at "\\n" (and
    "\\r\\n") only, so such a line is one valid request."""
    api = client(hub.url)
    line = dict(chat_line(1), body={"model": MODEL, "messages": [
        {"role": "user", "content": "a\u2028b\u2029c\u0085d"}]})
    data = (json.dumps(line, ensure_ascii=False) + "\r\n" +
            json.dumps(chat_line(2)) + "\n").encode()
    batch = api.batches.create(input_file_id=upload(api, data).id,
                               endpoint="/v1/chat/completions", completion_window="24h")
    done = settle(api, batch.id)
    assert done.status == "completed", done.errors
    assert (done.request_counts.total, done.request_counts.completed) == (2, 2)


@pytest.mark.parametrize("path", ["/v1/batches", "/v1/files"])
@pytest.mark.parametrize("value", ["\u00b2", "1" * 5000, "0", "-1", "x"],
                         ids=["superscript-two", "5000-digits", "zero", "negative", "word"])
def test_a_limit_that_is_not_a_small_whole_number_is_a_400_naming_it(hub, path, value):
    """"²" is isdigit() yet not int()'s, and 5,000 digits are past int()'s limit: both are
    a 400 naming `limit` (the one shared helper, dialects/checks.py query_int), not a 500."""
    import urllib.error
    import urllib.parse
    import urllib.request
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{hub.url}{path}?limit={urllib.parse.quote(value)}",
                               timeout=10)
    assert info.value.code == 400
    assert json.loads(info.value.read())["error"]["param"] == "limit"


def _slow_to_leave(owner, name: str, gone: set, go: threading.Event) -> None:
    """Make a preempted batch line slow to give its slot back (its upstream call still
    aborting): `owner.<name>(…, run)` waits for `go` for a run in `gone`."""
    original = getattr(owner, name)

    def slow(*args):
        if args and args[-1] in gone:
            go.wait(10)
        original(*args)
    setattr(owner, name, slow)


def _counted(owner, name: str, calls: list) -> None:
    """Count `owner.<name>` calls: a waiting interactive run makes one each poll."""
    original = getattr(owner, name)
    setattr(owner, name, lambda *args: calls.append(1) or original(*args))


def _one_preempted_per_waiter(api, model: str, place, leave: str, preempt: str,
                              preempted) -> None:
    """Two batch lines hold both slots; one interactive request, its victim slow to go:
    however many times it polls meanwhile, one batch line only is asked to go."""
    go, polls = threading.Event(), []
    _slow_to_leave(place, leave, preempted, go)
    _counted(place, preempt, polls)
    answered = threading.Thread(target=lambda: api.with_options(timeout=15).chat.completions
                                .create(model=model,
                                        messages=[{"role": "user", "content": "interactive"}]))
    answered.start()
    try:
        assert wait_for(lambda: len(preempted) == 1)
        seen = len(polls)
        assert wait_for(lambda: len(polls) >= seen + 5)  # it polled on, victim still there
        assert len(preempted) == 1
    finally:
        go.set()
    answered.join(15)
    assert not answered.is_alive()


def test_one_interactive_request_preempts_one_batch_line(make_hub, fake):
    hub = make_hub({"upstream": {"max_concurrent": 2}, "batches": {"max_parallel_lines": 2}})
    api = client(hub.url)
    held = threading.Event()
    fake.enqueue(Script(hold_first=held), Script(hold_first=held))
    source = upload(api, jsonl(*(chat_line(n) for n in (1, 2, 3))))
    batch = api.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    try:
        assert fake.wait_requests(2, timeout=10)         # both slots held by batch lines
        gate = hub.hub.upstreams["default"].gate
        _one_preempted_per_waiter(api, MODEL, gate, "leave", "_preempt_for",
                                  gate._preempted)
    finally:
        held.set()
    assert settle(api, batch.id).request_counts.completed == 3


def test_one_interactive_request_preempts_one_batch_line_of_a_pool(make_hub, fake):
    from fake_lmstudio import FakeLMStudio
    other = FakeLMStudio().start()
    held = threading.Event()
    try:
        for box in (fake, other):
            box.models, box.loaded = ["m"], {"m": ["m"]}
            box.enqueue(Script(hold_first=held))
        hub = make_hub({"upstream": {"max_concurrent": 1},
                        "upstream:b": {"base_url": other.url, "kind": "lmstudio",
                                       "max_concurrent": 1},
                        "pool:qwen": {"targets": "default:m, b:m"},
                        "batches": {"max_parallel_lines": 2}})
        api = client(hub.url)
        lines = [dict(chat_line(n), body={"model": "qwen", "messages": [
            {"role": "user", "content": f"row {n}"}]}) for n in (1, 2, 3)]
        batch = api.batches.create(input_file_id=upload(api, jsonl(*lines)).id,
                                   endpoint="/v1/chat/completions", completion_window="24h")
        assert fake.wait_requests(1, timeout=10) and other.wait_requests(1, timeout=10)
        router = hub.hub.engine.router
        _one_preempted_per_waiter(api, "qwen", router, "release", "_preempt",
                                  router.preempted)
        held.set()
        assert settle(api, batch.id).request_counts.completed == 3
    finally:
        held.set()
        other.stop()


def test_a_removed_keys_batch_fails_rather_than_runs(make_hub, fake):
    """bob's batch outlives bob's key (removed from [keys], the hub restarted): it is
    failed, naming the key, and none of its lines runs (it would run with no limits)."""
    import contextvars
    from llmhub.engine import accounting
    hub = make_hub({"keys": {"alice": "sk-alice-1"}})
    batches = hub.hub.batches

    def as_bob():                       # what bob made while his key was configured
        accounting.current.set(accounting.Caller(("bob", "-", None)))
        source = batches.upload("input.jsonl", "batch", jsonl(chat_line(1)))
        return batches.create(source["id"], "/v1/chat/completions", "24h", None)["id"]
    batch_id = contextvars.copy_context().run(as_bob)
    assert wait_for(lambda: batches.store.get(batch_id)[0]["status"] == "failed")
    failed = batches.store.get(batch_id)[0]
    assert failed["errors"]["data"][0]["code"] == "key_not_found"
    assert "'bob'" in failed["errors"]["data"][0]["message"]
    assert not fake.chat_requests()


def test_a_file_is_downloaded_a_piece_at_a_time(make_hub):
    """A download is read and sent in PIECE-sized parts after its Content-Length (a 200 MB
    output file is never whole in memory), and arrives whole."""
    import urllib.request
    from llmhub.store.files import PIECE
    hub = make_hub()
    api = client(hub.url)
    data = bytes(range(256)) * (3 * PIECE // 256) + b"tail!"
    made = upload(api, data, "big.bin", "user_data")
    store, pieces = hub.hub.batches.files, []
    reader = store.reader

    def counted(file_id):
        size, parts = reader(file_id)
        return size, (pieces.append(len(part)) or part for part in parts)
    store.reader = counted
    with urllib.request.urlopen(f"{hub.url}/v1/files/{made.id}/content", timeout=10) as reply:
        assert reply.headers["Content-Length"] == str(len(data))
        assert reply.read() == data
    assert pieces == [PIECE, PIECE, PIECE, 5]
