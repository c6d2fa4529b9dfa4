"""Conversations benchmark (issue 26 point 8): one 50,000-item conversation through the hub.

    python -m bench --only conversations

On a conversation already holding 50,000 items (user and assistant messages of ordinary
length, a thread seen through /v1/conversations), measures: a 20-item page of its items
(newest first, and the next page by `after`); a new turn by /v1/responses with
`conversation` (the model's reply awaited), with `truncation: auto` (the newest history
that fits [context] max_input_tokens goes upstream) and without (the whole history goes:
the one read a turn genuinely needs); /v1/responses/input_tokens for the next turn; and a
Claude session kept in a thread ([anthropic] store), which resends its whole conversation
each turn and has the new tail stored. Timings are printed, never asserted.
"""

import http.client
import json
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from bench.run import percentile, start_fake, start_hub
from llmhub.store.database import Database
from llmhub.store.threads import ThreadStore

SIZE = 50_000
THREAD = "conv_bench"
SESSION = "bench-session"
TEXT = ("A message of ordinary length, about twenty words, to make the conversation weigh "
        "what a real one would.")
# A resent session holds every message in one request, past the default bound of 1,000.
HUB_ENV = {"LLMHUB_SERVER_MAX_MESSAGES": str(SIZE + 1_000), "LLMHUB_ANTHROPIC_STORE": "true"}


def turns(size: int) -> list[dict]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": TEXT}
            for i in range(size)]


def populate(db: Path, size: int) -> None:
    database = Database(db)
    store = ThreadStore(database)
    stored = [dict(m, name=None, tool_call_id=None, tool_calls=[], attachments=[],
                   metadata={}) for m in turns(size)]
    store.create_thread(THREAD, {}, stored)
    store.append_new("claude-" + SESSION, stored)
    database.close()


def timed(conn, method: str, path: str, body=None, headers=None) -> tuple[float, dict]:
    payload = json.dumps(body).encode() if body is not None else None
    started = time.perf_counter()
    conn.request(method, path, body=payload,
                 headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"{method} {path}: {response.status} {data[:200]!r}")
    return elapsed, json.loads(data)


def main(size: int = SIZE, rounds: int = 10) -> list[list]:
    fake, direct = start_fake()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "conversations.db"
        populate(db, size)
        hub_process, hub = start_hub(direct, db, HUB_ENV)
        parts = urlsplit(hub)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
        try:
            samples = measure(conn, size, rounds)
        finally:
            conn.close()
            hub_process.terminate()
            hub_process.wait(10)
            fake.kill()
    ms = lambda xs, q: f"{1000 * percentile(xs, q):.1f}"   # noqa: E731
    return [[f"{name} ({size:,}-item conversation)", len(xs), ms(xs, .5), ms(xs, .99)]
            for name, xs in samples.items()]


def measure(conn, size: int, rounds: int) -> dict:
    items = f"/v1/conversations/{THREAD}/items?limit=20"
    turn = {"model": "bench-model", "conversation": THREAD, "input": "One more question?"}
    resent = turns(size)
    samples = {"a 20-item page of items": [], "the next page (after=)": [],
               "new turn, truncation auto": [], "input_tokens of the next turn": [],
               "new turn, the whole history": [], "a resent Claude session's turn": []}
    for _ in range(rounds):        # pages first: no turn's background summary running yet
        took, page = timed(conn, "GET", items)
        samples["a 20-item page of items"].append(took)
        samples["the next page (after=)"].append(
            timed(conn, "GET", f"{items}&after={page['last_id']}")[0])
    for _ in range(rounds):
        samples["new turn, truncation auto"].append(
            timed(conn, "POST", "/v1/responses", dict(turn, truncation="auto"))[0])
        samples["input_tokens of the next turn"].append(
            timed(conn, "POST", "/v1/responses/input_tokens", turn)[0])
        took, reply = timed(conn, "POST", "/v1/messages", {
            "model": "bench-model", "max_tokens": 64,
            "messages": resent + [{"role": "user", "content": "One more question?"}]},
            {"X-Claude-Code-Session-Id": SESSION})
        samples["a resent Claude session's turn"].append(took)
        resent += [{"role": "user", "content": "One more question?"},
                   {"role": "assistant", "content": reply["content"]}]
    for _ in range(max(2, rounds // 3)):   # each sends ~50,000 messages upstream
        samples["new turn, the whole history"].append(
            timed(conn, "POST", "/v1/responses", turn)[0])
    return samples
