"""nash-llm-server's sessions dialect over real sockets: exact stream, session ids,
per-request providers behind an allow-list, Anthropic translation, summaries, no leaks."""

import json
import uuid

import pytest

from fake_anthropic import FakeAnthropic
from fake_lmstudio import FakeLMStudio, Script
from http_client import call, open_stream
from support import LogCatcher
from llmhub import logs

STREAM = "/v1/chat/completions/stream"
HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]


@pytest.fixture
def anthropic():
    server = FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture
def other():
    """An OpenAI-compatible server the hub is not configured with."""
    server = FakeLMStudio().start()
    yield server
    server.stop()


def lines(hub, body, headers=None):
    conn, response = open_stream(hub.url, STREAM, body, headers)
    raw = response.read().decode()
    conn.close()
    return response, [line for line in raw.split("\n") if line.startswith("data: ")]


def test_the_stream_is_exactly_session_content_session_done(hub):
    response, data = lines(hub, {"messages": HELLO, "model": "m"})
    assert response.status == 200
    session = json.loads(data[0][6:])["session_id"]
    assert uuid.UUID(session).version == 4
    assert data[0] == data[-2] == f'data: {{"session_id":"{session}"}}'
    assert data[-1] == "data: [DONE]"
    assert [json.loads(line[6:]) for line in data[1:-2]] == [
        {"content": c} for c in ["Hello", " from", " the", " fake", "!"]]
    assert hub.hub.sessions.get(session)["first_seen"] > 0
    assert call(hub.url, "GET", "/v1/threads/x")[0] == 404   # nothing stored


def test_a_given_session_id_is_echoed_and_must_be_a_uuid(hub):
    given = str(uuid.uuid4())
    _, data = lines(hub, {"messages": HELLO, "model": "m", "session_id": given})
    assert json.loads(data[0][6:]) == json.loads(data[-2][6:]) == {"session_id": given}
    status, _, error = call(hub.url, "POST", STREAM, {"messages": HELLO, "model": "m",
                                                      "session_id": "not-a-uuid"})
    assert status == 400 and error["code"] and "UUID" in error["error"]
    assert call(hub.url, "POST", STREAM, {"messages": HELLO})[0] == 400    # model required


def test_an_address_off_the_allow_list_is_refused_and_never_called(hub, other):
    status, _, error = call(hub.url, "POST", STREAM, {
        "messages": HELLO, "model": "m", "api_key": "sk-x", "api_base_url": other.url})
    assert status == 403 and "[providers] allowed" in error["error"]
    assert not other.requests


def test_an_allowed_provider_gets_the_clients_key(make_hub, other):
    hub = make_hub({"providers": {"allowed": other.url}})
    _, data = lines(hub, {"messages": HELLO, "model": "gpt-x", "api_key": "sk-client",
                          "api_base_url": other.url + "/"},
                    headers={"Helicone-Auth": "Bearer hel-1"})
    assert data[-1] == "data: [DONE]"
    sent = other.chat_requests()[0]
    assert sent.headers["Authorization"] == "Bearer sk-client"
    assert sent.headers["Helicone-Auth"] == "Bearer hel-1"
    assert sent.body["model"] == "gpt-x"                # no aliases for a chosen provider


def test_anthropic_providers_use_the_messages_api(make_hub, anthropic):
    hub = make_hub({"providers": {"anthropic": anthropic.url}})
    _, data = lines(hub, {"messages": HELLO, "model": "claude-fake", "api_key": "sk-ant-1",
                          "api_base_url": anthropic.url})
    assert [json.loads(line[6:]).get("content") for line in data[1:-2]] == ["Hi", " there", "!"]
    sent = anthropic.requests[0]
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == "sk-ant-1"
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert sent["body"] == {"model": "claude-fake", "stream": True, "max_tokens": 1024,
                            "system": "Be brief.",
                            "messages": [{"role": "user", "content": "Hello"}]}


def test_anthropic_through_other_dialects_too(make_hub, anthropic):
    hub = make_hub({"upstream": {"kind": "anthropic", "base_url": anthropic.url,
                                 "api_key": "sk-conf"}})
    status, _, body = call(hub.url, "POST", "/v1/chat/completions", {
        "model": "claude-fake", "messages": HELLO, "max_tokens": 50, "stop": "END"})
    assert status == 200 and body["choices"][0]["message"]["content"] == "Hi there!"
    assert body["usage"] == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    assert anthropic.requests[0]["body"]["stop_sequences"] == ["END"]
    assert anthropic.requests[0]["body"]["max_tokens"] == 50


def test_the_key_never_reaches_an_error_body_or_a_log(make_hub, other):
    hub = make_hub({"providers": {"allowed": other.url}, "server": {"log_level": "debug"}})
    other.enqueue(Script(status=401, error={"message": "Incorrect API key provided: "
                                                       "sk-secret-123."}))
    out = LogCatcher()
    logs.setup("debug", "json", stream=out)
    try:
        status, _, error = call(hub.url, "POST", STREAM, {
            "messages": HELLO, "model": "m", "api_key": "sk-secret-123",
            "api_base_url": other.url})
        logged = out.wait_lines(1)
    finally:
        logs.setup("warning", "json")
    assert status == 401 and "sk-secret-123" not in json.dumps(error)
    assert "***" in error["error"]
    assert "sk-secret-123" not in logged


def test_summarize_reduces_a_conversation(hub, fake):
    fake.enqueue(Script(chunks=["They greeted each other."]))
    conversation = HELLO + [{"role": "assistant", "content": "Hi! " * 50}]
    session = str(uuid.uuid4())
    status, _, body = call(hub.url, "POST", "/v1/chat/summarize", {
        "messages": conversation, "model": "m", "session_id": session})
    assert status == 200 and body["success"] is True
    assert body["summary"] == "They greeted each other."
    assert body["messages"] == [{"role": "assistant", "content": "Previous conversation "
                                 "summary:\nThey greeted each other."}]
    assert body["token_reduction"]["before"] > body["token_reduction"]["after"]
    assert body["session_id"] == session
    assert fake.chat_requests()[0].body["messages"][0]["content"].startswith("Summarise")


def test_summarize_failures_say_so_with_a_status(hub, fake, other):
    fake.enqueue(Script(status=500, error="down"))
    status, _, body = call(hub.url, "POST", "/v1/chat/summarize", {"messages": HELLO,
                                                                   "model": "m"})
    assert status == 502 and body == {"success": False, "error": "down"}
    status, _, body = call(hub.url, "POST", "/v1/chat/summarize", {
        "messages": HELLO, "model": "m", "api_base_url": other.url})
    assert status == 403 and body["success"] is False
