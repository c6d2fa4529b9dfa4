"""The OpenAI dialect: /v1/chat/completions and /v1/models, kept exactly."""

import json

import pytest

from fake_lmstudio import Script
from http_client import call, open_stream, sse_events

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "Hi"}]


def stream(hub, body, headers=None):
    conn, response = open_stream(hub.url, CHAT, dict(body, stream=True), headers)
    try:
        return response, [json.loads(d) if d != "[DONE]" else d
                          for _, d in sse_events(response)]
    finally:
        conn.close()


def test_non_streaming_completion(hub, fake):
    status, headers, body = call(hub.url, "POST", CHAT, {"model": "qwen", "messages": USER})
    assert status == 200 and headers["X-Run-Id"].startswith("run_")
    assert body["object"] == "chat.completion"
    assert body["id"] == "chatcmpl-" + headers["X-Run-Id"][4:]
    assert body["choices"][0]["message"] == {"role": "assistant",
                                             "content": "Hello from the fake!"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}
    sent = fake.chat_requests()[0].body
    assert sent["stream"] is True                                # always streams upstream
    assert sent["stream_options"] == {"include_usage": True}


def test_streaming_chunks_share_one_id_and_end_with_done(hub):
    response, events = stream(hub, {"model": "qwen", "messages": USER})
    assert response.status == 200
    assert response.getheader("Content-Type") == "text/event-stream; charset=utf-8"
    assert response.getheader("Cache-Control") == "no-cache"
    assert response.getheader("X-Accel-Buffering") == "no"
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["id"] for c in chunks} == {"chatcmpl-" + response.getheader("X-Run-Id")[4:]}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == \
        "Hello from the fake!"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"] for c in chunks)       # no usage chunk: the client did not ask


def test_usage_chunk_only_when_asked(hub):
    _, events = stream(hub, {"model": "qwen", "messages": USER,
                             "stream_options": {"include_usage": True}})
    usage = events[-2]
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 7
    assert usage["id"] == events[0]["id"]


def test_parameters_pass_through(make_hub, fake):
    hub = make_hub()
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    body = {"model": "qwen", "messages": USER, "temperature": 0.3, "top_p": 0.9,
            "max_tokens": 20, "stop": ["\n"], "seed": 7, "presence_penalty": 0.1,
            "frequency_penalty": 0.2, "tools": tools, "tool_choice": "auto",
            "response_format": {"type": "json_schema", "json_schema": {"name": "x"}},
            "top_k": 40, "repeat_penalty": 1.1}
    assert call(hub.url, "POST", CHAT, body)[0] == 200
    sent = fake.chat_requests()[0].body
    for key, value in body.items():
        assert sent[key] == value, key


def test_max_completion_tokens_becomes_max_tokens_for_lm_studio(hub, fake):
    call(hub.url, "POST", CHAT, {"model": "q", "messages": USER, "max_completion_tokens": 9})
    sent = fake.chat_requests()[0].body
    assert sent["max_tokens"] == 9 and "max_completion_tokens" not in sent


def test_unknown_delta_fields_and_tool_calls_relay_untouched(hub, fake):
    raw = [
        {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "hmm",
                                            "reasoning": "r"}, "finish_reason": None}]},
        {"id": "y", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1",
                      "type": "function", "function": {"name": "get", "arguments": "{\"a\""}}]},
                      "finish_reason": None}]},
        {"id": "z", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {
             "arguments": ": 1}"}}]}, "finish_reason": "tool_calls"}]},
    ]
    fake.enqueue(Script(raw_chunks=raw), Script(raw_chunks=raw))
    _, events = stream(hub, {"model": "m", "messages": USER})
    assert events[0]["choices"][0]["delta"] == raw[0]["choices"][0]["delta"]
    assert events[1]["choices"] == raw[1]["choices"]
    status, _, body = call(hub.url, "POST", CHAT, {"model": "m", "messages": USER})
    message = body["choices"][0]["message"]
    assert message["tool_calls"] == [{"id": "call_1", "type": "function",
                                      "function": {"name": "get", "arguments": "{\"a\": 1}"}}]
    assert message["content"] is None
    assert message["reasoning_content"] == "hmm" and message["reasoning"] == "r"
    assert body["choices"][0]["finish_reason"] == "tool_calls"


def test_relayed_chunks_are_the_upstreams_text_with_the_runs_id(hub, fake):
    # Where the upstream's own text says what the chunk says (its id first, and its only
    # "id"), the hub sends that text with the id replaced, not the chunk encoded again:
    # the 1.50, the spacing and the Cyrillic survive. Every other chunk is encoded, and
    # comes out as before: the run's id, and otherwise what the upstream sent.
    def chunk(chunk_id, delta, finish=None, first='', last=''):
        return (f'{{{first}"id": "{chunk_id}", "object": "chat.completion.chunk", '
                f'"created": 1, "model": "m", "choices": [{{"index": 0, "delta": '
                f'{json.dumps(delta, ensure_ascii=False)}, "finish_reason": '
                f'{json.dumps(finish)}}}]{last}}}')
    call_piece = {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}
    texts = [
        chunk("up-1", {"content": "Привет"}, last=', "x_score": 1.50'),
        chunk("up-2", {"content": " a"}, first='"x_first": true, '),  # id not first
        chunk("up-3", {"content": " b", "tool_calls": [call_piece]}),  # two "id"s
        chunk("up\\u002d4", {"content": " c"}),                      # an escaped id
        chunk("up-5", {"content": " d"}, last=', "id": "up-5"'),     # a duplicate key
        chunk("up-6", {"content": " e"}),                            # sent as two lines
        chunk("up-7", {}, "stop"),
    ]
    frames = [f"data: {text}\n\n" for text in texts]
    frames[5] = frames[5].replace(', "created"', '\ndata: , "created"', 1)
    fake.enqueue(Script(raw_body=("".join(frames) + "data: [DONE]\n\n").encode()))
    conn, response = open_stream(hub.url, CHAT, {"model": "m", "messages": USER,
                                                 "stream": True})
    try:
        events = [data for _, data in sse_events(response)]
    finally:
        conn.close()
    run_id = "chatcmpl-" + response.getheader("X-Run-Id")[4:]
    assert events[-1] == "[DONE]" and len(events) == len(texts) + 1
    assert events[0] == f'{{"id":"{run_id}"' + texts[0][len('{"id": "up-1"'):]
    for sent, relayed in zip(texts, events):
        assert json.loads(relayed) == dict(json.loads(sent), id=run_id)


def test_a_lone_surrogate_from_the_upstream_is_read_as_a_replacement_character(hub, fake):
    # A server that cuts an emoji in half may escape the half: "\ud83d". Kept as it
    # parses, no UTF-8 encoder (the reply's, SQLite's) would take it; like a request
    # body's, it is read as U+FFFD, in a chunk relayed as text or encoded alike.
    body = ('data: {"id": "up", "object": "chat.completion.chunk", "created": 1, "model": "m", '
            '"choices": [{"index": 0, "delta": {"content": "a \\ud83d"}, "finish_reason": null}]}'
            '\n\ndata: {"choices": [{"index": 0, "delta": {"content": " b \\udE00"}, '
            '"finish_reason": "stop"}], "created": 1, "id": "up", "model": "m", '
            '"object": "chat.completion.chunk"}\n\ndata: [DONE]\n\n').encode()
    fake.enqueue(Script(raw_body=body), Script(raw_body=body))
    _, events = stream(hub, {"model": "m", "messages": USER})
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["delta"]["content"] for e in events[:-1]) == \
        "a \ufffd b \ufffd"
    status, _, reply = call(hub.url, "POST", CHAT, {"model": "m", "messages": USER})
    assert status == 200 and reply["choices"][0]["message"]["content"] == "a \ufffd b \ufffd"


@pytest.mark.parametrize("body, param", [
    ({}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": USER, "temperature": "hot"}, "temperature"),
    ({"messages": USER, "temperature": 3}, "temperature"),
    ({"messages": USER, "max_tokens": True}, "max_tokens"),
    ({"messages": USER, "stream": "yes"}, "stream"),
    ({"messages": USER, "model": 4}, "model"),
    ({"messages": USER, "n": 0}, "n"),             # n > 1 goes upstream (issue 12)
    ({"messages": USER, "tools": {}}, "tools"),
])
def test_bad_fields_get_400_naming_the_param(hub, fake, body, param):
    status, _, reply = call(hub.url, "POST", CHAT, body)
    assert status == 400
    assert reply["error"]["param"] == param and param.split("[")[0] in reply["error"]["message"]
    assert reply["error"]["type"] == "invalid_request_error"
    assert not fake.chat_requests()


def test_body_must_be_an_object(hub):
    status, _, reply = call(hub.url, "POST", CHAT, [1, 2])
    assert status == 400 and "JSON object" in reply["error"]["message"]


def test_upstream_error_before_first_byte_keeps_status_and_message(hub, fake):
    message = "No models loaded. Please load a model in the developer page or use the " \
              "'lms load' command."
    fake.enqueue(Script(status=400, error={"message": message, "type": "invalid_request_error",
                                           "param": "model", "code": None}),
                 Script(status=400, error=message))
    status, _, body = call(hub.url, "POST", CHAT, {"model": "q", "messages": USER})
    assert status == 400 and body["error"]["message"] == message
    assert body["error"]["code"] == "model_not_found"
    response, _ = stream(hub, {"model": "q", "messages": USER})   # streaming: same status
    assert response.status == 400


def test_upstream_500_becomes_502_with_its_message(hub, fake):
    fake.enqueue(Script(status=500, error="The model has crashed without additional "
                                          "information. (Exit code: 11)"))
    status, _, body = call(hub.url, "POST", CHAT, {"model": "q", "messages": USER})
    assert status == 502 and "Exit code: 11" in body["error"]["message"]
    assert body["error"]["type"] == "api_error"


def test_http_200_with_error_body_is_an_error(hub, fake):
    fake.enqueue(Script(json_body={"error": "Unexpected endpoint or method. (POST /x)"}))
    status, _, body = call(hub.url, "POST", CHAT, {"model": "q", "messages": USER})
    assert status == 502 and "Unexpected endpoint" in body["error"]["message"]


def test_event_error_mid_stream_becomes_an_error_frame(hub, fake):
    fake.enqueue(Script(chunks=["partial"], error_event="Compute error."))
    response, events = stream(hub, {"model": "q", "messages": USER})
    assert response.status == 200
    assert events[0]["choices"][0]["delta"]["content"] == "partial"
    assert "Compute error." in events[-1]["error"]["message"]
    assert "[DONE]" not in events


def test_context_overflow_before_any_token_is_a_400(hub, fake):
    fake.enqueue(Script(chunks=[], error_event="Input does not fit in context length. The "
                        "input has 31430 tokens, but the context length only supports 30000"))
    status, _, body = call(hub.url, "POST", CHAT, {"model": "q", "messages": USER})
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize("script, fragment", [
    (Script(chunks=["a", "b"], cut_after=1), "middle of a chunk"),
    (Script(chunks=["a"], garbage=True), "not JSON"),
    (Script(chunks=["a"], done=False, finish_reason=None, usage=False), "before it finished"),
])
def test_broken_upstream_streams_end_with_an_error_frame(hub, fake, script, fragment):
    fake.enqueue(script)
    response, events = stream(hub, {"model": "q", "messages": USER})
    assert response.status == 200
    assert fragment in events[-1]["error"]["message"]


def test_json_body_instead_of_stream_still_works(hub, fake):
    fake.enqueue(Script(json_body={"id": "c", "object": "chat.completion", "model": "q",
                                   "choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant",
                                                            "content": "whole"}}],
                                   "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                             "total_tokens": 2}}))
    status, _, body = call(hub.url, "POST", CHAT, {"model": "q", "messages": USER})
    assert status == 200 and body["choices"][0]["message"]["content"] == "whole"
    assert body["usage"]["total_tokens"] == 2


def test_usage_is_estimated_when_upstream_sends_none(hub, fake):
    fake.enqueue(Script(usage=False))
    _, events = stream(hub, {"model": "q", "messages": USER,
                             "stream_options": {"include_usage": True}})
    assert events[-2]["usage"]["completion_tokens"] > 0


def test_models_lists_upstream_models_and_aliases(make_hub):
    hub = make_hub({"aliases": {"gpt-4": "deep", "deep": "qwen2.5-7b-instruct"}})
    status, _, body = call(hub.url, "GET", "/v1/models")
    assert status == 200 and body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert ids == ["qwen2.5-7b-instruct", "qwen3-vl-4b-instruct", "gpt-4", "deep"]
    assert body["data"][2]["alias_of"] == "deep"


def test_models_with_upstream_down_is_503(make_hub):
    hub = make_hub(upstream_url="http://127.0.0.1:9/v1")
    status, _, body = call(hub.url, "GET", "/v1/models")
    assert status == 503 and "Could not connect to LM Studio" in body["error"]["message"]
