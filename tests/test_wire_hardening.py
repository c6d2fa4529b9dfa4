"""Issue 26 (hardening, the wire): lone surrogates, HEAD on streams, unknown methods that ask
to close, trickled bodies, clients that hold many connections."""

import json
import socket

import pytest

from http_client import call

LONE = "\ud83d"          # JavaScript's s.slice(0, n) cut inside an emoji leaves this half

# (path, body) with the lone surrogate in a message's content
SURROGATE_CONTENT = [
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user",
                                                          "content": "cut " + LONE}]}),
    ("/v1/responses", {"model": "m", "input": "cut " + LONE}),
    ("/v1/messages", {"model": "m", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "cut " + LONE}]}),
    ("/v1/pipes/run", {"stream": False, "messages": [{"role": "user",
                                                      "content": "cut " + LONE}]}),
    ("/v1/threads", {"messages": [{"role": "user", "content": "cut " + LONE}]}),
]


@pytest.mark.parametrize("path,body", SURROGATE_CONTENT, ids=[p for p, _ in SURROGATE_CONTENT])
def test_issue26_a_lone_surrogate_in_content_is_read_as_the_replacement_character(
        hub, fake, path, body):
    """json.dumps writes the escape "\\ud83d"; Python's json reads it back as a lone
    surrogate, which once failed later (UTF-8 encode, SQLite) as a 500 on every route."""
    status, _, reply = call(hub.url, "POST", path, body)
    assert status == 200, reply
    if path != "/v1/threads":
        sent = fake.chat_requests()[-1].body
        assert "cut \ufffd" in json.dumps(sent, ensure_ascii=False)


@pytest.mark.parametrize("path,body", SURROGATE_CONTENT, ids=[p for p, _ in SURROGATE_CONTENT])
def test_issue26_a_lone_surrogate_in_a_key_name_is_never_a_500(hub, path, body):
    """In a key, the surrogate becomes U+FFFD too: a dialect that refuses unknown fields
    names it so; one that passes extras on sends it upstream; either way, no 500."""
    body = dict(body, **{"metadata": {"k" + LONE: "v"}, "x" + LONE: 1})
    status, _, reply = call(hub.url, "POST", path, body)
    assert status in (200, 400), reply
    if status == 400:
        assert "\ufffd" in json.dumps(reply, ensure_ascii=False)


def test_issue26_a_lone_surrogate_in_a_thread_metadata_key_is_stored(hub):
    status, _, thread = call(hub.url, "POST", "/v1/threads", {"metadata": {"k" + LONE: "v"}})
    assert status == 200, thread
    status, _, again = call(hub.url, "GET", f"/v1/threads/{thread['id']}")
    assert status == 200 and again["metadata"] == {"k\ufffd": "v"}
