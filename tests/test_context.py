"""The context budget and auto-summary (DESIGN §7): exactly which messages reach the
upstream, for the Responses and Langbase dialects alike."""

import threading

import pytest

from http_client import call
from llmhub.context import build_input, split_for_summary
from llmhub.errors import BadRequest

WORDS = "x" * 400                     # about 100 tokens; a message costs 104 with framing


def message(n: int, role: str = "user") -> dict:
    return {"role": role, "content": f"{n} {WORDS}"[:400], "tool_calls": [], "seq": n}


def test_the_newest_messages_that_fit_go_in_a_contiguous_window():
    history = [message(n) for n in range(1, 11)]
    sent, report = build_input("Be brief.", history, [message(99)], budget=330)
    assert [m["content"][:2] for m in sent] == ["Be", "9 ", "10", "99"]
    assert report["messages"] == {"included": 2, "dropped": 8, "new": 1}
    assert report["input_tokens"] <= 330


def test_a_summary_goes_first_and_history_after_it():
    sent, report = build_input(None, [message(5)], [message(6)],
                               summary={"upto_seq": 4, "text": "They met.", "tokens": 3},
                               budget=1000)
    assert sent[0] == {"role": "system",
                       "content": "Summary of the earlier conversation:\nThey met."}
    assert report["summarised"] == {"upto_seq": 4, "tokens": 3}


def test_a_turn_alone_over_budget_is_a_400_with_the_numbers():
    with pytest.raises(BadRequest) as info:
        build_input(None, [], [message(1), message(2), message(3)], budget=256)
    assert "about 312 tokens" in info.value.message and "256" in info.value.message


def test_the_recent_tail_stays_verbatim():
    older, tail = split_for_summary([message(n) for n in range(1, 6)], keep_recent=250)
    assert [m["seq"] for m in older] == [1, 2, 3] and [m["seq"] for m in tail] == [4, 5]


def fill_thread(hub, thread_id: str, count: int) -> None:
    roles = ["user", "assistant"]
    call(hub.url, "POST", "/v1/threads", {"threadId": thread_id, "messages": [
        {"role": roles[n % 2], "content": message(n + 1)["content"]} for n in range(count)]})


def test_both_dialects_send_exactly_the_budgeted_window(make_hub, fake):
    hub = make_hub({"context": {"max_input_tokens": 300}})   # 2 of the 104-token messages
    fill_thread(hub, "long", 10)
    status, _, body = call(hub.url, "POST", "/responses", {"model": "m", "input": "next",
                                                           "thread_id": "long"})
    assert status == 200
    assert [m["content"][:2] for m in fake.chat_requests()[-1].body["messages"]] == \
        ["9 ", "10", "ne"]
    assert body["context"]["messages"] == {"included": 2, "dropped": 8, "new": 1}
    call(hub.url, "POST", "/v1/pipes/run", {"threadId": "long", "messages": [
        {"role": "user", "content": "again"}]})
    sent = fake.chat_requests()[-1].body["messages"]        # the same budget, same cut
    assert [m["content"][:2] for m in sent] == ["9 ", "10", "ne", "He", "ag"]


def test_an_over_budget_turn_stores_nothing(make_hub, fake):
    hub = make_hub({"context": {"max_input_tokens": 256}})
    fill_thread(hub, "t", 1)
    status, _, error = call(hub.url, "POST", "/responses", {
        "model": "m", "input": WORDS * 3, "thread_id": "t"})
    assert status == 400 and error["error"]["code"] == "context_length_exceeded"
    assert "256" in error["error"]["message"]
    assert len(call(hub.url, "GET", "/v1/threads/t/messages")[2]) == 1
    assert not fake.chat_requests()


def test_the_summary_trigger_summarises_in_the_background(make_hub, fake):
    hub = make_hub({"context": {"summary_trigger_tokens": 300, "keep_recent_tokens": 250}})
    fill_thread(hub, "chat", 5)
    saved, original = threading.Event(), hub.hub.threads.save_summary

    def save_summary(*args):
        original(*args)
        saved.set()

    hub.hub.threads.save_summary = save_summary
    _, _, first = call(hub.url, "POST", "/responses", {"model": "m", "input": "six",
                                                       "thread_id": "chat"})
    assert first["context"]["summary_scheduled"] is True    # reported, not waited for
    assert saved.wait(5)
    summary_request = fake.chat_requests()[1].body["messages"]
    assert summary_request[0]["content"].startswith("Summarise the conversation")
    assert "user: 1 xxx" in summary_request[1]["content"]
    _, _, second = call(hub.url, "POST", "/responses", {"model": "m", "input": "seven",
                                                        "thread_id": "chat"})
    sent = fake.chat_requests()[-1].body["messages"]
    assert sent[0]["content"] == "Summary of the earlier conversation:\nHello from the fake!"
    assert second["context"]["summarised"]["upto_seq"] >= 1
    assert sent[-1]["content"] == "seven"
    stored = call(hub.url, "GET", "/v1/threads/chat/messages")[2]
    assert len(stored) == 9           # summarising never removes a message from the thread


def test_a_big_backlog_is_summarised_a_budget_at_a_time(make_hub, fake):
    hub = make_hub({"context": {"max_input_tokens": 1000, "summary_trigger_tokens": 300,
                                "keep_recent_tokens": 250}})
    fill_thread(hub, "backlog", 50)
    engine = hub.hub.engine
    assert engine.summarise("backlog")
    first = fake.chat_requests()[-1].body["messages"][1]["content"]
    assert first.startswith("user: 1 ") and "7 xxx" in first and "8 xxx" not in first
    assert engine.summarise("backlog")     # the next pass folds the first summary in
    second = fake.chat_requests()[-1].body["messages"][1]["content"]
    assert second.startswith("Earlier summary: Hello from the fake!")
    assert ": 8 xxx" in second and ": 1 xxx" not in second
    summary, _, _ = hub.hub.threads.summary_source("backlog", 1, 1)
    assert summary["upto_seq"] > 7
