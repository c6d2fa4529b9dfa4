"""Request framing and connections (issue 11, points 1, 2, 6 and 11), as raw bytes over
real sockets: smuggling shapes refused and the connection closed, checks before the body,
lingering close, idle limits, HEAD and HTTP/1.0 streams."""

import json
import socket

import pytest

from http_client import call, connect, open_stream, raw_exchange
from llmhub.http.server import WAITING
from support import wait_for

CHAT = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


def closed_after(reply: bytes) -> bool:
    """One response, then the end: the connection closed, nothing else was answered."""
    return reply.count(b"\r\nServer: llmhub/") == 1 and b"Connection: close" in reply


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


# --- point 1: framing -----------------------------------------------------------------------

@pytest.mark.parametrize("size", [b"-3", b"+16", b"0x16", b"1_6", b" 16", b"16 x", b"",
                                  b"0" * 2000 + b"5", b"1" * 17])
def test_a_chunk_size_that_is_not_hex_digits_is_400_and_closes(hub, fake, size):
    reply = raw_exchange(hub.url, HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + size +
                         b"\r\n" + b"x" * 40 + b"\r\n0\r\n\r\n")
    assert status_of(reply) == 400 and closed_after(reply), reply[:200]
    assert not fake.chat_requests()


def test_a_chunk_past_max_body_bytes_is_413_and_closes(make_hub, fake):
    hub = make_hub({"server": {"max_body_bytes": 2048}})
    reply = raw_exchange(hub.url, HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
                         b"10000\r\n" + b"x" * 5000)
    assert status_of(reply) == 413 and closed_after(reply)


def test_chunk_extensions_and_trailers_are_read(hub, fake):
    reply = raw_exchange(hub.url, HEAD + b"Transfer-Encoding: chunked\r\nConnection: close"
                         b"\r\n\r\n%x;name=value\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n"
                         % (len(CHAT), CHAT))
    assert status_of(reply) == 200 and b"Hello from the fake!" in reply


SMUGGLED = b"GET /v1/threads HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.mark.parametrize("framing", [
    b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(SMUGGLED),
    b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    b"Content-Length: 5\r\nContent-Length: 5\r\n",
    b"Content-Length: 5, 5\r\n",
    b"Content-Length: +5\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: identity\r\n",
], ids=["cl+te", "te+cl", "two-cl", "cl-list", "cl-sign", "te-gzip", "two-te", "te-identity"])
def test_ambiguous_framing_is_400_and_no_hidden_request_runs(hub, framing):
    reply = raw_exchange(hub.url, b"POST /v1/threads HTTP/1.1\r\nHost: 127.0.0.1\r\n" + framing
                         + b"\r\n0\r\n\r\n" + SMUGGLED)
    assert status_of(reply) == 400 and closed_after(reply), reply[:300]


def test_http_10_with_transfer_encoding_is_refused(hub):
    reply = raw_exchange(hub.url, b"POST /v1/threads HTTP/1.0\r\nTransfer-Encoding: chunked"
                         b"\r\n\r\n0\r\n\r\n")
    assert status_of(reply) == 400


@pytest.mark.parametrize("headers", [
    b"",                                               # HTTP/1.1 without Host
    b"Host: 127.0.0.1\r\nHost: 127.0.0.1\r\n",
    b"Host: 127.0.0.1\r\nX-Bad: a\x00b\r\n",
    b"Host: 127.0.0.1\r\nX-Bad: a\rb\r\n",
    b"Host: 127.0.0.1\r\nX-Bad: a\nb\r\n",
    b"Host: 127.0.0.1\r\nX-Folded: a\r\n b\r\n",
    b"Host: 127.0.0.1\r\nBad Name: a\r\n",
], ids=["no-host", "two-hosts", "nul", "bare-cr", "bare-lf", "folded", "space-in-name"])
def test_bad_host_and_header_lines_are_400(hub, headers):
    reply = raw_exchange(hub.url, b"GET /health HTTP/1.1\r\n" + headers + b"\r\n")
    assert status_of(reply) == 400 and closed_after(reply), reply[:300]


def test_a_request_head_over_64_kib_is_431(hub):
    headers = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"a" * 4000) for i in range(20))
    reply = raw_exchange(hub.url, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers
                         + b"\r\n")
    assert status_of(reply) == 431 and closed_after(reply)
    reply = raw_exchange(hub.url, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n")
    assert status_of(reply) == 414


def test_an_absolute_form_target_is_routed_by_its_path(hub, fake):
    host, port = hub.server_address[:2]
    reply = raw_exchange(hub.url, b"POST http://%s:%d/v1/chat/completions HTTP/1.1\r\n"
                         b"Host: %s:%d\r\nContent-Type: application/json\r\nConnection: close"
                         b"\r\nContent-Length: %d\r\n\r\n%s"
                         % (host.encode(), port, host.encode(), port, len(CHAT), CHAT))
    assert status_of(reply) == 200 and b"Hello from the fake!" in reply
    reply = raw_exchange(hub.url, b"GET http://evil.example/health HTTP/1.1\r\n"
                         b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert status_of(reply) == 403           # the target's authority is the Host to check


def test_an_unknown_http_version_is_505(hub):
    reply = raw_exchange(hub.url, b"GET /health HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n")
    assert status_of(reply) == 505


# --- point 2: checks before reading --------------------------------------------------------

BIG = 17 << 20


@pytest.mark.parametrize("path, headers, expected", [
    ("/v1/chat/completions", {}, 401),                            # no key
    ("/v1/no/such/route", {"Authorization": "Bearer k-e-y-1"}, 404),
    ("/v1/chat/completions", {"Authorization": "Bearer k-e-y-1"}, 413),
])
def test_an_early_answer_is_readable_by_a_client_that_writes_its_whole_body(
        make_hub, fake, path, headers, expected):
    """http.client writes all 17 MiB before it reads: it must get the answer, not EPIPE."""
    hub = make_hub({"server": {"api_keys": "k-e-y-1"}})
    conn = connect(hub.url, timeout=30)
    conn.request("POST", path, body=b"x" * BIG, headers={"Content-Type": "application/json",
                                                         **headers})
    response = conn.getresponse()
    assert response.status == expected
    assert json.loads(response.read())["error"]
    conn.close()
    assert not fake.chat_requests()


def test_expect_100_continue_is_answered_after_the_checks(make_hub, fake):
    hub = make_hub({"server": {"api_keys": "k-e-y-1"}})
    with socket.create_connection(hub.server_address[:2], timeout=5) as sock:
        sock.sendall(HEAD + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(CHAT))
        reply = sock.recv(65536)
        assert status_of(reply) == 401 and b"100 Continue" not in reply   # no body wanted
    with socket.create_connection(hub.server_address[:2], timeout=5) as sock:
        sock.sendall(HEAD + b"Authorization: Bearer k-e-y-1\r\nExpect: 100-continue\r\n"
                     b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(CHAT))
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(CHAT)
        reply = b""
        while data := sock.recv(65536):
            reply += data
        assert status_of(reply) == 200 and b"Hello from the fake!" in reply


def test_a_small_unwanted_body_keeps_the_connection(make_hub):
    hub = make_hub({"server": {"api_keys": "k-e-y-1"}})
    conn = connect(hub.url)
    conn.request("POST", "/v1/chat/completions", body=CHAT)
    first = conn.getresponse()
    assert first.status == 401 and first.getheader("Connection") != "close"
    first.read()
    sock = conn.sock
    conn.request("GET", "/health")
    assert conn.getresponse().status == 200 and conn.sock is sock
    conn.close()


def test_pipelined_requests_with_bodies_are_each_answered(hub, fake):
    """A request whose bytes came in with the one before it (pipelining, RFC 9112 §9.3)
    begins its head phase all the same. Its first byte, read with the request before it,
    used to leave its deadline unset, and its body then crashed the connection."""
    one = HEAD + b"Content-Length: %d\r\n\r\n%s" % (len(CHAT), CHAT)
    reply = raw_exchange(hub.url, one + one + HEAD + b"Connection: close\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(CHAT), CHAT))
    assert reply.count(b"HTTP/1.1 200 OK") == 3 and reply.count(b"Hello from the fake!") == 3


# --- point 6: connection slots ---------------------------------------------------------------

def test_an_idle_keep_alive_connection_is_closed_after_keepalive_timeout(make_hub):
    hub = make_hub({"server": {"keepalive_timeout_seconds": 0.2}})
    with socket.create_connection(hub.server_address[:2], timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        assert sock.recv(65536) == b""          # closed by the hub, well before 5 s


def test_a_request_head_has_its_own_short_deadline(make_hub):
    hub = make_hub({"server": {"head_timeout_seconds": 0.5, "read_timeout_seconds": 60}})
    with socket.create_connection(hub.server_address[:2], timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")   # … and no more
        assert sock.recv(65536) == b""          # cut at the head deadline, not at 60 s


def test_a_full_connection_table_makes_room_by_closing_idle_connections(make_hub):
    hub = make_hub({"server": {"max_connections": 3}})
    idle = []
    for _ in range(3):
        sock = socket.create_connection(hub.server_address[:2], timeout=5)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        idle.append(sock)
    assert wait_for(lambda: sum(h.clock.phase in WAITING for h in hub.deadlines.holders()) == 3)
    assert call(hub.url, "GET", "/health")[0] == 200        # served, not 503
    assert idle[0].recv(65536) == b""           # the longest idle made room
    for sock in idle:
        sock.close()


def test_many_idle_sockets_do_not_lock_out_real_clients(make_hub):
    hub = make_hub({"server": {"max_connections": 50}})
    hogs = [socket.create_connection(hub.server_address[:2]) for _ in range(50)]
    try:
        assert wait_for(lambda: hub.connections >= 50)
        for _ in range(5):
            assert call(hub.url, "GET", "/health")[0] == 200
    finally:
        for sock in hogs:
            sock.close()


# --- point 11: HEAD, HTTP/1.0, Last-Event-ID -------------------------------------------------

def test_head_on_a_streaming_route_sends_headers_only(hub, fake):
    status, _, created = call(hub.url, "POST", "/responses", {"model": "m", "input": "hi"})
    assert status == 200
    conn = connect(hub.url)
    conn.request("HEAD", f"/responses/{created['id']}/events")
    head = conn.getresponse()
    assert head.status == 200 and head.getheader("Content-Type").startswith("text/event-stream")
    assert head.read() == b""
    conn.request("GET", "/health")                     # the connection is still in step
    second = conn.getresponse()
    assert second.status == 200 and json.loads(second.read())["status"]
    conn.close()


def test_http_10_clients_get_a_close_delimited_stream(hub, fake):
    body = json.dumps({"model": "m", "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    reply = raw_exchange(hub.url, b"POST /v1/chat/completions HTTP/1.0\r\nContent-Type: "
                         b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    head, _, rest = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Transfer-Encoding" not in head
    assert rest.startswith(b"data: {") and rest.rstrip().endswith(b"data: [DONE]")


@pytest.mark.parametrize("value", ["-1", "-5", "+1", "1.5", " x"])
def test_a_last_event_id_that_is_not_a_count_is_400(hub, fake, value):
    _, _, created = call(hub.url, "POST", "/responses", {"model": "m", "input": "hi"})
    status, _, body = call(hub.url, "GET", f"/responses/{created['id']}/events",
                           headers={"Last-Event-ID": value})
    assert status == 400 and body["error"]["code"] == "invalid_request"


def test_a_stream_of_http_client_over_keep_alive_still_works(hub, fake):
    """The stricter reader must not cost ordinary clients anything: keep-alive and streams."""
    conn, response = open_stream(hub.url, "/v1/chat/completions", {
        "model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert response.read().rstrip().endswith(b"data: [DONE]")
    conn.request("GET", "/health")
    assert conn.getresponse().status == 200
    conn.close()


def test_cancelled_while_reading_nothing_leaves_no_thread_behind(make_hub, fake):
    """A client that sends a head and goes: its handler thread ends."""
    hub = make_hub()
    with socket.create_connection(hub.server_address[:2]) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        assert wait_for(lambda: hub.connections == 1)
    assert wait_for(lambda: hub.connections == 0)
