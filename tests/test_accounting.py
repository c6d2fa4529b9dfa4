"""Named keys, the request log and usage (issue 17, in part), over real sockets."""

import json
import logging
import types

import pytest

from fake_lmstudio import Script
from http_client import call
from llmhub.config import ConfigError, load_config
from llmhub.engine import accounting
from llmhub.engine.runs import Registry
from llmhub.events import TextDelta
from llmhub.waiting import delivering
from conftest import write_ini
from support import wait_for

USER = [{"role": "user", "content": "Hello!"}]
KEYS = {"server": {"api_keys": "editor:sk-editor-1111, sk-plain-2222"},
        "keys": {"agents": "sk-agents-3333"},
        "key:editor": {"role": "admin"}}         # sees every key's records


def as_key(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_runs_are_recorded_under_their_keys_name_never_the_key(make_hub, fake, caplog):
    hub = make_hub(KEYS)
    with caplog.at_level(logging.INFO, logger="llmhub.access"):
        for key in ("sk-editor-1111", "sk-plain-2222", "sk-agents-3333"):
            status, _, _ = call(hub.url, "POST", "/v1/chat/completions",
                                {"model": "m", "messages": USER}, headers=as_key(key))
            assert status == 200
        _, _, log = call(hub.url, "GET", "/v1/requests", headers=as_key("sk-editor-1111"))
    assert [r["key"] for r in log["data"]] == ["agents", "key2", "editor"]   # newest first
    record = log["data"][0]
    assert (record["dialect"], record["route"], record["model"], record["status"]) == \
        ("openai", "/v1/chat/completions", "m", "completed")
    assert record["output_tokens"] == 5 and record["ttft_ms"] is not None
    assert "sk-" not in json.dumps(log)
    lines = [r for r in caplog.records if getattr(r, "fields", {}).get("run_id")]
    assert {r.fields["key"] for r in lines} == {"editor", "key2", "agents"}
    assert not any("sk-" in json.dumps(r.fields, default=str) for r in lines)
    assert call(hub.url, "GET", "/config", headers=as_key("sk-plain-2222"))[0] == 403
    _, _, config = call(hub.url, "GET", "/config", headers=as_key("sk-editor-1111"))
    assert config["keys"] == {"editor": "***", "key2": "***", "agents": "***"}


def test_without_keys_runs_are_local_and_one_record_reads_back(hub, fake):
    _, headers, _ = call(hub.url, "POST", "/v1/chat/completions",
                         {"model": "m", "messages": USER})
    run_id = headers["X-Run-Id"]
    status, _, record = call(hub.url, "GET", f"/v1/requests/{run_id}")
    assert status == 200 and record["key"] == "local" and record["run_id"] == run_id
    assert call(hub.url, "GET", "/v1/requests/run_nope")[0] == 404


def test_usage_groups_by_key_model_and_day(make_hub, fake):
    hub = make_hub(KEYS)
    fake.enqueue(Script(), Script(), Script(status=500, error="boom"))
    for key, model in (("sk-editor-1111", "a"), ("sk-editor-1111", "b"),
                       ("sk-agents-3333", "a")):
        call(hub.url, "POST", "/v1/chat/completions", {"model": model, "messages": USER},
             headers=as_key(key))
    auth = as_key("sk-editor-1111")
    by_key = {row["group"]: row for row in call(hub.url, "GET", "/v1/usage?group_by=key",
                                                 headers=auth)[2]["data"]}
    assert by_key["editor"]["requests"] == 2 and by_key["editor"]["output_tokens"] == 10
    assert by_key["agents"]["errors"] == 1 and by_key["editor"]["ttft_p50_ms"] > 0
    by_model = {row["group"]: row["requests"] for row in call(
        hub.url, "GET", "/v1/usage?group_by=model", headers=auth)[2]["data"]}
    assert by_model == {"a": 2, "b": 1}
    days = call(hub.url, "GET", "/v1/usage?group_by=day&from=2000-01-01", headers=auth)[2]
    assert len(days["data"]) == 1 and days["data"][0]["requests"] == 3
    assert call(hub.url, "GET", "/v1/usage?group_by=week", headers=auth)[0] == 400
    assert call(hub.url, "GET", "/v1/usage?from=yesterday", headers=auth)[0] == 400


def test_the_log_keeps_at_most_keep_count(make_hub, fake):
    hub = make_hub({"log": {"keep_count": "3"}})
    for _ in range(5):
        call(hub.url, "POST", "/v1/chat/completions", {"model": "m", "messages": USER})
    _, _, log = call(hub.url, "GET", "/v1/requests?limit=10")
    assert len(log["data"]) == 3 and not log["has_more"]
    _, _, filtered = call(hub.url, "GET", "/v1/requests?status=failed")
    assert filtered["data"] == []


def test_key_names_in_config(tmp_path):
    config = load_config(env={}, path=write_ini(tmp_path / "a.ini", {
        "server": {"api_keys": "ci:sk-1, sk-2"}, "keys": {"web": "sk-3"}}))
    assert config.keys == {"ci": "sk-1", "key2": "sk-2", "web": "sk-3"}
    assert config.server.api_keys == ("sk-1", "sk-2", "sk-3")
    with pytest.raises(ConfigError, match="share one key"):
        load_config(env={}, path=write_ini(tmp_path / "b.ini", {
            "server": {"api_keys": "a:sk-1"}, "keys": {"b": "sk-1"}}))


LIMITED = {"keys": {"reader": "sk-reader-1", "small": "sk-small-2", "burst": "sk-burst-3",
                    "thrifty": "sk-thrifty-4"},
           "key:reader": {"routes": "/v1/threads*", "methods": "GET"},
           "key:small": {"models": "qwen*"},
           "key:burst": {"requests_per_minute": "2"},
           "key:thrifty": {"tokens_per_day": "10"},
           "aliases": {"fast": "qwen2.5-7b-instruct"}}


def test_a_key_limited_to_routes_and_methods(make_hub):
    hub = make_hub(LIMITED)
    reader = as_key("sk-reader-1")
    assert call(hub.url, "GET", "/v1/threads", headers=reader)[0] == 200
    status, _, body = call(hub.url, "POST", "/v1/threads", {}, headers=reader)
    assert status == 403 and "may not POST" in body["error"]["message"]
    status, _, body = call(hub.url, "POST", "/v1/chat/completions",
                           {"model": "m", "messages": USER}, headers=reader)
    assert status == 403 and body["error"]["type"] == "permission_error"


def test_a_key_limited_to_models(make_hub, fake):
    hub = make_hub(LIMITED)
    small = as_key("sk-small-2")
    for model in ("qwen3-4b", "fast"):               # a pattern, and an alias onto one
        assert call(hub.url, "POST", "/v1/chat/completions",
                    {"model": model, "messages": USER}, headers=small)[0] == 200
    status, _, body = call(hub.url, "POST", "/v1/chat/completions",
                           {"model": "llama-3", "messages": USER}, headers=small)
    assert status == 403 and body["error"]["param"] == "model"
    status, _, body = call(hub.url, "POST", "/v1/messages", {
        "model": "llama-3", "max_tokens": 5, "messages": USER}, headers=small)
    assert status == 403 and body["error"]["type"] == "permission_error"
    assert len(fake.chat_requests()) == 2


def test_rate_limits_answer_429_with_retry_after(make_hub, fake):
    hub = make_hub(LIMITED)
    burst = as_key("sk-burst-3")
    for _ in range(2):
        assert call(hub.url, "GET", "/v1/threads", headers=burst)[0] == 200
    status, headers, body = call(hub.url, "GET", "/v1/threads", headers=burst)
    assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60
    assert body["error"]["code"] == "RATE_LIMITED"            # in Langbase's shape
    thrifty = as_key("sk-thrifty-4")
    status, _, body = call(hub.url, "POST", "/v1/chat/completions",
                           {"model": "m", "messages": USER}, headers=thrifty)
    assert status == 429       # 6 tokens in, then the reply crossed the day's 10: cut there
    assert body["error"]["code"] == "tokens_per_day_exceeded"
    status, headers, body = call(hub.url, "POST", "/v1/chat/completions",
                                 {"model": "m", "messages": USER}, headers=thrifty)
    assert status == 429 and body["error"]["type"] == "rate_limit_error"
    assert int(headers["Retry-After"]) <= 86400
    assert call(hub.url, "GET", "/v1/threads", headers=as_key("sk-small-2"))[0] == 200


def test_limits_name_a_known_key(tmp_path):
    with pytest.raises(ConfigError, match="no key is named 'ghost'"):
        load_config(env={}, path=write_ini(tmp_path / "c.ini", {
            "keys": {"real": "sk-1"}, "key:ghost": {"models": "x"}}))
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(env={}, path=write_ini(tmp_path / "d.ini", {
            "keys": {"real": "sk-1"}, "key:real": {"colour": "x"}}))


def test_captured_bodies_are_kept_redacted_and_capped(make_hub, fake):
    hub = make_hub({"log": {"capture_bodies": "true", "max_body_bytes": "300"},
                    "upstream": {"api_key": "sk-upstream-secret-77"}})
    fake.enqueue(Script(chunks=["Your key is sk-upstream-secret-77 ", "x" * 400]))
    _, headers, _ = call(hub.url, "POST", "/v1/chat/completions",
                         {"model": "m", "messages": [{"role": "user", "content":
                                                      "Echo sk-upstream-secret-77"}]})
    def fetch():
        return call(hub.url, "GET", f"/v1/requests/{headers['X-Run-Id']}")[2]

    # the bodies are kept once the reply has gone out, so the client may ask before that
    assert wait_for(lambda: fetch()["request_body"] is not None)
    record = fetch()
    assert "Echo ***" in record["request_body"]
    assert record["response_body"].startswith('{"id":') and "Your key is ***" in \
        record["response_body"]
    assert record["response_body"].endswith("…") and len(record["response_body"]) <= 301
    assert "sk-upstream-secret-77" not in json.dumps(record)
    listed = call(hub.url, "GET", "/v1/requests")[2]["data"][0]
    assert "request_body" not in listed               # bodies only in the one record


def test_bodies_are_not_kept_unless_asked(hub, fake):
    _, headers, _ = call(hub.url, "POST", "/v1/chat/completions",
                         {"model": "m", "messages": USER})
    record = call(hub.url, "GET", f"/v1/requests/{headers['X-Run-Id']}")[2]
    assert record["request_body"] is None and record["response_body"] is None


def test_a_run_that_ends_inside_its_first_tokens_charge_holds_nothing_after():
    # A driven stream writes its first token before Generation._push charges it; a client
    # gone in that write ends the run there, and its record settles the budget. The charge
    # that follows must not hold tokens that nothing will ever let go.
    limits = accounting.Limits({"k": types.SimpleNamespace(tokens_per_day=1000, routes=(),
                                                           methods=())})
    registry = Registry(on_retire=lambda run: limits.spend("k", 0, run.budget))
    run = registry.create(None, key="k", route="-")
    run.budget = limits.budget("k", 10)             # its input, held while it runs
    charged = []

    def job():                                      # as Generation._push does
        run.start("m", {"name": "x"})
        event = TextDelta("hello there")
        run.transcript.add(event)
        run.emit(event)
        charged.append(run.budget.charge(3))
    run.job = job
    with delivering(lambda: run.cancel("client_gone")):   # Pump._gone, in the write
        run.drive()
    assert run.status == "cancelled" and charged == [False]
    assert limits._held.get("k") == 0 and run.budget.held == 0
