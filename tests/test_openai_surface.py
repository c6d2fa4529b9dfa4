"""The rest of the OpenAI surface over real sockets (issue 12): embeddings, legacy
completions, model lookup, lenient fields, n, logprobs, context overflow from every
upstream, and reasoning inline or apart. The official clients' side is in
test_openai_client.py."""

import base64
import json
import struct
import threading

import pytest

from fake_lmstudio import Script
from http_client import call, open_stream, sse_events

USER = [{"role": "user", "content": "Hello!"}]
NEVER = threading.Event()


def chunks_of(response) -> list:
    return [json.loads(data) for _, data in sse_events(response) if data != "[DONE]"]


# --- embeddings ------------------------------------------------------------------------------

def test_embeddings_float_with_estimated_usage(hub, fake):
    status, _, body = call(hub.url, "POST", "/v1/embeddings",
                           {"model": "nomic-embed", "input": ["Hello", "world!"]})
    assert status == 200 and body["object"] == "list" and body["model"] == "nomic-embed"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["data"][1] == {"object": "embedding", "index": 1,
                               "embedding": [0.6, 0.5, -0.25]}
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}   # LM Studio says 0
    assert fake.requests[-1].path == "/v1/embeddings"


def test_embeddings_base64_is_encoded_by_the_hub(hub, fake):
    _, _, body = call(hub.url, "POST", "/v1/embeddings",
                      {"model": "m", "input": "Hi", "encoding_format": "base64"})
    raw = base64.b64decode(body["data"][0]["embedding"])
    assert struct.unpack("<3f", raw) == pytest.approx((0.2, 0.5, -0.25))
    assert "encoding_format" not in fake.requests[-1].body     # the upstream sends floats


def test_embeddings_go_through_aliases_and_prefixes(make_hub, fake):
    hub = make_hub({"aliases": {"embedder": "lm:nomic-embed-text"}})
    call(hub.url, "POST", "/v1/embeddings", {"model": "embedder", "input": "x"})
    assert fake.requests[-1].body["model"] == "nomic-embed-text"


def test_token_ids_are_a_clear_400_for_lm_studio_and_pass_to_others(make_hub, fake):
    hub = make_hub()
    status, _, body = call(hub.url, "POST", "/v1/embeddings",
                           {"model": "m", "input": [[101, 2023, 102]]})
    assert status == 400 and body["error"]["param"] == "input"
    assert "check_embedding_ctx_length=False" in body["error"]["message"]
    other = make_hub({"upstream": {"kind": "openai"}})
    status, _, body = call(other.url, "POST", "/v1/embeddings",
                           {"model": "m", "input": [101, 2023, 102]})
    assert status == 200 and fake.requests[-1].body["input"] == [101, 2023, 102]


@pytest.mark.parametrize("body, param", [
    ({"model": "m"}, "input"),
    ({"model": "m", "input": 5}, "input"),
    ({"model": "m", "input": []}, "input"),
    ({"model": "m", "input": "x", "encoding_format": "hex"}, "encoding_format"),
    ({"model": "m", "input": "x", "dimensions": 0}, "dimensions"),
])
def test_bad_embeddings_requests_name_the_field(hub, body, param):
    status, _, reply = call(hub.url, "POST", "/v1/embeddings", body)
    assert status == 400 and reply["error"]["param"] == param


def test_the_mock_embeds_repeatably(make_hub):
    hub = make_hub({"upstream": {"kind": "mock"}})
    first = call(hub.url, "POST", "/v1/embeddings", {"input": ["a", "b"]})[2]
    again = call(hub.url, "POST", "/v1/embeddings", {"input": ["a", "b"]})[2]
    assert first["data"] == again["data"] and len(first["data"][0]["embedding"]) == 8
    assert first["data"][0]["embedding"] != first["data"][1]["embedding"]


# --- legacy completions ----------------------------------------------------------------------

def test_a_completion_with_suffix_and_logprobs(hub, fake):
    fake.enqueue(Script(chunks=["    return", " a + b"]))
    status, _, body = call(hub.url, "POST", "/v1/completions", {
        "model": "coder", "prompt": "def add(a, b):\n", "suffix": "\n\nprint(add(1, 2))",
        "max_tokens": 16, "logprobs": 1, "stop": ["\n\n"]})
    assert status == 200 and body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert body["choices"] == [{"text": "    return a + b", "index": 0, "finish_reason": "stop",
                                "logprobs": {"tokens": ["    return", " a + b"],
                                             "token_logprobs": [-0.5, -0.5],
                                             "top_logprobs": [{"    return": -0.5},
                                                              {" a + b": -0.5}],
                                             "text_offset": [0, 1]}}]
    assert body["usage"]["completion_tokens"] == 2
    sent = fake.requests[-1].body
    assert (sent["suffix"], sent["stop"], sent["stream"]) == ("\n\nprint(add(1, 2))",
                                                              ["\n\n"], True)


def test_a_completion_streams_with_usage_and_one_id(hub, fake):
    fake.enqueue(Script(chunks=["Once", " upon"]))
    conn, response = open_stream(hub.url, "/v1/completions", {
        "model": "m", "prompt": "Tell a story", "stream": True,
        "stream_options": {"include_usage": True}})
    chunks = chunks_of(response)
    conn.close()
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "Once upon"
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert len({c["id"] for c in chunks}) == 1 and chunks[-1]["usage"]["completion_tokens"] == 2


def test_a_completion_is_cancelled_when_its_client_leaves_before_the_first_token(hub, fake):
    fake.enqueue(Script(hold_first=NEVER))
    conn, response = open_stream(hub.url, "/v1/completions", {
        "model": "m", "prompt": "x", "stream": True})
    assert response.status == 200                        # the upstream accepted
    conn.close()
    assert fake.aborted.wait(5)


def test_a_completion_to_an_anthropic_upstream_is_a_400(make_hub):
    from fake_anthropic import FakeAnthropic
    anthropic = FakeAnthropic().start()
    try:
        hub = make_hub({"upstream": {"kind": "anthropic", "base_url": anthropic.url}})
        status, _, body = call(hub.url, "POST", "/v1/completions", {"model": "m",
                                                                    "prompt": "x"})
    finally:
        anthropic.stop()
    assert status == 400 and body["error"]["code"] == "unsupported_endpoint"


def test_the_mock_completes_text_too(make_hub):
    hub = make_hub({"upstream": {"kind": "mock"}, "mock": {"chunk_delay_seconds": 0}})
    _, _, body = call(hub.url, "POST", "/v1/completions", {"prompt": "Hi", "seed": 3})
    assert body["choices"][0]["text"] and body["usage"]["prompt_tokens"] == 1


# --- models ----------------------------------------------------------------------------------

def test_a_model_by_id_with_slashes_an_alias_and_an_unknown_one(make_hub, fake):
    fake.models = ["qwen/qwen3-4b-2507", "qwen2.5-7b-instruct"]
    fake.loaded = {"qwen2.5-7b-instruct": ["qwen2.5-7b-instruct"]}
    hub = make_hub({"aliases": {"fast": "qwen2.5-7b-instruct"}})
    status, _, model = call(hub.url, "GET", "/v1/models/qwen/qwen3-4b-2507")
    assert status == 200 and model["id"] == "qwen/qwen3-4b-2507"
    assert model["object"] == "model" and model["loaded"] is False
    _, _, listed = call(hub.url, "GET", "/v1/models")
    loaded = next(m for m in listed["data"] if m["id"] == "qwen2.5-7b-instruct")
    assert loaded["loaded"] is True and loaded["context_length"] == 4096
    assert call(hub.url, "GET", "/v1/models/fast")[2]["alias_of"] == "qwen2.5-7b-instruct"
    status, _, body = call(hub.url, "GET", "/v1/models/nope/nothing")
    assert status == 404 and body["error"]["code"] == "model_not_found"
    assert body["error"]["type"] == "not_found_error"


# --- lenient on what it does not use ---------------------------------------------------------

def test_fields_the_hub_does_not_read_go_upstream_and_drop_fields_removes_some(make_hub,
                                                                              fake):
    hub = make_hub({"openai": {"drop_fields": "prompt_cache_retention"}})
    status, _, _ = call(hub.url, "POST", "/v1/chat/completions", {
        "model": "m", "messages": USER, "verbosity": "low", "prompt_cache_key": "k1",
        "safety_identifier": "u1", "prompt_cache_retention": "24h", "future_field": {"a": 1}})
    assert status == 200
    sent = fake.chat_requests()[-1].body
    assert (sent["verbosity"], sent["prompt_cache_key"], sent["future_field"]) == \
        ("low", "k1", {"a": 1})
    assert "prompt_cache_retention" not in sent


def test_fields_the_hub_reads_are_still_checked(hub, fake):
    status, _, body = call(hub.url, "POST", "/v1/chat/completions",
                           {"model": "m", "messages": USER, "temperature": "warm"})
    assert status == 400 and body["error"]["param"] == "temperature"
    assert not fake.chat_requests()


# --- n, logprobs -----------------------------------------------------------------------------

def test_n_choices_come_back_whole_and_streamed(hub, fake):
    fake.enqueue(Script(chunks=["a", "b"]), Script(chunks=["a", "b"]))
    _, _, body = call(hub.url, "POST", "/v1/chat/completions",
                      {"model": "m", "messages": USER, "n": 2})
    assert [(c["index"], c["message"]["content"], c["finish_reason"])
            for c in body["choices"]] == [(0, "ab", "stop"), (1, "AB", "stop")]
    assert fake.chat_requests()[-1].body["n"] == 2
    conn, response = open_stream(hub.url, "/v1/chat/completions",
                                 {"model": "m", "messages": USER, "n": 2, "stream": True})
    chunks = chunks_of(response)
    conn.close()
    texts = {0: "", 1: ""}
    for chunk in chunks:
        for one in chunk["choices"]:
            texts[one["index"]] += one["delta"].get("content") or ""
    assert texts == {0: "ab", 1: "AB"}


def test_a_thread_keeps_choice_0(hub, fake):
    fake.enqueue(Script(chunks=["a", "b"]))
    _, headers, body = call(hub.url, "POST", "/v1/pipes/run", {"messages": USER, "n": 2})
    assert len(body["raw"]["choices"]) == 2
    stored = call(hub.url, "GET", f"/v1/threads/{headers['lb-thread-id']}/messages")[2]
    assert [m["content"] for m in stored] == ["Hello!", "ab"]


def test_logprobs_survive_a_non_streaming_reply(hub, fake):
    fake.enqueue(Script(chunks=["Hi", "!"]))
    _, _, body = call(hub.url, "POST", "/v1/chat/completions",
                      {"model": "m", "messages": USER, "logprobs": True, "top_logprobs": 1})
    logprobs = body["choices"][0]["logprobs"]["content"]
    assert [entry["token"] for entry in logprobs] == ["Hi", "!"]
    assert logprobs[0]["logprob"] == -0.5


# --- context overflow from every upstream -------------------------------------------------

OVERFLOWS = [
    # llama.cpp's server
    {"code": 400, "message": "the request exceeds the available context size, try "
     "increasing it", "type": "exceed_context_size_error", "n_prompt_tokens": 9000,
     "n_ctx": 4096},
    # LM Studio
    "Trying to keep the first 8124 tokens when context the overflows. However, the model is "
    "loaded with context length of only 4096 tokens, which is not enough.",
    # vLLM
    {"message": "This model's maximum context length is 4096 tokens. However, you requested "
     "9000 tokens.", "type": "BadRequestError", "code": 400},
    # Anthropic, through an OpenAI-compatible proxy
    {"message": "prompt is too long: 212345 tokens > 200000 maximum",
     "type": "invalid_request_error"},
]


@pytest.mark.parametrize("error", OVERFLOWS, ids=["llama.cpp", "lmstudio", "vllm", "anthropic"])
def test_context_overflow_is_400_context_length_exceeded_in_every_shape(hub, fake, error):
    fake.enqueue(*[Script(status=400, error=error) for _ in range(3)])
    status, _, body = call(hub.url, "POST", "/v1/chat/completions",
                           {"model": "m", "messages": USER})
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"
    status, _, body = call(hub.url, "POST", "/v1/messages",
                           {"model": "m", "max_tokens": 5, "messages": USER})
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, _, body = call(hub.url, "POST", "/v1/pipes/run", {"messages": USER})
    assert status == 400 and body["error"]["code"] == "BAD_REQUEST"


def test_langchain_sees_a_context_overflow(hub, fake):
    langchain = pytest.importorskip("langchain_openai", reason="langchain-openai is missing")
    from langchain_core.exceptions import ContextOverflowError
    fake.enqueue(Script(status=400, error=OVERFLOWS[0]))
    chat = langchain.ChatOpenAI(model="m", api_key="x", base_url=hub.url + "/v1",
                                max_retries=0)
    with pytest.raises(ContextOverflowError):
        chat.invoke("Hello!")


# --- reasoning, apart or inline --------------------------------------------------------------

def test_think_tags_become_reasoning_content_for_openai_clients(make_hub, fake):
    hub = make_hub({"models": {"think_tags": "qwq*"}})
    fake.enqueue(Script(chunks=["<think>Hm", ".</think>", "Yes."]))
    _, _, body = call(hub.url, "POST", "/v1/chat/completions",
                      {"model": "qwq-32b", "messages": USER})
    message = body["choices"][0]["message"]
    assert (message["content"], message["reasoning_content"]) == ("Yes.", "Hm.")


def test_think_inline_puts_reasoning_back_into_the_text(make_hub, fake):
    hub = make_hub({"models": {"think_inline": "r1-*"}})
    fake.enqueue(Script(chunks=["Yes."], reasoning=["Hm", "."]))
    conn, response = open_stream(hub.url, "/v1/chat/completions",
                                 {"model": "r1-distill", "messages": USER, "stream": True})
    chunks = chunks_of(response)
    conn.close()
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                   if c["choices"])
    assert text == "<think>Hm.</think>\n\nYes."
    assert not any("reasoning_content" in c["choices"][0]["delta"] for c in chunks
                   if c["choices"])
