"""The real process: `python main.py` / `python -m llmhub`, its startup line, clean stops."""

import json
import shutil
import signal
import threading

import pytest

from conftest import ROOT, write_ini
from http_client import call, open_stream, sse_events
from fake_lmstudio import Script
from support import ended, start, stop

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
    hint = process.stdout.readline().strip()        # and what to do about it
    assert hint.startswith("llmhub: nothing answers at http://127.0.0.1:9/v1: start the "
                           "model server there"), hint
    assert "point the hub at a running one with --upstream URL (or LLMHUB_UPSTREAM_BASE_URL, " \
           "or [upstream] base_url in the config file)" in hint
    assert hint.endswith("or try the hub without one: python main.py --upstream mock")
    assert stop(process, signal.SIGINT) == 0        # Ctrl-C


def test_startup_line_names_the_config_file_it_read(tmp_path, fake):
    ini = write_ini(tmp_path / "mine.ini", {"aliases": {"fast": "qwen2.5-7b-instruct"}})
    process, line, url = start([str(ROOT / "main.py"), "--upstream", fake.url, "--config",
                                str(ini)], tmp_path)
    try:
        assert f" - config {ini} - upstream lmstudio {fake.url} (reachable," in line, line
        process.send_signal(signal.SIGTERM)
        out, _ = ended(process)
    finally:
        process.kill()
    assert out == ""        # no hint: that is for an upstream that did not answer


def test_started_from_another_folder_it_reads_the_projects_config(tmp_path, fake):
    process, line, url = start([str(ROOT / "main.py"), "--upstream", fake.url], tmp_path)
    try:
        assert f" - config {ROOT / 'config.ini'} - " in line, line
        shown = call(url, "GET", "/config")[2]
        assert shown["source"] == str(ROOT / "config.ini")
        assert shown["aliases"]["fast"] == "qwen2.5-14b-instruct"
    finally:
        assert stop(process) == 0


def test_with_no_config_anywhere_the_line_says_where_it_looked(tmp_path):
    clone, elsewhere = tmp_path / "clone", tmp_path / "elsewhere"
    shutil.copytree(ROOT / "llmhub", clone / "llmhub",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "main.py", clone / "main.py")     # a clone without config.ini
    elsewhere.mkdir()
    process, line, url = start([str(clone / "main.py"), "--upstream", "mock"], elsewhere)
    try:
        assert (f" - no config file (looked for {elsewhere / 'config.ini'} and "
                f"{clone / 'config.ini'}): built-in defaults, no aliases - upstream mock") \
            in line, line
        shown = call(url, "GET", "/config")[2]
        assert shown["source"] is None and shown["aliases"] == {}
        assert shown["searched"] == [str(elsewhere / "config.ini"), str(clone / "config.ini")]
    finally:
        assert stop(process) == 0


def test_settings_that_mean_otherwise_are_warned_of_at_startup(tmp_path):
    ini = write_ini(tmp_path / "warn.ini", {"context": {"max_input_tokens": 1024},
                                            "pipe:support": {"system": "Agent #1"}})
    process, line, url = start([str(ROOT / "main.py"), "--upstream", "mock", "--config",
                                str(ini)], tmp_path)
    try:
        shown = call(url, "GET", "/config")[2]["warnings"]
        process.send_signal(signal.SIGTERM)
        _, err = ended(process)
    finally:
        process.kill()
    warned = [w for w in err.splitlines() if w.startswith("llmhub: warning: ")]
    assert [w.split(": ", 2)[2].split(" ", 2)[:2] for w in warned] == [
        ["[context]", "keep_recent_tokens"], ["[context]", "summary_trigger_tokens"],
        ["[pipe:support]", "system:"]]
    assert shown == [w.removeprefix("llmhub: warning: ") for w in warned]


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
