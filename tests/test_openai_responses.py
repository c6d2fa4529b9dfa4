"""OpenAI's Responses and Conversations APIs (/v1/responses, /v1/conversations) over real
sockets, driven by the official `openai` client where it is installed (.ci/run installs it)
and by raw HTTP for what the client hides (event order, resume, errors)."""

import json
import threading

import pytest

from fake_lmstudio import Script
from http_client import call, open_stream, sse_events
from support import read_until

openai = pytest.importorskip("openai", reason="the openai package is not installed")

NEVER = threading.Event()
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
CALL = {"id": "call_oslo", "name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}


@pytest.fixture
def client(hub):
    return openai.OpenAI(api_key="x", base_url=hub.url + "/v1", max_retries=0)


def sent_messages(fake, n=-1) -> list:
    return [(m["role"], m.get("content")) for m in fake.chat_requests()[n].body["messages"]]


# --- create ----------------------------------------------------------------------------------

def test_create_returns_a_stored_response(client, fake):
    response = client.responses.create(model="m", input="Hello!", instructions="Be brief.")
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.output_text == "Hello from the fake!"
    assert response.instructions == "Be brief."
    assert response.usage.input_tokens == 15 and response.usage.output_tokens == 5
    assert sent_messages(fake) == [("system", "Be brief."), ("user", "Hello!")]
    again = client.responses.retrieve(response.id)
    assert again.output_text == "Hello from the fake!" and again.status == "completed"
    assert [i.type for i in again.output] == ["message"]


def test_the_stream_helper_assembles_the_final_response(client, fake):
    fake.enqueue(Script(chunks=["Hi", " there"], reasoning=["Think", "ing."]))
    with client.responses.stream(model="m", input="Hello!") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.reasoning_text.delta" in kinds and "response.output_text.delta" in kinds
    assert final.output_text == "Hi there"
    assert [i.type for i in final.output] == ["reasoning", "message"]
    assert final.output[0].content[0].text == "Thinking."


def test_stream_events_come_in_order_with_sequence_numbers(hub, fake):
    conn, response = open_stream(hub.url, "/v1/responses",
                                 {"model": "m", "input": "Hello!", "stream": True})
    events = [(name, json.loads(data)) for name, data in sse_events(response)]
    conn.close()
    names = [name for name, _ in events]
    assert names == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added"] + ["response.output_text.delta"] * 5 + [
        "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    item_id = events[2][1]["item"]["id"]
    assert {data.get("item_id") for _, data in events[3:-2]} == {item_id}


# --- state: chains and conversations ---------------------------------------------------------

def test_previous_response_id_across_three_turns_and_instructions_do_not_carry(client, fake):
    fake.enqueue(Script(chunks=["One."]), Script(chunks=["Two."]), Script(chunks=["Three."]))
    first = client.responses.create(model="m", input="Count.", instructions="Be terse.")
    second = client.responses.create(model="m", input="Again.", previous_response_id=first.id)
    third = client.responses.create(model="m", input="Last.", previous_response_id=second.id)
    assert third.previous_response_id == second.id and third.output_text == "Three."
    assert sent_messages(fake) == [("user", "Count."), ("assistant", "One."),
                                   ("user", "Again."), ("assistant", "Two."),
                                   ("user", "Last.")]
    branch = client.responses.create(model="m", input="Other.", previous_response_id=first.id)
    assert branch.status == "completed"
    assert sent_messages(fake)[-2:] == [("assistant", "One."), ("user", "Other.")]


def test_a_conversation_is_a_thread(client, hub, fake):
    fake.enqueue(Script(chunks=["Hi."]), Script(chunks=["Again."]))
    conversation = client.conversations.create(metadata={"topic": "demo"})
    client.responses.create(model="m", input="Hello!", conversation=conversation.id)
    reply = client.responses.create(model="m", input="More?", conversation=conversation.id)
    assert reply.conversation.id == conversation.id
    assert sent_messages(fake) == [("user", "Hello!"), ("assistant", "Hi."),
                                   ("user", "More?")]
    items = client.conversations.items.list(conversation.id, order="asc")
    assert [(i.type, i.role) for i in items.data] == [("message", "user"),
                                                      ("message", "assistant")] * 2
    status, _, stored = call(hub.url, "GET", f"/v1/threads/{conversation.id}/messages")
    assert status == 200 and [m["content"] for m in stored][-1] == "Again."


def test_the_conversations_calls(client):
    conversation = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "Remember 7."}])
    assert client.conversations.retrieve(conversation.id).id == conversation.id
    updated = client.conversations.update(conversation.id, metadata={"k": "v"})
    assert updated.metadata == {"k": "v"}
    added = client.conversations.items.create(conversation.id, items=[
        {"type": "message", "role": "assistant", "content": "Noted."}])
    item = client.conversations.items.retrieve(added.data[0].id,
                                               conversation_id=conversation.id)
    assert item.content[0].text == "Noted."
    client.conversations.items.delete(added.data[0].id, conversation_id=conversation.id)
    assert len(client.conversations.items.list(conversation.id).data) == 1
    assert client.conversations.delete(conversation.id).deleted
    with pytest.raises(openai.NotFoundError) as gone:      # in OpenAI's words, not Langbase's
        client.conversations.retrieve(conversation.id)
    assert (gone.value.code, gone.value.param) == ("conversation_not_found", "conversation_id")
    assert gone.value.message.endswith(f"Conversation with id '{conversation.id}' not found.")


# --- tools -----------------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
def test_a_function_tool_round_trip(client, fake, stream):
    fake.enqueue(Script(chunks=[], tool_calls=[CALL]), Script(chunks=["4 °C in Oslo."]))

    def ask(**kwargs):
        if not stream:
            return client.responses.create(model="m", tools=[WEATHER], **kwargs)
        with client.responses.stream(model="m", tools=[WEATHER], **kwargs) as events:
            return events.get_final_response()

    first = ask(input="Weather in Oslo?")
    call_item = next(i for i in first.output if i.type == "function_call")
    assert (call_item.call_id, call_item.name, json.loads(call_item.arguments)) == \
        ("call_oslo", "get_weather", {"city": "Oslo"})
    second = ask(previous_response_id=first.id, input=[
        {"type": "function_call_output", "call_id": "call_oslo", "output": "4 °C"}])
    assert second.output_text == "4 °C in Oslo."
    body = fake.chat_requests()[-1].body
    assert body["tools"][0]["function"]["name"] == "get_weather"
    assert body["messages"][1]["tool_calls"][0]["id"] == "call_oslo"
    assert body["messages"][2] == {"role": "tool", "content": "4 °C", "tool_call_id":
                                   "call_oslo"}


# --- background, cancel, resume --------------------------------------------------------------

def test_background_runs_with_no_client_and_cancel_stops_the_model(client, fake):
    fake.enqueue(Script(chunks=["a", "b"], hold_first=NEVER, hold_after=1))
    response = client.responses.create(model="m", input="Long job.", background=True)
    assert response.status in ("queued", "in_progress") and response.background
    assert fake.wait_requests(1)
    assert client.responses.retrieve(response.id).status in ("queued", "in_progress")
    cancelled = client.responses.cancel(response.id)
    assert cancelled.status == "cancelled"
    assert fake.aborted.wait(2)
    assert client.responses.retrieve(response.id).output_text == "a"   # the partial answer
    assert client.responses.cancel(response.id).status == "cancelled"  # unchanged


def test_a_dropped_stream_resumes_after_a_sequence_number(client, hub, fake):
    release = threading.Event()
    fake.enqueue(Script(chunks=["one", " two", " three"], hold_first=release, hold_after=1))
    conn, response = open_stream(hub.url, "/v1/responses",
                                 {"model": "m", "input": "Count.", "stream": True})
    seen = read_until(response, "response.output_text.delta")
    last = json.loads(seen[-1]["data"]) if isinstance(seen[-1]["data"], str) else seen[-1]["data"]
    conn.close()                                   # dropped; the run waits for a resume
    release.set()
    rest = client.responses.retrieve(last["response_id"] if "response_id" in last else
                                     response_id_of(seen), stream=True,
                                     starting_after=last["sequence_number"])
    events = list(rest)
    assert events[0].sequence_number == last["sequence_number"] + 1
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == " two three" and events[-1].type == "response.completed"
    assert events[-1].response.output_text == "one two three"


def response_id_of(events: list) -> str:
    first = events[0]["data"]
    return (json.loads(first) if isinstance(first, str) else first)["response"]["id"]


# --- delete, input items, store: false, errors -----------------------------------------------

def test_delete_input_items_and_store_false(client, fake):
    response = client.responses.create(model="m", input=[
        {"role": "user", "content": "First."},
        {"role": "user", "content": [{"type": "input_text", "text": "Second."}]}])
    items = client.responses.input_items.list(response.id, order="asc")
    assert [i.content[0].text if not isinstance(i.content, str) else i.content
            for i in items.data] == ["First.", "Second."]
    assert client.responses.delete(response.id) is None
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    unstored = client.responses.create(model="m", input="x", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


@pytest.mark.parametrize("body, param, code", [
    ({"model": "m", "input": [{"type": "web_search_call"}]}, "input[0].type", None),
    ({"model": "m", "input": "x", "previous_response_id": "resp_nope"},
     "previous_response_id", "previous_response_not_found"),
    ({"model": "m", "input": "x", "tools": [{"name": "web_search"}]}, "tools[0].type", None),
        ({"model": "m", "input": "x", "tools": [{"type": "namespace", "name": "n", "tools": [
            {"type": "web_search"}]}]}, "tools[0].tools[0].type", None),
    ({"input": "x"}, "model", None),
])
def test_bad_requests_are_400_naming_the_field(hub, fake, body, param, code):
    status, _, reply = call(hub.url, "POST", "/v1/responses", body)
    assert status == 400 and reply["error"]["param"] == param
    assert code is None or reply["error"]["code"] == code
    assert not fake.chat_requests()


def test_unknown_fields_pass_and_input_tokens_and_compact(hub, fake):
    status, _, _ = call(hub.url, "POST", "/v1/responses", {
        "model": "m", "input": "x", "prompt_cache_key": "k", "safety_identifier": "u",
        "include": ["reasoning.encrypted_content"], "user": "me"})
    assert status == 200 and fake.chat_requests()[-1].body["prompt_cache_key"] == "k"
    _, _, counted = call(hub.url, "POST", "/v1/responses/input_tokens",
                         {"model": "m", "input": "Hello there!"})
    assert counted["object"] == "response.input_tokens" and counted["input_tokens"] > 0
    fake.enqueue(Script(chunks=["They said hello."]))
    _, _, compacted = call(hub.url, "POST", "/v1/responses/compact", {
        "model": "m", "input": [{"role": "user", "content": "Hello"},
                                {"role": "assistant", "content": "Hi"}]})
    assert compacted["object"] == "response.compaction"
    assert [i["type"] for i in compacted["output"]] == ["message", "compaction"]
    assert compacted["output"][-1]["encrypted_content"] == "They said hello."
    reply = call(hub.url, "POST", "/v1/responses", {"model": "m", "input": compacted["output"]
                                                    + [{"role": "user", "content": "And?"}]})
    assert reply[0] == 200
    assert fake.chat_requests()[-1].body["messages"][1]["content"].endswith("They said hello.")


# --- openai-agents in its default (Responses) mode -------------------------------------------

def test_an_openai_agents_agent_calls_a_tool(hub, fake):
    agents = pytest.importorskip("agents", reason="openai-agents is not installed")
    fake.enqueue(Script(chunks=[], tool_calls=[CALL]), Script(chunks=["It is 4 °C."]))

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "4 °C" if city == "Oslo" else "unknown"

    model = agents.OpenAIResponsesModel(
        model="m", openai_client=openai.AsyncOpenAI(api_key="x", base_url=hub.url + "/v1",
                                                    max_retries=0))
    agent = agents.Agent(name="weather", instructions="Use the tool.", tools=[get_weather],
                         model=model)
    agents.set_tracing_disabled(True)
    result = agents.Runner.run_sync(agent, "Weather in Oslo?")
    assert result.final_output == "It is 4 °C."
    tool_message = fake.chat_requests()[-1].body["messages"][-1]
    assert tool_message == {"role": "tool", "content": "4 °C", "tool_call_id": "call_oslo"}


def test_a_finished_response_streams_again_from_the_store(client, fake):
    fake.enqueue(Script(chunks=["Stored", " answer."]))
    response = client.responses.create(model="m", input="Hello!")
    events = list(client.responses.retrieve(response.id, stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert events[-1].response.output_text == "Stored answer."
    later = list(client.responses.retrieve(response.id, stream=True,
                                           starting_after=events[2].sequence_number))
    assert [e.sequence_number for e in later] == [e.sequence_number for e in events[3:]]


def test_a_streamed_turn_in_a_conversation_is_kept(client, fake):
    fake.enqueue(Script(chunks=["First."]), Script(chunks=["Second."]))
    conversation = client.conversations.create()
    with client.responses.stream(model="m", input="One?",
                                 conversation=conversation.id) as stream:
        assert stream.get_final_response().output_text == "First."
    client.responses.create(model="m", input="Two?", conversation=conversation.id)
    assert sent_messages(fake) == [("user", "One?"), ("assistant", "First."),
                                   ("user", "Two?")]


def test_an_unstored_background_response_can_still_be_cancelled(client, fake):
    fake.enqueue(Script(hold_first=NEVER))
    response = client.responses.create(model="m", input="x", background=True, store=False)
    assert fake.wait_requests(1)
    assert client.responses.cancel(response.id).status == "cancelled"
    assert fake.aborted.wait(2)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
