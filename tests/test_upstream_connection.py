"""upstream/connection.py, the lean HTTP/1.1 reader, through the hub: replies split at every
byte, interim 1xx replies, bodies ended by close, and garbage that must become a clear 502."""

import json
import socket
import threading

import pytest

from http_client import call

HI = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}


def sse_reply(words: list[str], *, extension: bytes = b"", trailer: bytes = b"") -> bytes:
    """A chunked SSE completion as LM Studio frames it, one event a chunk."""
    events = [{"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}
              for w in words]
    events.append({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    payloads = [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]
    body = b"".join(b"%x%s\r\n%s\r\n" % (len(p), extension, p) for p in payloads)
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n" + trailer + b"\r\n")


class RawUpstream:
    """Answers each request on a connection with the next scripted bytes, then closes if
    told to: for framings and garbage the scriptable fake never sends."""

    def __init__(self, replies: list[bytes], trickle: bool = False, close: bool = False):
        self.replies, self.trickle, self.close = list(replies), trickle, close
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.replies:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                while self.replies and self._read_request(conn):
                    reply = self.replies.pop(0)
                    for piece in ([reply[i:i + 1] for i in range(len(reply))]
                                  if self.trickle else [reply]):
                        conn.sendall(piece)
                    if self.close:
                        break

    @staticmethod
    def _read_request(conn) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            more = conn.recv(65536)
            if not more:
                return False
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += conn.recv(65536)
        return True

    def stop(self) -> None:
        self.listener.close()


@pytest.fixture
def raw(make_hub):
    started = []

    def start(replies, **options):
        upstream = RawUpstream(replies, **options)
        started.append(upstream)
        return make_hub({"upstream": {"first_byte_timeout_seconds": 5}},
                        upstream_url=upstream.url)

    yield start
    for upstream in started:
        upstream.stop()


def content(body) -> str:
    return body["choices"][0]["message"]["content"]


def test_a_reply_split_at_every_byte_is_read_whole(raw):
    hub = raw([sse_reply(["Hel", "lo", " Мир"], extension=b";x=1",
                         trailer=b"X-Trailer: t\r\n")], trickle=True)
    status, _, body = call(hub.url, "POST", "/v1/chat/completions", HI)
    assert status == 200 and content(body) == "Hello Мир"


def test_interim_replies_are_skipped_and_the_connection_reused(raw):
    hub = raw([b"HTTP/1.1 100 Continue\r\n\r\n" + sse_reply(["one"]), sse_reply(["two"])])
    replies = [call(hub.url, "POST", "/v1/chat/completions", HI) for _ in range(2)]
    assert [content(body) for _, _, body in replies] == ["one", "two"]   # one connection


def test_a_body_ended_by_close_is_complete(raw):
    completion = {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                  "choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": "whole"}}]}
    hub = raw([b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" +
               json.dumps(completion).encode()], close=True)
    status, _, body = call(hub.url, "POST", "/v1/chat/completions", HI)
    assert status == 200 and content(body) == "whole"


@pytest.mark.parametrize("reply, says", [
    (b"SSH-2.0-OpenSSH_9.2\r\n", "not an HTTP reply"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream"
     b"\r\n\r\nzz\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "bad reply header"),
])
def test_garbage_is_a_502_that_says_what_was_wrong(raw, reply, says):
    hub = raw([reply], close=True)
    status, _, body = call(hub.url, "POST", "/v1/chat/completions", HI)
    assert status == 502, body
    assert body["error"]["code"] == "upstream_garbage" and says in body["error"]["message"]
    assert call(hub.url, "GET", "/v1/threads")[0] == 200       # still serving


def test_a_key_that_would_inject_a_header_is_refused_not_sent(hub, fake):
    status, _, body = call(hub.url, "POST", "/v1/chat/summarize", {
        "model": "m", "messages": [{"role": "user", "content": "Hi"}],
        "api_key": "sk-1\r\nX-Injected: yes"})
    assert status == 400 and "not allowed" in json.dumps(body)
    assert not fake.chat_requests()
