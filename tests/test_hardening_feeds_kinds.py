"""Hardening over real sockets: the runs page's feed is computed once per tick for every
reader and pushes only changes; every test has a deadline; a full model gate admits in
arrival order; the hub's own unload is known at once; a 501 is no health failure and the
upstream's kind is detected; an Anthropic event nested past reason is upstream garbage;
metadata, conversation items and base64 images have the limits OpenAI and Anthropic keep."""

import json
import logging
import threading

import pytest

from deadline import Overrun, deadline
from fake_anthropic import FakeAnthropic
from fake_lmstudio import Script
from http_client import call, connect, open_stream
from support import ALICE, BOB, ROOT, TEAM, read_until, wait_for

from llmhub.cli import parse_args
from llmhub.config import load_config
from llmhub.dialects import service

NEVER = threading.Event()
USER = [{"role": "user", "content": "Hi"}]


def open_feed(url: str, headers: dict | None = None):
    conn = connect(url)
    conn.request("GET", "/v1/runs/events", headers=headers or {})
    return conn, conn.getresponse()


def snapshot_runs(response) -> set:
    snapshot = [e for e in read_until(response, "snapshot") if e["event"] == "snapshot"][-1]
    return {run["id"] for run in snapshot["data"]["runs"]}


def test_one_snapshot_per_tick_for_every_reader_each_sees_its_own(make_hub, fake,
                                                                           monkeypatch):
    """Thirty /runs tabs cost thirty computations per tick before; now one, and each
    reader still gets its key's view: a user key its own runs, an admin all."""
    calls = []
    compute = service.RunsSnapshot.__call__
    monkeypatch.setattr(service.RunsSnapshot, "__call__",
                        lambda self, views: calls.append(views) or compute(self, views))
    team = make_hub(TEAM)
    fake.enqueue(Script(hold_first=NEVER))
    fake.enqueue(Script(hold_first=NEVER))
    streams, owned = [], {}
    for who, name in ((ALICE, "alice"), (BOB, "bob")):
        conn, response = open_stream(team.url, "/v1/chat/completions",
                                     {"model": "m", "messages": USER, "stream": True}, who)
        streams.append(conn)
        owned[name] = response.getheader("X-Run-Id")
    feeds = [(who, *open_feed(team.url, who)) for who in (ALICE, BOB, ROOT) * 3]
    seen = [snapshot_runs(response) for _, _, response in feeds]
    for (who, _, _), runs in zip(feeds, seen):
        expected = {ALICE["Authorization"]: {owned["alice"]}, BOB["Authorization"]:
                    {owned["bob"]}, ROOT["Authorization"]: set(owned.values())}
        assert runs == expected[who["Authorization"]]
    feed = team.hub.feeds["runs"]
    ticks = feed.ticks
    assert wait_for(lambda: feed.ticks >= ticks + 2)
    assert len(calls) == feed.ticks            # once per tick, not once per reader
    assert {None, "alice", "bob"} in calls     # one computation served all three views
    for conn in streams + [conn for _, conn, _ in feeds]:
        conn.close()


def test_a_quiet_feed_sends_only_keep_alives(hub):
    """Nothing changed, nothing sent: after the first snapshot, ticks pass and the reader
    gets only `: ping` comments."""
    conn, response = open_feed(hub.url)
    read_until(response, "snapshot")
    feed = hub.hub.feeds["runs"]
    ticks = feed.ticks
    assert wait_for(lambda: feed.ticks >= ticks + 3)
    data = b""
    while data.count(b": ping") < 2:
        data += response.read1(65536)
    assert b"snapshot" not in data
    conn.close()


def test_a_blocked_test_fails_at_its_deadline():
    """The conftest's per-test bound: a block that never ends raises Overrun instead."""
    with pytest.raises(Overrun, match="a blocked read"):
        with deadline(0.2, "a blocked read"):
            threading.Event().wait(30)


def test_the_watchdog_bounds_a_test_where_there_is_no_sigalrm():
    """Windows' path (a watchdog thread and a SIGINT handler of ours), tried here too."""
    with pytest.raises(Overrun, match="a polling loop"):
        with deadline(0.2, "a polling loop", use_alarm=False):
            while True:
                threading.Event().wait(0.05)


def test_a_full_model_gate_admits_runs_in_arrival_order(make_hub, fake):
    """[concurrency] m = 1: runs queued behind a busy model start first-in-first-out."""
    hub = make_hub({"concurrency": {"m": 1}})
    gate = hub.hub.engine.generation.model_gates["m"]
    release = threading.Event()
    fake.enqueue(Script(hold_first=release))
    streams = [open_stream(hub.url, "/v1/chat/completions", {
        "model": "m", "stream": True, "messages": [{"role": "user", "content": "run 0"}]})]
    assert fake.wait_requests(1)
    for n in range(1, 6):                    # each waits in line before the next arrives
        streams.append(open_stream(hub.url, "/v1/chat/completions", {
            "model": "m", "stream": True,
            "messages": [{"role": "user", "content": f"run {n}"}]}))
        assert wait_for(lambda: gate.queued == n)
    release.set()
    for conn, response in streams:
        response.read()
        conn.close()
    started = [r.body["messages"][-1]["content"] for r in fake.chat_requests()]
    assert started == [f"run {n}" for n in range(6)]


def test_after_the_hubs_own_unload_the_next_chat_loads_on_demand(make_hub, fake):
    """POST /models/unload, then /chat/regular: the model is cold from that moment (not at
    the next probe), so the chat loads it and answers instead of a 503 'No model loaded'."""
    fake.needs_loaded = True
    hub = make_hub({"health": {"interval_seconds": 3600},
                    "models": {"regular": "qwen2.5-7b-instruct"}})
    assert hub.hub.engine.prober.wait_rounds(1)
    assert call(hub.url, "POST", "/chat/regular", {"messages": USER})[0] == 200
    assert call(hub.url, "POST", "/models/unload",
                {"model_key": "qwen2.5-7b-instruct"})[0] == 200
    status, _, body = call(hub.url, "POST", "/chat/regular", {"messages": USER})
    assert status == 200, body
    assert [r.body["model"] for r in fake.requests if r.path == "/api/v1/models/load"] == \
        ["qwen2.5-7b-instruct"]


def test_a_501_is_not_a_health_failure(make_hub, fake):
    """llama.cpp's /v1/embeddings answers 501 without --embeddings: an endpoint not served.
    Ten of them must not open the breaker, and chat goes on."""
    fake.no_embeddings = True
    hub = make_hub({"health": {"failures": 3}})
    for _ in range(10):
        status, _, body = call(hub.url, "POST", "/v1/embeddings", {"model": "m", "input": "x"})
        assert status == 501, body
    states = call(hub.url, "GET", "/v1/upstreams")[2]["data"]
    assert [u["state"] for u in states] == ["healthy"]
    assert call(hub.url, "POST", "/v1/chat/completions",
                {"model": "m", "messages": USER})[0] == 200


def test_the_kind_is_detected_when_not_given(make_hub, fake, caplog):
    """--upstream http://…:8080/v1 at a llama.cpp server, no kind given: it answers /props,
    so the hub takes it as llamacpp and says so; a kind given is never second-guessed."""
    fake.llama = True
    auto = {"upstream": {"kind": "auto"}}
    with caplog.at_level(logging.INFO, logger="llmhub.upstream"):
        hub = make_hub(auto, upstream_url=fake.url)
    assert hub.hub.upstreams["default"].kind == "llamacpp"
    assert any("detected kind llamacpp" in r.getMessage() for r in caplog.records)
    given = make_hub({"upstream": {"kind": "lmstudio"}}, upstream_url=fake.url)
    assert given.hub.upstreams["default"].kind == "lmstudio"
    fake.llama = False
    assert make_hub(auto).hub.upstreams["default"].kind == "lmstudio"      # /api/v1/models


def test_the_kind_flag_sets_it(tmp_path):
    ini = tmp_path / "empty.ini"
    ini.write_text("", encoding="utf-8")
    config = load_config(flags={"kind": "vllm", "upstream": "http://127.0.0.1:9/v1"}, env={},
                         path=ini)
    assert config.upstreams[0].kind == "vllm"
    assert parse_args(["--kind", "llamacpp"]).kind == "llamacpp"


@pytest.mark.parametrize("path, body, status, named", [
    ("/v1/chat/completions", {"model": "claude-fake", "messages": USER}, 502,
     b"upstream_garbage"),
    ("/v1/chat/completions", {"model": "claude-fake", "messages": USER, "stream": True}, 200,
     b"upstream_garbage"),                   # an error frame: the stream had begun
    ("/v1/messages", {"model": "claude-fake", "max_tokens": 10, "messages": USER}, 502,
     b"api_error"),                          # Anthropic's shape has no code
], ids=["openai", "openai-stream", "messages"])
def test_an_anthropic_event_nested_50000_deep_is_upstream_garbage(make_hub, path, body,
                                                                           status, named):
    """Python's json gives up on deep nesting with RecursionError, not ValueError: the
    Anthropic adapter says 502 upstream_garbage, as the OpenAI one does, not 'Internal
    error in the hub'."""
    upstream = FakeAnthropic().start()
    try:
        upstream.raw_stream = ("event: message_start\ndata: " + "[" * 50_000 + "]" * 50_000 +
                               "\n\n")
        hub = make_hub({"upstream": {"kind": "anthropic", "base_url": upstream.url}})
        got, _, reply = call(hub.url, "POST", path, body)
        text = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
        assert got == status and named in text and b"not a JSON object" in text, reply
    finally:
        upstream.stop()


@pytest.mark.parametrize("metadata, param, code", [
    ({f"k{n}": "v" for n in range(5000)}, "metadata", "object_above_max_properties"),
    ({f"k{n}": "v" for n in range(17)}, "metadata", "object_above_max_properties"),
    ({"k" * 65: "v"}, "metadata", "string_above_max_length"),
    ({"note": "x" * 100_000}, "metadata.note", "string_above_max_length"),
    ({"note": "x" * 513}, "metadata.note", "string_above_max_length"),
    ({"n": 5}, "metadata.n", "invalid_type"),
], ids=["5000-keys", "17-keys", "long-key", "100KB-value", "513-chars", "number"])
def test_responses_metadata_has_openais_limits(hub, fake, metadata, param, code):
    """OpenAI: at most 16 keys, keys up to 64 characters, string values up to 512."""
    status, _, body = call(hub.url, "POST", "/v1/responses",
                           {"model": "m", "input": "Hi", "metadata": metadata})
    assert status == 400 and (body["error"]["param"], body["error"]["code"]) == (param, code)
    assert not fake.chat_requests()


def test_responses_metadata_at_the_limits_passes(hub, fake):
    metadata = {f"{n:02d}" + "k" * 62: "v" * 512 for n in range(16)}
    status, _, body = call(hub.url, "POST", "/v1/responses",
                           {"model": "m", "input": "Hi", "metadata": metadata})
    assert status == 200 and body["metadata"] == metadata


def test_conversations_take_20_items_a_call(hub):
    """OpenAI's create and add-items take at most 20 items; metadata has its limits too."""
    items = [{"type": "message", "role": "user", "content": f"m{n}"} for n in range(1001)]
    status, _, body = call(hub.url, "POST", "/v1/conversations", {"items": items})
    assert status == 400 and (body["error"]["param"], body["error"]["code"]) == \
        ("items", "array_above_max_length")
    status, _, created = call(hub.url, "POST", "/v1/conversations", {"items": items[:20]})
    assert status == 200
    status, _, body = call(hub.url, "POST", f"/v1/conversations/{created['id']}/items",
                           {"items": items[:21]})
    assert status == 400 and body["error"]["param"] == "items"
    assert call(hub.url, "POST", f"/v1/conversations/{created['id']}/items",
                {"items": items[:20]})[0] == 200
    status, _, body = call(hub.url, "POST", "/v1/conversations",
                           {"metadata": {f"k{n}": "v" for n in range(17)}})
    assert status == 400 and body["error"]["param"] == "metadata"


@pytest.mark.parametrize("source, named", [
    ({"type": "base64", "media_type": "image/png", "data": "!!!"},
     "messages.0.content.1.image.source.base64: invalid base64 data"),
    ({"type": "base64", "media_type": "image/png", "data": ""},
     "messages.0.content.1.image.source.base64: invalid base64 data"),
    ({"type": "base64", "media_type": "text/plain", "data": "aGk="},
     "messages.0.content.1.image.source.base64.media_type"),
], ids=["bangs", "empty", "media-type"])
def test_messages_refuse_an_image_that_is_not_base64(hub, fake, source, named):
    """Anthropic's 400 invalid_request_error, naming the block, before any upstream."""
    status, _, body = call(hub.url, "POST", "/v1/messages", {
        "model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"}, {"type": "image", "source": source}]}]})
    assert status == 400 and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error" and named in body["error"]["message"]
    assert not fake.chat_requests()
