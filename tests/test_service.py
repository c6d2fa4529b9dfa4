"""Service endpoints: /, /health, /config; and the request log."""

import json
import logging
import re
import threading

from http_client import call
from llmhub import logs
from support import LogCatcher, closed_port


def test_index_is_a_json_status_listing_endpoints_for_who_asks_for_json(hub):
    status, headers, body = call(hub.url, "GET", "/", headers={"Accept": "application/json"})
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert body["name"] == "llmhub" and body["status"] == "ok"
    paths = {(e["method"], e["path"]) for e in body["endpoints"]}
    assert ("POST", "/v1/chat/completions") in paths and ("GET", "/health") in paths


def test_health_reports_everything(hub, fake):
    status, _, body = call(hub.url, "GET", "/health")
    assert status == 200 and body["status"] == "ok"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["time"])
    assert body["version"] and body["uptime_seconds"] >= 0
    upstream = body["upstreams"][0]
    assert upstream["reachable"] is True and upstream["latency_ms"] >= 0
    assert upstream["base_url"] == fake.url
    assert body["database"]["status"] == "ok" and body["active_runs"] == 0


def test_health_is_200_when_the_upstream_is_down_and_says_so(make_hub):
    hub = make_hub(upstream_url=f"http://127.0.0.1:{closed_port()}/v1")
    status, _, body = call(hub.url, "GET", "/health")
    assert status == 200 and body["status"] == "degraded"
    assert body["upstreams"][0]["reachable"] is False
    assert "Connection refused" in body["upstreams"][0]["error"]


def test_config_is_effective_and_redacted(make_hub):
    hub = make_hub({"upstream": {"api_key": "sk-very-secret"}, "aliases": {"fast": "q"}})
    status, _, body = call(hub.url, "GET", "/config")
    assert status == 200
    assert body["upstreams"][0]["api_key"] == "***"
    assert "sk-very-secret" not in json.dumps(body)
    assert body["aliases"] == {"fast": "q"} and body["server"]["ping_interval_seconds"] == 0.2


def test_one_json_log_line_per_request(hub):
    out = LogCatcher()
    logs.setup("info", "json", stream=out)
    try:
        call(hub.url, "POST", "/v1/chat/completions",
             {"model": "q", "messages": [{"role": "user", "content": "hi"}]},
             headers={"X-Request-Id": "req-42"})
        lines = [json.loads(line) for line in out.wait_lines(1).splitlines()]
    finally:
        logs.setup("warning", "json")
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == "req-42" and line["method"] == "POST"
    assert line["path"] == "/v1/chat/completions" and line["status"] == 200
    assert line["run_id"].startswith("run_") and line["model"] == "q"
    assert line["outcome"] == "completed" and line["tokens_out"] == 5
    assert line["duration_ms"] >= 0 and line["time"].endswith("Z")


class StuckSink:
    """A log stream whose first write blocks until released."""

    def __init__(self) -> None:
        self.writing, self.release, self.text = threading.Event(), threading.Event(), ""

    def write(self, text: str) -> None:
        self.writing.set()
        self.release.wait(10)
        self.text += text

    def flush(self) -> None:
        pass


def test_a_slow_log_sink_holds_up_no_thread_that_logs():
    """Lines are written by one thread of their own: a thread that logs while the sink is
    stuck (a console, a full pipe) goes on at once. A StreamHandler wrote under its lock in
    the logging thread, so every request thread queued behind a slow write. Past `most`
    lines waiting, they are dropped and a line says how many."""
    sink, log = StuckSink(), logging.getLogger("llmhub.test")
    logs.setup("info", "text", stream=sink)
    try:
        log.info("one")
        assert sink.writing.wait(5)
        logs.LineWriter.most = 3
        logged = threading.Event()
        thread = threading.Thread(target=lambda: [log.info(n) for n in
                                                  ("two", "three", "four", "five")]
                                  and logged.set())
        thread.start()
        assert logged.wait(5)                # (with a StreamHandler: until the sink moves)
        sink.release.set()
        thread.join()
        logs.flush()
        said = [line.split("INFO", 1)[-1].split("WARNING", 1)[-1].strip()
                for line in sink.text.splitlines()]
    finally:
        logs.LineWriter.most = 10_000
        sink.release.set()
        logs.setup("warning", "json")
    assert said == ["one", "two", "three", "four",
                    "1 log lines dropped: the log's output could not keep up"], said


def test_text_log_format_is_for_people(hub):
    out = LogCatcher()
    logs.setup("info", "text", stream=out)
    try:
        call(hub.url, "GET", "/nope")
        text = out.wait_lines(1)
    finally:
        logs.setup("warning", "json")
    assert "GET /nope 404" in text and "status=404" in text and not text.startswith("{")
