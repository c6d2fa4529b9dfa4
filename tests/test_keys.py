"""Keys are people (issue 24): every stored thing and every run has an owner; a user key
sees and controls only its own, and gets for anything else the 404 an unknown id gets, in
each dialect's shape; an admin key sees all. Over real sockets, cross-key."""

import json
import threading

import pytest

from fake_lmstudio import Script
from http_client import call, connect, open_stream
from support import ALICE, BOB, CAROL, ROOT, TEAM, read_until

NEVER = threading.Event()
USER = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def team(make_hub):
    return make_hub(TEAM)


def as_unknown(team, path: str, method: str = "GET", body=None, who=BOB):
    """What `who` gets for the path, next to what it gets for the same path with an id
    nobody has: both must be the same 404 (status, and body but for the id)."""
    return call(team.url, method, path, body, headers=who)


def same_404(team, path: str, real_id: str, fake_id: str, method: str = "GET", body=None):
    status, _, theirs = call(team.url, method, path, body, headers=BOB)
    _, _, unknown = call(team.url, method, path.replace(real_id, fake_id), body, headers=BOB)
    assert status == 404, (path, status, theirs)
    assert json.dumps(theirs).replace(real_id, "X") == json.dumps(unknown).replace(fake_id, "X")
    return theirs


# --- threads: Langbase, /v1/threads, conversations, the chat page's calls ----------------------

def test_a_thread_is_its_owners_alone(team, fake):
    _, _, thread = call(team.url, "POST", "/v1/threads",
                        {"messages": [{"role": "user", "content": "my PIN is 4321"}]},
                        headers=ALICE)
    tid = fake_id = thread["id"]
    fake_id = "00000000-0000-4000-8000-000000000000"
    for method, path, body in [
            ("GET", f"/v1/threads/{tid}", None),
            ("GET", f"/v1/threads/{tid}/messages", None),
            ("POST", f"/v1/threads/{tid}/messages", {"messages": USER}),
            ("POST", f"/v1/threads/{tid}", {"metadata": {"x": "y"}}),
            ("POST", f"/v1/threads/{tid}/title", {"title": "mine now"}),
            ("DELETE", f"/v1/threads/{tid}", None)]:
        body_404 = same_404(team, path, tid, fake_id, method, body)
        assert body_404["error"]["status"] == 404            # Langbase's shape
    status, _, body = call(team.url, "POST", "/v1/pipes/run",
                           {"threadId": tid, "messages": USER}, headers=BOB)
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"
    listed = call(team.url, "GET", "/v1/threads", headers=BOB)[2]
    assert tid not in json.dumps(listed)
    assert tid not in json.dumps(call(team.url, "GET", "/v1/threads?q=PIN", headers=BOB)[2])
    # the owner and an admin still see it, whole
    assert call(team.url, "GET", f"/v1/threads/{tid}/messages", headers=ALICE)[0] == 200
    assert tid in json.dumps(call(team.url, "GET", "/v1/threads", headers=ROOT)[2])
    assert call(team.url, "GET", f"/v1/threads/{tid}", headers=ROOT)[0] == 200
    assert not fake.chat_requests()


def test_a_conversation_is_its_owners_alone(team, fake):
    _, _, conv = call(team.url, "POST", "/v1/conversations", {}, headers=ALICE)
    cid, fake_id = conv["id"], "conv_" + "0" * 48
    for method, path, body in [
            ("GET", f"/v1/conversations/{cid}", None),
            ("GET", f"/v1/conversations/{cid}/items", None),
            ("POST", f"/v1/conversations/{cid}", {"metadata": {"a": "b"}}),
            ("DELETE", f"/v1/conversations/{cid}", None)]:
        body_404 = same_404(team, path, cid, fake_id, method, body)
        assert set(body_404["error"]) >= {"message", "type", "code"}   # OpenAI's shape
    status, _, body = call(team.url, "POST", "/v1/responses",
                           {"model": "m", "input": "Hi", "conversation": cid}, headers=BOB)
    assert status == 404 and not fake.chat_requests()
    assert call(team.url, "GET", f"/v1/conversations/{cid}", headers=ALICE)[0] == 200


def test_edison_and_claude_sessions_keep_to_their_owner(make_hub, fake):
    team = make_hub({**TEAM, "anthropic": {"store": "true"}})
    conn, response = open_stream(team.url, "/chat/stream", {"message": "Hi"},
                                 {**ALICE, "Accept": "text/event-stream"})
    thread_id = json.loads(response.read().decode().split("data: ")[1].split("\n")[0])[
        "thread_id"]
    conn.close()
    status, _, body = call(team.url, "POST", "/chat/stream",
                           {"message": "Hi", "thread_id": thread_id},
                           headers={**BOB, "Accept": "text/event-stream"})
    assert status == 404 and "error" in body
    session = {"X-Claude-Code-Session-Id": "s-1", "anthropic-version": "2023-06-01"}
    ask = {"model": "m", "max_tokens": 20, "messages": USER}
    assert call(team.url, "POST", "/v1/messages", ask, headers={**ALICE, **session})[0] == 200
    status, _, body = call(team.url, "POST", "/v1/messages", ask, headers={**BOB, **session})
    assert status == 404 and body["type"] == "error"      # Anthropic's shape
    assert len(fake.chat_requests()) == 2                 # bob's never went upstream


# --- responses: the seed's /responses and /v1/responses ------------------------------------------

def test_a_stored_response_is_its_owners_alone(team, fake):
    _, _, mine = call(team.url, "POST", "/v1/responses", {"model": "m", "input": "Hi"},
                      headers=ALICE)
    rid, fake_id = mine["id"], "resp_01a24617-eb02-7d73-8c2e-2cdd50be8468"
    for method, path in [("GET", f"/v1/responses/{rid}"),
                         ("GET", f"/v1/responses/{rid}?stream=true"),
                         ("GET", f"/v1/responses/{rid}/input_items"),
                         ("POST", f"/v1/responses/{rid}/cancel"),
                         ("DELETE", f"/v1/responses/{rid}")]:
        body_404 = same_404(team, path, rid, fake_id, method)
        assert body_404["error"]["code"] == "response_not_found"
    status, _, body = call(team.url, "POST", "/v1/responses",
                           {"model": "m", "input": "More", "previous_response_id": rid},
                           headers=BOB)
    assert status == 400 and body["error"]["code"] == "previous_response_not_found"
    assert call(team.url, "GET", f"/v1/responses/{rid}", headers=ROOT)[0] == 200
    reference = [{"type": "item_reference", "id": mine["output"][0]["id"]}]
    theirs = call(team.url, "POST", "/v1/responses", {"model": "m", "input": reference},
                  headers=BOB)
    never = call(team.url, "POST", "/v1/responses", {"model": "m", "input": [
        {"type": "item_reference", "id": never_id(fake_id)}]}, headers=BOB)
    assert theirs[0] == never[0] == 400
    assert theirs[2]["error"]["message"].replace(reference[0]["id"], "X") == \
        never[2]["error"]["message"].replace(never_id(fake_id), "X")
    _, _, seed = call(team.url, "POST", "/responses", {"model": "m", "input": "Hi"},
                      headers=ALICE)
    for method, path in [("GET", f"/responses/{seed['id']}"),
                         ("GET", f"/responses/{seed['id']}/events"),
                         ("POST", f"/responses/{seed['id']}/cancel")]:
        status, _, body = call(team.url, method, path, headers=BOB)
        assert status in (404, 410) and set(body["error"]) == {"message", "code"}
    assert call(team.url, "GET", f"/responses/{seed['id']}", headers=ALICE)[0] == 200


def never_id(response_id: str) -> str:
    return "msg_" + response_id[5:].replace("-", "")


# --- runs, the runs page, the request log and usage ----------------------------------------------

def test_a_run_and_its_record_are_their_owners_alone(make_hub, fake):
    team = make_hub({**TEAM, "log": {"capture_bodies": "true"}})
    fake.enqueue(Script(chunks=["a", "b"], hold_first=NEVER, hold_after=1))
    conn, response = open_stream(team.url, "/v1/chat/completions",
                                 {"model": "m", "messages": [
                                     {"role": "user", "content": "my salary is 9000"}],
                                  "stream": True}, ALICE)
    run_id = response.getheader("X-Run-Id")
    assert fake.wait_requests(1)
    fake_id = "run_" + "0" * 32
    same_404(team, f"/v1/runs/{run_id}", run_id, fake_id)
    same_404(team, f"/v1/runs/{run_id}/cancel", run_id, fake_id, "POST")
    assert run_id not in json.dumps(call(team.url, "GET", "/v1/runs", headers=BOB)[2])
    assert run_id in json.dumps(call(team.url, "GET", "/v1/runs", headers=ROOT)[2])
    feed = connect(team.url)
    feed.request("GET", "/v1/runs/events", headers=BOB)
    snapshot = read_until(feed.getresponse(), "snapshot")[0]["data"]
    feed.close()
    assert run_id not in json.dumps(snapshot)
    assert call(team.url, "POST", f"/v1/runs/{run_id}/cancel", headers=ROOT)[2]["status"] == \
        "cancelled"                                  # an admin may
    conn.close()
    # the record and its captured bodies
    same_404(team, f"/v1/requests/{run_id}", run_id, fake_id)
    assert "9000" not in json.dumps(call(team.url, "GET", "/v1/requests", headers=BOB)[2])
    assert call(team.url, "GET", "/v1/requests?key=alice", headers=BOB)[2]["data"] == []
    record = call(team.url, "GET", f"/v1/requests/{run_id}", headers=ALICE)[2]
    assert "9000" in record["request_body"]
    usage = call(team.url, "GET", "/v1/usage?group_by=key", headers=BOB)[2]["data"]
    assert [row["group"] for row in usage] in ([], ["bob"])
    usage = call(team.url, "GET", "/v1/usage?group_by=key", headers=ROOT)[2]["data"]
    assert "alice" in [row["group"] for row in usage]


def test_an_owner_cancels_its_own_run(team, fake):
    fake.enqueue(Script(hold_first=NEVER))
    conn, response = open_stream(team.url, "/v1/chat/completions",
                                 {"model": "m", "messages": USER, "stream": True}, ALICE)
    run_id = response.getheader("X-Run-Id")
    assert call(team.url, "POST", f"/v1/runs/{run_id}/cancel", headers=ALICE)[2][
        "status"] == "cancelled"
    assert fake.aborted.wait(2)
    conn.close()


def test_edison_cancel_of_another_keys_run_is_unknown(team, fake):
    fake.enqueue(Script(hold_first=NEVER))
    conn, response = open_stream(team.url, "/chat/stream", {"message": "Hi"},
                                 {**ALICE, "Accept": "text/event-stream"})
    request_id = json.loads(response.read1(65536).decode().split("data: ")[1].split("\n")[0])[
        "request_id"]
    status, _, _ = call(team.url, "POST", "/chat/cancel", {"request_id": request_id},
                        headers=BOB)
    assert status == 404
    assert not fake.aborted.wait(0.2)
    assert call(team.url, "POST", "/chat/cancel", {"request_id": request_id},
                headers=ALICE)[2]["cancelled"]
    conn.close()


# --- admin matters: models, /config, /v1/upstreams ---------------------------------------------

def test_model_management_is_for_admins_and_keys_allowed_it(team, fake):
    load = {"model_key": "qwen2.5-7b-instruct"}
    status, _, body = call(team.url, "POST", "/models/load", load, headers=BOB)
    assert status == 403 and body["loaded"] is False     # the LM Studio hub's load shape
    assert "manage_models" in body["error"]
    assert call(team.url, "POST", "/models/unload", {"model_key": "qwen2.5-7b-instruct"},
                headers=BOB)[0] == 403
    assert call(team.url, "POST", "/models/load", {"model_key": "qwen3-vl-4b-instruct"},
                headers=CAROL)[0] == 200                    # its section allows qwen*
    assert call(team.url, "POST", "/models/load", {"model_key": "llama-b"},
                headers=CAROL)[0] == 403                    # … and only those
    assert call(team.url, "POST", "/models/unload", {"unload_all": True},
                headers=CAROL)[0] == 403
    assert call(team.url, "POST", "/models/load", dict(load, exclusive=True),
                headers=CAROL)[0] == 403
    assert call(team.url, "GET", "/config", headers=BOB)[0] == 403
    assert call(team.url, "GET", "/v1/upstreams", headers=BOB)[0] == 403
    assert call(team.url, "GET", "/config", headers=ROOT)[0] == 200
    assert call(team.url, "POST", "/models/unload", {"model_key": "qwen3-vl-4b-instruct"},
                headers=ROOT)[0] == 200


def test_a_fallback_the_key_may_not_use_is_skipped(team, fake):
    fake.enqueue(Script(status=404, error={"message": 'Model "qwen-a" not found',
                                           "code": "model_not_found"}))
    status, _, _ = call(team.url, "POST", "/v1/chat/completions",
                        {"model": "qwen-a", "messages": USER}, headers=CAROL)
    assert status == 404
    assert [r.body["model"] for r in fake.chat_requests()] == ["qwen-a"]   # never llama-b
    fake.enqueue(Script(status=404, error={"message": 'Model "qwen-a" not found',
                                           "code": "model_not_found"}))
    assert call(team.url, "POST", "/v1/chat/completions",
                {"model": "qwen-a", "messages": USER}, headers=BOB)[0] == 200
    assert fake.chat_requests()[-1].body["model"] == "llama-b"          # bob may
    status, _, _ = call(team.url, "POST", "/v1/chat/completions",
                        {"model": "llama-b", "messages": USER}, headers=CAROL)
    assert status == 403
    assert call(team.url, "POST", "/v1/chat/completions",
                {"model": "fast", "messages": USER}, headers=CAROL)[0] == 200   # an alias


def test_a_thread_continued_in_another_dialect_keeps_the_keys_models(team, fake):
    _, headers, _ = call(team.url, "POST", "/v1/pipes/run",
                         {"messages": USER, "model": "qwen2.5-7b-instruct"}, headers=CAROL)
    thread_id = headers["lb-thread-id"]
    status, _, _ = call(team.url, "POST", "/v1/responses",
                        {"model": "llama-b", "input": "Go on", "conversation": thread_id},
                        headers=CAROL)
    assert status == 403


# --- per-key concurrency -----------------------------------------------------------------------

def test_a_key_past_its_concurrent_runs_gets_429_in_its_dialects_shape(team, fake):
    fake.enqueue(Script(hold_first=NEVER))
    conn, _ = open_stream(team.url, "/v1/chat/completions",
                          {"model": "qwen-x", "messages": USER, "stream": True}, CAROL)
    assert fake.wait_requests(1)
    status, headers, body = call(team.url, "POST", "/v1/chat/completions",
                                 {"model": "qwen-x", "messages": USER}, headers=CAROL)
    assert status == 429 and headers["Retry-After"] == "1"
    assert body["error"]["code"] == "too_many_runs" and body["error"]["type"]
    status, _, body = call(team.url, "POST", "/v1/messages",
                           {"model": "qwen-x", "max_tokens": 5, "messages": USER},
                           headers=CAROL)
    assert status == 429 and body["type"] == "error"
    assert call(team.url, "POST", "/v1/chat/completions", {"model": "m", "messages": USER},
                headers=BOB)[0] == 200                   # another key is not held up
    conn.close()


def test_a_key_past_its_background_runs_gets_429(make_hub, fake):
    team = make_hub({**TEAM, "key:carol": {"models": "qwen*", "max_background": "1",
                                           "max_concurrent": "5"}})
    fake.enqueue(Script(hold_first=NEVER))
    status, _, first = call(team.url, "POST", "/v1/responses",
                            {"model": "qwen-x", "input": "Hi", "background": True},
                            headers=CAROL)
    assert status == 200
    status, headers, body = call(team.url, "POST", "/v1/responses",
                                 {"model": "qwen-x", "input": "Hi", "background": True},
                                 headers=CAROL)
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert body["error"]["param"] == "max_background"
    call(team.url, "POST", f"/v1/responses/{first['id']}/cancel", headers=CAROL)
    assert call(team.url, "POST", "/v1/responses",
                {"model": "qwen-x", "input": "Hi", "background": True},
                headers=CAROL)[0] == 200


def test_named_keys_have_default_bounds(tmp_path):
    from llmhub.config import load_config
    from conftest import write_ini
    config = load_config(env={}, path=write_ini(tmp_path / "c.ini", {
        "keys": {"alice": "sk-a"}}))
    limits = config.key_limits["alice"]
    assert (limits.role, limits.max_concurrent, limits.max_background) == ("user", 8, 4)
