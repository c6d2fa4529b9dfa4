"""GET /v1/usage?group_by=hour (the runs page's chart): one group per UTC hour, named as
2026-12-06T04:00Z, each key's own."""

import time

from http_client import call


def test_usage_groups_by_utc_hour_for_the_caller_only(make_hub):
    hub = make_hub({"keys": {"alice": "sk-alice", "bob": "sk-bob"}})
    alice, bob = ({"Authorization": f"Bearer sk-{name}"} for name in ("alice", "bob"))
    before = time.strftime("%Y-%m-%dT%H:00Z", time.gmtime())
    for _ in range(2):
        assert call(hub.url, "POST", "/v1/chat/completions", {"model": "m", "messages": [
            {"role": "user", "content": "hi"}]}, headers=alice)[0] == 200
    after = time.strftime("%Y-%m-%dT%H:00Z", time.gmtime())
    status, _, usage = call(hub.url, "GET", "/v1/usage?group_by=hour", headers=alice)
    assert status == 200 and usage["group_by"] == "hour"
    assert {g["group"] for g in usage["data"]} <= {before, after}    # an hour may turn
    assert sum(g["requests"] for g in usage["data"]) == 2
    assert all(g["input_tokens"] > 0 for g in usage["data"])
    assert call(hub.url, "GET", "/v1/usage?group_by=hour", headers=bob)[2]["data"] == []
