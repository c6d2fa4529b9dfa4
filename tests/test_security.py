"""Security (issue 8): keys on every route, CORS, the provider allow-list, redaction,
loopback binding, and no stack trace ever reaching a client."""

import json
import re

import pytest

from http_client import call, connect
from llmhub import logs
from llmhub.http import routes
from support import LogCatcher

KEY = "hub-key-3f9a"
UPSTREAM_KEY = "sk-upstream-77c1"
PROVIDER_KEY = "sk-provider-51d2"


def concrete(pattern: str) -> str:
    return re.sub(r"\{\w+\}", "some-id", pattern)


@pytest.mark.parametrize("route", [r for r in routes.ROUTES if r.auth],
                         ids=lambda r: f"{r.method} {r.pattern}")
def test_every_guarded_route_needs_the_key(make_hub, route):
    hub = make_hub({"server": {"api_keys": KEY}})
    headers = {"Accept": route.accept} if route.accept else {}
    status, _, body = call(hub.url, route.method, concrete(route.path), route.example,
                           headers=headers)
    assert status == 401, body
    assert "Authorization" in json.dumps(body)
    assert status_only(hub.url, route.method, concrete(route.path), route.example,
                       {**headers, "Authorization": f"Bearer {KEY}"}) != 401


def status_only(url: str, method: str, path: str, body, headers: dict) -> int:
    """The status alone: a feed (GET /v1/runs/events) never ends, so its body is not read."""
    conn = connect(url)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=payload,
                     headers={"Content-Type": "application/json", **headers})
        return conn.getresponse().status
    finally:
        conn.close()


def test_open_routes_need_no_key(make_hub):
    hub = make_hub({"server": {"api_keys": KEY}})
    for route in routes.ROUTES:
        if not route.auth:
            status, _, _ = call(hub.url, "GET", concrete(route.path).replace(
                "some-id", "app.js"))
            assert status == 200, route.pattern


def test_secrets_never_reach_logs_config_or_errors(make_hub, fake):
    hub = make_hub({"server": {"api_keys": KEY, "log_level": "debug"},
                    "upstream": {"api_key": UPSTREAM_KEY},
                    "providers": {"allowed": fake.url + "/other"}})
    auth = {"Authorization": f"Bearer {KEY}"}
    out = LogCatcher()
    logs.setup("debug", "json", stream=out)
    try:
        config = call(hub.url, "GET", "/config", headers=auth)[2]
        call(hub.url, "POST", "/v1/chat/completions",
             {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, headers=auth)
        reply = call(hub.url, "POST", "/v1/chat/completions/stream", {
            "model": "m", "messages": [{"role": "user", "content": "hi"}],
            "api_key": PROVIDER_KEY, "api_base_url": "http://203.0.113.9/v1"}, headers=auth)
        call(hub.url, "GET", "/config", headers={"Authorization": f"Bearer {KEY}x"})
        logged = out.wait_lines(4)
    finally:
        logs.setup("warning", "json")
    shown = json.dumps(config) + logged + json.dumps(reply[2])
    for secret in (KEY, UPSTREAM_KEY, PROVIDER_KEY):
        assert secret not in shown
    assert reply[0] == 403        # the allow-list refused the address; nothing was sent
    assert fake.chat_requests()[0].headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
