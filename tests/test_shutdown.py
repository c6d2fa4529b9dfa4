"""SIGTERM under load: every live stream gets its dialect's terminal event, the database
closes cleanly, and the process exits within 5 seconds (issue 8)."""

import json
import signal
import sqlite3
import threading
import time

import pytest

from conftest import ROOT
from fake_lmstudio import Script
from http_client import open_stream
from support import start

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="needs SIGTERM")
HI = [{"role": "user", "content": "Hi"}]
# (path, body, headers, is its last line the dialect's terminal event?)
DIALECTS = [
    ("/v1/chat/completions", {"model": "m", "messages": HI, "stream": True}, {},
     lambda last: last == "data: [DONE]"),
    ("/v1/pipes/run", {"messages": HI, "stream": True}, {},
     lambda last: last == "data: [DONE]"),
    ("/responses?stream=true", {"model": "m", "input": "Hi"}, {},
     lambda last: last == 'data: {"status":"cancelled"}'),
    ("/chat/stream", {"message": "Hi", "model": "m"}, {"Accept": "text/event-stream"},
     lambda last: json.loads(last[6:])["stopped"] is True),
    ("/chat/stream", {"model_key": "m", "messages": HI}, {},
     lambda last: json.loads(last)["type"] == "done"),
    ("/v1/chat/completions/stream", {"model": "m", "messages": HI}, {},
     lambda last: last == "data: [DONE]"),
]


def test_sigterm_with_100_live_streams(tmp_path, fake):
    fake.default = Script(chunks=["first", "never"], hold_first=threading.Event(),
                          hold_after=1)
    process, _, url = start([str(ROOT / "main.py"), "--upstream", fake.url], tmp_path)
    streams = []
    for n in range(100):
        path, body, headers, ended = DIALECTS[n % len(DIALECTS)]
        conn, response = open_stream(url, path, body, headers, timeout=10)
        assert response.status == 200, (path, response.read())
        assert response.read1(65536)         # the stream is live: something has arrived
        streams.append((conn, response, ended, path))
    assert fake.wait_requests(100)
    stopped_at = time.monotonic()
    process.send_signal(signal.SIGTERM)
    for conn, response, ended, path in streams:
        lines = [line for line in response.read().decode().splitlines() if line.strip()]
        assert ended(lines[-1]), (path, lines[-3:])
        conn.close()
    assert process.wait(max(0.1, 5 - (time.monotonic() - stopped_at))) == 0
    process.stdout.close()
    process.stderr.close()
    with sqlite3.connect(tmp_path / "cli.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        replies = db.execute("SELECT COUNT(*) FROM messages WHERE role = 'assistant' AND "
                             "json_extract(metadata, '$.status') = 'cancelled'").fetchone()[0]
        responses = db.execute("SELECT COUNT(*) FROM responses WHERE status = 'cancelled'"
                               ).fetchone()[0]
    kind = [n % len(DIALECTS) for n in range(100)]
    assert replies == kind.count(1) + kind.count(3)   # Langbase and EDISON store threads
    assert responses == kind.count(2)                  # every response is recorded


def test_a_request_after_the_store_closed_gets_503_not_a_traceback(hub):
    from http_client import call
    hub.hub.db.close()           # as at shutdown, with a keep-alive client still polling
    status, _, body = call(hub.url, "GET", "/v1/threads")
    assert status == 503 and "shutting down" in json.dumps(body)
