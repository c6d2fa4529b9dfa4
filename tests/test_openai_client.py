"""The official `openai` Python client works unchanged against the hub (EDISON seed, task 13).

This is a compatibility check, not a dependency: it is skipped where `openai` is not
installed; .ci/run installs it so CI runs it.
"""

import threading

import pytest

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
