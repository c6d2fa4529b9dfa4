"""The official `openai` Python client works unchanged against the hub (EDISON seed, task 13).

This is a compatibility check, not a dependency: it is skipped where `openai` is not
installed; .ci/run installs it so CI runs it.
"""

import json
import threading

import pytest

from fake_anthropic import FakeAnthropic
from fake_lmstudio import Script

openai = pytest.importorskip("openai", reason="the openai package is not installed")


@pytest.fixture
def client(hub):
    return openai.OpenAI(api_key="not-needed", base_url=hub.url + "/v1", max_retries=0)


def test_seed_example_non_streaming(client):
    response = client.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "Hello!"}], stream=False)
    assert response.choices[0].message.content == "Hello from the fake!"
    assert response.usage.total_tokens == 11     # the fake counts 6 prompt characters
    assert response.choices[0].finish_reason == "stop"


def test_streaming_with_usage(client):
    chunks = list(client.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "Hi"}], stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake!"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert len({c.id for c in chunks}) == 1


def test_tool_calls_come_back(client, fake):
    fake.enqueue(Script(raw_chunks=[
        {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
             {"index": 0, "id": "call_9", "type": "function",
              "function": {"name": "lookup", "arguments": "{\"q\": 1}"}}]},
             "finish_reason": "tool_calls"}]}]))
    response = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "use a tool"}],
        tools=[{"type": "function", "function": {"name": "lookup", "parameters": {}}}])
    call = response.choices[0].message.tool_calls[0]
    assert call.id == "call_9" and call.function.name == "lookup"
    assert call.function.arguments == "{\"q\": 1}"


def test_errors_raise_the_sdk_exceptions(client, fake):
    fake.enqueue(Script(status=404, error={"message": "Model \"nope\" not found.",
                                           "code": "model_not_found"}))
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nope", messages=[{"role": "user",
                                                                 "content": "x"}])
    assert "not found" in info.value.message
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=[{"role": "wizard",
                                                              "content": "x"}])


def test_mid_stream_error_raises_in_the_sdk(client, fake):
    fake.enqueue(Script(chunks=["partial"], error_event="Compute error."))
    stream = client.chat.completions.create(model="m", stream=True,
                                            messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.APIError, match="Compute error"):
        for _ in stream:
            pass


def test_models_list(client):
    assert [m.id for m in client.models.list()] == ["qwen2.5-7b-instruct",
                                                    "qwen3-vl-4b-instruct"]


def test_pings_do_not_disturb_the_sdk(make_hub, fake):
    hub = make_hub({"server": {"ping_interval_seconds": 0.05}})
    release = threading.Event()
    fake.enqueue(Script(hold_first=release))
    client = openai.OpenAI(api_key="x", base_url=hub.url + "/v1", max_retries=0)
    stream = client.chat.completions.create(model="m", stream=True,
                                            messages=[{"role": "user", "content": "x"}])
    threading.Timer(0.3, release.set).start()   # several pings go out before the first token
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello from the fake!"


# --- function calling end to end: a tool call streamed, its result sent back, the answer ----

WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
ASK = [{"role": "user", "content": "What is the weather in Oslo?"}]


def streamed_call(client, messages, **extra):
    """Stream a completion as an application would: gather text, tool calls, reasoning."""
    text, reasoning, calls, finish = "", "", {}, None
    for chunk in client.chat.completions.create(model="m", messages=messages, tools=WEATHER,
                                                stream=True, **extra):
        for choice in chunk.choices:
            delta = choice.delta
            text += delta.content or ""
            reasoning += getattr(delta, "reasoning_content", None) or ""
            for piece in delta.tool_calls or ():
                slot = calls.setdefault(piece.index, {"id": None, "name": "", "arguments": ""})
                slot["id"] = piece.id or slot["id"]
                slot["name"] += piece.function.name or ""
                slot["arguments"] += piece.function.arguments or ""
            finish = choice.finish_reason or finish
    return text, reasoning, [calls[i] for i in sorted(calls)], finish


def round_trip(client):
    """Turn 1 asks, the model calls the tool; turn 2 sends the result, the model answers."""
    text, reasoning, calls, finish = streamed_call(client, ASK)
    assert finish == "tool_calls" and text == ""
    assert [(c["id"], c["name"], json.loads(c["arguments"])) for c in calls] == \
        [("call_oslo", "get_weather", {"city": "Oslo"})]
    history = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": c["id"], "type": "function",
             "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls]},
        {"role": "tool", "tool_call_id": "call_oslo", "content": "{\"celsius\": 4}"}]
    answer, _, _, finish = streamed_call(client, history)
    assert finish == "stop"
    return reasoning, answer


def test_function_calling_round_trip_through_lm_studio(client, fake):
    fake.enqueue(Script(chunks=[], reasoning=["Need the ", "weather."],
                        tool_calls=[{"id": "call_oslo", "name": "get_weather",
                                     "arguments": "{\"city\": \"Oslo\"}"}]),
                 Script(chunks=["It is ", "4 °C in Oslo."]))
    reasoning, answer = round_trip(client)
    assert reasoning == "Need the weather." and answer == "It is 4 °C in Oslo."
    first, second = (r.body for r in fake.chat_requests())
    assert first["tools"] == WEATHER
    assert second["messages"][1]["tool_calls"][0]["function"]["arguments"] == \
        "{\"city\": \"Oslo\"}"
    assert second["messages"][2] == {"role": "tool", "tool_call_id": "call_oslo",
                                     "content": "{\"celsius\": 4}"}


def test_function_calling_round_trip_through_anthropic(make_hub):
    anthropic = FakeAnthropic().start()
    try:
        anthropic.replies = [
            [{"type": "thinking", "thinking": "Need the weather.", "signature": "sig-1"},
             {"type": "tool_use", "id": "call_oslo", "name": "get_weather",
              "input": {"city": "Oslo"}}],
            [{"type": "text", "text": "It is 4 °C in Oslo."}]]
        hub = make_hub({"upstream": {"kind": "anthropic", "base_url": anthropic.url,
                                     "api_key": "sk-ant"}})
        client = openai.OpenAI(api_key="x", base_url=hub.url + "/v1", max_retries=0)
        reasoning, answer = round_trip(client)
        first, second = (r["body"] for r in anthropic.requests)
    finally:
        anthropic.stop()
    assert reasoning == "Need the weather." and answer == "It is 4 °C in Oslo."
    assert first["tools"] == [{"name": "get_weather", "description": "The weather in a city",
                               "input_schema": WEATHER[0]["function"]["parameters"]}]
    assert second["messages"] == [
        {"role": "user", "content": "What is the weather in Oslo?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_oslo",
                                           "name": "get_weather", "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_oslo",
                                      "content": "{\"celsius\": 4}"}]}]


def test_a_tool_call_comes_back_whole_without_streaming_from_anthropic(make_hub):
    anthropic = FakeAnthropic().start()
    try:
        anthropic.replies = [[{"type": "text", "text": "Let me look."},
                              {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                               "input": {"city": "Oslo"}}]]
        hub = make_hub({"upstream": {"kind": "anthropic", "base_url": anthropic.url}})
        client = openai.OpenAI(api_key="x", base_url=hub.url + "/v1", max_retries=0)
        response = client.chat.completions.create(model="m", messages=ASK, tools=WEATHER,
                                                  tool_choice="required")
        sent = anthropic.requests[0]["body"]
    finally:
        anthropic.stop()
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me look."
    call = choice.message.tool_calls[0]
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == \
        ("toolu_1", "get_weather", {"city": "Oslo"})
    assert sent["tool_choice"] == {"type": "any"}


# --- the rest of the surface (issue 12) ------------------------------------------------------

def test_embeddings_float_and_base64(client, fake):
    # the SDK asks for base64 unless told otherwise, and decodes it back to floats
    default = client.embeddings.create(model="nomic-embed", input=["Hello", "world!"])
    assert [round(x, 4) for x in default.data[1].embedding] == [0.6, 0.5, -0.25]
    floats = client.embeddings.create(model="nomic-embed", input="Hi",
                                      encoding_format="float")
    assert [round(x, 4) for x in floats.data[0].embedding] == [0.2, 0.5, -0.25]
    assert default.usage.prompt_tokens == 4 and default.model == "nomic-embed"


def test_legacy_completions_streamed_and_not(client, fake):
    fake.enqueue(Script(chunks=["    return", " a + b"]), Script(chunks=["x", "y"]))
    whole = client.completions.create(model="coder", prompt="def add(a, b):\n",
                                      suffix="\n", max_tokens=16)
    assert whole.choices[0].text == "    return a + b" and whole.usage.completion_tokens == 2
    stream = client.completions.create(model="coder", prompt="p", stream=True,
                                       stream_options={"include_usage": True})
    pieces = list(stream)
    assert "".join(c.choices[0].text for c in pieces if c.choices) == "xy"
    assert pieces[-1].usage.completion_tokens == 2


def test_models_retrieve(client):
    model = client.models.retrieve("qwen2.5-7b-instruct")
    assert model.id == "qwen2.5-7b-instruct" and model.object == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_todays_request_fields_and_n(client, fake):
    fake.enqueue(Script(chunks=["a"]))
    response = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], n=2, verbosity="low",
        prompt_cache_key="session-1")
    assert [c.message.content for c in response.choices] == ["a", "A"]
    sent = fake.chat_requests()[-1].body
    assert (sent["verbosity"], sent["prompt_cache_key"], sent["n"]) == ("low", "session-1", 2)
