"""The relays (issue 27, point 3): rerank, tokenize, audio and images passed to an upstream
that serves them, byte for byte, through the same keys, pools and request log as a chat."""

import http.client
import json
import threading

import pytest

from fake_lmstudio import LLAMA_404, FakeLMStudio, Relay
from http_client import call, connect

BOUNDARY = "----llmhubTestBoundary7MA4YWxk"
FORM = f"multipart/form-data; boundary={BOUNDARY}"
# Every byte value, and the sequences a careless multipart reader would trip on.
AUDIO = bytes(range(256)) * 64 + b"\r\n--" + BOUNDARY.encode()[:-1] + b"\r\n\r\n" + b"RIFF"
RANKED = b'{"id":"rr-1","results":[{"index":1,"relevance_score":0.93}],"usage":{"total_tokens":9}}'


def form(*fields: tuple) -> bytes:
    """A multipart/form-data body of (name, value) or (name, filename, type, data)."""
    out = b""
    for field in fields:
        out += f"--{BOUNDARY}\r\n".encode()
        if len(field) == 2:
            out += f'Content-Disposition: form-data; name="{field[0]}"\r\n\r\n'.encode()
            out += field[1].encode() + b"\r\n"
        else:
            name, filename, kind, data = field
            out += (f'Content-Disposition: form-data; name="{name}"; filename="{filename}"'
                    f"\r\nContent-Type: {kind}\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def relayed(fake, path: str):
    """The requests the fake received at this path."""
    return [r for r in fake.requests if r.path == path]


def test_a_multipart_transcription_reaches_the_upstream_byte_for_byte(hub, fake):
    fake.relays["/v1/audio/transcriptions"] = Relay(body=b'{"text":"Hello there."}')
    body = form(("model", "whisper-1"), ("file", "hello.wav", "audio/wav", AUDIO),
                ("response_format", "json"))
    status, headers, answer = call(hub.url, "POST", "/v1/audio/transcriptions", body,
                                   {"Content-Type": FORM})
    assert status == 200 and answer == {"text": "Hello there."}
    assert headers["X-Run-Id"].startswith("run_")
    [got] = relayed(fake, "/v1/audio/transcriptions")
    assert got.raw == body                                  # not a byte changed
    assert got.headers["Content-Type"] == FORM              # the boundary with it


def test_a_rerank_reaches_the_upstream_byte_for_byte_and_its_answer_comes_back_unchanged(
        hub, fake):
    fake.relays["/v1/rerank"] = Relay(body=RANKED, content_type="application/json; charset=utf-8")
    # spacing, key order and escapes a re-encoding would change
    body = ('{ "model" : "bge-reranker-v2-m3", "query": "Was ist ein Panda?",\n'
            '  "documents": ["hi", "Der Gro\\u00dfe Panda \u2014 ein B\u00e4r"], "top_n": 1 }'
            ).encode()
    conn = connect(hub.url)
    try:
        conn.request("POST", "/v1/rerank", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        answer = response.read()
    finally:
        conn.close()
    assert response.status == 200 and answer == RANKED
    assert response.getheader("Content-Type") == "application/json; charset=utf-8"
    assert relayed(fake, "/v1/rerank")[0].raw == body


def test_rerank_tries_the_other_path_a_server_may_have(hub, fake):
    """llama.cpp and vLLM serve /v1/rerank; a server with only /rerank still answers."""
    fake.relays.update({"/v1/rerank": LLAMA_404, "/rerank": Relay(body=RANKED)})
    status, _, answer = call(hub.url, "POST", "/rerank",
                             {"query": "q", "documents": ["a", "b"]})
    assert status == 200 and answer == json.loads(RANKED)


def test_json_sent_as_curl_d_sends_it_goes_upstream_labelled_json(hub, fake):
    """curl -d labels a body as a form; the hub reads it as JSON, and vLLM would refuse
    it labelled so."""
    fake.relays["/tokenize"] = Relay(body=b'{"tokens":[1,2]}')
    body = b'{"content": "Hello world"}'
    status, _, answer = call(hub.url, "POST", "/tokenize", body,
                             {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and answer == {"tokens": [1, 2]}
    [got] = relayed(fake, "/tokenize")
    assert (got.raw, got.headers["Content-Type"]) == (body, "application/json")


def test_speech_streams_back_as_the_upstream_makes_it(hub, fake):
    release = threading.Event()
    fake.relays["/v1/audio/speech"] = Relay(chunks=[b"ID3-first-frame", b"second-frame"],
                                            content_type="audio/mpeg", hold=release)
    conn = connect(hub.url)
    try:
        conn.request("POST", "/v1/audio/speech",
                     json.dumps({"model": "kokoro", "input": "Hi", "voice": "af"}).encode(),
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type") == "audio/mpeg"
        assert response.getheader("Transfer-Encoding") == "chunked"
        assert response.read1(65536) == b"ID3-first-frame"   # while the fake still holds
        release.set()
        assert response.read() == b"second-frame"
    finally:
        conn.close()


def test_a_client_leaving_a_speech_stream_stops_the_upstream(hub, fake):
    fake.relays["/v1/audio/speech"] = Relay(chunks=[b"first", b"never"],
                                            content_type="audio/wav", hold=threading.Event())
    conn = connect(hub.url)
    conn.request("POST", "/v1/audio/speech", json.dumps({"input": "Hi"}).encode(),
                 {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.read1(65536) == b"first"
    run_id = response.getheader("X-Run-Id")
    conn.close()
    assert fake.aborted.wait(10)                  # the hub closed the upstream connection
    status, _, record = call(hub.url, "GET", f"/v1/requests/{run_id}")
    assert status == 200 and record["status"] == "cancelled"


def test_a_relay_is_cancelled_by_its_run_id_and_its_body_ends_cut_short(hub, fake):
    fake.relays["/v1/audio/speech"] = Relay(chunks=[b"first", b"never"],
                                            content_type="audio/wav", hold=threading.Event())
    conn = connect(hub.url)
    try:
        conn.request("POST", "/v1/audio/speech", json.dumps({"input": "Hi"}).encode(),
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.read1(65536) == b"first"
        run_id = response.getheader("X-Run-Id")
        assert call(hub.url, "POST", f"/v1/runs/{run_id}/cancel")[2]["status"] == "cancelled"
        assert fake.aborted.wait(10)
        with pytest.raises(http.client.IncompleteRead):   # no last chunk: not a whole file
            response.read()
    finally:
        conn.close()


def test_an_upstream_without_the_endpoint_is_a_clear_404_and_stays_healthy(hub, fake):
    fake.relays.update({"/v1/rerank": LLAMA_404, "/rerank": LLAMA_404})
    for _ in range(4):                            # past [health] failures (3)
        status, _, body = call(hub.url, "POST", "/v1/rerank",
                               {"query": "q", "documents": ["a"]})
        assert status == 404
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "unsupported_endpoint"
    assert f"The upstream 'default' ({fake.url}) does not serve /v1/rerank" in error["message"]
    [state] = call(hub.url, "GET", "/v1/upstreams")[2]["data"]
    assert state["state"] == "healthy"
    status, _, chat = call(hub.url, "POST", "/v1/chat/completions",
                           {"messages": [{"role": "user", "content": "Hi"}]})
    assert status == 200 and chat["choices"][0]["message"]["content"] == "Hello from the fake!"


def test_a_501_stays_a_501_and_lm_studios_unknown_route_is_a_404(hub, fake):
    fake.relays["/v1/images/generations"] = Relay(status=501, body=json.dumps(
        {"error": {"code": 501, "message": "not supported", "type": "not_supported_error"}}
    ).encode())
    status, _, body = call(hub.url, "POST", "/v1/images/generations", {"prompt": "a cat"})
    assert status == 501 and "does not serve /v1/images/generations" in body["error"]["message"]
    # nothing scripted: the fake answers as LM Studio does (HTTP 200, "Unexpected endpoint")
    status, _, body = call(hub.url, "POST", "/tokenize", {"content": "Hello world"})
    assert status == 404 and "does not serve /tokenize" in body["error"]["message"]
    [state] = call(hub.url, "GET", "/v1/upstreams")[2]["data"]
    assert state["state"] == "healthy"


def test_an_alias_resolves_for_rerank(make_hub, fake):
    hub = make_hub({"aliases": {"ranker": "bge-reranker-v2-m3"}})
    fake.relays["/v1/rerank"] = Relay(body=RANKED)
    sent = {"model": "ranker", "query": "q", "documents": ["a", {"text": "b"}], "top_n": 1}
    status, headers, answer = call(hub.url, "POST", "/v1/rerank", sent)
    assert status == 200 and answer == json.loads(RANKED)
    assert relayed(fake, "/v1/rerank")[0].body == dict(sent, model="bge-reranker-v2-m3")
    record = call(hub.url, "GET", f"/v1/requests/{headers['X-Run-Id']}")[2]
    assert (record["requested_model"], record["model"]) == ("ranker", "bge-reranker-v2-m3")


def test_a_pool_sends_a_rerank_to_the_target_that_serves_it(make_hub, fake):
    """LM Studio has no rerank; the pool's other box has, and every call ends there."""
    other = FakeLMStudio().start()
    try:
        other.relays["/v1/rerank"] = Relay(body=RANKED)
        hub = make_hub({"upstream:b": {"base_url": other.url, "kind": "openai"},
                        "pool:ranker": {"targets": "default:bge, b:bge-reranker-v2-m3"}})
        for _ in range(4):
            status, _, answer = call(hub.url, "POST", "/v1/rerank",
                                     {"model": "ranker", "query": "q", "documents": ["a"]})
            assert status == 200 and answer == json.loads(RANKED)
        assert [r.body["model"] for r in relayed(other, "/v1/rerank")] == \
            ["bge-reranker-v2-m3"] * 4
        states = call(hub.url, "GET", "/v1/upstreams")[2]["data"]
        assert [s["state"] for s in states] == ["healthy", "healthy"]
    finally:
        other.stop()


def test_a_keys_model_limits_hold_for_relays(make_hub, fake):
    hub = make_hub({"keys": {"carol": "sk-carol-4"}, "key:carol": {"models": "qwen*"}})
    fake.relays["/v1/rerank"] = Relay(body=RANKED)
    status, _, body = call(hub.url, "POST", "/v1/rerank",
                           {"model": "bge-reranker", "query": "q", "documents": ["a"]},
                           {"Authorization": "Bearer sk-carol-4"})
    assert status == 403 and body["error"]["param"] == "model"
    assert not relayed(fake, "/v1/rerank")


def test_an_alias_in_a_form_rewrites_only_the_model_part(make_hub, fake):
    hub = make_hub({"aliases": {"whisper-1": "whisper-large-v3"}})
    fake.relays["/v1/audio/translations"] = Relay(body=b"Hello.", content_type="text/plain")
    body = form(("file", "a.wav", "audio/wav", AUDIO), ("model", "whisper-1"))
    status, headers, answer = call(hub.url, "POST", "/v1/audio/translations", body,
                                   {"Content-Type": FORM})
    assert status == 200 and answer == b"Hello." and headers["Content-Type"] == "text/plain"
    assert relayed(fake, "/v1/audio/translations")[0].raw == \
        body.replace(b"\r\n\r\nwhisper-1\r\n", b"\r\n\r\nwhisper-large-v3\r\n")


def test_the_request_log_shows_a_relay_under_its_key(make_hub, fake):
    hub = make_hub({"keys": {"alice": "sk-alice-1"}})
    alice = {"Authorization": "Bearer sk-alice-1"}
    fake.relays["/detokenize"] = Relay(body=b'{"content":"Hello world"}')
    assert call(hub.url, "POST", "/detokenize", {"tokens": [1, 2]})[0] == 401
    status, headers, answer = call(hub.url, "POST", "/detokenize", {"tokens": [1, 2]}, alice)
    assert status == 200 and answer == {"content": "Hello world"}
    records = call(hub.url, "GET", "/v1/requests", headers=alice)[2]["data"]
    assert [(r["run_id"], r["route"], r["dialect"], r["key"], r["status"])
            for r in records] == [(headers["X-Run-Id"], "/detokenize", "relays", "alice",
                                   "completed")]
    assert len(relayed(fake, "/detokenize")) == 1          # the 401 never went upstream


def test_an_image_edit_passes_its_form_and_the_upstreams_answer(hub, fake):
    fake.relays["/v1/images/edits"] = Relay(body=b'{"created":1,"data":[{"b64_json":"iVBO"}]}')
    body = form(("image", "cat.png", "image/png", b"\x89PNG\r\n\x1a\n" + AUDIO),
                ("prompt", "add a hat"), ("model", "sd-turbo"))
    status, _, answer = call(hub.url, "POST", "/v1/images/edits", body,
                             {"Content-Type": FORM})
    assert status == 200 and answer["data"] == [{"b64_json": "iVBO"}]
    assert relayed(fake, "/v1/images/edits")[0].raw == body


def test_bad_bodies_get_a_400_naming_the_field(hub, fake):
    cases = [("/v1/rerank", {"documents": ["a"]}, "query"),
             ("/v1/rerank", {"query": "q", "documents": []}, "documents"),
             ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
             ("/tokenize", {"text": "hi"}, "content"),
             ("/detokenize", {"tokens": ["a"]}, "tokens"),
             ("/v1/audio/speech", {"voice": "af"}, "input"),
             ("/v1/images/generations", {"prompt": 3}, "prompt")]
    for path, body, field in cases:
        status, _, answer = call(hub.url, "POST", path, body)
        assert (path, status, answer["error"]["param"]) == (path, 400, field)
    forms = [("/v1/audio/transcriptions", form(("model", "whisper-1")), "file"),
             ("/v1/images/edits", form(("image", "a.png", "image/png", b"png")), "prompt")]
    for path, body, field in forms:
        status, _, answer = call(hub.url, "POST", path, body, {"Content-Type": FORM})
        assert (path, status, answer["error"]["param"]) == (path, 400, field)
        assert f"'{field}' is required" in answer["error"]["message"]
    status, _, answer = call(hub.url, "POST", "/v1/audio/transcriptions", b"{}")
    assert status == 415 and answer["error"]["param"] == "Content-Type"
    assert not [r for r in fake.requests if r.path != "/v1/models"]   # nothing went upstream


def test_an_upload_past_max_body_bytes_is_a_413_and_never_reaches_the_upstream(make_hub, fake):
    hub = make_hub({"server": {"max_body_bytes": 65536}})
    fake.relays["/v1/audio/transcriptions"] = Relay(body=b'{"text":"x"}')
    body = form(("model", "whisper-1"), ("file", "long.wav", "audio/wav", AUDIO * 5))
    assert len(body) > 65536
    status, _, answer = call(hub.url, "POST", "/v1/audio/transcriptions", body,
                             {"Content-Type": FORM})
    assert status == 413 and "max_body_bytes" in answer["error"]["message"]
    assert not relayed(fake, "/v1/audio/transcriptions")
