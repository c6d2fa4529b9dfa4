"""The real process: `python main.py` / `python -m llmhub`, its startup line, clean stops."""

import json
import signal
import threading

import pytest

from conftest import ROOT
from http_client import call, open_stream, sse_events
from fake_lmstudio import Script
from support import start, stop

LISTENING = "llmhub {} listening on http://127.0.0.1:"


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
