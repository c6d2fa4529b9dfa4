"""What coding agents send to /v1/responses on their default settings (Codex: namespaces,
custom tools, hosted tools, client_metadata, reasoning summaries, a WebSocket first), over
real sockets with the official `openai` client where it helps, raw HTTP elsewhere."""

import json
import socket

import pytest

from fake_lmstudio import Script
from http_client import call, open_stream, sse_events

from llmhub.wire import sse

PATCH_GRAMMAR = 'start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF'
TOOLS = [
    {"type": "function", "name": "shell", "description": "Run a command",
     "parameters": {"type": "object", "properties": {"command": {"type": "array"}}}},
    {"type": "namespace", "name": "mcp_files", "description": "Files",
     "tools": [{"type": "function", "name": "read", "description": "Read a file",
                "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}},
               {"type": "custom", "name": "note", "description": "Write a note"}]},
    {"type": "custom", "name": "apply_patch", "description": "Edit files",
     "format": {"type": "grammar", "syntax": "lark", "definition": PATCH_GRAMMAR}},
    {"type": "web_search", "external_web_access": False},
    {"type": "image_generation"},
    {"type": "web_search"},
    {"type": "local_shell"},
]
CODEX = {"model": "m", "instructions": "You are Codex.", "tools": TOOLS, "tool_choice": "auto",
         "parallel_tool_calls": False, "store": False, "stream": True,
         "reasoning": {"effort": "medium", "summary": "auto"},
         "include": ["reasoning.encrypted_content"], "prompt_cache_key": "sess-1",
         "client_metadata": {"originator": "codex_exec", "session": "secret-ish"},
         "input": [{"type": "message", "role": "user",
                    "content": [{"type": "input_text", "text": "Fix the bug"}]}]}
PATCH = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch"


def stream(hub, body) -> tuple[dict, list[dict]]:
    conn, response = open_stream(hub.url, "/v1/responses", body)
    headers = dict(response.getheaders())
    events = [json.loads(data) for _, data in sse_events(response)]
    conn.close()
    return headers, events


def test_every_tool_type_is_taken_and_what_runs_here_goes_upstream_as_functions(hub, fake):
    headers, events = stream(hub, CODEX)
    assert events[-1]["type"] == "response.completed"
    assert headers["X-Llmhub-Tools-Omitted"] == "web_search, image_generation, local_shell"
    sent = fake.chat_requests()[-1].body
    names = [t["function"]["name"] for t in sent["tools"]]
    assert names == ["shell", "mcp_files__read", "mcp_files__note", "apply_patch"]
    assert all(t["type"] == "function" for t in sent["tools"])
    patch = sent["tools"][3]["function"]
    assert patch["parameters"]["required"] == ["input"] and PATCH_GRAMMAR in patch["description"]
    assert "client_metadata" not in sent and sent["prompt_cache_key"] == "sess-1"
    assert sent["tool_choice"] == "auto" and sent["reasoning_effort"] == "medium"
    # the response echoes the tools as they were asked for
    assert [t["type"] for t in events[-1]["response"]["tools"]] == [t["type"] for t in TOOLS]


def test_only_hosted_tools_send_no_tools_and_no_choice(hub, fake):
    status, headers, reply = call(hub.url, "POST", "/v1/responses", {
        "model": "m", "input": "Find news", "tools": [{"type": "web_search"}],
        "tool_choice": {"type": "web_search"}})
    assert status == 200 and reply["output"][0]["type"] == "message"
    assert headers["X-Llmhub-Tools-Omitted"] == "web_search"
    sent = fake.chat_requests()[-1].body
    assert "tools" not in sent and "tool_choice" not in sent


def test_namespaced_and_custom_calls_come_back_as_their_own_items(hub, fake):
    fake.enqueue(Script(chunks=[], tool_calls=[
        {"id": "call_r", "name": "mcp_files__read", "arguments": '{"path": "a.py"}'},
        {"id": "call_p", "name": "apply_patch", "arguments": json.dumps({"input": PATCH})}]))
    _, events = stream(hub, CODEX)
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    read, patch = done
    assert read["type"] == "function_call" and read["name"] == "read"
    assert read["namespace"] == "mcp_files" and read["arguments"] == '{"path": "a.py"}'
    assert patch["type"] == "custom_tool_call" and patch["name"] == "apply_patch"
    assert patch["input"] == PATCH and patch["call_id"] == "call_p" and "namespace" not in patch
    assert patch["id"].startswith("ctc_") and "raw" not in patch and "index" not in patch
    inputs = [e for e in events if e["type"].startswith("response.custom_tool_call_input")]
    assert [e["type"] for e in inputs] == ["response.custom_tool_call_input.delta",
                                          "response.custom_tool_call_input.done"]
    assert inputs[0]["delta"] == PATCH and inputs[1]["input"] == PATCH
    assert inputs[1]["item_id"] == patch["id"]
    assert not any(e["type"] == "response.function_call_arguments.delta" and
                   e["item_id"] == patch["id"] for e in events)
    assert events[-1]["response"]["output"] == done


def test_the_official_client_reads_namespaced_and_custom_calls(hub, fake):
    openai = pytest.importorskip("openai", reason="the openai package is not installed")
    client = openai.OpenAI(api_key="x", base_url=hub.url + "/v1", max_retries=0)
    fake.enqueue(Script(chunks=[], tool_calls=[
        {"id": "call_n", "name": "mcp_files__note", "arguments": '{"input": "remember"}'}]))
    response = client.responses.create(model="m", input="Note it", tools=TOOLS[:3])
    item = response.output[0]
    assert item.type == "custom_tool_call" and item.name == "note"
    assert item.namespace == "mcp_files" and item.input == "remember"
    again = client.responses.retrieve(response.id)
    assert again.output[0].model_dump() == item.model_dump()


def test_a_custom_call_the_model_wrote_loosely_keeps_its_text(hub, fake):
    fake.enqueue(Script(chunks=[], tool_calls=[
        {"id": "call_p", "name": "apply_patch", "arguments": PATCH}]))
    _, _, reply = call(hub.url, "POST", "/v1/responses",
                       {"model": "m", "input": "Patch it", "tools": TOOLS[2:3]})
    assert reply["output"][0]["input"] == PATCH


def test_tool_results_go_back_upstream_under_the_names_they_went_up_as(hub, fake):
    body = dict(CODEX, stream=False, input=CODEX["input"] + [
        {"type": "function_call", "call_id": "call_r", "name": "read",
         "namespace": "mcp_files", "arguments": '{"path": "a.py"}'},
        {"type": "function_call_output", "call_id": "call_r", "output": "print(1)"},
        {"type": "custom_tool_call", "call_id": "call_p", "name": "apply_patch",
         "input": PATCH},
        {"type": "custom_tool_call_output", "call_id": "call_p",
         "output": [{"type": "input_text", "text": "Done!"}]}])
    status, _, _ = call(hub.url, "POST", "/v1/responses", body)
    assert status == 200
    messages = fake.chat_requests()[-1].body["messages"]
    calls = [c for m in messages for c in m.get("tool_calls") or ()]
    assert [c["function"]["name"] for c in calls] == ["mcp_files__read", "apply_patch"]
    assert json.loads(calls[1]["function"]["arguments"]) == {"input": PATCH}
    tools = [(m["tool_call_id"], m["content"]) for m in messages if m["role"] == "tool"]
    assert tools == [("call_r", "print(1)"), ("call_p", "Done!")]


def test_tool_choice_names_a_custom_or_namespaced_tool_and_allowed_tools_narrow(hub, fake):
    call(hub.url, "POST", "/v1/responses", {"model": "m", "input": "x", "tools": TOOLS,
                                            "tool_choice": {"type": "custom",
                                                            "name": "apply_patch"}})
    assert fake.chat_requests()[-1].body["tool_choice"] == {
        "type": "function", "function": {"name": "apply_patch"}}
    call(hub.url, "POST", "/v1/responses", {
        "model": "m", "input": "x", "tools": TOOLS, "tool_choice": {
            "type": "allowed_tools", "mode": "required",
            "tools": [{"type": "function", "name": "read", "namespace": "mcp_files"}]}})
    sent = fake.chat_requests()[-1].body
    assert [t["function"]["name"] for t in sent["tools"]] == ["mcp_files__read"]
    assert sent["tool_choice"] == "required"
    status, _, reply = call(hub.url, "POST", "/v1/responses", {
        "model": "m", "input": "x", "tools": TOOLS,
        "tool_choice": {"type": "function", "name": "nope"}})
    assert status == 400 and reply["error"]["param"] == "tool_choice.name"


def test_every_event_is_what_the_encoder_writes_and_the_items_hold_the_whole(hub, fake):
    # Delta events are filled into templates (wire.SSETemplate), the response object of
    # the first two is encoded once, and the growing text is kept in pieces: each frame
    # must be byte for byte the generic encoding, and each item at its end the whole of
    # its deltas.
    text = ["Привет, ", '"quoted" \\ back', "slash\nnew line\t", "🙂\u2028", "\x00end"]
    reasoning = ["Let me ", "think \"hard\"", " 🙂"]
    arguments = json.dumps({"command": ["echo", "ünïcode \"x\"\n"]})
    fake.enqueue(Script(chunks=text, reasoning=reasoning, tool_calls=[
        {"id": "call_1", "name": "shell", "arguments": arguments}]))
    conn, response = open_stream(hub.url, "/v1/responses", CODEX)
    raw = response.read()
    conn.close()
    frames = [frame + b"\n\n" for frame in raw.split(b"\n\n") if frame.strip()]
    deltas: dict = {}
    for frame in frames:
        name, data = frame.decode().split("\n", 1)
        event = json.loads(data.removeprefix("data: "))
        assert frame == sse(event, event=event["type"])
        if event["type"].endswith(".delta"):
            deltas.setdefault(event["type"], []).append(event["delta"])
    assert deltas["response.output_text.delta"] == text
    assert deltas["response.reasoning_text.delta"] == \
        deltas["response.reasoning_summary_text.delta"] == reasoning
    assert "".join(deltas["response.function_call_arguments.delta"]) == arguments
    done = [json.loads(f.decode().split("data: ", 1)[1])["item"] for f in frames
            if f.startswith(b"event: response.output_item.done")]
    assert [item["type"] for item in done] == ["reasoning", "message", "function_call"]
    assert done[0]["content"][0]["text"] == done[0]["summary"][0]["text"] == \
        done[0]["encrypted_content"] == "".join(reasoning)
    assert done[1]["content"][0]["text"] == "".join(text)
    assert done[2]["arguments"] == arguments and "raw" not in done[2]
    completed = json.loads(frames[-1].decode().split("data: ", 1)[1])["response"]
    assert completed["output"] == done
    first = [json.loads(f.decode().split("data: ", 1)[1]) for f in frames[:2]]
    assert [e["type"] for e in first] == ["response.created", "response.in_progress"]
    assert first[0]["response"] == first[1]["response"] and \
        first[0]["response"]["tools"] == completed["tools"]


def test_a_background_stream_opens_with_one_response_object_in_two_events(hub, fake):
    conn, response = open_stream(hub.url, "/v1/responses", dict(CODEX, background=True,
                                                                store=True))
    raw = response.read()
    conn.close()
    frames = [frame + b"\n\n" for frame in raw.split(b"\n\n") if frame.strip()]
    events = [json.loads(f.decode().split("data: ", 1)[1]) for f in frames]
    assert [e["type"] for e in events[:2]] == ["response.created", "response.queued"]
    assert events[0]["response"] == events[1]["response"]
    assert events[0]["response"]["status"] == "queued"
    for frame, event in zip(frames, events):
        assert frame == sse(event, event=event["type"])


def test_a_failed_stream_with_tools_ends_with_the_failure_encoded_as_ever(hub, fake):
    # With tools, the response object is filled into one template a stream (its status,
    # error and output change); the failed end must still be the generic encoding.
    fake.enqueue(Script(chunks=["Partial"], error_event="the model crashed"))
    conn, response = open_stream(hub.url, "/v1/responses", CODEX)
    raw = response.read()
    conn.close()
    frames = [frame + b"\n\n" for frame in raw.split(b"\n\n") if frame.strip()]
    events = [json.loads(f.decode().split("data: ", 1)[1]) for f in frames]
    assert events[-1]["type"] == "response.failed"
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and "crashed" in failed["error"]["message"]
    assert failed["output"][0]["content"][0]["text"] == "Partial"
    assert failed["tools"] == events[0]["response"]["tools"]
    for frame, event in zip(frames, events):
        assert frame == sse(event, event=event["type"])


def test_reasoning_is_streamed_as_a_summary_when_one_is_asked_for(hub, fake):
    fake.enqueue(Script(chunks=["Done."], reasoning=["Let me ", "think."]))
    _, events = stream(hub, CODEX)
    kinds = [e["type"] for e in events]
    deltas = [e["delta"] for e in events if e["type"] == "response.reasoning_summary_text.delta"]
    assert deltas == ["Let me ", "think."]
    assert kinds.index("response.reasoning_summary_part.added") < \
        kinds.index("response.reasoning_summary_text.delta") < \
        kinds.index("response.reasoning_summary_text.done") < \
        kinds.index("response.reasoning_summary_part.done") < kinds.index("response.output_text.delta")
    item = next(e["item"] for e in events if e["type"] == "response.output_item.done")
    assert item["summary"] == [{"type": "summary_text", "text": "Let me think."}]
    assert item["content"] == [{"type": "reasoning_text", "text": "Let me think."}]
    assert item["encrypted_content"] == "Let me think."      # include asked for it
    # a client that keeps nothing sends the item back; its reasoning goes with the turn
    fake.enqueue(Script(chunks=["Fine."]))
    back = dict(item, summary=[], content=None)
    status, _, _ = call(hub.url, "POST", "/v1/responses", dict(
        CODEX, stream=False, input=CODEX["input"] + [
            back, {"type": "message", "role": "assistant", "content": "Done."},
            {"type": "message", "role": "user", "content": "Thanks"}]))
    assert status == 200
    assert sent_roles(fake) == [("system", "You are Codex."), ("user", "Fix the bug"),
                                ("assistant", "Done."), ("user", "Thanks")]


def sent_roles(fake) -> list:
    return [(m["role"], m["content"]) for m in fake.chat_requests()[-1].body["messages"]]


def test_a_request_that_chose_its_reasoning_without_a_summary_gets_none(hub, fake):
    fake.enqueue(Script(chunks=["Done."], reasoning=["Hmm."]))
    _, events = stream(hub, {"model": "m", "input": "x", "stream": True,
                             "reasoning": {"effort": "low"}})
    assert not any("summary" in e["type"] for e in events)
    item = next(e["item"] for e in events if e["type"] == "response.output_item.done")
    assert item["summary"] == [] and "encrypted_content" not in item


def test_a_websocket_upgrade_is_told_to_use_http(hub, fake):
    host, port = hub.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"GET /v1/responses HTTP/1.1\r\nHost: " + f"{host}:{port}".encode() +
                     b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13"
                     b"\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            reply += sock.recv(65536)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 426 ")
    error = json.loads(body)["error"]
    assert error["code"] == "websocket_not_supported" and "HTTP" in error["message"]
    assert not fake.chat_requests()


# --- small shapes agents read ----------------------------------------------------------------

@pytest.mark.parametrize("field, value", [("reasoning", "high"), ("text", "json"),
                                          ("include", "reasoning.encrypted_content")])
def test_fields_that_must_be_objects_or_lists_are_400s_naming_them(hub, fake, field, value):
    status, _, reply = call(hub.url, "POST", "/v1/responses",
                            {"model": "m", "input": "x", field: value})
    assert status == 400 and reply["error"]["param"] == field


def test_compact_takes_a_previous_response_alone(hub, fake):
    first = call(hub.url, "POST", "/v1/responses", {"model": "m", "input": "Hello"})[2]
    fake.enqueue(Script(chunks=["They greeted."]))
    status, _, compacted = call(hub.url, "POST", "/v1/responses/compact",
                                {"model": "m", "previous_response_id": first["id"]})
    assert status == 200 and compacted["output"][-1]["encrypted_content"] == "They greeted."
    asked = json.dumps(fake.chat_requests()[-1].body["messages"])
    assert "Hello" in asked and "Hello from the fake!" in asked
    status, _, reply = call(hub.url, "POST", "/v1/responses/compact", {"model": "m"})
    assert status == 400 and reply["error"]["param"] == "input"


def test_input_items_say_they_are_messages(hub, fake):
    reply = call(hub.url, "POST", "/v1/responses", {"model": "m", "input": [
        {"role": "user", "content": "Hi"}, {"type": "message", "role": "user",
                                            "content": "Again"}]})[2]
    items = call(hub.url, "GET", f"/v1/responses/{reply['id']}/input_items?order=asc")[2]
    assert [i["type"] for i in items["data"]] == ["message", "message"]
    assert all(i["id"] for i in items["data"])


def test_the_streamed_response_names_the_model_retrieve_names(make_hub, fake):
    hub = make_hub({"aliases": {"quick": "qwen2.5-7b-instruct"}})
    _, events = stream(hub, {"model": "quick", "input": "Hi", "stream": True})
    final = events[-1]["response"]
    again = call(hub.url, "GET", f"/v1/responses/{final['id']}")[2]
    assert final["model"] == again["model"] == "qwen2.5-7b-instruct"


def test_an_input_over_the_loaded_context_is_a_400_unless_truncation_is_auto(hub, fake):
    hub.hub.engine.prober.probe_all()      # LM Studio says: loaded with 4096 tokens
    body = {"model": "qwen2.5-7b-instruct", "input": "word " * 4000}      # ~5000 tokens
    status, _, reply = call(hub.url, "POST", "/v1/responses", body)
    assert status == 400 and reply["error"]["code"] == "context_length_exceeded"
    assert reply["error"]["param"] == "input" and "4096" in reply["error"]["message"]
    assert not fake.chat_requests()       # LM Studio would have cut it without a word
    status, _, _ = call(hub.url, "POST", "/v1/responses", dict(body, input="word " * 3000))
    assert status == 200                   # under the context: it goes
    status, _, _ = call(hub.url, "POST", "/v1/responses", dict(body, truncation="auto"))
    assert status == 200 and len(fake.chat_requests()) == 2


def test_the_opening_developer_messages_go_up_as_one_system_message(hub, fake):
    developer = [{"type": "message", "role": "developer",
                  "content": [{"type": "input_text", "text": text}]}
                 for text in ("Rules.", "Permissions.")]
    call(hub.url, "POST", "/v1/responses", dict(CODEX, stream=False,
                                                input=developer + CODEX["input"]))
    assert sent_roles(fake) == [("system", "You are Codex.\n\nRules.\n\nPermissions."),
                                ("user", "Fix the bug")]
    later = CODEX["input"] + [{"role": "assistant", "content": "On it."}] + developer[:1]
    call(hub.url, "POST", "/v1/responses", dict(CODEX, stream=False, input=later))
    assert [r for r, _ in sent_roles(fake)] == ["system", "user", "assistant", "system"]


def test_an_item_reference_is_the_stored_item_it_names(hub, fake):
    """The AI SDK (store: true, its default) sends earlier output items back by id."""
    fake.enqueue(Script(chunks=["Four."], reasoning=["Two and two."]))
    first = call(hub.url, "POST", "/v1/responses", {"model": "m", "input": "2+2?"})[2]
    reasoning, message = first["output"]
    fake.enqueue(Script(chunks=["Five."]))
    status, _, second = call(hub.url, "POST", "/v1/responses", {"model": "m", "input": [
        {"role": "user", "content": "2+2?"},
        {"type": "item_reference", "id": reasoning["id"]},
        {"type": "item_reference", "id": message["id"]},
        {"role": "user", "content": "And 2+3?"}]})
    assert status == 200
    assert sent_roles(fake) == [("user", "2+2?"), ("assistant", "Four."),
                                ("user", "And 2+3?")]
    items = call(hub.url, "GET", f"/v1/responses/{second['id']}/input_items?order=asc")[2]
    assert [i["type"] for i in items["data"]] == ["message", "reasoning", "message", "message"]
    again = call(hub.url, "POST", "/v1/responses", {"model": "m", "input": [
        {"type": "item_reference", "id": items["data"][0]["id"]}]})
    assert again[0] == 200 and sent_roles(fake) == [("user", "2+2?")]
    for unknown in ("msg_" + "0" * 32, "nope", None):
        status, _, reply = call(hub.url, "POST", "/v1/responses", {"model": "m", "input": [
            {"role": "user", "content": "x"}, {"type": "item_reference", "id": unknown}]})
        assert status == 400 and reply["error"]["param"] == "input[1].id"


def test_reasoning_is_a_summary_too_when_the_request_says_nothing_of_reasoning(hub, fake):
    """The AI SDK asks for no summary for a model name it does not know, and reads only
    summaries; a request that chose its reasoning settings gets what it chose."""
    fake.enqueue(Script(chunks=["Done."], reasoning=["Hmm."]))
    _, events = stream(hub, {"model": "m", "input": "x", "stream": True})
    assert [e["delta"] for e in events
            if e["type"] == "response.reasoning_summary_text.delta"] == ["Hmm."]
    assert events[-1]["response"]["output"][0]["summary"] == [
        {"type": "summary_text", "text": "Hmm."}]
