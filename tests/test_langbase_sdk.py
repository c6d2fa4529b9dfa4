"""The official Langbase Python SDK works against the hub with only `base_url` changed.

A compatibility check, not a dependency: skipped where `langbase` is not installed;
.ci/run installs it so CI runs it.
"""

import pytest

from fake_lmstudio import Script

langbase = pytest.importorskip("langbase", reason="the langbase package is not installed")


@pytest.fixture
def lb(hub):
    return langbase.Langbase(api_key="any-key", base_url=hub.url)


def test_run_and_continue_a_thread(lb, fake):
    first = lb.pipes.run(api_key="pipe_key", messages=[{"role": "user", "content": "Hi"}])
    assert first["completion"] == "Hello from the fake!"
    assert first["choices"][0]["message"]["content"] == "Hello from the fake!"
    thread_id = first["threadId"]
    second = lb.pipes.run(api_key="pipe_key", thread_id=thread_id,
                          messages=[{"role": "user", "content": "More"}])
    assert second["threadId"] == thread_id
    assert len(fake.chat_requests()[-1].body["messages"]) == 3
    listed = lb.threads.messages.list(thread_id)
    assert [m["role"] for m in listed] == ["user", "assistant", "user", "assistant"]


def test_stream_through_the_sdk_helpers(lb):
    response = lb.pipes.run(api_key="pipe_key", stream=True,
                            messages=[{"role": "user", "content": "Hi"}])
    assert response["thread_id"]
    assert langbase.collect_stream_text(response["stream"]) == "Hello from the fake!"


def test_tool_calls_through_the_sdk(lb, fake):
    fake.enqueue(Script(raw_chunks=[{
        "id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
            {"index": 0, "id": "call_1", "type": "function",
             "function": {"name": "f", "arguments": "{}"}}]}, "finish_reason": "tool_calls"}]}]))
    response = lb.pipes.run(api_key="k", messages=[{"role": "user", "content": "x"}],
                            tools=[{"type": "function", "function": {"name": "f"}}])
    assert langbase.get_tools_from_run(response)[0]["id"] == "call_1"


def test_threads_api_through_the_sdk(lb):
    thread = lb.threads.create(thread_id="sdk-thread", metadata={"a": "1"},
                               messages=[{"role": "user", "content": "hello"}])
    assert thread["id"] == "sdk-thread" and thread["object"] == "thread"
    added = lb.threads.append("sdk-thread", [{"role": "assistant", "content": "hi!"}])
    assert added[0]["content"] == "hi!"
    assert lb.threads.update("sdk-thread", {"b": "2"})["metadata"] == {"a": "1", "b": "2"}
    assert lb.threads.get("sdk-thread")["metadata"]["b"] == "2"
    assert lb.threads.delete("sdk-thread") == {"success": True}
    with pytest.raises(langbase.NotFoundError):
        lb.threads.get("sdk-thread")
    with pytest.raises(langbase.ConflictError):
        lb.threads.create(thread_id="dup")
        lb.threads.create(thread_id="dup")


def test_unknown_pipe_raises_not_found(lb):
    with pytest.raises(langbase.NotFoundError, match="Pipe not found"):
        lb.pipes.run(name="nope", messages=[{"role": "user", "content": "x"}])
