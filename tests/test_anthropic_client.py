"""Anthropic's Messages API inbound (/v1/messages), driven by the official `anthropic` SDK
over real sockets, against the fake LM Studio and the fake Anthropic upstream.

The SDK tests skip where `anthropic` is not installed; .ci/run installs it. The raw-HTTP
tests (the Claude-Code-shaped request, errors, threads, cancel) run everywhere.
"""

import json
import threading

import pytest

from fake_lmstudio import Script
from http_client import call, open_stream, sse_events
from support import wait_for

from llmhub.wire import sse

ASK = [{"role": "user", "content": "What is the weather in Oslo?"}]
WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}
CALL = {"id": "call_oslo", "name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}
NEVER = threading.Event()


def sdk():
    return pytest.importorskip("anthropic", reason="the anthropic package is not installed")


def client_for(hub, key="not-needed"):
    return sdk().Anthropic(api_key=key, base_url=hub.url, max_retries=0)


# --- the SDK against a local model ----------------------------------------------------------

def test_create_returns_a_message(hub, fake):
    reply = client_for(hub).messages.create(model="claude-sonnet-4-5", max_tokens=100,
                                            messages=ASK)
    assert reply.type == "message" and reply.role == "assistant"
    assert reply.id.startswith("msg_") and reply.model == "claude-sonnet-4-5"
    assert [b.type for b in reply.content] == ["text"]
    assert reply.content[0].text == "Hello from the fake!"
    assert reply.stop_reason == "end_turn" and reply.stop_sequence is None
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (28, 5)
    sent = fake.chat_requests()[0].body
    assert sent["max_tokens"] == 100 and sent["messages"] == ASK


def test_stream_assembles_the_same_message(hub, fake):
    with client_for(hub).messages.stream(model="m", max_tokens=50, messages=ASK) as stream:
        names = [event.type for event in stream]
        final = stream.get_final_message()
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert names.count("content_block_start") == 1 and "message_delta" in names
    assert final.content[0].text == "Hello from the fake!" and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 5


def test_every_delta_frame_is_what_the_encoder_writes(hub, fake):
    # Deltas are filled into a template per block (wire.SSETemplate): each frame must be
    # byte for byte the generic encoding, whatever the text holds (the fake sends a call's
    # arguments in two halves).
    text = ["Привет, ", '"quoted" \\ back', "slash\nnew line\t", "🙂\u2028", "\x00end"]
    fake.enqueue(Script(chunks=text, reasoning=["Need ", "🙂 \"it\""], tool_calls=[CALL]))
    conn, response = open_stream(hub.url, "/v1/messages", {
        "model": "m", "max_tokens": 200, "stream": True, "tools": [WEATHER], "messages": ASK})
    raw = response.read()
    conn.close()
    deltas: dict = {}
    for frame in (f + b"\n\n" for f in raw.split(b"\n\n") if f.strip()):
        name, data = frame.decode().split("\n", 1)
        event = json.loads(data.removeprefix("data: "))
        if event["type"] == "content_block_delta":
            assert frame == sse(event, event="content_block_delta")
            delta = event["delta"]
            deltas.setdefault((event["index"], delta["type"]), []).append(
                delta[{"text_delta": "text", "thinking_delta": "thinking",
                       "signature_delta": "signature",
                       "input_json_delta": "partial_json"}[delta["type"]]])
    assert deltas == {(0, "thinking_delta"): ["Need ", '🙂 "it"'],
                      (0, "signature_delta"): [""], (1, "text_delta"): text,
                      (2, "input_json_delta"): ['{"city":', ' "Oslo"}']}


def tool_round_trip(client, stream: bool):
    """Ask, get a tool_use, send its tool_result, get the answer; returns both replies."""
    def ask(messages):
        kwargs = dict(model="m", max_tokens=200, tools=[WEATHER], messages=messages)
        if not stream:
            return client.messages.create(**kwargs)
        with client.messages.stream(**kwargs) as events:
            return events.get_final_message()

    first = ask(ASK)
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert (use.name, use.input) == ("get_weather", {"city": "Oslo"})
    second = ask(ASK + [{"role": "assistant", "content": first.content},
                        {"role": "user", "content": [{"type": "tool_result",
                                                      "tool_use_id": use.id,
                                                      "content": "4 °C"}]}])
    return first, second


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_round_trip_through_lm_studio(hub, fake, stream):
    fake.enqueue(Script(chunks=[], reasoning=["Need ", "the weather."], tool_calls=[CALL]),
                 Script(chunks=["It is ", "4 °C."]))
    first, second = tool_round_trip(client_for(hub), stream)
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    assert first.content[0].thinking == "Need the weather."
    assert first.content[1].id == "call_oslo"
    assert second.content[0].text == "It is 4 °C." and second.stop_reason == "end_turn"
    sent = fake.chat_requests()
    assert sent[0].body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": WEATHER["input_schema"]}}]
    history = sent[1].body["messages"]
    assert history[1]["tool_calls"][0]["id"] == "call_oslo"
    assert "reasoning_content" not in history[1]        # thinking is not sent back
    assert history[2] == {"role": "tool", "tool_call_id": "call_oslo", "content": "4 °C"}


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_round_trip_through_an_anthropic_upstream(make_hub, upstream_anthropic,
                                                         stream):
    upstream_anthropic.replies = [
        [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
          "input": {"city": "Oslo"}}],
        [{"type": "text", "text": "It is 4 °C."}]]
    hub = make_hub({"upstream": {"kind": "anthropic", "base_url": upstream_anthropic.url}})
    first, second = tool_round_trip(client_for(hub), stream)
    assert second.content[0].text == "It is 4 °C."
    passed = upstream_anthropic.requests[1]["body"]
    assert passed["tools"] == [WEATHER]
    assert passed["messages"][1:] == [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                                           "name": "get_weather", "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": "4 °C"}]}]


def test_count_tokens_estimates_messages_system_and_tools(hub):
    client = client_for(hub)
    plain = client.messages.count_tokens(model="m", messages=ASK)
    more = client.messages.count_tokens(model="m", messages=ASK, system="Be brief.",
                                        tools=[WEATHER])
    assert plain.input_tokens > 0 and more.input_tokens > plain.input_tokens


def test_a_wrong_key_is_401_in_anthropic_shape(make_hub):
    hub = make_hub({"server": {"api_keys": "sk-hub"}})
    with pytest.raises(sdk().AuthenticationError) as info:
        client_for(hub, "sk-wrong").messages.create(model="m", max_tokens=5, messages=ASK)
    assert info.value.status_code == 401
    assert info.value.body["error"]["type"] == "authentication_error"
    reply = client_for(hub, "sk-hub").messages.create(model="m", max_tokens=5, messages=ASK)
    assert reply.content[0].text == "Hello from the fake!"


def test_models_list_in_anthropic_shape(make_hub):
    hub = make_hub({"aliases": {"claude-sonnet-4-5": "qwen2.5-7b-instruct",
                                "claude-*": "qwen2.5-7b-instruct"}})
    models = client_for(hub).models.list()
    assert [m.id for m in models.data] == ["qwen2.5-7b-instruct", "qwen3-vl-4b-instruct",
                                          "claude-sonnet-4-5"]
    assert models.data[0].type == "model" and models.data[0].display_name
    _, _, openai_shape = call(hub.url, "GET", "/v1/models")
    assert openai_shape["object"] == "list"


# --- what Claude Code sends -------------------------------------------------------------------

CLAUDE_CODE = {
    "model": "claude-sonnet-4-5-20250929", "max_tokens": 32000, "stream": True,
    "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.3; "
                                        "cch=8f3a1c;"},
               {"type": "text", "text": "You are Claude Code.",
                "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {"role": "system", "content": "Project rules: be terse."},
        {"role": "user", "content": [{"type": "text", "text": "List the files.",
                                      "cache_control": {"type": "ephemeral"}}]}],
    "tools": [dict(WEATHER, cache_control={"type": "ephemeral"})],
    "metadata": {"user_id": "user_abc_account_def_session_0f3c"},
    "thinking": {"type": "adaptive"}, "context_management": {"edits": []},
    "output_config": {"effort": "medium"}, "temperature": 1}


def test_a_claude_code_request_reaches_the_model_clean(make_hub, fake):
    hub = make_hub({"aliases": {"claude-*": "qwen2.5-7b-instruct"}})
    conn, response = open_stream(hub.url, "/v1/messages?beta=true", CLAUDE_CODE, headers={
        "anthropic-version": "2023-06-01", "x-api-key": "whatever",
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14"})
    events = sse_events(response)
    conn.close()
    assert response.status == 200 and events[0][0] == "message_start"
    assert events[-1][0] == "message_stop"
    sent = fake.chat_requests()[0].body
    assert sent["model"] == "qwen2.5-7b-instruct"
    assert sent["messages"] == [
        {"role": "system", "content": "You are Claude Code.\n\nProject rules: be terse."},
        {"role": "user", "content": [{"type": "text", "text": "List the files."}]}]
    assert "x-anthropic-billing-header" not in json.dumps(sent)
    assert "cache_control" not in json.dumps(sent)
    assert sent["tools"][0]["function"]["name"] == "get_weather"


BETAS = "claude-code-20250219,prompt-caching-scope-2026-01-05,context-management-2025-06-27"


@pytest.mark.parametrize("stream", [False, True])
def test_a_claude_code_request_reaches_an_anthropic_upstream_as_it_came(
        make_hub, upstream_anthropic, stream):
    """Same wire, same bytes: cache marks, system blocks, betas, context management and
    server tools reach Anthropic; only the model is renamed and system-role messages folded."""
    hub = make_hub({"upstream": {"kind": "anthropic", "base_url": upstream_anthropic.url},
                    "aliases": {"claude-*": "claude-haiku-local"}})
    search = {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}
    document = {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                               "data": "README"}}
    body = dict(CLAUDE_CODE, stream=stream, tools=CLAUDE_CODE["tools"] + [search],
                messages=CLAUDE_CODE["messages"] + [
                    {"role": "assistant", "content": "Which ones?"},
                    {"role": "user", "content": [document, {"type": "text", "text": "All."}]}])
    status, _, _ = call(hub.url, "POST", "/v1/messages?beta=true", body, headers={
        "anthropic-version": "2023-06-01", "anthropic-beta": BETAS, "x-api-key": "whatever"})
    assert status == 200
    arrived = upstream_anthropic.requests[0]
    headers = {k.lower(): v for k, v in arrived["headers"].items()}
    assert headers["anthropic-beta"] == BETAS and headers["anthropic-version"] == "2023-06-01"
    assert arrived["body"] == dict(
        body, model="claude-haiku-local", stream=True,
        system=CLAUDE_CODE["system"] + [{"type": "text", "text": "Project rules: be terse."}],
        messages=body["messages"][1:])


def test_the_hub_default_version_goes_when_the_client_sends_none(make_hub,
                                                                 upstream_anthropic):
    hub = make_hub({"upstream": {"kind": "anthropic", "base_url": upstream_anthropic.url}})
    body = {"model": "m", "max_tokens": 5, "system": "Be brief.", "messages": ASK}
    assert call(hub.url, "POST", "/v1/messages", body)[0] == 200
    arrived = upstream_anthropic.requests[0]
    headers = {k.lower(): v for k, v in arrived["headers"].items()}
    assert headers["anthropic-version"] == "2023-06-01" and "anthropic-beta" not in headers
    assert arrived["body"] == dict(body, stream=True)      # a string system stays a string


@pytest.mark.parametrize("body, param", [
    ({"model": "m", "messages": ASK}, "max_tokens"),
    ({"max_tokens": 5, "messages": ASK}, "model"),
    ({"model": "m", "max_tokens": 5, "messages": "hi"}, "messages"),
    ({"model": "m", "max_tokens": 5, "messages": ASK, "temperature": 3}, "temperature"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {}}]}]}, "messages[0].content[0].type"),
    ({"model": "m", "max_tokens": 5, "messages": ASK,
      "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
    ({"model": "m", "max_tokens": 5, "messages": ASK, "tool_choice": {"type": "tool"}},
     "tool_choice.name"),
])
def test_bad_requests_are_400_in_anthropic_shape_naming_the_field(hub, body, param):
    status, _, reply = call(hub.url, "POST", "/v1/messages", body)
    assert status == 400 and reply["type"] == "error"
    assert reply["error"]["type"] == "invalid_request_error"
    assert param.split("[")[0] in reply["error"]["message"]


def test_an_upstream_failure_after_the_first_byte_is_an_error_event(hub, fake):
    fake.enqueue(Script(chunks=["partial"], error_event="Compute error."))
    conn, response = open_stream(hub.url, "/v1/messages", {
        "model": "m", "max_tokens": 5, "stream": True, "messages": ASK})
    events = sse_events(response)
    conn.close()
    assert events[-1][0] == "error"
    error = json.loads(events[-1][1])
    assert error["type"] == "error" and "Compute error" in error["error"]["message"]


def test_an_unknown_model_before_the_first_byte_keeps_its_status(hub, fake):
    fake.enqueue(Script(status=404, error={"message": "Model \"nope\" not found."}))
    status, _, reply = call(hub.url, "POST", "/v1/messages", {
        "model": "nope", "max_tokens": 5, "stream": True, "messages": ASK})
    assert status == 404 and reply["error"]["type"] == "not_found_error"


@pytest.mark.parametrize("hold_after", [None, 1])     # in the prefill, or mid-answer
def test_a_client_that_drops_the_stream_stops_the_model(hub, fake, hold_after):
    fake.enqueue(Script(chunks=["one", "two"], hold_first=NEVER, hold_after=hold_after))
    conn, response = open_stream(hub.url, "/v1/messages", {
        "model": "m", "max_tokens": 5, "stream": True, "messages": ASK})
    response.readline()
    conn.close()
    assert fake.aborted.wait(5)


# --- a conversation kept in a thread ----------------------------------------------------------

def test_with_store_a_session_keeps_only_the_new_tail(make_hub, fake):
    hub = make_hub({"anthropic": {"store": "true"}})
    headers = {"X-Claude-Code-Session-Id": "0f3c-77"}
    first = {"model": "m", "max_tokens": 50, "messages": ASK}
    _, _, reply = call(hub.url, "POST", "/v1/messages", first, headers=headers)
    again = dict(first, messages=ASK + [
        {"role": "assistant", "content": reply["content"]},
        {"role": "user", "content": "And tomorrow?"}])
    call(hub.url, "POST", "/v1/messages", again, headers=headers)
    status, _, stored = call(hub.url, "GET", "/v1/threads/claude-0f3c-77/messages")
    assert status == 200
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", ASK[0]["content"]), ("assistant", "Hello from the fake!"),
        ("user", "And tomorrow?"), ("assistant", "Hello from the fake!")]
    assert len(fake.chat_requests()[1].body["messages"]) == 3   # the client's, as it sent


def test_thinking_passes_through_an_anthropic_upstream_with_its_signature(
        make_hub, upstream_anthropic):
    upstream_anthropic.replies = [
        [{"type": "thinking", "thinking": "Cold, surely.", "signature": "sig-9"},
         {"type": "text", "text": "Cold."}],
        [{"type": "text", "text": "Still cold."}]]
    hub = make_hub({"upstream": {"kind": "anthropic", "base_url": upstream_anthropic.url}})
    client = client_for(hub)
    thinking = {"type": "enabled", "budget_tokens": 1024}
    with client.messages.stream(model="m", max_tokens=2048, messages=ASK,
                                thinking=thinking) as stream:
        first = stream.get_final_message()
    assert [(b.type, getattr(b, "signature", None)) for b in first.content] == [
        ("thinking", "sig-9"), ("text", None)]
    client.messages.create(model="m", max_tokens=2048, thinking=thinking, messages=ASK + [
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": "And now?"}])
    passed = upstream_anthropic.requests[1]["body"]
    assert passed["thinking"] == thinking
    assert passed["messages"][1]["content"][0] == {
        "type": "thinking", "thinking": "Cold, surely.", "signature": "sig-9"}


def test_count_tokens_asks_a_llama_cpp_tokenizer_and_remembers_one_is_missing(make_hub,
                                                                              fake):
    hub = make_hub({"upstream": {"kind": "openai"}})
    body = {"model": "m", "messages": [{"role": "user", "content": "one two three"}]}
    fake.tokenizer, fake.template = True, False           # a llama-server without templates
    _, headers, counted = call(hub.url, "POST", "/v1/messages/count_tokens", body)
    assert counted == {"input_tokens": 4}                  # "user:", "one", "two", "three"
    assert headers["X-Llmhub-Token-Count"] == "counted"
    fake.tokenizer = False
    other = make_hub({"upstream": {"kind": "openai"}})
    estimates = [call(other.url, "POST", "/v1/messages/count_tokens", body)[2]
                 for _ in range(2)]
    assert estimates[0] == estimates[1] and estimates[0]["input_tokens"] > 0
    asked = [r for r in fake.requests if r.path == "/tokenize"]
    assert len(asked) == 2        # once for the first hub, once for the second: then never


def test_a_full_queue_is_529_overloaded(make_hub, fake):
    hub = make_hub({"upstream": {"max_concurrent": 1, "max_queued": 1}})
    fake.enqueue(Script(hold_first=NEVER), Script())
    body = {"model": "m", "max_tokens": 5, "stream": True, "messages": ASK}
    first = open_stream(hub.url, "/v1/messages", body)        # running
    second = threading.Thread(target=call, args=(hub.url, "POST", "/v1/messages",
                                                 dict(body, stream=False)), daemon=True)
    second.start()                                             # waiting for the slot
    assert fake.wait_requests(1)
    gate = hub.hub.engine.resolver.default_upstream.gate
    assert wait_for(lambda: gate.queued == 1)
    status, _, reply = call(hub.url, "POST", "/v1/messages", body)
    assert status == 529 and reply["error"]["type"] == "overloaded_error"
    status, _, reply = call(hub.url, "POST", "/v1/chat/completions",
                            {"model": "m", "messages": ASK})
    assert status == 503 and reply["error"]["code"] == "queue_full"
    first[0].close()
