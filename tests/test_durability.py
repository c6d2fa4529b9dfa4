"""A hub killed with SIGKILL during writes loses no acknowledged message (issue 3)."""

import os
import signal
import sqlite3
import threading

import pytest

from http_client import call
from support import start, stop
from conftest import ROOT

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")


def test_sigkill_during_concurrent_appends_loses_no_acknowledged_message(tmp_path):
    process, _, url = start([str(ROOT / "main.py"), "--upstream", "mock"], tmp_path)
    assert call(url, "POST", "/v1/threads", {"threadId": "crash"})[0] == 200
    acked, lock, enough = [], threading.Lock(), threading.Event()

    def client(n):
        for i in range(10_000):
            try:
                status, _, created = call(url, "POST", "/v1/threads/crash/messages",
                                          [{"role": "user", "content": f"{n}:{i}"}], timeout=5)
            except OSError:
                return                       # the hub is gone
            if status != 200:
                return
            with lock:
                acked.append((created[0]["id"], n, i))
                if len(acked) >= 300:
                    enough.set()

    clients = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in clients:
        thread.start()
    assert enough.wait(60)
    os.kill(process.pid, signal.SIGKILL)     # mid-write: the clients are still appending
    process.wait(10)
    for thread in clients:
        thread.join(10)
    process.stdout.close()
    process.stderr.close()

    restarted, _, url = start([str(ROOT / "main.py"), "--upstream", "mock"], tmp_path)
    try:
        status, _, listed = call(url, "GET", "/v1/threads/crash/messages")
        assert status == 200
        position = {m["id"]: index for index, m in enumerate(listed)}
        assert all(message_id in position for message_id, _, _ in acked)
        for n in range(8):
            mine = sorted((i, position[mid]) for mid, c, i in acked if c == n)
            assert [p for _, p in mine] == sorted(p for _, p in mine)   # in order
    finally:
        assert stop(restarted) == 0
    with sqlite3.connect(tmp_path / "cli.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_sigkill_during_50_streams_and_appends(tmp_path, fake):
    """25 live pipe-run streams (their user turn acknowledged by lb-thread-id) and 25
    appenders; SIGKILL; restart: everything acknowledged is there, integrity ok."""
    from fake_lmstudio import Script
    from http_client import open_stream
    fake.default = Script(chunks=["streaming", "never"], hold_first=threading.Event(),
                          hold_after=1)
    process, _, url = start([str(ROOT / "main.py"), "--upstream", fake.url], tmp_path)
    streams = []
    for n in range(25):
        conn, response = open_stream(url, "/v1/pipes/run", {
            "stream": True, "messages": [{"role": "user", "content": f"stream {n}"}]})
        assert response.status == 200
        streams.append((conn, response.getheader("lb-thread-id"), f"stream {n}"))
    assert call(url, "POST", "/v1/threads", {"threadId": "appends"})[0] == 200
    acked, lock, enough = [], threading.Lock(), threading.Event()

    def appender(n):
        for i in range(10_000):
            try:
                status, _, created = call(url, "POST", "/v1/threads/appends/messages",
                                          [{"role": "user", "content": f"{n}:{i}"}], timeout=5)
            except OSError:
                return
            if status != 200:
                return
            with lock:
                acked.append(created[0]["id"])
                if len(acked) >= 250:
                    enough.set()

    clients = [threading.Thread(target=appender, args=(n,)) for n in range(25)]
    for thread in clients:
        thread.start()
    assert enough.wait(60)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    for thread in clients:
        thread.join(10)
    for conn, _, _ in streams:
        conn.close()
    process.stdout.close()
    process.stderr.close()
    restarted, _, url = start([str(ROOT / "main.py"), "--upstream", fake.url], tmp_path)
    try:
        ids = {m["id"] for m in call(url, "GET", "/v1/threads/appends/messages")[2]}
        assert set(acked) <= ids
        for _, thread_id, text in streams:
            stored = call(url, "GET", f"/v1/threads/{thread_id}/messages")[2]
            assert stored[0]["content"] == text
    finally:
        assert stop(restarted) == 0
    with sqlite3.connect(tmp_path / "cli.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
