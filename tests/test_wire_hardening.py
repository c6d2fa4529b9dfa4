"""Issue 26 (hardening, the wire): lone surrogates, HEAD on streams, unknown methods that ask
to close, trickled bodies, clients that hold many connections."""

import json
import time
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


# --- HEAD on streams, unknown methods --------------------------------------------------------

def exchange_until_close(hub, data: bytes, timeout: float = 10) -> tuple[bytes, float]:
    """Send `data`, read until the hub closes; (everything read, seconds it took)."""
    started = time.monotonic()
    with socket.create_connection(hub.server_address[:2], timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received, time.monotonic() - started


def test_issue26_an_unknown_method_with_connection_close_is_answered_and_closed(hub):
    """The 501 once ignored the client's `Connection: close`: the client waited out the
    keep-alive timeout (5 s) for the end of the reply."""
    reply, took = exchange_until_close(
        hub, b"BREW /pot HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 501") and b"Connection: close" in reply
    assert took < 2


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
def test_issue26_head_on_a_stream_route_keeps_the_connection_in_step(hub, fake, version):
    """HEAD on /v1/runs/events and /responses/{id}/events: headers only, and the request
    pipelined behind it is answered (HTTP/1.1), or the reply says Connection: close."""
    status, _, created = call(hub.url, "POST", "/responses", {"model": "m", "input": "hi"})
    assert status == 200
    for path in ("/v1/runs/events", f"/responses/{created['id']}/events"):
        head = f"HEAD {path} {version}\r\nHost: 127.0.0.1\r\n\r\n".encode()
        health = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        reply, _ = exchange_until_close(hub, head + health)
        first, _, rest = reply.partition(b"\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 200") and b"text/event-stream" in first
        if version == "HTTP/1.0":
            assert b"Connection: close" in first and rest == b""
        else:
            assert rest.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in rest
