"""Every upstream fault, across dialects: the documented status, no run left behind, and
what was said stored with its status (issue 8)."""

import json
import threading

import pytest

from fake_lmstudio import Script
from http_client import call, open_stream
from support import closed_port, parse_sse

NEVER = threading.Event()
HI = [{"role": "user", "content": "Hi"}]
FAULTS = {   # name: (script, upstream settings, status for a non-streaming client)
    "refused": (None, {}, 503),
    "hangs before headers": (Script(hold_headers=NEVER), {"first_byte_timeout_seconds": 0.3},
                             504),
    "hangs mid-stream": (Script(chunks=["part", "rest"], hold_first=NEVER, hold_after=1),
                         {"idle_timeout_seconds": 0.3}, 504),
    "sends garbage": (Script(chunks=["part"], garbage=True), {}, 502),
    "closes mid-chunk": (Script(chunks=["part", "rest"], cut_after=1), {}, 502),
    "500": (Script(status=500, error="engine died"), {}, 502),
    "400": (Script(status=400, error="'response_format.type' must be 'json_schema'"), {},
            400),
    "200 with an error body": (Script(json_body={"error": "Unexpected endpoint or method."}),
                               {}, 502),
}
PARTIAL = {"hangs mid-stream", "sends garbage", "closes mid-chunk"}


def faulty_hub(make_hub, fake, fault):
    script, upstream, _ = FAULTS[fault]
    if script is None:
        return make_hub(upstream_url=f"http://127.0.0.1:{closed_port()}/v1")
    fake.default = script
    return make_hub({"upstream": upstream})


def no_runs_left(hub) -> None:
    for run in hub.hub.registry.live():
        assert run.wait(5), run.id
    assert hub.hub.registry.live() == []


@pytest.mark.parametrize("fault", list(FAULTS))
def test_openai_non_streaming(make_hub, fake, fault):
    hub = faulty_hub(make_hub, fake, fault)
    status, _, body = call(hub.url, "POST", "/v1/chat/completions", {"model": "m",
                                                                     "messages": HI})
    assert status == FAULTS[fault][2], body
    assert set(body["error"]) == {"message", "type", "param", "code"}
    no_runs_left(hub)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_langbase_stores_the_partial_reply_with_its_status(make_hub, fake, fault):
    hub = faulty_hub(make_hub, fake, fault)
    status, headers, body = call(hub.url, "POST", "/v1/pipes/run", {"messages": HI})
    assert status == FAULTS[fault][2], body
    assert body["error"]["status"] == status
    no_runs_left(hub)
    stored = call(hub.url, "GET", f"/v1/threads/{headers['lb-thread-id']}/messages")[2]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["metadata"]["status"] == "failed"
    assert stored[1]["content"] == ("part" if fault in PARTIAL else "")


@pytest.mark.parametrize("fault", list(FAULTS))
def test_streaming_dialects_end_with_their_error(make_hub, fake, fault):
    hub = faulty_hub(make_hub, fake, fault)
    conn, response = open_stream(hub.url, "/chat/stream", {"message": "Hi", "model": "m"},
                                 headers={"Accept": "text/event-stream"})
    events = parse_sse(response.read())
    conn.close()
    assert events[0]["event"] == "init"
    assert [e["event"] for e in events[-2:]] == ["error", "done"]
    assert events[-1]["data"]["ok"] is False and events[-1]["data"]["stopped"] is False
    conn, response = open_stream(hub.url, "/v1/chat/completions",
                                 {"model": "m", "messages": HI, "stream": True})
    if response.status == 200:          # the failure came after the first byte
        last = response.read().decode().strip().splitlines()[-1]
        assert json.loads(last[6:])["error"]["message"]
    else:                               # before it: a real status
        assert response.status == FAULTS[fault][2]
    conn.close()
    no_runs_left(hub)
