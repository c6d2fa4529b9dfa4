"""A hub killed with SIGKILL during writes loses no acknowledged message (issue 3)."""

import os
import signal
import sqlite3
import threading

import pytest

from http_client import call
from test_cli import start, stop
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
