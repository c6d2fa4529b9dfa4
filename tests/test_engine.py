"""The engine itself, without a dialect: typed events from each upstream adapter, the
Anthropic translator both ways, fallbacks, per-model and per-thread queues, summaries, and
what a thread keeps of tool calls and reasoning. Runs go to the fakes over real sockets."""

import json
import threading

import pytest

from conftest import write_ini
from fake_anthropic import FakeAnthropic
from fake_lmstudio import Script
from llmhub.config import load_config
from llmhub.engine.facade import ChatRequest, Stateless, ThreadTurn
from llmhub.engine.runs import COMPLETED, QUEUED
from llmhub.events import (Done, Finish, Logprobs, ReasoningDelta, Start, TextDelta,
                           ToolCallDelta, Usage, from_stored, stored)
from llmhub.formats import anthropic_messages as translator
from llmhub.hub import Hub
from llmhub.messages import normalise_message
from llmhub.upstream.openai import chunk_events
from llmhub.upstream.think import split_think

ASK = [{"role": "user", "content": "Weather in Oslo?"}]
CALL = {"id": "call_1", "name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}


@pytest.fixture
def make_engine(tmp_path, fake):
    """A Hub (engine, store, registry) with no server in front of it."""
    hubs = []

    def make(sections: dict | None = None) -> Hub:
        base = {"server": {"db_path": tmp_path / f"engine{len(hubs)}.db",
                           "log_level": "warning"},
                "upstream": {"base_url": fake.url}}
        for section, values in (sections or {}).items():
            base.setdefault(section, {}).update(values)
        hubs.append(Hub(load_config(env={}, path=write_ini(tmp_path / "e.ini", base))))
        return hubs[-1]

    yield make
    for hub in hubs:
        hub.close()


def finished(hub: Hub, messages=ASK, thread_id=None, persist=False, **request) -> object:
    plan = ThreadTurn(messages, thread_id) if persist else Stateless(messages)
    run = hub.engine.start(ChatRequest(plan, **{"model": "m", **request}))
    assert run.wait(5)
    return run


def content(run) -> list:
    """The run's events between Start and Done, without their raw chunks."""
    assert isinstance(run.events[0], Start) and isinstance(run.events[-1], Done)
    return run.events[1:-1]


# --- the upstream adapters' typed events -----------------------------------------------------

def test_lm_studio_reasoning_text_and_tool_calls_become_typed_events(make_engine, fake):
    hub = make_engine()
    fake.enqueue(Script(chunks=["Let me check."], reasoning=["Oslo", " is cold."],
                        tool_calls=[CALL]))
    run = finished(hub)
    assert content(run) == [
        ReasoningDelta("Oslo"), ReasoningDelta(" is cold."), TextDelta("Let me check."),
        ToolCallDelta(0, "call_1", "get_weather", "{\"city\":"),
        ToolCallDelta(0, None, None, " \"Oslo\"}"),
        Finish("tool_calls", "m", "m"), Usage(16, 1, raw=run.usage.raw)]
    assert all(e.raw is not None for e in content(run))     # each keeps its upstream chunk
    assert (run.events[0].model, run.requested) == ("m", "m")
    assert run.events[-1] == Done(COMPLETED, "tool_calls")
    assert run.transcript.message() == {
        "role": "assistant", "content": "Let me check.", "reasoning_content": "Oslo is cold.",
        "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": CALL["arguments"]}}]}


def test_anthropic_thinking_text_and_tool_use_become_typed_events(make_engine):
    anthropic = FakeAnthropic().start()
    try:
        anthropic.texts = ["Cold", " there."]
        anthropic.replies = [[
            {"type": "thinking", "thinking": "Cold there.", "signature": "sig"},
            {"type": "text", "text": "Cold there."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
             "input": {"city": "Oslo"}}]]
        hub = make_engine({"upstream": {"kind": "anthropic", "base_url": anthropic.url}})
        run = finished(hub)
    finally:
        anthropic.stop()
    events = content(run)
    assert events[:5] == [ReasoningDelta("Cold"), ReasoningDelta(" there."),
                          ReasoningDelta("", signature="sig"),       # the block's seal
                          TextDelta("Cold"), TextDelta(" there.")]
    assert events[5] == ToolCallDelta(0, "toolu_1", "get_weather", "")
    arguments = "".join(e.arguments for e in events if isinstance(e, ToolCallDelta))
    assert json.loads(arguments) == {"city": "Oslo"}
    assert events[-2:] == [Finish("tool_calls", "m"), Usage(12, 2)]
    assert all(e.raw is None for e in events)   # nothing OpenAI-shaped to relay


def test_the_mock_speaks_in_text_then_finish_then_usage(make_engine):
    hub = make_engine({"upstream": {"kind": "mock"}, "mock": {"chunk_delay_seconds": 0}})
    events = content(finished(hub, model="mock-model"))
    assert {type(e) for e in events[:-2]} == {TextDelta}
    assert isinstance(events[-2], Finish) and isinstance(events[-1], Usage)


def test_openai_chunks_map_every_field_to_its_event():
    raw = {"model": "m", "system_fingerprint": "fp", "choices": [{
        "index": 0, "delta": {"reasoning": "r", "content": "c", "tool_calls": [
            {"index": 1, "id": "t", "function": {"name": "f", "arguments": "{"}}]},
        "logprobs": {"content": [{"token": "c", "logprob": -0.1}]},
        "finish_reason": "length"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": "many",
                  "completion_tokens_details": {"reasoning_tokens": 1}}}
    events = chunk_events(raw)
    assert events == [ReasoningDelta("r"), TextDelta("c"), ToolCallDelta(1, "t", "f", "{"),
                      Logprobs([{"token": "c", "logprob": -0.1}]),
                      Finish("length", "m", "fp"), Usage(3, None, 1)]
    assert "usage" not in events[0].raw and events[-1].raw == raw["usage"]
    assert chunk_events({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}) == \
        [TextDelta("")]                         # kept, so the role chunk is relayed


def test_a_count_that_is_not_a_count_is_estimated_and_marked(make_engine, fake):
    hub = make_engine()
    usage = {"prompt_tokens": -4, "completion_tokens": 2}
    fake.enqueue(Script(raw_chunks=[
        {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]},
        {"choices": [], "usage": usage}], usage=False))
    run = finished(hub)
    assert run.usage.input_estimated and not run.usage.output_estimated
    assert run.usage.output_tokens == 2 and run.usage.input_tokens == run.input_estimate


@pytest.mark.parametrize("pieces", [
    ["<think>Cold.</think>\n\nIt is 4 °C."],
    ["<th", "ink>Co", "ld.</thi", "nk>", "\n\n", "It is 4 °C."],
    ["  <think>", "Cold.", "</think>It is ", "4 °C."],
])
def test_a_think_block_at_the_start_is_reasoning_however_it_is_cut(pieces):
    events = list(split_think([TextDelta(p) for p in pieces] + [Finish("stop")]))
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "Cold."
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "It is 4 °C."
    assert events[-1] == Finish("stop")


def test_text_without_a_leading_think_block_is_left_alone():
    events = list(split_think([TextDelta("I <think> so"), TextDelta(".")]))
    assert events == [TextDelta("I <think> so"), TextDelta(".")]
    assert list(split_think([TextDelta("<thi")])) == [TextDelta("<thi")]


def test_think_tags_are_split_only_for_the_models_configured(make_engine, fake):
    hub = make_engine({"models": {"think_tags": "qwq*"}})
    fake.enqueue(Script(chunks=["<think>Hm", ".</think>", "Yes."]),
                 Script(chunks=["<think>Hm", ".</think>", "Yes."]))
    thinking = finished(hub, model="qwq-32b").transcript
    assert (thinking.reasoning, thinking.text) == ("Hm.", "Yes.")
    assert finished(hub, model="other").transcript.text == "<think>Hm.</think>Yes."


def test_events_survive_being_stored_and_read_back():
    events = [Start("m", {"name": "lmstudio"}), TextDelta("a", {}),
              ReasoningDelta("r"), ToolCallDelta(0, "c", "f", "{}"), Finish("stop", "m"),
              Usage(1, 2, input_estimated=True), Done("completed", "stop")]
    back = [from_stored(*json.loads(json.dumps(stored(e)))) for e in events]
    assert back == events and back[1].raw is None
    assert from_stored("start", {"model": "m", "provider": {}}).model == "m"   # older logs
    assert from_stored("start", {"run_id": "run_1", "created": 1, "model": "m", "provider": {},
                                 "thread_id": "t"}) == Start("m", {})    # before the fields went
    assert from_stored("usage", {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3,
                                 "estimated": True}) == Usage(1, 2)


# --- the Anthropic translator, both ways ---------------------------------------------------

NEUTRAL = {
    "model": "claude", "max_tokens": 99, "stop": "END", "temperature": 0.5,
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
                                                "parameters": {"type": "object"}}}],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Oslo?"}, {
            "type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "get_weather",
                                                         "arguments": "{\"city\": \"Oslo\"}"}},
            {"id": "b", "type": "function", "function": {"name": "get_weather",
                                                         "arguments": "{\"city\": \"Bergen\"}"}}]},
        {"role": "tool", "tool_call_id": "a", "content": "4"},
        {"role": "tool", "tool_call_id": "b", "content": "7"}]}

MESSAGES = {
    "model": "claude", "max_tokens": 99, "stop_sequences": ["END"], "temperature": 0.5,
    "stream": True, "system": "Be brief.",
    "tools": [{"name": "get_weather", "description": "d",
               "input_schema": {"type": "object"}}],
    "tool_choice": {"type": "tool", "name": "get_weather"},
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Oslo?"}, {
            "type": "image", "source": {"type": "base64", "media_type": "image/png",
                                        "data": "iVBO"}}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "a", "name": "get_weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "b", "name": "get_weather",
             "input": {"city": "Bergen"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "a", "content": "4"},
            {"type": "tool_result", "tool_use_id": "b", "content": "7"}]}]}


def test_a_neutral_body_goes_to_anthropic_with_tools_and_merged_tool_results():
    assert translator.to_messages_body(NEUTRAL) == MESSAGES


def test_a_messages_body_comes_back_to_the_same_neutral_body():
    back = translator.from_messages_body(MESSAGES)
    assert back["messages"] == [
        NEUTRAL["messages"][0], NEUTRAL["messages"][1],
        {"role": "assistant", "content": None,
         "tool_calls": NEUTRAL["messages"][2]["tool_calls"]},
        *NEUTRAL["messages"][3:]]
    assert {k: back[k] for k in ("tools", "tool_choice", "stop", "max_tokens")} == {
        "tools": NEUTRAL["tools"], "tool_choice": NEUTRAL["tool_choice"], "stop": ["END"],
        "max_tokens": 99}


def test_replies_stop_reasons_and_unsigned_thinking():
    reply = {"content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                         {"type": "text", "text": "Hi"},
                         {"type": "tool_use", "id": "t", "name": "f", "input": {"x": 1}}]}
    message = translator.message_from_anthropic(reply)
    assert message == {"role": "assistant", "content": "Hi", "reasoning": "hm",
                       "reasoning_signature": "s", "tool_calls": [
                           {"id": "t", "type": "function",
                            "function": {"name": "f", "arguments": "{\"x\": 1}"}}]}
    assert translator.message_to_anthropic(message) == reply["content"]
    for finish, stop in (("stop", "end_turn"), ("length", "max_tokens"),
                         ("tool_calls", "tool_use")):
        assert translator.stop_reason(finish) == stop
        assert translator.finish_reason(stop) == finish
    cached = {"input_tokens": 3, "cache_read_input_tokens": 5, "output_tokens": 2}
    assert translator.usage_from_anthropic(cached) == Usage(8, 2, cached_tokens=5)
    assert translator.usage_to_anthropic(Usage(8, 2, cached_tokens=5)) == {
        "input_tokens": 3, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 5,
        "output_tokens": 2}
    unsigned = {"role": "assistant", "content": "Hi", "reasoning_content": "hm"}
    assert translator.to_messages_body({"messages": [unsigned]})["messages"] == [
        {"role": "assistant", "content": [{"type": "text", "text": "Hi"}]}]


def test_tool_arguments_that_are_not_an_object_are_a_400_naming_the_field():
    body = {"messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "a", "function": {"name": "f", "arguments": "[1]"}}]}]}
    with pytest.raises(Exception) as info:
        translator.to_messages_body(body)
    assert info.value.status == 400
    assert info.value.param == "messages[0].tool_calls[0].function.arguments"


# --- model resolution, queues, summaries -----------------------------------------------------

def test_fallbacks_are_tried_before_the_upstream_accepts(make_engine, fake):
    hub = make_engine({"aliases": {"deep": "big"}, "fallbacks": {"deep": "small"}})
    fake.enqueue(Script(status=404, error="model_not_found: big"))
    run = finished(hub, model="deep")
    assert run.status == COMPLETED and run.model == "small"
    assert [r.body["model"] for r in fake.chat_requests()] == ["big", "small"]
    assert run.requested == "deep" and run.events[0].model == "small"


def test_a_model_limit_queues_runs_first_in_first_out(make_engine, fake):
    hub = make_engine({"concurrency": {"m": 1}})
    release = threading.Event()
    fake.enqueue(Script(hold_first=release))
    first = hub.engine.start(ChatRequest(Stateless(ASK), model="m"))
    assert fake.wait_requests(1)
    second = hub.engine.start(ChatRequest(Stateless(ASK), model="m"))
    other = finished(hub, model="n")              # another model does not wait
    assert other.status == COMPLETED and second.status == QUEUED
    assert second.queue_position == 1
    release.set()
    assert first.wait(5) and second.wait(5) and second.status == COMPLETED


def test_turns_on_one_thread_run_one_at_a_time_in_order(make_engine, fake):
    hub = make_engine()
    release = threading.Event()
    fake.enqueue(Script(chunks=["A1"], hold_first=release), Script(chunks=["A2"]))
    turn = [normalise_message({"role": "user", "content": "Q1"})]
    first = hub.engine.start(ChatRequest(ThreadTurn(turn), model="m"))
    assert fake.wait_requests(1)
    second = hub.engine.start(ChatRequest(
        ThreadTurn([normalise_message({"role": "user", "content": "Q2"})], first.thread_id),
        model="m"))
    assert hub.engine.turns.waiting(first.thread_id) == 2 and len(fake.chat_requests()) == 1
    release.set()
    assert first.wait(5) and second.wait(5)
    stored = [m["content"] for m in hub.threads.list_messages(first.thread_id)]
    assert stored == ["Q1", "A1", "Q2", "A2"]
    assert [m["content"] for m in fake.chat_requests()[1].body["messages"]] == \
        ["Q1", "A1", "Q2"]


def test_a_summary_covers_the_older_messages_and_leaves_them_stored(make_engine, fake):
    hub = make_engine({"context": {"keep_recent_tokens": 40}})
    words = "word " * 40
    thread = hub.engine.create_thread(None, {}, [
        normalise_message({"role": role, "content": f"{n} {words}"})
        for n, role in enumerate(["user", "assistant"] * 3)])
    fake.enqueue(Script(chunks=["They talked."]))
    assert hub.engine.summarise(thread["id"])
    summary, _, _ = hub.threads.summary_source(thread["id"], 1000, 1000)
    assert summary["text"] == "They talked." and summary["upto_seq"] >= 1
    assert "Summarise the conversation" in fake.chat_requests()[0].body["messages"][0]["content"]
    assert len(hub.threads.list_messages(thread["id"])) == 6


# --- what a thread keeps ---------------------------------------------------------------------

def test_a_thread_keeps_tool_calls_results_and_reasoning_and_replays_them(make_engine, fake):
    hub = make_engine()
    fake.enqueue(Script(chunks=[], reasoning=["Look it up."], tool_calls=[CALL]),
                 Script(chunks=["4 °C."]))
    turn = [normalise_message(m) for m in ASK]
    first = finished(hub, messages=turn, persist=True)
    stored = hub.threads.list_messages(first.thread_id)[-1]
    assert (stored["content"], stored["reasoning"]) == (None, "Look it up.")
    assert stored["tool_calls"][0]["function"]["arguments"] == CALL["arguments"]
    result = normalise_message({"role": "tool", "tool_call_id": "call_1", "content": "4"})
    finished(hub, messages=[result], persist=True, thread_id=first.thread_id)
    sent = fake.chat_requests()[1].body["messages"]
    assert sent[1] == {"role": "assistant", "content": None,
                       "tool_calls": stored["tool_calls"]}      # no reasoning by default
    assert sent[2] == {"role": "tool", "content": "4", "tool_call_id": "call_1"}


def test_reasoning_goes_back_upstream_only_when_configured(make_engine, fake):
    hub = make_engine({"context": {"replay_reasoning": "true"}})
    fake.enqueue(Script(chunks=["Yes."], reasoning=["Hm."]), Script())
    first = finished(hub, messages=[normalise_message(m) for m in ASK], persist=True)
    finished(hub, messages=[normalise_message({"role": "user", "content": "Sure?"})],
             persist=True, thread_id=first.thread_id)
    assert fake.chat_requests()[1].body["messages"][1] == {
        "role": "assistant", "content": "Yes.", "reasoning_content": "Hm."}
