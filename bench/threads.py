"""Threads benchmark: a 100,000-message thread through the hub.

    python -m bench --only threads

Measures, on one thread already holding 100,000 messages: appending one message, listing
a page of it, and how long a streaming pipe run on it takes to start (its first token
reaching the client: the history is read, sent upstream and answered). A pipe run on a new
thread is measured alongside. Timings are printed, never asserted.
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

SIZE = 100_000


def populate(db: Path, size: int) -> None:
    database = Database(db)
    store = ThreadStore(database)
    store.create_thread("big")
    message = {"role": "user", "content": "A message of ordinary length, about twenty "
               "words, to make the thread weigh what a real one would.", "name": None,
               "tool_call_id": None, "tool_calls": [], "attachments": [], "metadata": {}}
    for _ in range(size // 10_000):
        store.append_messages("big", [message] * 10_000)
    database.close()


def timed(conn, method: str, path: str, body=None, first_token=False) -> float:
    started = time.perf_counter()
    conn.request(method, path, body=json.dumps(body).encode() if body is not None else None,
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    if first_token:
        while b'"content"' not in response.readline():
            pass
    elapsed = time.perf_counter() - started
    response.read()
    if response.status != 200:
        raise RuntimeError(f"{method} {path}: {response.status}")
    return elapsed


def main(size: int = SIZE) -> list[list]:
    fake, direct = start_fake()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "threads.db"
        started = time.perf_counter()
        populate(db, size)
        filled = time.perf_counter() - started
        hub_process, hub = start_hub(direct, db)
        parts = urlsplit(hub)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
        try:
            one = [{"role": "user", "content": "one more"}]
            appends = [timed(conn, "POST", "/v1/threads/big/messages", one)
                       for _ in range(200)]
            lists = [timed(conn, "GET", "/v1/threads/big/messages") for _ in range(5)]
            run = {"messages": one, "stream": True}
            big = [timed(conn, "POST", "/v1/pipes/run", dict(run, threadId="big"),
                         first_token=True) for _ in range(15)]
            spaced = []   # each run schedules a summary of the backlog, in the background:
            for _ in range(15):  # give it time, so the run measures its own start alone
                time.sleep(0.5)
                spaced.append(timed(conn, "POST", "/v1/pipes/run", dict(run, threadId="big"),
                                    first_token=True))
            new = [timed(conn, "POST", "/v1/pipes/run", run, first_token=True)
                   for _ in range(20)]
        finally:
            conn.close()
            hub_process.terminate()
            hub_process.wait(10)
            fake.kill()
    ms = lambda samples, q: f"{1000 * percentile(samples, q):.1f}"   # noqa: E731
    return [
        [f"append 1 message ({size:,}-message thread)", len(appends), ms(appends, .5),
         ms(appends, .99)],
        [f"list a page of messages ({size:,}-message thread)", len(lists), ms(lists, .5),
         ms(lists, .99)],
        [f"pipe run, first token ({size:,}-message thread)", len(big), ms(big, .5),
         ms(big, .99)],
        ["… the same, 0.5 s apart (no summary running)", len(spaced), ms(spaced, .5),
         ms(spaced, .99)],
        ["pipe run, first token (new thread)", len(new), ms(new, .5), ms(new, .99)],
        [f"fill the thread ({size:,} messages, store API)", 1, f"{1000 * filled:.0f}", ""],
    ]
