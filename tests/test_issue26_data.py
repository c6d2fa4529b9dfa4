"""Issue 26, the data half of hardening: large upstream replies arrive whole, hostile usage
numbers from an upstream become sane integers, and a request the upstream may have read is
never sent twice."""

import json

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
