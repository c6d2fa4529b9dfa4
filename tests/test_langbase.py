"""Langbase pipe runs (reference §1, §5) over real sockets, and the seed's curl examples."""

import json
import re
import shutil
import subprocess
import threading
import uuid

import pytest

from conftest import ROOT
from fake_lmstudio import Script
from http_client import call, open_stream

RUN = "/v1/pipes/run"
HELLO = [{"role": "user", "content": "Hello!"}]
SEED = ROOT / "tests" / "seeds" / "langbase_curl.md"    # the seed document's, verbatim
NEVER = threading.Event()


def stream_run(hub, body, headers=None):
    conn, response = open_stream(hub.url, RUN, dict(body, stream=True), headers)
    raw = response.read()
    conn.close()
    return response, raw


def data_lines(raw: bytes) -> list:
    return [json.loads(x) if x != b"[DONE]" else "[DONE]"
            for x in re.findall(rb"^data: (.*)$", raw, re.M)]


def messages_of(hub, thread_id):
    return call(hub.url, "GET", f"/v1/threads/{thread_id}/messages")[2]


def test_non_streaming_reply_is_completion_and_raw(hub, fake):
    status, headers, body = call(hub.url, "POST", RUN, {"messages": HELLO, "stream": False})
    assert status == 200 and list(body) == ["completion", "raw"]
    assert body["completion"] == "Hello from the fake!"
    raw = body["raw"]
    assert raw["object"] == "chat.completion" and raw["usage"]["total_tokens"] == 11
    assert raw["choices"][0]["message"] == {"role": "assistant",
                                            "content": "Hello from the fake!"}
    thread_id = headers["lb-thread-id"]
    assert uuid.UUID(thread_id).version == 4
    stored = messages_of(hub, thread_id)
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", "Hello!"), ("assistant", "Hello from the fake!")]
    assert stored[1]["metadata"]["status"] == "completed"


def test_stream_is_exactly_what_the_sdks_read(hub):
    response, raw = stream_run(hub, {"messages": HELLO})
    assert response.status == 200
    assert response.getheader("Content-Type") == "text/event-stream; charset=utf-8"
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert uuid.UUID(response.getheader("lb-thread-id")).version == 4
    assert b"event:" not in raw
    events = raw.split(b"\n\n\n")              # every event ends with an extra blank line
    assert events[-1] == b"" and all(e.startswith(b"data: ") for e in events[:-1])
    chunks = data_lines(raw)
    assert chunks[-1] == "[DONE]"
    chunks = chunks[:-1]
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["usage"] == {"prompt_tokens": 6, "completion_tokens": 5, "total_tokens": 11}
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == \
        "Hello from the fake!"


def test_first_delta_gets_the_role_when_the_upstream_left_it_out(hub, fake):
    fake.enqueue(Script(raw_chunks=[
        {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {"content": "no role"}, "finish_reason": None}]},
        {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]))
    _, raw = stream_run(hub, {"messages": HELLO})
    first = data_lines(raw)[0]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "no role"}


@pytest.mark.parametrize("key", ["threadId", "thread_id"])
def test_a_thread_continues_with_its_history(hub, fake, key):
    _, headers, _ = call(hub.url, "POST", RUN, {"messages": HELLO})
    thread_id = headers["lb-thread-id"]
    _, headers, _ = call(hub.url, "POST", RUN, {
        key: thread_id, "messages": [{"role": "user", "content": "And again?"}]})
    assert headers["lb-thread-id"] == thread_id
    sent = fake.chat_requests()[-1].body["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("user", "Hello!"), ("assistant", "Hello from the fake!"), ("user", "And again?")]
    assert len(messages_of(hub, thread_id)) == 4


def test_a_thread_made_by_the_threads_api_feeds_a_run(hub, fake):
    call(hub.url, "POST", "/v1/threads", {"threadId": "prepared", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."}]})
    response, _ = stream_run(hub, {"threadId": "prepared",
                                   "messages": [{"role": "user", "content": "More"}]})
    assert response.getheader("lb-thread-id") == "prepared"
    assert [m["content"] for m in fake.chat_requests()[-1].body["messages"]] == [
        "Be brief.", "Hi", "Hello.", "More"]


def test_unknown_thread_is_404_and_nothing_is_stored(hub, fake):
    status, _, body = call(hub.url, "POST", RUN, {"threadId": "ghost", "messages": HELLO})
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"
    assert not fake.chat_requests()


def test_pipes_variables_and_defaults(make_hub, fake):
    hub = make_hub({"pipe:support": {
        "model": "support-model", "system": "You help {{company}} in a {{tone}} tone.",
        "temperature": "0.4", "max_tokens": "99", "variables": "company=Acme, tone=warm"}})
    call(hub.url, "POST", RUN, {"name": "support", "variables": [
        {"name": "tone", "value": "formal"}, {"name": "who", "value": "Ann"}],
        "messages": [{"role": "user", "content": "I am {{who}}, {{ unknown }}."}]})
    sent = fake.chat_requests()[-1].body
    assert sent["model"] == "support-model"
    assert sent["temperature"] == 0.4 and sent["max_tokens"] == 99
    assert sent["messages"] == [
        {"role": "system", "content": "You help Acme in a formal tone."},
        {"role": "user", "content": "I am Ann, {{ unknown }}."}]
    call(hub.url, "POST", RUN, {"name": "support", "temperature": 0.9,
                                "variables": {"company": "Globex"}, "messages": HELLO})
    sent = fake.chat_requests()[-1].body
    assert sent["temperature"] == 0.9
    assert sent["messages"][0]["content"] == "You help Globex in a warm tone."
    status, _, pipes = call(hub.url, "GET", "/v1/pipes")
    assert status == 200 and pipes[0]["name"] == "support"
    assert pipes[0]["variables"] == [{"name": "company", "value": "Acme"},
                                     {"name": "tone", "value": "warm"}]


def test_unknown_pipe_is_404(hub):
    status, _, body = call(hub.url, "POST", RUN, {"name": "nope", "messages": HELLO})
    assert status == 404
    assert body == {"error": {"code": "NOT_FOUND", "status": 404, "message": "Pipe not found",
                              "param": "name"}}


def test_a_run_with_only_a_pipe_key_uses_the_default_pipe(make_hub, fake):
    hub = make_hub({"models": {"default": "the-default"}})
    for body, headers in [({"apiKey": "pipe_key_123", "messages": HELLO}, {}),
                          ({"api_key": "pipe_key_123", "messages": HELLO}, {}),
                          ({"messages": HELLO}, {"Authorization": "Bearer pipe_key_123"})]:
        assert call(hub.url, "POST", RUN, body, headers=headers)[0] == 200
        sent = fake.chat_requests()[-1].body
        assert sent["model"] == "the-default"
        assert [m["role"] for m in sent["messages"]] == ["user"]    # no system prompt
        assert "apiKey" not in sent and "api_key" not in sent


def test_llm_key_reaches_the_upstream(hub, fake):
    call(hub.url, "POST", RUN, {"messages": HELLO}, headers={"LB-LLM-KEY": "sk-llm-1"})
    assert fake.chat_requests()[-1].headers["Authorization"] == "Bearer sk-llm-1"
    call(hub.url, "POST", RUN, {"messages": HELLO, "llmKey": "sk-llm-2"})
    sent = fake.chat_requests()[-1]
    assert sent.headers["Authorization"] == "Bearer sk-llm-2" and "llmKey" not in sent.body


def test_tools_pass_through_and_tool_calls_come_back_and_are_stored(hub, fake):
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {}}}]
    call_chunk = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
                  "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
                      {"index": 0, "id": "call_7", "type": "function",
                       "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                      "finish_reason": "tool_calls"}]}
    fake.enqueue(Script(raw_chunks=[call_chunk]))
    status, headers, body = call(hub.url, "POST", RUN, {
        "messages": HELLO, "tools": tools, "tool_choice": "auto"})
    sent = fake.chat_requests()[-1].body
    assert sent["tools"] == tools and sent["tool_choice"] == "auto"
    message = body["raw"]["choices"][0]["message"]
    assert message["tool_calls"][0]["function"]["arguments"] == "{\"city\":\"Oslo\"}"
    assert body["completion"] == "" and body["raw"]["choices"][0]["finish_reason"] == "tool_calls"
    stored = messages_of(hub, headers["lb-thread-id"])[-1]
    assert stored["content"] is None and stored["tool_calls"][0]["id"] == "call_7"
    fake.enqueue(Script(raw_chunks=[call_chunk]))
    _, raw = stream_run(hub, {"messages": HELLO, "tools": tools})
    final = data_lines(raw)[-2]
    assert final["choices"][0]["delta"]["tool_calls"][0]["id"] == "call_7"
    assert final["choices"][0]["finish_reason"] == "tool_calls" and final["usage"]


def test_json_mode_is_a_schema_for_lm_studio(hub, fake):
    call(hub.url, "POST", RUN, {"messages": HELLO, "json": True})
    assert fake.chat_requests()[-1].body["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "json_object",
                                               "schema": {"type": "object"}}}


def test_cancelled_run_stores_its_partial_reply(hub, fake):
    fake.enqueue(Script(chunks=["Partial", " rest"], hold_first=NEVER, hold_after=1))
    conn, response = open_stream(hub.url, RUN, {"messages": HELLO, "stream": True})
    thread_id, run_id = response.getheader("lb-thread-id"), response.getheader("X-Run-Id")
    assert b"Partial" in response.read1(4096)
    assert call(hub.url, "POST", f"/v1/runs/{run_id}/cancel")[2]["status"] == "cancelled"
    chunks = data_lines(response.read())
    assert chunks[-2]["choices"][0]["finish_reason"] == "cancelled" and chunks[-1] == "[DONE]"
    conn.close()
    stored = messages_of(hub, thread_id)[-1]
    assert stored["content"] == "Partial"
    assert stored["metadata"]["status"] == "cancelled"
    assert stored["metadata"]["run_id"] == run_id


def test_failed_run_stores_its_status_and_keeps_the_thread_id(hub, fake):
    fake.enqueue(Script(status=500, error="engine exploded"))
    status, headers, body = call(hub.url, "POST", RUN, {"messages": HELLO})
    assert status == 502 and body["error"]["code"] == "INTERNAL_SERVER_ERROR"
    assert body["error"]["message"] == "engine exploded"
    stored = messages_of(hub, headers["lb-thread-id"])
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["metadata"]["status"] == "failed"
    assert stored[1]["metadata"]["error"] == "engine exploded"
    # the empty failed reply stays in the thread but is not sent upstream next time
    call(hub.url, "POST", RUN, {"threadId": headers["lb-thread-id"], "messages": HELLO})
    assert [m["role"] for m in fake.chat_requests()[-1].body["messages"]] == ["user", "user"]


def test_mid_stream_error_is_a_data_error_frame(hub, fake):
    fake.enqueue(Script(chunks=["Half"], error_event="Compute error."))
    response, raw = stream_run(hub, {"messages": HELLO})
    last = data_lines(raw)[-1]
    assert last["error"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "Compute error." in last["error"]["message"]
    stored = messages_of(hub, response.getheader("lb-thread-id"))[-1]
    assert stored["content"] == "Half" and stored["metadata"]["status"] == "failed"


def test_early_stream_error_has_a_status_and_the_thread_id(make_hub, fake):
    hub = make_hub(upstream_url="http://127.0.0.1:9/v1")
    response, raw = stream_run(hub, {"messages": HELLO})
    assert response.status == 503
    assert json.loads(raw)["error"]["code"] == "INTERNAL_SERVER_ERROR"
    assert response.getheader("lb-thread-id")


@pytest.mark.parametrize("body, param", [
    ({"messages": "Hello"}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"messages": HELLO, "variables": "x"}, "variables"),
    ({"messages": HELLO, "variables": [{"name": "a"}]}, "variables"),
    ({"messages": HELLO, "threadId": "bad id"}, "threadId"),
    ({"messages": HELLO, "temperature": "hot"}, "temperature"),
    ({"messages": HELLO, "name": 5}, "name"),
    ({}, "messages"),
])
def test_bad_run_bodies_are_400_naming_the_field(hub, fake, body, param):
    status, _, error = call(hub.url, "POST", RUN, body)
    assert status == 400 and error["error"]["code"] == "BAD_REQUEST"
    assert error["error"]["param"] == param
    assert not fake.chat_requests()


def test_api_keys_give_401_in_langbase_shape(make_hub):
    hub = make_hub({"server": {"api_keys": "hub-key"}})
    status, _, error = call(hub.url, "POST", RUN, {"messages": HELLO})
    assert status == 401 and error["error"]["code"] == "UNAUTHORIZED"
    assert call(hub.url, "POST", RUN, {"messages": HELLO},
                headers={"Authorization": "Bearer hub-key"})[0] == 200


def test_twenty_concurrent_runs_on_different_threads(hub, fake):
    fake.default = Script(chunks=["a", "b", "c"], delay=0.001)
    results = [None] * 20

    def run(n):
        _, headers, body = call(hub.url, "POST", RUN, {
            "messages": [{"role": "user", "content": f"run {n}"}]})
        results[n] = (headers["lb-thread-id"], body["completion"])

    workers = [threading.Thread(target=run, args=(n,)) for n in range(20)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert len({thread for thread, _ in results}) == 20
    for n, (thread_id, completion) in enumerate(results):
        assert completion == "abc"
        assert [m["content"] for m in messages_of(hub, thread_id)] == [f"run {n}", "abc"]


def test_cors_exposes_lb_thread_id(hub):
    _, headers, _ = call(hub.url, "POST", RUN, {"messages": HELLO},
                         headers={"Origin": "http://localhost:5173"})
    assert "lb-thread-id" in headers["Access-Control-Expose-Headers"]


@pytest.mark.skipif(not shutil.which("curl"), reason="needs curl")
def test_the_seed_curl_examples_work_verbatim(hub):
    """Every curl example in the seed SSE server's README, run as written."""
    blocks = re.findall(r"```bash\n(curl .*?)\n```", SEED.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 6
    outputs = []
    for block in blocks:
        command = block.replace("http://localhost:8000", hub.url)
        result = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    streamed, plain, created, custom, appended, listed = outputs
    assert streamed.rstrip().endswith("data: [DONE]")
    assert json.loads(plain)["completion"] == "Hello from the fake!"
    assert json.loads(created)["metadata"] == {"userId": "user123", "topic": "support"}
    assert json.loads(custom)["id"] == "custom-thread-123"
    assert [m["role"] for m in json.loads(appended)] == ["user", "assistant"]
    assert [m["content"] for m in json.loads(listed)] == [
        "Can you help me with billing?", "Sure! I can help with billing questions."]
