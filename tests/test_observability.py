"""GET /metrics (Prometheus text) and GET /openapi.json (OpenAPI 3.1, from the route table)."""

import re

from fake_lmstudio import Script
from http_client import call
from llmhub.http import routes


def metric(text: str, name: str, **labels) -> float:
    pattern = "^" + re.escape(name) + (r"\{" + ",".join(f'{k}="{re.escape(v)}"'
                                                  for k, v in labels.items()) + r"\}"
                                 if labels else "") + r" (\S+)"
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else 0.0


def test_metrics_count_requests_runs_tokens_and_latencies(hub, fake):
    call(hub.url, "POST", "/v1/chat/completions", {"model": "m", "messages": [
        {"role": "user", "content": "Hi"}]})
    fake.enqueue(Script(status=500, error="boom"))
    call(hub.url, "POST", "/v1/chat/completions", {"model": "m", "messages": [
        {"role": "user", "content": "Hi"}]})
    call(hub.url, "GET", "/v1/threads/abc")
    status, headers, body = call(hub.url, "GET", "/metrics")
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert metric(text, "llmhub_requests_total", route="/v1/chat/completions", method="POST",
                  status="200") == 1
    assert metric(text, "llmhub_requests_total", route="/v1/chat/completions", method="POST",
                  status="502") == 1
    assert metric(text, "llmhub_requests_total", route="/v1/threads/{thread_id}",
                  method="GET", status="404") == 1        # patterns, never raw ids
    assert metric(text, "llmhub_runs_total", dialect="openai", status="completed") == 1
    assert metric(text, "llmhub_upstream_errors_total", provider="lmstudio",
                  code="upstream_error") == 1
    assert metric(text, "llmhub_tokens_total", direction="out") == 5
    assert metric(text, "llmhub_time_to_first_token_seconds_count") == 1
    assert metric(text, "llmhub_hub_overhead_seconds_count") == 2
    assert metric(text, "llmhub_runs_active") == 0 and "# TYPE llmhub_runs_queued gauge" in text
    for line in text.splitlines():              # the exposition format, line by line
        assert line.startswith("#") or re.fullmatch(
            r'[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+]+', line), line


def test_openapi_describes_every_route(hub):
    status, _, spec = call(hub.url, "GET", "/openapi.json")
    assert status == 200 and spec["openapi"] == "3.1.0"
    assert spec["info"]["title"] == "llmhub" and spec["info"]["version"]
    described = {(m.upper(), path) for path, ops in spec["paths"].items() for m in ops}
    assert described == {(r.method, r.path) for r in routes.ROUTES}
    ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    for path, operations in spec["paths"].items():
        names = re.findall(r"\{(\w+)\}", path)
        for method, op in operations.items():
            assert method in ("get", "post", "delete", "put", "patch")
            assert op["responses"] and op["summary"] and op["tags"]
            declared = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
            assert declared == names, (path, method)
    load = spec["paths"]["/models/load"]["post"]
    assert load["requestBody"]["content"]["application/json"]["example"]["model_key"]
    assert spec["paths"]["/health"]["get"]["security"] == []
    assert "Accept: text/event-stream" in spec["paths"]["/chat/stream"]["post"]["description"]
