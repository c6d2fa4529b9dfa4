"""Named keys, the request log and usage (issue 17, in part), over real sockets."""

import json
import logging

import pytest

from fake_lmstudio import Script
from http_client import call
from llmhub.config import ConfigError, load_config
from conftest import write_ini

USER = [{"role": "user", "content": "Hello!"}]
KEYS = {"server": {"api_keys": "editor:sk-editor-1111, sk-plain-2222"},
        "keys": {"agents": "sk-agents-3333"}}


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
    _, _, config = call(hub.url, "GET", "/config", headers=as_key("sk-plain-2222"))
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
    assert config.server["api_keys"] == ("sk-1", "sk-2", "sk-3")
    with pytest.raises(ConfigError, match="share one key"):
        load_config(env={}, path=write_ini(tmp_path / "b.ini", {
            "server": {"api_keys": "a:sk-1"}, "keys": {"b": "sk-1"}}))
