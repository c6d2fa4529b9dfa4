"""Every example /help gives runs as written (issue 29): each curl command, through bash,
against a hub on the fake LM Studio, answers 2xx; but for those that need what only the
user's machine has, each named below with the reason."""

import shutil
import subprocess

import pytest

from http_client import call

# path (method) → why it cannot answer 2xx here, as written
NEEDS = {
    ("POST", "/chat/cancel"): "the request_id of a live EDISON stream (its init event)",
    ("POST", "/models/load"): "a model the user's LM Studio has (the seed's own example)",
    ("POST", "/models/unload"): "a model the user's LM Studio has loaded",
    ("POST", "/api/embed"): "an embedding model on the upstream",
    ("POST", "/api/embeddings"): "an embedding model on the upstream",
    **{("POST", path): "an upstream that serves it (llama.cpp, vLLM, LocalAI)"
       for path in ("/v1/rerank", "/rerank", "/tokenize", "/detokenize", "/v1/audio/speech",
                    "/v1/images/generations")},
    **{("POST", path): "a file to upload (multipart/form-data)"
       for path in ("/v1/audio/transcriptions", "/v1/audio/translations",
                    "/v1/images/edits", "/v1/files")},
    ("POST", "/v1/batches"): "the id of a batch file uploaded first (POST /v1/files)",
    **{(method, path): "nothing: llmhub keeps no model files, and says so with 501"
       for method, path in (("POST", "/api/push"), ("POST", "/api/create"),
                            ("POST", "/api/copy"), ("DELETE", "/api/delete"))},
}

ENDLESS = {"/v1/runs/events"}      # a live feed: it streams until the client leaves


@pytest.mark.skipif(not shutil.which("curl"), reason="needs curl")
def test_every_help_example_runs_as_written(make_hub):
    hub = make_hub({"aliases": {"fast": "qwen2.5-7b-instruct"}})
    sections = call(hub.url, "GET", "/help")[2]["dialects"]
    failed, ran = [], 0
    for routes in sections.values():
        for route in routes:
            if "{" in route["path"] or (route["method"], route["path"]) in NEEDS:
                continue                # an id from an earlier reply goes in its path
            endless = route["path"] in ENDLESS      # cut after a second: its head is out
            result = subprocess.run(["bash", "-c", route["curl"] + " -s -o /dev/null -w "
                                     f"'%{{http_code}}' --max-time {1 if endless else 20}"],
                                    capture_output=True, text=True, timeout=30)
            ran += 1
            if not result.stdout.startswith("2"):
                failed.append((route["curl"], result.stdout))
    assert not failed, failed
    assert ran >= 40


def test_edisons_stream_example_asks_for_edisons_stream(hub):
    edison = [r for routes in call(hub.url, "GET", "/help")[2]["dialects"].values()
              for r in routes if r["path"] == "/chat/stream" and '"message":' in r["curl"]]
    assert len(edison) == 1
    assert edison[0]["curl"].startswith(
        f"curl -N -H 'Accept: text/event-stream' -X POST {hub.url}/chat/stream ")
