"""Hardening of what comes back from an upstream: large replies arrive whole, hostile usage
numbers from an upstream become sane integers, and a request the upstream may have read is
never sent twice."""

import json
import socket
import threading

import pytest

from fake_anthropic import FakeAnthropic
from fake_lmstudio import Script
from http_client import call, open_stream, sse_events
from llmhub.engine import accounting
from llmhub.engine.accounting import RequestLog
from llmhub.upstream.openai import overflow_counts
from support import wait_for


# --- large replies ---------------------------------------------------------------------------

def test_embeddings_over_one_mib_arrive_whole(hub, fake):
    """100 texts of 1,536 dimensions is a ~3 MiB reply: every vector reaches the client."""
    fake.embedding_dims = 1536
    texts = [f"text {i}" for i in range(100)]
    status, _, body = call(hub.url, "POST", "/v1/embeddings", {"model": "e", "input": texts},
                           timeout=30)
    assert status == 200, body
    assert [d["index"] for d in body["data"]] == list(range(100))
    assert all(len(d["embedding"]) == 1536 for d in body["data"])


def test_a_reply_past_max_reply_bytes_is_a_clear_502(make_hub, fake):
    """Past the documented bound the hub says so, naming the key, instead of an empty list."""
    hub = make_hub({"upstream": {"max_reply_bytes": 65536}})
    fake.embedding_dims = 1536
    status, _, body = call(hub.url, "POST", "/v1/embeddings",
                           {"model": "e", "input": ["a"] * 20})
    assert status == 502, body
    assert "max_reply_bytes" in body["error"]["message"]


def test_embeddings_take_openais_2048_inputs_and_refuse_more(hub, fake):
    status, _, body = call(hub.url, "POST", "/v1/embeddings",
                           {"model": "e", "input": ["x"] * 2048})
    assert status == 200 and len(body["data"]) == 2048
    status, _, body = call(hub.url, "POST", "/v1/embeddings",
                           {"model": "e", "input": ["x"] * 2049})
    assert status in (400, 413) and body["error"]["param"] == "input"
    assert "2048" in body["error"]["message"]
    assert len([r for r in fake.requests if r.path == "/v1/embeddings"]) == 1


def test_the_message_limit_still_guards_chats(hub, fake):
    status, _, body = call(hub.url, "POST", "/v1/chat/completions", {
        "model": "m", "messages": [{"role": "user", "content": "x"}] * 1001})
    assert status == 413 and body["error"]["param"] == "messages"


# --- hostile usage numbers ------------------------------------------------------------------

CHAT = {"model": "m", "messages": [{"role": "user", "content": "Hello there"}]}
SANE = range(0, 2**31)


@pytest.fixture
def one_batch(monkeypatch):
    """The request log writes only when the API reads it: every run lands in one batch."""
    monkeypatch.setattr(RequestLog, "flush_seconds", 3600)


def records(hub, headers=None) -> dict:
    status, _, body = call(hub.url, "GET", "/v1/requests?limit=500", headers=headers)
    assert status == 200
    return {row["dialect"] + str(i): row for i, row in enumerate(body["data"])}


def test_absurd_counts_are_estimated_and_their_batch_is_kept(hub, fake, one_batch):
    """10**30 from an embeddings upstream and 2**40 from a chat one are no counts: estimated,
    and the five ordinary runs of the same batch are all recorded."""
    for _ in range(5):
        assert call(hub.url, "POST", "/v1/chat/completions", CHAT)[0] == 200
    fake.embedding_usage = {"prompt_tokens": 10**30, "total_tokens": 10**30}
    status, _, body = call(hub.url, "POST", "/v1/embeddings", {"model": "e", "input": "hi"})
    assert status == 200 and body["usage"]["prompt_tokens"] in range(1, 100)
    fake.enqueue(Script(usage_extra={"prompt_tokens": 2**40, "completion_tokens": -3}))
    status, _, body = call(hub.url, "POST", "/v1/chat/completions", CHAT)
    assert status == 200 and body["usage"]["prompt_tokens"] in range(1, 100)
    assert body["usage"]["completion_tokens"] in range(1, 100)
    rows = list(records(hub).values())
    assert len(rows) == 7
    assert all(r["input_tokens"] in SANE and r["output_tokens"] in SANE for r in rows)
    assert sum(r["estimated"] for r in rows) == 2


def test_one_record_the_database_refuses_leaves_the_rest(hub, fake, one_batch,
                                                                 monkeypatch):
    """Whatever a record holds, it is stored alone: the others of its batch are kept."""
    made = []

    def poisoned(run) -> dict:
        row = accounting_record(run)
        made.append(row["run_id"])
        return dict(row, input_tokens=10**30) if len(made) == 3 else row

    accounting_record = accounting.record
    monkeypatch.setattr(accounting, "record", poisoned)
    for _ in range(6):
        assert call(hub.url, "POST", "/v1/chat/completions", CHAT)[0] == 200
    kept = {r["run_id"] for r in records(hub).values()}
    assert kept == set(made) - {made[2]}


def test_string_counts_are_relayed_as_numbers(hub, fake):
    """An upstream's "12" is not a count: OpenAI clients get integers, on every path."""
    strings = {"prompt_tokens": "12", "completion_tokens": "5", "total_tokens": "17",
               "prompt_tokens_details": {"cached_tokens": "4"}}
    fake.enqueue(Script(usage_extra=strings), Script(usage_extra=strings),
                 Script(usage_extra=strings))
    _, _, body = call(hub.url, "POST", "/v1/chat/completions", CHAT)
    _, _, legacy = call(hub.url, "POST", "/v1/completions", {"model": "m", "prompt": "Hi"})
    conn, response = open_stream(hub.url, "/v1/chat/completions", dict(
        CHAT, stream=True, stream_options={"include_usage": True}))
    frames = [json.loads(d) for _, d in sse_events(response) if d != "[DONE]"]
    conn.close()
    for usage in (body["usage"], legacy["usage"], frames[-1]["usage"]):
        assert all(type(usage[k]) is int for k in ("prompt_tokens", "completion_tokens",
                                                   "total_tokens")), usage
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert "cached_tokens" not in usage.get("prompt_tokens_details", {})


@pytest.fixture
def anthropic_upstream():
    server = FakeAnthropic().start()
    yield server
    server.stop()


def test_negative_anthropic_counts_are_estimated_and_never_refill_a_budget(
        make_hub, anthropic_upstream, one_batch):
    anthropic_upstream.usage = {"input_tokens": -100000, "output_tokens": -100000}
    hub = make_hub({"upstream": {"kind": "anthropic", "base_url": anthropic_upstream.url},
                    "keys": {"thrifty": "sk-thrifty-1"},
                    "key:thrifty": {"tokens_per_day": "100000"}})
    thrifty = {"Authorization": "Bearer sk-thrifty-1"}
    status, _, body = call(hub.url, "POST", "/v1/chat/completions", CHAT, headers=thrifty)
    assert status == 200 and body["usage"]["prompt_tokens"] in range(1, 100), body
    row, = records(hub, thrifty).values()
    assert row["input_tokens"] in range(1, 100) and row["estimated"]
    counted = row["input_tokens"] + row["output_tokens"]      # spent just after it is recorded
    assert wait_for(lambda: hub.hub.limits._spent("thrifty", row["at"]) == counted > 0)


def test_a_huge_anthropic_count_does_not_use_up_a_budget(make_hub,
                                                                 anthropic_upstream):
    anthropic_upstream.usage = {"input_tokens": 10**30, "output_tokens": 1}
    hub = make_hub({"upstream": {"kind": "anthropic", "base_url": anthropic_upstream.url},
                    "keys": {"thrifty": "sk-thrifty-1"},
                    "key:thrifty": {"tokens_per_day": "100000"}})
    thrifty = {"Authorization": "Bearer sk-thrifty-1"}
    for _ in range(2):
        status, _, body = call(hub.url, "POST", "/v1/chat/completions", CHAT, headers=thrifty)
        assert status == 200, body


@pytest.mark.parametrize("path, param", [
    ("/v1/usage?from=" + "9" * 55, "from"), ("/v1/usage?to=" + "9" * 400, "to"),
    ("/v1/usage?from=1e999", "from"), ("/v1/usage?to=0001-01-01", "to"),
    ("/v1/requests?before=" + "9" * 400, "before"), ("/v1/requests?limit=" + "9" * 5000,
                                                     "limit"),
], ids=["from-55-digits", "to-400-digits", "from-1e999", "to-year-1", "before-400-digits",
        "limit-5000-digits"])
def test_query_numbers_json_cannot_carry_are_400_naming_them(hub, path, param):
    status, _, body = call(hub.url, "GET", path)
    assert status == 400 and body["error"]["param"] == param, body


# --- a request sent twice --------------------------------------------------------------------

COMPLETION = {"id": "c1", "object": "chat.completion", "created": 0, "model": "m",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                           "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


class ReadThenHangUp:
    """An upstream that keeps connections alive, answers the first request on each, and on a
    kept-alive connection's next request reads it whole, then closes without answering:
    what a server that crashed mid-generation looks like."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"
        self.posts: list[str] = []
        self.hung_up = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock) -> None:
        with sock, sock.makefile("rb") as reader:
            served = 0
            while (line := reader.readline()) and line.strip():
                method, path, _ = line.decode().split(" ", 2)
                headers = dict(h.decode().lower().split(":", 1) for h in
                               iter(reader.readline, b"\r\n"))
                reader.read(int(headers.get("content-length", 0)))
                if method == "POST":
                    self.posts.append(path)
                    if served:
                        self.hung_up.set()
                        return
                body = json.dumps(COMPLETION if method == "POST" else {"data": []}).encode()
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                served += 1

    def close(self) -> None:
        self.listener.close()


def test_a_post_the_upstream_read_is_never_sent_again(make_hub):
    """A kept-alive connection closed after the request was written: the model may be
    generating, so the hub answers 502 instead of sending the request a second time."""
    upstream = ReadThenHangUp()
    try:
        hub = make_hub({"upstream": {"kind": "openai"}}, upstream_url=upstream.url)
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        status, _, body = call(hub.url, "POST", "/v1/chat/completions", chat)
        assert status == 200 and body["choices"][0]["message"]["content"] == "Hi"
        status, _, body = call(hub.url, "POST", "/v1/chat/completions", chat)
        assert upstream.hung_up.is_set()
        assert status == 502, body
        assert "without answering" in body["error"]["message"]
        assert upstream.posts == ["/v1/chat/completions"] * 2
    finally:
        upstream.close()


def test_overflow_numbers_past_any_context_are_unknown():
    assert overflow_counts("prompt is too long: 26 tokens > 16 maximum") == (26, 16)
    assert overflow_counts("prompt is too long: " + "9" * 5000 + " tokens > 16 maximum") \
        == (None, 16)
