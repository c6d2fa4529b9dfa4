"""Slow and hostile clients (issue 8): trickled requests, stalled readers, too many
connections."""

import select
import socket
import threading
import time

from fake_lmstudio import Script
from http_client import call, open_stream
from llmhub.http.server import Phase
from support import wait_for


def test_a_trickled_request_is_cut_off_at_the_read_timeout(make_hub):
    """slowloris: a byte every 0.2 s keeps each recv under the socket timeout, but the whole
    request must arrive within read_timeout_seconds of its first byte."""
    hub = make_hub({"server": {"read_timeout_seconds": 1}})
    host, port = hub.server_address[:2]
    with socket.create_connection((host, port)) as sock:
        started = time.monotonic()
        request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: " + b"a" * 1000
        for byte in request:
            sock.send(bytes([byte]))
            readable, _, _ = select.select([sock], [], [], 0.2)   # the trickle's pace
            if readable:
                break
        else:
            raise AssertionError("the hub never gave up on the trickling client")
        assert sock.recv(4096) == b""               # closed, not answered
        assert time.monotonic() - started < 3
    assert call(hub.url, "GET", "/health")[0] == 200


def test_a_client_that_stops_reading_slows_no_other_stream(make_hub, fake):
    hub = make_hub({"server": {"read_timeout_seconds": 1}})
    fake.enqueue(Script(chunks=["x" * 200] * 60_000))          # ~15 MB, at full speed
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # loopback buffers are
    stalled.connect(hub.server_address[:2])                          # big: keep this one small
    body = b'{"model": "flood", "stream": true, "messages": [{"role": "user", "content": "a"}]}'
    stalled.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                    b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    assert fake.wait_requests(1)                                     # … and never read
    conn, response = open_stream(hub.url, "/v1/chat/completions",
                                 {"model": "m", "messages": [{"role": "user", "content": "b"}],
                                  "stream": True})
    assert response.read().decode().rstrip().endswith("data: [DONE]")   # not slowed
    conn.close()
    # after read_timeout_seconds without reading, the hub gives up on the stalled client
    # (and stops the model); only then does the client read: what reached it ends without
    # the stream's terminator. Reading earlier would be reading, and the stream would flow.
    assert fake.aborted.wait(15)
    stalled.settimeout(15)
    received, reset = b"", False
    try:
        while data := stalled.recv(1 << 20):
            received += data
    except ConnectionResetError:
        reset = True       # a reset may arrive before what was queued for us: ended all the same
    stalled.close()
    assert received.startswith(b"HTTP/1.1 200") or (reset and not received)
    assert not received.endswith(b"0\r\n\r\n")                      # truncated, not finished


def test_past_max_connections_the_hub_answers_503(make_hub):
    hub = make_hub({"server": {"max_connections": 3}})
    host, port = hub.server_address[:2]
    held = []
    for _ in range(3):                          # three connections mid-request: not idle
        sock = socket.create_connection((host, port))
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        held.append(sock)
    assert wait_for(lambda: sum(h.clock.phase is Phase.HEAD
                                for h in hub.deadlines.holders()) == 3)
    with socket.create_connection((host, port)) as extra:
        reply = extra.recv(65536)
    assert reply.startswith(b"HTTP/1.1 503") and b"too_many_connections" in reply
    for sock in held:
        sock.close()
    gone = threading.Event()
    for _ in range(100):                        # the slots come back as the threads end
        if hub.connections < 3:
            gone.set()
            break
        gone.wait(0.05)
    assert gone.is_set() and call(hub.url, "GET", "/health")[0] == 200


def test_streams_survive_descriptors_past_1024(make_hub, fake):
    """Regression: select() refuses fds >= 1024, and the disconnect check once read that
    refusal as "the client left", cancelling healthy streams once ~1,000 were open."""
    import gc
    import os
    gc.collect()          # sockets of earlier tests, closed later, would free low descriptors
    filler = [os.open(os.devnull, os.O_RDONLY)]
    while filler[-1] < 1100:                    # every free descriptor below, taken
        filler.append(os.open(os.devnull, os.O_RDONLY))
    try:
        hub = make_hub({"server": {"ping_interval_seconds": 0.05}})
        release = threading.Event()
        fake.enqueue(Script(hold_first=release))
        conn, response = open_stream(hub.url, "/v1/chat/completions", {
            "model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True})
        assert conn.sock.fileno() > 1024
        for _ in range(5):                      # several quiet ticks: disconnect checks run
            assert response.read1(100) == b": ping\n\n"
        release.set()
        assert response.read().decode().rstrip().endswith("data: [DONE]")
        conn.close()
        assert not fake.chat_requests()[0].aborted
    finally:
        for fd in filler:
            os.close(fd)
