"""Coding agents on default settings (issue 25): the errors they recognise, the stop and
cache counts they budget by, over /v1/messages, /v1/responses and /v1/chat/completions,
against the fake LM Studio (as LM Studio and as llama.cpp) and the fake Anthropic.
"""

import base64
import json

import pytest

from fake_lmstudio import Script
from llmhub.dialects import checks
from http_client import call, open_stream, sse_events

ASK = [{"role": "user", "content": "What is the weather in Oslo?"}]   # 28 characters: the
PROMPT = 28                               # fake LM Studio counts a prompt's tokens so
MESSAGE = {"model": "qwen2.5-7b-instruct", "max_tokens": 50, "messages": ASK}


def message(hub, body: dict, stream: bool) -> dict:
    """A /v1/messages reply, or the stream's final state: {stop_reason, stop_sequence,
    usage} as the SDK would assemble it (message_start's usage, then message_delta's)."""
    if not stream:
        status, _, reply = call(hub.url, "POST", "/v1/messages", body)
        assert status == 200, reply
        return reply
    conn, response = open_stream(hub.url, "/v1/messages", dict(body, stream=True))
    events = [(name, json.loads(data)) for name, data in sse_events(response)]
    conn.close()
    start = next(data for name, data in events if name == "message_start")["message"]
    delta = next(data for name, data in events if name == "message_delta")
    return {"usage": {**start["usage"], **delta["usage"]}, **delta["delta"]}


# --- context overflow ------------------------------------------------------------------------

LLAMA = {"message": "request (5000 tokens) exceeds the available context size (4096 tokens), "
                    "try increasing it", "type": "exceed_context_size_error", "code": 400}


@pytest.mark.parametrize("script, said", [
    (Script(status=400, error=LLAMA), "5000 tokens > 4096 maximum"),        # llama.cpp
    (Script(chunks=[], error_event="Input does not fit in context length. The input has "
            "31430 tokens, but the context length only supports 30000 tokens."),
     "31430 tokens > 30000 maximum"),                                       # LM Studio, stream
    (Script(status=400, error="Trying to keep the first 15857 tokens when context the "
            "overflows."),
     "15857 tokens > 4096 maximum"),                 # no limit said: the loaded context's
])
@pytest.mark.parametrize("stream", [False, True])
def test_an_overflow_is_prompt_is_too_long_with_the_numbers(hub, fake, script, said, stream):
    fake.enqueue(script)
    if stream and script.status == 200:
        conn, response = open_stream(hub.url, "/v1/messages", dict(MESSAGE, stream=True))
        name, data = sse_events(response)[-1]
        conn.close()
        status, reply = 400, json.loads(data)
        assert name == "error"
    else:
        status, _, reply = call(hub.url, "POST", "/v1/messages", dict(MESSAGE, stream=stream))
    assert status == 400 and reply["type"] == "error"
    assert reply["error"] == {"type": "invalid_request_error",
                              "message": f"prompt is too long: {said}"}


def test_an_overflow_without_numbers_is_estimated_and_chat_completions_keep_their_code(
        hub, fake):
    fake.enqueue(Script(status=400, error="context length exceeded"), Script(
        status=400, error="context length exceeded"))
    status, _, reply = call(hub.url, "POST", "/v1/messages", MESSAGE)
    sent = int(reply["error"]["message"].split(": ")[1].split()[0])
    assert status == 400 and 0 < sent < 50                    # the hub's estimate of ASK
    assert reply["error"]["message"] == f"prompt is too long: {sent} tokens > 4096 maximum"
    status, _, reply = call(hub.url, "POST", "/v1/chat/completions",
                            {"model": "qwen2.5-7b-instruct", "messages": ASK})
    assert status == 400 and reply["error"]["code"] == "context_length_exceeded"


def test_anthropics_own_overflow_keeps_its_numbers(make_hub, upstream_anthropic):
    upstream_anthropic.error = (400, {"type": "error", "error": {
        "type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > "
                                                   "200000 maximum"}})
    hub = make_hub({"upstream": {"kind": "anthropic", "base_url": upstream_anthropic.url}})
    status, _, reply = call(hub.url, "POST", "/v1/messages", MESSAGE)
    assert status == 400
    assert reply["error"]["message"] == "prompt is too long: 210000 tokens > 200000 maximum"


# --- stop sequences --------------------------------------------------------------------------

@pytest.mark.parametrize("script, sequence", [
    (Script(chunks=["Done", " ###"]), "###"),         # a server that leaves it in the text
    (Script(chunks=["Done"], final_extra={"stopping_word": "</a>"}), "</a>"),   # llama.cpp
    (Script(chunks=["Done"]), None),                  # nothing says: the model's own end
])
@pytest.mark.parametrize("stream", [False, True])
def test_a_stop_sequence_is_named_through_an_openai_upstream(hub, fake, script, sequence,
                                                             stream):
    fake.enqueue(script)
    reply = message(hub, dict(MESSAGE, stop_sequences=["###", "</a>"]), stream)
    assert reply["stop_reason"] == ("stop_sequence" if sequence else "end_turn")
    assert reply["stop_sequence"] == sequence
    assert fake.chat_requests()[0].body["stop"] == ["###", "</a>"]


@pytest.mark.parametrize("stream", [False, True])
def test_an_anthropic_upstream_names_its_stop_sequence(make_hub, upstream_anthropic, stream):
    upstream_anthropic.ending = ("stop_sequence", "###")
    hub = make_hub({"upstream": {"kind": "anthropic", "base_url": upstream_anthropic.url}})
    reply = message(hub, dict(MESSAGE, stop_sequences=["###"]), stream)
    assert (reply["stop_reason"], reply["stop_sequence"]) == ("stop_sequence", "###")


# --- cached prompt tokens ----------------------------------------------------------------------

CACHED = {"prompt_tokens_details": {"cached_tokens": 20}}


@pytest.mark.parametrize("script", [
    Script(usage_extra=CACHED),                                         # OpenAI's field
    Script(final_extra={"timings": {"cache_n": 20, "prompt_n": 8}}),    # llama.cpp's
], ids=["prompt_tokens_details", "timings"])
@pytest.mark.parametrize("stream", [False, True])
def test_cached_prompt_tokens_reach_messages_as_cache_reads(hub, fake, script, stream):
    fake.enqueue(script)
    usage = message(hub, MESSAGE, stream)["usage"]
    # Anthropic's input_tokens leave out what the cache served; OpenAI's prompt_tokens not
    assert (usage["input_tokens"], usage["cache_read_input_tokens"],
            usage["cache_creation_input_tokens"]) == (PROMPT - 20, 20, 0)


@pytest.mark.parametrize("stream", [False, True])
def test_cached_prompt_tokens_reach_responses(hub, fake, stream):
    fake.enqueue(Script(usage_extra=CACHED))
    body = {"model": "qwen2.5-7b-instruct", "input": "What is the weather in Oslo?",
            "stream": stream}
    if stream:
        conn, response = open_stream(hub.url, "/v1/responses", body)
        done = json.loads(sse_events(response)[-1][1])["response"]
        conn.close()
    else:
        done = call(hub.url, "POST", "/v1/responses", body)[2]
    assert done["usage"]["input_tokens_details"] == {"cached_tokens": 20}
    stored = call(hub.url, "GET", f"/v1/responses/{done['id']}")[2]
    assert stored["usage"]["input_tokens_details"] == {"cached_tokens": 20}


def test_chat_completions_relay_the_upstreams_cached_tokens(hub, fake):
    fake.enqueue(Script(usage_extra=CACHED))
    reply = call(hub.url, "POST", "/v1/chat/completions",
                 {"model": "qwen2.5-7b-instruct", "messages": ASK})[2]
    assert reply["usage"]["prompt_tokens_details"] == {"cached_tokens": 20}


ANTHROPIC_USAGE = {"input_tokens": 5, "cache_read_input_tokens": 100,
                   "cache_creation_input_tokens": 7, "output_tokens": 1}


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_cache_counts_reach_every_dialect(make_hub, upstream_anthropic, stream):
    upstream_anthropic.usage = ANTHROPIC_USAGE
    hub = make_hub({"upstream": {"kind": "anthropic", "base_url": upstream_anthropic.url}})
    usage = message(hub, MESSAGE, stream)["usage"]
    assert {k: usage[k] for k in ("input_tokens", "cache_read_input_tokens",
                                  "cache_creation_input_tokens")} == {
        "input_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 7}
    chat = call(hub.url, "POST", "/v1/chat/completions", {"model": "m", "messages": ASK})[2]
    assert chat["usage"]["prompt_tokens"] == 112                  # 5 + 100 + 7: all of it
    assert chat["usage"]["prompt_tokens_details"] == {"cached_tokens": 100}
    response = call(hub.url, "POST", "/v1/responses", {"model": "m", "input": "Hi"})[2]
    assert response["usage"]["input_tokens"] == 112
    assert response["usage"]["input_tokens_details"] == {"cached_tokens": 100}


# --- token counts ------------------------------------------------------------------------------

COUNT = {"model": "m", "system": "Be brief.",
         "messages": [{"role": "user", "content": "one two three"}]}
RESPONSES_COUNT = {"model": "m", "instructions": "Be brief.", "input": "one two three"}
# the fake's template: "<|im_start|> system Be brief. <|im_end|> <|im_start|> user one two
# three <|im_end|> <|im_start|> assistant", which its /tokenize counts by words
TEMPLATED = 13


def counts(hub) -> list:
    """(body, X-Llmhub-Token-Count) from both token count routes, for one conversation."""
    out = []
    for path, body in (("/v1/messages/count_tokens", COUNT),
                       ("/v1/responses/input_tokens", RESPONSES_COUNT)):
        status, headers, reply = call(hub.url, "POST", path, body)
        assert status == 200, reply
        out.append((reply, headers["X-Llmhub-Token-Count"]))
    return out


def test_llama_cpp_counts_the_rendered_chat_template(make_hub, fake):
    fake.llama = fake.tokenizer = True
    hub = make_hub({"upstream": {"kind": "llamacpp"}})
    assert counts(hub) == [({"input_tokens": TEMPLATED}, "counted"),
                           ({"object": "response.input_tokens", "input_tokens": TEMPLATED},
                            "counted")]
    rendered = [r.body for r in fake.requests if r.path == "/apply-template"]
    assert rendered[0] == {"messages": [{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "one two three"}]}


def test_lm_studio_has_no_tokenizer_so_both_routes_say_estimated(hub, fake):
    (anthropic, said), (openai, said_too) = counts(hub)
    assert said == said_too == "estimated"
    assert anthropic["input_tokens"] > 0 and openai["input_tokens"] > 0
    assert set(openai) == {"object", "input_tokens"} and set(anthropic) == {"input_tokens"}
    assert not [r for r in fake.requests if r.path in ("/tokenize", "/apply-template")]


def test_an_anthropic_upstream_counts_the_clients_own_body(make_hub, upstream_anthropic):
    hub = make_hub({"upstream": {"kind": "anthropic", "base_url": upstream_anthropic.url}})
    body = dict(COUNT, system=[{"type": "text", "text": "Be brief.",
                                "cache_control": {"type": "ephemeral"}}])
    status, headers, reply = call(hub.url, "POST", "/v1/messages/count_tokens", body,
                                  headers={"anthropic-beta": "token-counting-2024-11-01"})
    assert (status, reply) == (200, {"input_tokens": 321})
    assert headers["X-Llmhub-Token-Count"] == "counted"
    asked = upstream_anthropic.requests[0]
    assert asked["path"] == "/v1/messages/count_tokens" and asked["body"] == body
    assert {k.lower(): v for k, v in asked["headers"].items()}["anthropic-beta"] == \
        "token-counting-2024-11-01"
    status, headers, reply = call(hub.url, "POST", "/v1/responses/input_tokens",
                                  RESPONSES_COUNT)
    assert reply["input_tokens"] == 321 and headers["X-Llmhub-Token-Count"] == "counted"


# --- large images, held once -----------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 12


def image_message(data: str) -> dict:
    return dict(MESSAGE, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": data}}]}])


def test_an_image_reaches_an_openai_upstream_as_a_data_url(hub, fake):
    """The client's base64 is let go once it is a data: URL (no Anthropic target wants
    the client's own body): the upstream still gets the image whole."""
    data = base64.b64encode(PNG).decode()
    message(hub, image_message(data), stream=False)
    part = fake.chat_requests()[-1].body["messages"][0]["content"][1]
    assert part == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}


def test_an_anthropic_fallback_gets_the_clients_own_image(make_hub, fake, upstream_anthropic):
    """A pool that may end on Anthropic keeps the client's body, image and all."""
    hub = make_hub({"upstream:claude": {"kind": "anthropic", "base_url": upstream_anthropic.url},
                    "fallbacks": {"qwen2.5-7b-instruct": "claude:claude-sonnet-4-5"}})
    fake.enqueue(Script(status=503, error="down"), Script(status=503, error="down"),
                 Script(status=503, error="down"))
    data = base64.b64encode(PNG).decode()
    message(hub, image_message(data), stream=False)
    sent = upstream_anthropic.requests[-1]["body"]["messages"][0]["content"][1]
    assert sent["source"]["data"] == data


def test_base64_is_checked_past_its_first_megabyte(hub, fake, monkeypatch):
    monkeypatch.setattr(checks, "BASE64_STEP", 8)
    for bad in ("QUJDREVG!!==", "QUJDREVGQQ==QUJD", "QUJDREVGQ"):
        status, _, body = call(hub.url, "POST", "/v1/messages", image_message(bad))
        assert status == 400 and "invalid base64 data" in body["error"]["message"], bad
    for raw in (b"", b"a", b"ab", b"abc", PNG):
        text = base64.b64encode(raw).decode()
        if raw:
            assert checks.decoded_size(text) == len(raw) == len(base64.b64decode(text))
    assert not fake.chat_requests()
