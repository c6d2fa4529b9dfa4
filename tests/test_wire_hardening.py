"""Issue 26 (hardening, the wire): lone surrogates, HEAD on streams, unknown methods that ask
to close, trickled bodies, clients that hold many connections."""

import base64
import json
import socket
import subprocess
import sys
import time
import tracemalloc

import pytest

from conftest import ROOT
from http_client import call
from llmhub.http.server import WAITING, Phase
from support import wait_for

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
    """HEAD on /v1/runs/events, /responses/{id}/events and /v1/responses/{id}?stream=true:
    headers only, and the request pipelined behind it is answered (HTTP/1.1), or the reply
    says Connection: close."""
    status, _, created = call(hub.url, "POST", "/responses", {"model": "m", "input": "hi"})
    assert status == 200
    status, _, v1 = call(hub.url, "POST", "/v1/responses", {"model": "m", "input": "hi"})
    assert status == 200
    for path in ("/v1/runs/events", f"/responses/{created['id']}/events",
                 f"/v1/responses/{v1['id']}?stream=true"):
        head = f"HEAD {path} {version}\r\nHost: 127.0.0.1\r\n\r\n".encode()
        health = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        reply, _ = exchange_until_close(hub, head + health)
        first, _, rest = reply.partition(b"\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 200") and b"text/event-stream" in first
        if version == "HTTP/1.0":
            assert b"Connection: close" in first and rest == b""
        else:
            assert rest.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in rest


# --- trickled bodies, connections per client ---------------------------------------------------

def trickler(address, source: str = "127.0.0.1") -> socket.socket:
    """A connection that sent a head promising 100,000 bytes, and one byte of them."""
    sock = socket.create_connection(address, timeout=5, source_address=(source, 0))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
    return sock


def test_issue26_a_body_that_falls_silent_is_cut_off_at_body_timeout(make_hub):
    """nginx's client_body_timeout: the whole request has read_timeout_seconds (30 here),
    but the body may not fall silent for body_timeout_seconds (0.5)."""
    hub = make_hub({"server": {"read_timeout_seconds": 30, "body_timeout_seconds": 0.5}})
    with trickler(hub.server_address[:2]) as sock:
        started = time.monotonic()
        sock.sendall(b'"model"')                     # a read: the silence clock restarts
        assert sock.recv(4096) == b""                # closed, not answered
        assert time.monotonic() - started < 3
    assert call(hub.url, "GET", "/health")[0] == 200


def second_loopback_address() -> str:
    """127.0.0.2 reaches a server on 127.0.0.1 on Linux; elsewhere it may not exist."""
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.2", 0))
    except OSError:
        pytest.skip("no 127.0.0.2 on this machine")
    return "127.0.0.2"


def test_issue26_trickling_clients_lock_out_only_their_own_address(make_hub):
    """A client that fills every slot it can with trickled bodies gets its per-address cap
    and then 429; everyone else is still served (it was: all slots held, everyone 503)."""
    other = second_loopback_address()
    hub = make_hub({"server": {"max_connections": 6, "max_connections_per_client": 3}})
    address = hub.server_address[:2]
    held = [trickler(address) for _ in range(3)]
    try:
        # until a handler reads its first byte, its connection counts as idle, and idle ones
        # are closed to make room: wait until all three are mid-body
        assert wait_for(lambda: sum(h.clock.phase is Phase.BODY
                                    for h in hub.deadlines.holders()) == 3)
        held += [trickler(address) for _ in range(3)]  # as many as the whole hub holds
        for sock in held[3:]:                         # past the cap: refused at once
            reply = sock.recv(65536)
            assert reply.startswith(b"HTTP/1.1 429") and b"max_connections_per_client" in reply
        assert hub.connections == 3
        for _ in range(3):                            # another address: served
            with socket.create_connection(address, timeout=5,
                                          source_address=(other, 0)) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             b"Connection: close\r\n\r\n")
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        for sock in held:
            sock.close()


def test_issue26_at_its_cap_a_client_reuses_its_own_idle_slot(make_hub):
    """A browser's idle keep-alive connections do not count against its next request: at the
    cap, the hub closes the client's own longest-idle one to make room."""
    hub = make_hub({"server": {"max_connections_per_client": 2}})
    idle = []
    for _ in range(2):
        sock = socket.create_connection(hub.server_address[:2], timeout=5)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")   # answered; now idle
        idle.append(sock)
    try:
        assert wait_for(lambda: sum(h.clock.phase in WAITING
                                    for h in hub.deadlines.holders()) == 2)
        assert call(hub.url, "GET", "/health")[0] == 200
        assert idle[0].recv(65536) == b""             # the longer idle, closed for it
    finally:
        for sock in idle:
            sock.close()


# --- memory per large body -------------------------------------------------------------------

@pytest.fixture
def fake_elsewhere():
    """The fake LM Studio in a process of its own, so that tracemalloc sees only the hub (and
    this test's client) parse and send a large body."""
    process = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_lmstudio.py")],
                               stdout=subprocess.PIPE, text=True)
    try:
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(10)


IMAGE = "data:image/png;base64," + base64.b64encode(bytes(range(256)) * 12288).decode()
LARGE_BODIES = [
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what"}, {"type": "image_url", "image_url": {"url": IMAGE}}]}]}),
    ("/v1/responses", {"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "what"}, {"type": "input_image", "image_url": IMAGE}]}]}),
]


@pytest.mark.parametrize("path,body", LARGE_BODIES, ids=[p for p, _ in LARGE_BODIES])
def test_issue26_a_large_body_is_held_about_twice_not_four_times(make_hub, fake_elsewhere,
                                                                 path, body):
    """Raw bytes, their text, the parsed value, the upstream body as str and as bytes, and
    head + body joined to be sent were all alive at once: 4x the body at peak. The bytes
    now go before the parse, and the upstream body (and the stored input) is written
    without an escaped copy first."""
    hub = make_hub(upstream_url=fake_elsewhere)
    payload = json.dumps(body).encode()             # 4 MiB
    assert call(hub.url, "POST", path, payload)[0] == 200   # warm: imports, caches
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        status, _, reply = call(hub.url, "POST", path, payload)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert status == 200, reply
    assert peak < 3 * len(payload), f"peak {peak / len(payload):.2f}x the body"
