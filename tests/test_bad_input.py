"""Bad input, across every endpoint (issue 8): each gets a 4xx in its dialect's shape that
names the field; the server stays alive; nothing is half-written to the store."""

import json
import random

import pytest

from http_client import call, raw_exchange
from llmhub.http import routes

HI = [{"role": "user", "content": "Hi"}]
# A valid body per endpoint, and the type of each field: n(umber), b(ool), o(ther).
VALID = {
    "/v1/chat/completions": ({"model": "m", "messages": HI, "temperature": 0.5,
                              "max_tokens": 10, "stream": False},
                             {"model": "o", "messages": "o", "temperature": "n",
                              "max_tokens": "n", "stream": "b"}, ["messages"]),
    "/v1/pipes/run": ({"messages": HI, "threadId": "t1", "variables": [{"name": "a",
                                                                         "value": "b"}],
                       "temperature": 0.5}, {"messages": "o", "threadId": "o",
                                             "variables": "o", "temperature": "n"}, []),
    "/v1/threads": ({"threadId": "new-thread", "metadata": {"a": "b"}, "messages": HI},
                    {"threadId": "o", "metadata": "o", "messages": "o"}, []),
    "/v1/threads/{thread_id}": ({"metadata": {"a": "b"}}, {"metadata": "o"}, ["metadata"]),
    "/v1/threads/{thread_id}/messages": ({"messages": HI}, {"messages": "o"}, ["messages"]),
    "/responses": ({"model": "m", "input": "Hi", "max_output_tokens": 10, "temperature": 0.2,
                    "create_thread": True, "metadata": {"k": "v"}},
                   {"model": "o", "input": "o", "max_output_tokens": "n", "temperature": "n",
                    "create_thread": "b", "metadata": "o"}, ["input"]),
    "/models/load": ({"model_key": "qwen3-vl-4b-instruct", "exclusive": False,
                      "context_length": 4096},
                     {"model_key": "o", "exclusive": "b", "context_length": "n"},
                     ["model_key"]),
    "/models/unload": ({"model_key": "qwen3-vl-4b-instruct", "force": False},
                       {"model_key": "o", "force": "b"}, []),
    "/chat": ({"model_key": "m", "messages": HI, "config": {"temperature": 0.3}},
              {"model_key": "o", "messages": "o", "config": "o"}, ["messages"]),
    "/chat/regular": ({"messages": HI}, {"messages": "o"}, ["messages"]),
    "/chat/vision": ({"messages": HI}, {"messages": "o"}, ["messages"]),
    "/chat/cancel": ({"request_id": "r"}, {"request_id": "o"}, ["request_id"]),
    "/v1/chat/completions/stream": ({"model": "m", "messages": HI},
                                    {"model": "o", "messages": "o"}, ["model", "messages"]),
    "/v1/chat/summarize": ({"model": "m", "messages": HI},
                           {"model": "o", "messages": "o"}, ["model", "messages"]),
    "/v1/messages": ({"model": "m", "max_tokens": 10, "messages": HI, "temperature": 0.5,
                      "stream": False},
                     {"model": "o", "max_tokens": "n", "messages": "o", "temperature": "n",
                      "stream": "b"}, ["model", "max_tokens", "messages"]),
    "/v1/responses": ({"model": "m", "input": "Hi", "temperature": 0.5, "stream": False,
                       "max_output_tokens": 10},
                      {"model": "o", "input": "o", "temperature": "n", "stream": "b",
                       "max_output_tokens": "n"}, ["model", "input"]),
    "/v1/embeddings": ({"model": "m", "input": "Hi", "dimensions": 8},
                       {"model": "o", "input": "o", "dimensions": "n"}, ["input"]),
    "/v1/completions": ({"model": "m", "prompt": "Hi", "max_tokens": 5, "stream": False},
                        {"model": "o", "prompt": "o", "max_tokens": "n", "stream": "b"},
                        ["prompt"]),
    "/v1/conversations": ({"metadata": {"a": "b"}, "items": [
        {"type": "message", "role": "user", "content": "Hi"}]},
        {"metadata": "o", "items": "o"}, []),
}
# These pass fields they do not read to the upstream, as the APIs they imitate do (an
# OpenAI-compatible server ignores what it does not know; Claude Code sends new fields).
EMPTY_OK = {"/v1/threads", "/v1/conversations"}    # an SDK may send no body at all
LENIENT = {"/v1/chat/completions", "/v1/messages", "/v1/responses", "/v1/embeddings",
           "/v1/completions"}
SHAPES = {
    "Service": lambda b: {"message", "code", "status"} <= set(b["error"]),
    "OpenAI": lambda b: set(b["error"]) == {"message", "type", "param", "code"},
    "Langbase": lambda b: {"code", "status", "message"} <= set(b["error"]),
    "Responses hub": lambda b: {"message", "code"} == set(b["error"]),
    "LM Studio hub": lambda b: isinstance(b.get("detail"), (list, str)) or
    b.get("loaded") is False,
    "EDISON": lambda b: isinstance(b["error"], str) and "code" in b,
    "Sessions (nash)": lambda b: isinstance(b["error"], str),
    "Anthropic Messages": lambda b: b["type"] == "error" and set(b["error"]) == {"type",
                                                                                 "message"},
    "OpenAI Responses": lambda b: set(b["error"]) == {"message", "type", "param", "code"},
    "OpenAI Conversations": lambda b: set(b["error"]) == {"message", "type", "param", "code"},
}
WRONG = {"n": "seven", "b": "yes", "o": 7}


def route_for(pattern: str) -> routes.Route:
    return next(r for r in routes.ROUTES if r.pattern == pattern and r.method == "POST")


def path_of(pattern: str) -> str:
    return pattern.replace("{thread_id}", "t1")


@pytest.fixture
def suite_hub(make_hub):
    hub = make_hub({"server": {"max_body_bytes": 65536, "max_messages": 100}})
    call(hub.url, "POST", "/v1/threads", {"threadId": "t1"})
    return hub


def counts(hub) -> tuple:
    db = hub.hub.db
    return tuple(db.read(f"SELECT COUNT(*) FROM {t}")[0][0]
                 for t in ("threads", "messages", "responses", "api_responses"))


def check(hub, pattern: str, status: int, body, field: str | None = None) -> None:
    dialect = route_for(pattern).dialect.TITLE
    assert 400 <= status < 500, (pattern, status, body)
    assert isinstance(body, dict) and SHAPES[dialect](body), (pattern, body)
    if field:
        assert field in json.dumps(body), (pattern, field, body)


def bad_bodies():
    for pattern, (valid, kinds, required) in VALID.items():
        for name, kind in kinds.items():
            yield pattern, dict(valid, **{name: WRONG[kind]}), name
        for name in required:
            yield pattern, {k: v for k, v in valid.items() if k != name}, name
        if pattern not in LENIENT:
            yield pattern, dict(valid, surprise=1), "surprise"
        yield pattern, dict(valid, messages=HI * 101) if "messages" in kinds else \
            dict(valid, input=HI * 101) if "input" in kinds else None, \
            "messages" if "messages" in kinds else "input"


@pytest.mark.parametrize("pattern, body, field", [c for c in bad_bodies() if c[1] is not None],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_wrong_types_missing_unknown_and_too_many(suite_hub, fake, pattern, body, field):
    before = counts(suite_hub)
    status, _, reply = call(suite_hub.url, "POST", path_of(pattern), body)
    check(suite_hub, pattern, status, reply, field)
    assert counts(suite_hub) == before            # nothing half-written
    assert not fake.chat_requests()


def test_too_many_items_names_the_field_they_came_in(suite_hub):
    """`input` holds the list when `messages` is there but is not one: the 413 names it."""
    status, _, body = call(suite_hub.url, "POST", "/v1/responses",
                           {"model": "m", "messages": "not a list", "input": HI * 101})
    assert status == 413 and body["error"]["param"] == "input", body


@pytest.mark.parametrize("pattern", list(VALID))
def test_malformed_bodies(suite_hub, pattern):
    path, before = path_of(pattern), counts(suite_hub)
    deep = b"[" * 10_000 + b"]" * 10_000
    for payload, headers, field in [
        (b'{"model": ', {}, None),                                   # invalid JSON
        (b"", {}, None) if pattern not in EMPTY_OK else (b"{", {}, None),  # empty
        # (POST /v1/threads with no body is valid: the Python SDK sends none)
        (json.dumps(VALID[pattern][0]).encode(), {"Content-Type": "application/xml"},
         "Content-Type"),                                            # wrong type
        (b"x" * 70_000, {}, None),                                   # over the limit
        (b'{"a": ' + deep + b"}", {}, None),                         # 10,000 deep
        (b'{"model": "\xff\xfe"}', {}, None),                        # not UTF-8
        (b'{"messages": [], "messages": []}', {}, "messages"),       # duplicate keys
    ]:
        status, _, reply = call(suite_hub.url, "POST", path, payload, headers=headers)
        check(suite_hub, pattern, status, reply, field)
    assert counts(suite_hub) == before
    assert call(suite_hub.url, "GET", "/health")[0] == 200          # still serving


@pytest.mark.parametrize("body, field", [
    ({"model": "m", "messages": HI, "temperature": -1}, "temperature"),
    ({"model": "m", "messages": HI, "max_tokens": -5}, "max_tokens"),
    ({"model": "m", "messages": HI, "top_p": 2}, "top_p"),
    ({"model": "m", "messages": HI, "presence_penalty": 9}, "presence_penalty"),
])
def test_out_of_range_parameters(suite_hub, body, field):
    status, _, reply = call(suite_hub.url, "POST", "/v1/chat/completions", body)
    check(suite_hub, "/v1/chat/completions", status, reply, field)


@pytest.mark.parametrize("path, body, pattern, field", [
    ("/responses", {"input": "x", "max_output_tokens": 0}, "/responses", "max_output_tokens"),
    ("/responses", {"input": "x", "temperature": 3}, "/responses", "temperature"),
    ("/models/load", {"model_key": "m", "context_length": -1}, "/models/load",
     "context_length"),
    ("/chat", {"messages": HI, "config": {"maxTokens": 0}}, "/chat", "maxTokens"),
    ("/chat", {"messages": HI, "config": {"topP": -0.5}}, "/chat", "topP"),
])
def test_out_of_range_in_other_dialects(suite_hub, path, body, pattern, field):
    status, _, reply = call(suite_hub.url, "POST", path, body)
    if pattern == "/models/load" and status == 200:
        pytest.fail("a negative context_length was accepted")
    check(suite_hub, pattern, status, reply, field)


@pytest.mark.parametrize("path", [
    "/v1/threads/a%0D%0AX-Injected:%201", "/v1/threads/..%2F..%2Fetc%2Fpasswd",
    "/v1/threads/%00", "/responses/resp_..%2Fx", "/v1/runs/a%0Ab/cancel",
    "/static/..%2F..%2Fconfig.ini", "/static/%2Fetc%2Fpasswd",
])
def test_crlf_and_traversal_in_ids(suite_hub, path):
    method = "POST" if path.endswith("/cancel") else "GET"
    reply = raw_exchange(suite_hub.url, f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         "Connection: close\r\nContent-Length: 0\r\n\r\n".encode())
    head = reply.split(b"\r\n\r\n", 1)[0]
    assert head.split(b" ")[1][:1] == b"4", head
    assert b"X-Injected" not in head and b"root:" not in reply
    assert call(suite_hub.url, "GET", "/health")[0] == 200


def test_get_parameters_out_of_range(suite_hub):
    for query in ("limit=-1", "limit=100000", "before=soon"):
        status, _, reply = call(suite_hub.url, "GET", f"/v1/threads?{query}")
        assert status == 400 and reply["error"]["code"] == "BAD_REQUEST"
    status, _, reply = call(suite_hub.url, "GET", "/responses/x/events",
                            headers={"Last-Event-ID": "-x"})
    assert status in (400, 404) and set(reply["error"]) == {"message", "code"}


def mutate(rng: random.Random, body):
    """One random change to a valid body: a value's type, a key removed or added, the
    structure replaced, or the bytes broken."""
    values = [None, True, -1, 0, 1e308, "", "x" * rng.randint(1, 300), [], {}, [None],
              {"role": "user"}, [{"role": rng.choice(["user", "x", ""]), "content": 5}]]
    body = json.loads(json.dumps(body))
    choice = rng.randrange(7)
    if choice == 0 and isinstance(body, dict) and body:
        body[rng.choice(list(body))] = rng.choice(values)
    elif choice == 1 and isinstance(body, dict) and body:
        body.pop(rng.choice(list(body)))
    elif choice == 2 and isinstance(body, dict):
        body[rng.choice(["extra", "model", "stream", "threadId"])] = rng.choice(values)
    elif choice == 3:
        body = rng.choice(values)
    raw = json.dumps(body).encode()
    if choice == 4:
        raw = raw[:rng.randrange(max(1, len(raw)))]
    elif choice == 5:
        at = rng.randrange(len(raw) + 1)
        raw = raw[:at] + bytes([rng.randrange(128, 256)]) + raw[at:]
    elif choice == 6 and isinstance(body, dict) and body:
        key = json.dumps(rng.choice(list(body)))
        raw = raw[:-1] + f", {key}: 1}}".encode() if len(body) else raw
    return raw


def test_thousands_of_random_mutations_never_break_the_hub(suite_hub, fake):
    rng = random.Random(20261121)
    patterns = list(VALID)
    for _ in range(3000):
        pattern = rng.choice(patterns)
        raw = mutate(rng, VALID[pattern][0])
        status, _, reply = call(suite_hub.url, "POST", path_of(pattern), raw)
        assert status < 500 or (status in (502, 503) and pattern.startswith("/models")), \
            (pattern, raw, status, reply)
        if status >= 400:
            check(suite_hub, pattern, status, reply)
        assert "Traceback" not in json.dumps(reply) if isinstance(reply, dict) else True
    assert call(suite_hub.url, "GET", "/health")[0] == 200
