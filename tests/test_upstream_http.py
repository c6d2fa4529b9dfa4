"""upstream/exchange.py over real sockets: keep-alive reuse, and never reuse after an abort."""

import contextlib
import socket
import threading

import pytest

from fake_lmstudio import Script
from llmhub.config import load_config
from llmhub.http import sockets
from llmhub.upstream import exchange as upstream_http
from llmhub.upstream.connection import LINGER_NOW, Connection
from llmhub.upstream.lmstudio import LMStudio
from conftest import write_ini

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def upstream(tmp_path, fake):
    config = load_config(env={}, path=write_ini(tmp_path / "c.ini", {
        "upstream": {"base_url": fake.url, "total_timeout_seconds": 5}}))
    return LMStudio(config.upstream)


def complete(upstream) -> str:
    call = upstream.chat(BODY)
    try:
        call.open()
        return "".join(c["choices"][0]["delta"].get("content", "")
                       for c in call.chunks() if c.get("choices"))
    finally:
        call.close()


def test_a_clean_exchange_keeps_the_connection(upstream, fake):
    assert complete(upstream) == complete(upstream) == "Hello from the fake!"
    first, second = fake.chat_requests()
    assert first.client_port == second.client_port


def test_an_aborted_exchange_is_never_reused(upstream, fake):
    complete(upstream)
    fake.enqueue(Script(hold_first=threading.Event()))
    call = upstream.chat(BODY)
    call.open()
    call.abort()
    with pytest.raises(upstream_http.Aborted):
        list(call.chunks())
    call.close()
    complete(upstream)
    ports = [r.client_port for r in fake.chat_requests()]
    assert ports[0] == ports[1] and ports[2] != ports[1]


def test_a_connection_the_server_closed_is_replaced(upstream, fake):
    fake.enqueue(Script(drop_connection=True))
    complete(upstream)
    assert fake.closed.wait(5)      # closed while idle: noticed before reuse, not after
    assert complete(upstream) == "Hello from the fake!"
    first, second = fake.chat_requests()
    assert first.client_port != second.client_port


def test_a_stale_connection_that_looks_open_is_not_sent_a_post_again(upstream, fake,
                                                                      monkeypatch):
    """If the server closes between our readability check and the send, a POST fails with a
    502: after the write the hub cannot know the server did not act on it."""
    monkeypatch.setattr(upstream_http, "_still_open", lambda conn: True)
    fake.enqueue(Script(drop_connection=True))
    complete(upstream)
    with pytest.raises(upstream_http.UpstreamError, match="without answering"):
        complete(upstream)
    assert len(fake.chat_requests()) == 1
    assert complete(upstream) == "Hello from the fake!"   # the dead connection is gone


def test_a_stale_connection_that_looks_open_is_retried_once_for_a_get(upstream, fake,
                                                                      monkeypatch):
    """GET is idempotent: sent again on a fresh connection, as nginx does."""
    monkeypatch.setattr(upstream_http, "_still_open", lambda conn: True)
    fake.enqueue(Script(drop_connection=True))
    complete(upstream)
    assert upstream.get_json("/v1/models")["data"]
    first, second = fake.chat_requests()[0], fake.requests[-1]
    assert second.path == "/v1/models" and second.client_port != first.client_port


@pytest.fixture(params=["kernel count", "poll"])
def idle_pair(request, monkeypatch):
    """A hub-side Connection that has read a whole reply, and the server's end of it."""
    if request.param == "poll":
        monkeypatch.setattr(sockets, "TCP_INFO", None)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        conn = Connection(socket.create_connection(listener.getsockname()), "h")
        server, _ = listener.accept()
    with contextlib.closing(server), contextlib.closing(conn.sock):
        if request.param == "kernel count" and sockets.arrivals(conn.sock) is None:
            pytest.skip("this platform keeps no count of bytes received")
        server.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
        response = conn.read_response("POST")
        assert response.read1() == b"hi" and response.read1() == b""
        yield conn, server


def arrived(conn) -> None:
    assert sockets.readable(conn.sock, timeout=5)     # the server's bytes, EOF or reset


def test_an_idle_connection_with_nothing_new_is_reused(idle_pair, monkeypatch):
    conn, _ = idle_pair
    if sockets.TCP_INFO is not None:      # the kernel's count needs no poll
        monkeypatch.setattr(upstream_http, "readable", lambda sock: 1 / 0)
    assert upstream_http._still_open(conn)


@pytest.mark.parametrize("what", ["stray bytes", "close", "reset"])
def test_an_idle_connection_the_server_wrote_to_or_closed_is_not_reused(idle_pair, what):
    conn, server = idle_pair
    if what == "stray bytes":
        server.sendall(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    else:
        if what == "reset":
            server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_NOW)
        server.close()
    arrived(conn)
    assert not upstream_http._still_open(conn)


def test_total_timeout_ends_a_trickling_stream(tmp_path, fake):
    config = load_config(env={}, path=write_ini(tmp_path / "c.ini", {
        "upstream": {"base_url": fake.url, "total_timeout_seconds": 0.3}}))
    fake.enqueue(Script(chunks=["x"] * 50, delay=0.05))
    with pytest.raises(upstream_http.UpstreamError, match="total timeout"):
        complete(LMStudio(config.upstream))
