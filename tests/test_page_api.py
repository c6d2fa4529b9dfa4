"""What the chat page asks of the hub beyond the public dialects, over real sockets against
the fake LM Studio: a reply's reasoning kept with it (`?include=reasoning`), a thread's run
in progress (`GET /v1/runs?thread_id=`, for a second device), and why a cancelled reply
ended (`cancel_reason` in its metadata: a Stop is not a shutdown)."""

import threading

from fake_lmstudio import Script
from http_client import call
from support import wait_for


def respond(hub, conversation: str, background: bool = False) -> dict:
    status, _, body = call(hub.url, "POST", "/v1/responses", {
        "model": "qwen2.5-7b-instruct", "conversation": conversation, "background": background,
        "input": [{"type": "message", "role": "user", "content": "Think, then answer"}]})
    assert status == 200, body
    return body


def test_messages_carry_reasoning_only_when_asked(hub, fake):
    conversation = call(hub.url, "POST", "/v1/conversations", {})[2]["id"]
    fake.enqueue(Script(reasoning=["Because", " so."], chunks=["Yes."]))
    respond(hub, conversation)
    path = f"/v1/threads/{conversation}/messages"
    plain = call(hub.url, "GET", path)[2]
    assert all("reasoning" not in m for m in plain)             # Langbase's shape, exactly
    kept = call(hub.url, "GET", path + "?include=reasoning")[2]
    assert [m["reasoning"] for m in kept] == [None, "Because so."]
    assert kept[1]["content"] == "Yes."
    headers = call(hub.url, "GET", path + "?include=reasoning&order=desc&limit=1")[1]
    assert "order=desc&include=reasoning&after=" in headers["Link"]   # page 2 reads the same


def test_a_threads_run_in_progress_is_found_and_a_shutdown_is_told_from_a_stop(hub, fake):
    conversation = call(hub.url, "POST", "/v1/conversations", {})[2]["id"]
    other = call(hub.url, "POST", "/v1/conversations", {})[2]["id"]
    fake.enqueue(Script(chunks=["Part", " never"], hold_first=threading.Event(),
                        hold_after=1))
    run = respond(hub, conversation, background=True)
    assert fake.wait_requests(1)
    found = call(hub.url, "GET", f"/v1/runs?thread_id={conversation}")[2]["data"]
    assert [(r["id"], r["thread_id"], r["dialect"]) for r in found] == [
        (run["id"], conversation, "v1-responses")]
    assert call(hub.url, "GET", f"/v1/runs?thread_id={other}")[2]["data"] == []

    hub.hub.registry.cancel_all("shutdown")
    messages = f"/v1/threads/{conversation}/messages"
    assert wait_for(lambda: len(call(hub.url, "GET", messages)[2]) == 2)
    meta = call(hub.url, "GET", messages)[2][-1]["metadata"]
    assert (meta["status"], meta["cancel_reason"]) == ("cancelled", "shutdown")

    fake.enqueue(Script(chunks=["Again", " never"], hold_first=threading.Event(),
                        hold_after=1))
    run = respond(hub, conversation, background=True)
    assert fake.wait_requests(2)
    call(hub.url, "POST", f"/v1/responses/{run['id']}/cancel")
    assert wait_for(lambda: len(call(hub.url, "GET", messages)[2]) == 4)
    meta = call(hub.url, "GET", messages)[2][-1]["metadata"]
    assert (meta["status"], meta["cancel_reason"]) == ("cancelled", "cancelled")
