"""Issue 26, the data half of hardening: large upstream replies arrive whole, hostile usage
numbers from an upstream become sane integers, and a request the upstream may have read is
never sent twice."""

import json
import socket
import threading

from http_client import call


# --- large replies ---------------------------------------------------------------------------

def test_issue26_embeddings_over_one_mib_arrive_whole(hub, fake):
    """100 texts of 1,536 dimensions is a ~3 MiB reply: every vector reaches the client."""
    fake.embedding_dims = 1536
    texts = [f"text {i}" for i in range(100)]
    status, _, body = call(hub.url, "POST", "/v1/embeddings", {"model": "e", "input": texts},
                           timeout=30)
    assert status == 200, body
    assert [d["index"] for d in body["data"]] == list(range(100))
    assert all(len(d["embedding"]) == 1536 for d in body["data"])


def test_issue26_a_reply_past_max_reply_bytes_is_a_clear_502(make_hub, fake):
    """Past the documented bound the hub says so, naming the key, instead of an empty list."""
    hub = make_hub({"upstream": {"max_reply_bytes": 65536}})
    fake.embedding_dims = 1536
    status, _, body = call(hub.url, "POST", "/v1/embeddings",
                           {"model": "e", "input": ["a"] * 20})
    assert status == 502, body
    assert "max_reply_bytes" in body["error"]["message"]


def test_issue26_embeddings_take_openais_2048_inputs_and_refuse_more(hub, fake):
    status, _, body = call(hub.url, "POST", "/v1/embeddings",
                           {"model": "e", "input": ["x"] * 2048})
    assert status == 200 and len(body["data"]) == 2048
    status, _, body = call(hub.url, "POST", "/v1/embeddings",
                           {"model": "e", "input": ["x"] * 2049})
    assert status in (400, 413) and body["error"]["param"] == "input"
    assert "2048" in body["error"]["message"]
    assert len([r for r in fake.requests if r.path == "/v1/embeddings"]) == 1


def test_issue26_the_message_limit_still_guards_chats(hub, fake):
    status, _, body = call(hub.url, "POST", "/v1/chat/completions", {
        "model": "m", "messages": [{"role": "user", "content": "x"}] * 1001})
    assert status == 413 and body["error"]["param"] == "messages"


# --- a request sent twice --------------------------------------------------------------------

COMPLETION = {"id": "c1", "object": "chat.completion", "created": 0, "model": "m",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                           "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


class ReadThenHangUp:
    """An upstream that keeps connections alive, answers the first request on each, and on a
    kept-alive connection's next request reads it whole, then closes without answering:
    what a server that crashed mid-generation looks like."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"
        self.posts: list[str] = []
        self.hung_up = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock) -> None:
        with sock, sock.makefile("rb") as reader:
            served = 0
            while (line := reader.readline()) and line.strip():
                method, path, _ = line.decode().split(" ", 2)
                headers = dict(h.decode().lower().split(":", 1) for h in
                               iter(reader.readline, b"\r\n"))
                reader.read(int(headers.get("content-length", 0)))
                if method == "POST":
                    self.posts.append(path)
                    if served:
                        self.hung_up.set()
                        return
                body = json.dumps(COMPLETION if method == "POST" else {"data": []}).encode()
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                served += 1

    def close(self) -> None:
        self.listener.close()


def test_issue26_a_post_the_upstream_read_is_never_sent_again(make_hub):
    """A kept-alive connection closed after the request was written: the model may be
    generating, so the hub answers 502 instead of sending the request a second time."""
    upstream = ReadThenHangUp()
    try:
        hub = make_hub({"upstream": {"kind": "openai"}}, upstream_url=upstream.url)
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        status, _, body = call(hub.url, "POST", "/v1/chat/completions", chat)
        assert status == 200 and body["choices"][0]["message"]["content"] == "Hi"
        status, _, body = call(hub.url, "POST", "/v1/chat/completions", chat)
        assert upstream.hung_up.is_set()
        assert status == 502, body
        assert "without answering" in body["error"]["message"]
        assert upstream.posts == ["/v1/chat/completions"] * 2
    finally:
        upstream.close()
