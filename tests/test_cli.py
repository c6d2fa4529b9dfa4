"""The real process: `python main.py` / `python -m llmhub`, its startup line, clean stops."""

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from conftest import ROOT
from http_client import call, open_stream, sse_events
from fake_lmstudio import Script

LISTENING = "llmhub {} listening on http://127.0.0.1:"


def start(args, tmp_path, env=None):
    process = subprocess.Popen(
        [sys.executable, *args, "--port", "0", "--db", str(tmp_path / "cli.db"),
         "--log-level", "warning"], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    line = process.stdout.readline().strip()
    url = line.split(" listening on ", 1)[1].split(" ", 1)[0] if "listening on" in line else None
    return process, line, url


def stop(process, sig=signal.SIGTERM):
    process.send_signal(sig)
    try:
        return process.wait(10)
    finally:
        process.kill()
        process.stdout.close()
        process.stderr.close()


@pytest.mark.parametrize("entry", [[str(ROOT / "main.py")], ["-m", "llmhub"]])
def test_start_prints_one_line_and_stops_cleanly(tmp_path, entry, fake):
    env = {"PYTHONPATH": str(ROOT)}
    process, line, url = start([*entry, "--upstream", fake.url], tmp_path, env)
    assert "listening on http://127.0.0.1:" in line, line
    assert f"upstream lmstudio {fake.url} (reachable," in line
    assert call(url, "GET", "/health")[2]["status"] == "ok"
    assert stop(process) == 0
    assert (tmp_path / "cli.db").exists()


def test_startup_line_says_when_the_upstream_did_not_answer(tmp_path):
    process, line, url = start([str(ROOT / "main.py"), "--upstream", "http://127.0.0.1:9/v1"],
                               tmp_path)
    assert "NOT reachable: Could not connect to LM Studio" in line
    assert stop(process, signal.SIGINT) == 0        # Ctrl-C


def test_mock_upstream_flag(tmp_path):
    process, line, url = start([str(ROOT / "main.py"), "--upstream", "mock"], tmp_path,
                               {"LLMHUB_MOCK_CHUNK_DELAY_SECONDS": "0"})
    assert "upstream mock" in line
    status, _, body = call(url, "POST", "/v1/chat/completions",
                           {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 200 and body["choices"][0]["message"]["content"]
    assert stop(process) == 0


def test_sigterm_ends_live_streams_and_closes_the_database(tmp_path, fake):
    fake.enqueue(Script(hold_first=threading.Event()))
    process, line, url = start([str(ROOT / "main.py"), "--upstream", fake.url], tmp_path)
    conn, response = open_stream(url, "/v1/chat/completions", {
        "model": "q", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    assert fake.wait_requests(1)
    assert stop(process) == 0
    events = [d for _, d in sse_events(response)]
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "cancelled"
    assert events[-1] == "[DONE]"
    assert fake.aborted.wait(2)
    conn.close()
    assert not (tmp_path / "cli.db-wal").exists() or \
        (tmp_path / "cli.db-wal").stat().st_size == 0   # the last connection checkpointed
