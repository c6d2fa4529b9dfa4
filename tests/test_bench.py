"""The bench's own machinery, on tiny numbers: the open loop measures from the scheduled
send time, and --ab hands its ref on. No timing of the hub is asserted (it never is)."""

import asyncio
import io
import sys
from pathlib import Path

from fake_lmstudio import Script

from bench import ab, instructions, load, openloop, run


def test_the_open_loop_sends_every_scheduled_request(fake):
    result = openloop.run(fake.url, "/chat/completions", openloop.NON_STREAM, rate=100,
                          seconds=0.05)
    assert (len(result.latency), result.errors) == (5, 0)
    assert len(fake.chat_requests()) == 5


def test_a_request_that_waited_to_be_sent_counts_its_wait(fake):
    # One connection, streams of ≥ 40 ms of pacing, one scheduled every 10 ms: the fifth
    # waits for the four before it. Measured from its scheduled time it took ≥ 160 ms of
    # sleeps, which a closed loop (from when it was sent) would report as ~40 ms.
    fake.default = Script(chunks=["a", "b", "c"], delay=0.02)
    result = asyncio.run(openloop.open_loop(
        fake.url, "/chat/completions", openloop.STREAM, rate=100, seconds=0.05,
        max_connections=1))
    assert (len(result.first_token), result.errors) == (5, 0)
    assert max(result.latency) >= 0.16
    assert max(result.lag) >= 0.12      # it was sent late, and that is part of its latency


def test_the_open_loop_sets_non_streaming_against_the_stream_it_becomes(monkeypatch):
    # The hub asks its upstream for a stream even for a non-streaming request: the third row
    # compares the hub's reply with that stream read to its end, direct.
    sent, fakes, real_run, real_fake = [], [], openloop.run, openloop.start_paced_fake
    monkeypatch.setattr(openloop, "start_paced_fake", lambda *args: fakes.append(
        real_fake(*args)) or fakes[-1])
    monkeypatch.setattr(openloop, "run", lambda url, path, body, *args: sent.append(
        (url, body)) or real_run(url, path, body, *args))
    rows = openloop.main(rate=100, seconds=0.06, first_token_ms=0, tokens_per_s=0, tokens=2,
                         blocks=3)
    assert [row[0].strip() for row in rows] == [
        "non-streaming latency at 100/s", "generator lag (scheduled → sent)",
        "against the direct stream it becomes", "streaming time to first token at 100/s",
        "generator lag (scheduled → sent)"]
    assert rows[2][1] == rows[0][1] == 6          # the hub's samples, in both rows
    assert {row[5] for row in rows} == {"0 / 0"}
    [(_, direct)] = fakes
    assert {url for url, body in sent if body == openloop.STREAMED} == {direct}
    assert len([body for _, body in sent if body == openloop.STREAMED]) == 4  # warm-up, blocks


def test_hub_python_runs_the_hub_under_that_interpreter_and_the_fake_under_this(monkeypatch):
    started = []

    class Started:
        def __init__(self, argv, **kwargs):
            started.append(argv[0])
            self.stdout = io.StringIO("llmhub listening on http://127.0.0.1:9 - config\n")

    monkeypatch.setattr(run, "HUB_PYTHON", run.HUB_PYTHON)     # restored afterwards
    monkeypatch.setattr(run.subprocess, "Popen", Started)
    monkeypatch.setattr(load, "main", lambda: [
        ["hub", run.start_hub("http://fake", Path("x.db"))[1], run.start_fake()[1]]])
    assert run.main(["--hub-python", "/opt/python3.14t", "--only", "load"]) == 0
    assert started == ["/opt/python3.14t", sys.executable]


def test_the_load_rows_set_the_hubs_cpu_a_request_against_the_direct_servers():
    assert load.cpu_ratio(direct=0.000_400, hub=0.001_000) == "2.5×"
    assert load.cpu_ratio(direct=None, hub=0.001) == load.cpu_ratio(0.0004, None) == "n/a"


def test_ab_takes_a_ref_and_its_block_sizes(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(ab, "main", lambda *args: calls.append(args) or [
        ["non-stream p50 ms", "1", "2", "-1", "-1 … -1"]])
    assert run.main(["--ab", "HEAD~1", "--blocks", "3", "--per-block", "7"]) == 0
    assert calls == [("HEAD~1", 3, 7)]
    assert "HEAD~1" in capsys.readouterr().out


def test_ab_rows_difference_this_tree_minus_ref():
    values = {"non-stream hub CPU µs/request": {"this": [10.0, 20.0], "ref": [15.0, 30.0]}}
    [row] = ab.rows(values, "this", "ref")
    assert row[1:4] == ["15", "22.5", "-7.5"]


def test_instructions_take_an_optional_ref(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(instructions, "main", lambda ref: calls.append(ref) or [
        ["non-stream instructions/request", "1,000", "1,100", "-100 (-9.1%)"]])
    assert run.main(["--instructions", "HEAD~2"]) == 0
    assert "HEAD~2" in capsys.readouterr().out
    monkeypatch.setattr(instructions, "main", lambda ref: calls.append(ref) or [
        ["non-stream instructions/request", "1,000"]])
    assert run.main(["--instructions"]) == 0
    assert calls == ["HEAD~2", None]
