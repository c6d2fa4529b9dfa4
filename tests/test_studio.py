"""The LM Studio hub dialect over real sockets: models, chat, images, NDJSON, /help."""

import base64
import json
import re
import shutil
import subprocess
import threading

import pytest

from conftest import ROOT
from fake_lmstudio import Script
from http_client import call, open_stream
from llmhub.http import routes
from support import closed_port

SEED = ROOT / "tests" / "seeds" / "studio_curl.md"    # the seed document's, verbatim
NEVER = threading.Event()
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32
WEBP = b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 32
USER = [{"role": "user", "content": "What is 2+2?"}]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unloads(fake) -> list:
    return [r.body["instance_id"] for r in fake.requests if r.path == "/api/v1/models/unload"]


def ndjson_lines(raw: bytes) -> list:
    return [json.loads(line) for line in raw.decode().splitlines() if line]


# --- models ----------------------------------------------------------------------------------

def test_models_lists_loaded_and_available(hub):
    status, _, body = call(hub.url, "GET", "/models")
    assert status == 200 and body["source"] == "/api/v1/models"
    assert body["loaded"] == ["qwen2.5-7b-instruct"]
    text, vision = body["models"]
    assert text == {"key": "qwen2.5-7b-instruct", "type": "llm", "vision": False,
                    "loaded": True, "instances": ["qwen2.5-7b-instruct"],
                    "context_length": 4096, "parallel": None, "max_context_length": 32768,
                    "tools": True, "reasoning": None, "architecture": "qwen2",
                    "quantization": "Q4_K_M", "parameters": "7B", "format": "gguf",
                    "size_bytes": 4_683_073_536}
    assert vision["type"] == "vlm" and vision["vision"] and not vision["loaded"]


def test_models_fall_back_to_v0_and_fold_duplicate_instances(hub, fake):
    fake.native = "v0"
    fake.loaded["qwen2.5-7b-instruct"].append("qwen2.5-7b-instruct:2")
    body = call(hub.url, "GET", "/models")[2]
    assert body["source"] == "/api/v0/models"
    assert body["models"][0]["instances"] == ["qwen2.5-7b-instruct", "qwen2.5-7b-instruct:2"]
    fake.native = "none"
    body = call(hub.url, "GET", "/models")[2]
    assert body["source"] == "/v1/models" and body["models"][0]["loaded"] is None


def test_load_a_model_that_is_not_loaded(hub, fake):
    status, _, body = call(hub.url, "POST", "/models/load",
                           {"model_key": "qwen3-vl-4b-instruct", "context_length": 8192})
    assert status == 200 and body == {"loaded": True, "model_key": "qwen3-vl-4b-instruct",
                                      "instance_id": "qwen3-vl-4b-instruct",
                                      "load_time_seconds": 0.01, "unloaded": [],
                                      "context_length": 8192}
    assert fake.load_requests()[0].body == {"model": "qwen3-vl-4b-instruct", "context_length": 8192,
                                   "echo_load_config": True}


def test_a_loaded_model_gets_no_second_instance(hub, fake):
    body = call(hub.url, "POST", "/models/load", {"model_key": "qwen2.5-7b-instruct"})[2]
    assert body["loaded"] and body["instance_id"] == "qwen2.5-7b-instruct"
    assert not fake.load_requests()
    assert fake.loaded["qwen2.5-7b-instruct"] == ["qwen2.5-7b-instruct"]


def test_exclusive_unloads_every_other_instance_first(hub, fake):
    fake.loaded["qwen2.5-7b-instruct"].append("qwen2.5-7b-instruct:2")
    body = call(hub.url, "POST", "/models/load", {"model_key": "qwen3-vl-4b-instruct",
                                                  "exclusive": True})[2]
    assert body["unloaded"] == ["qwen2.5-7b-instruct", "qwen2.5-7b-instruct:2"]
    assert unloads(fake) == body["unloaded"]
    unload_at = fake.requests.index(next(r for r in fake.requests if "unload" in r.path))
    assert unload_at < fake.requests.index(fake.load_requests()[0])     # unload first, then load


def test_concurrent_loads_of_one_model_make_one_request(hub, fake):
    fake.load_hold = threading.Event()
    replies = []
    clients = [threading.Thread(target=lambda: replies.append(call(
        hub.url, "POST", "/models/load", {"model_key": "qwen3-vl-4b-instruct"})[2]))
        for _ in range(5)]
    for client in clients:
        client.start()
    flights, pause = hub.hub.engine.lifecycle.manager(None)._flights, threading.Event()
    for _ in range(2000):                  # until all four followers ride on the one load
        if flights and next(iter(flights.values())).waiters == 4:
            break
        pause.wait(0.005)
    else:
        pytest.fail("the followers never joined the load in flight")
    fake.load_hold.set()
    for client in clients:
        client.join(10)
    assert len(fake.load_requests()) == 1
    assert {r["instance_id"] for r in replies} == {"qwen3-vl-4b-instruct"}


@pytest.mark.parametrize("setup, status, error", [
    ({}, 404, "Failed to load model: Model not found"),
    ({"load_error": (500, {"error": "Model loading was stopped due to insufficient system "
                                    "resources"})}, 502,
     "Failed to load model: Model loading was stopped due to insufficient system resources"),
    ({"native": "v0"}, 501, "Failed to load model: This LM Studio has no /api/v1"),
])
def test_load_failures(hub, fake, setup, status, error):
    for name, value in setup.items():
        setattr(fake, name, value)
    reply_status, _, body = call(hub.url, "POST", "/models/load", {"model_key": "nope"}
                                 if not setup else {"model_key": "qwen3-vl-4b-instruct"})
    assert reply_status == status and body["loaded"] is False
    assert body["error"].startswith(error)
    if setup.get("native"):
        assert "lms load" in body["error"]


def test_load_with_lm_studio_down(make_hub):
    hub = make_hub(upstream_url=f"http://127.0.0.1:{closed_port()}/v1")
    status, _, body = call(hub.url, "POST", "/models/load", {"model_key": "x"})
    assert status == 503 and body["error"].startswith("Failed to load model: Could not "
                                                      "connect to LM Studio")


def test_unload_one_or_all(hub, fake):
    fake.loaded["qwen3-vl-4b-instruct"] = ["qwen3-vl-4b-instruct"]
    assert call(hub.url, "POST", "/models/unload", {"model_key": "qwen3-vl-4b-instruct"})[2] \
        == {"unloaded": ["qwen3-vl-4b-instruct"]}
    assert call(hub.url, "POST", "/models/unload", {"unload_all": True})[2] == \
        {"unloaded": ["qwen2.5-7b-instruct"]}
    status, _, body = call(hub.url, "POST", "/models/unload", {"model_key": "nope"})
    assert status == 404 and body == {"detail": "Model 'nope' not found"}
    status, _, body = call(hub.url, "POST", "/models/unload", {})
    assert status == 422 and body["detail"][0]["loc"] == ["body", "model_key"]


def test_a_model_with_runs_in_flight_is_not_unloaded_unless_forced(hub, fake):
    fake.enqueue(Script(hold_first=NEVER))
    conn, response = open_stream(hub.url, "/chat/stream", {
        "model_key": "qwen2.5-7b-instruct", "messages": USER})
    run_id = response.getheader("X-Run-Id")
    status, _, body = call(hub.url, "POST", "/models/unload",
                           {"model_key": "qwen2.5-7b-instruct"})
    assert status == 409 and run_id in body["detail"] and "force" in body["detail"]
    assert not unloads(fake)
    body = call(hub.url, "POST", "/models/unload", {"model_key": "qwen2.5-7b-instruct",
                                                    "force": True})[2]
    assert body == {"unloaded": ["qwen2.5-7b-instruct"]}
    lines = ndjson_lines(response.read())
    assert lines[-1]["type"] == "done" and lines[-1]["stop_reason"] == "cancelled"
    assert fake.aborted.wait(2)
    conn.close()


# --- chat ------------------------------------------------------------------------------------

def test_chat_uses_model_key_and_config(hub, fake):
    status, _, body = call(hub.url, "POST", "/chat", {
        "model_key": "my-custom-model", "messages": USER,
        "config": {"temperature": 0.7, "maxTokens": 100, "topP": 0.9, "presencePenalty": 0.1,
                   "frequencyPenalty": 0.2}})
    assert status == 200 and body == {"model": "my-custom-model",
                                      "content": "Hello from the fake!",
                                      "stop_reason": "stop", "predicted_tokens": 5}
    sent = fake.chat_requests()[-1].body
    assert (sent["temperature"], sent["max_tokens"], sent["top_p"], sent["presence_penalty"],
            sent["frequency_penalty"]) == (0.7, 100, 0.9, 0.1, 0.2)


def test_chat_without_a_key_uses_the_loaded_model_or_says_none_is(hub, fake):
    call(hub.url, "POST", "/chat", {"messages": USER})
    assert fake.chat_requests()[-1].body["model"] == "qwen2.5-7b-instruct"
    fake.loaded.clear()
    status, _, body = call(hub.url, "POST", "/chat", {"messages": USER})
    assert status == 503 and body == {"detail": "Chat service unavailable: No model loaded"}


def test_no_models_loaded_from_lm_studio_is_the_seeds_503(hub, fake):
    fake.enqueue(Script(status=400, error="No models loaded. Please load a model in the "
                                          "developer page or use the 'lms load' command."))
    status, _, body = call(hub.url, "POST", "/chat/regular", {"messages": USER})
    assert status == 503 and body == {"detail": "Chat service unavailable: No model loaded"}


def test_lm_studio_down_is_the_seeds_503(make_hub):
    hub = make_hub(upstream_url=f"http://127.0.0.1:{closed_port()}/v1")
    status, _, body = call(hub.url, "POST", "/chat/regular", {"messages": USER})
    assert status == 503
    assert body == {"detail": "Could not connect to LM Studio: Connection refused"}


def test_regular_uses_its_model_and_refuses_images(hub, fake):
    call(hub.url, "POST", "/chat/regular", {"messages": USER})
    assert fake.chat_requests()[-1].body["model"] == "qwen/qwen3-4b-2507"
    status, _, body = call(hub.url, "POST", "/chat/regular", {"messages": [
        {"role": "user", "content": "x", "images": [{"data_base64": b64(PNG),
                                                     "mime_type": "image/png"}]}]})
    assert status == 422
    assert body["detail"][0]["loc"] == ["body", "messages", 0, "images"]
    assert "text-only" in body["detail"][0]["msg"]


def test_vision_sends_images_as_data_uris(hub, fake):
    status, _, _ = call(hub.url, "POST", "/chat/vision", {"messages": [
        {"role": "user", "content": "What is in this image?",
         "images": [{"data_base64": b64(JPEG), "mime_type": "image/jpeg"},
                    {"data_base64": b64(PNG), "mime_type": "image/png"}]}]})
    assert status == 200
    sent = fake.chat_requests()[-1].body
    assert sent["model"] == "qwen3-vl-4b-instruct"
    assert sent["messages"][0]["content"] == [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + b64(JPEG)}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(PNG)}}]


@pytest.mark.parametrize("image, loc_end, words", [
    ({"data_base64": "not base64!!", "mime_type": "image/png"}, "data_base64", "base64"),
    ({"data_base64": b64(PNG), "mime_type": "image/gif"}, "mime_type", "image/jpeg"),
    ({"data_base64": b64(PNG), "mime_type": "image/jpeg"}, "mime_type", "not a image/jpeg"),
    ({"data_base64": b64(WEBP), "mime_type": "image/webp"}, "mime_type", "refuses WebP"),
    ({"mime_type": "image/png"}, "data_base64", "required"),
])
def test_bad_images_are_422_with_a_detail_list(hub, fake, image, loc_end, words):
    status, _, body = call(hub.url, "POST", "/chat/vision", {"messages": [
        {"role": "user", "content": "x", "images": [image]}]})
    assert status == 422
    assert body["detail"][0]["loc"] == ["body", "messages", 0, "images", 0, loc_end]
    assert words in body["detail"][0]["msg"]
    assert not fake.chat_requests()


def test_images_over_the_limit_are_refused(make_hub, fake):
    hub = make_hub({"server": {"max_image_bytes": 1024}})
    status, _, body = call(hub.url, "POST", "/chat/vision", {"messages": [
        {"role": "user", "content": "x", "images": [
            {"data_base64": b64(PNG + b"\x00" * 2000), "mime_type": "image/png"}]}]})
    assert status == 422 and "max_image_bytes" in body["detail"][0]["msg"]


def test_invalid_bodies_list_every_problem(hub):
    status, _, body = call(hub.url, "POST", "/chat", {
        "messages": [{"role": "robot", "content": 5}], "config": {"temperature": 9,
                                                                   "maxTokens": "many"}})
    assert status == 422
    assert [d["loc"] for d in body["detail"]] == [
        ["body", "messages", 0, "role"], ["body", "messages", 0, "content"],
        ["body", "config", "temperature"], ["body", "config", "maxTokens"]]
    assert call(hub.url, "POST", "/chat", {})[2]["detail"][0]["loc"] == ["body", "messages"]


def test_streams_are_ndjson_fragments_then_done(hub):
    conn, response = open_stream(hub.url, "/chat/regular/stream", {"messages": USER})
    assert response.getheader("Content-Type") == "application/x-ndjson"
    lines = ndjson_lines(response.read())
    conn.close()
    assert [line["type"] for line in lines] == ["fragment"] * 5 + ["done"]
    assert "".join(line.get("content", "") for line in lines) == "Hello from the fake!"
    assert lines[-1] == {"type": "done", "model": "qwen/qwen3-4b-2507",
                         "predicted_tokens": 5, "stop_reason": "stop"}


def test_an_error_mid_stream_is_an_error_line(hub, fake):
    fake.enqueue(Script(chunks=["half"], error_event="Compute error."))
    conn, response = open_stream(hub.url, "/chat/stream", {"model_key": "m", "messages": USER})
    lines = ndjson_lines(response.read())
    conn.close()
    assert lines[0] == {"type": "fragment", "content": "half"}
    assert lines[-1]["type"] == "error" and "Compute error." in lines[-1]["message"]


# --- /help -----------------------------------------------------------------------------------

def test_help_documents_every_route(hub):
    status, _, body = call(hub.url, "GET", "/help")
    assert status == 200
    listed = {(r["method"], r["path"]) for rs in body["dialects"].values() for r in rs}
    assert listed == {(r.method, r.path) for r in routes.ROUTES}
    assert set(body["dialects"]) >= {"Service", "OpenAI", "Langbase", "Responses hub",
                                     "LM Studio hub", "EDISON"}
    load = next(r for r in body["dialects"]["LM Studio hub"] if r["path"] == "/models/load")
    assert load["example"] == {"model_key": "qwen/qwen3-4b-2507", "exclusive": True}
    assert load["curl"].startswith("curl -X POST http://127.0.0.1:")


def test_help_is_html_for_browsers(hub):
    status, headers, body = call(hub.url, "GET", "/help",
                                 headers={"Accept": "text/html,application/xhtml+xml"})
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    page = body.decode() if isinstance(body, bytes) else body
    assert "<h2>LM Studio hub</h2>" in page and "/chat/vision/stream" in page


# --- the seed's examples ---------------------------------------------------------------------

@pytest.mark.skipif(not shutil.which("curl"), reason="needs curl")
def test_the_seed_curl_examples_work_verbatim(hub):
    blocks = re.findall(r"```bash\n(curl .*?)\n```", SEED.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 5
    for block in blocks:
        command = block.replace("http://127.0.0.1:8000", hub.url) + " -s -w '\\n%{http_code}'"
        result = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                                timeout=30)
        body, _, code = result.stdout.rpartition("\n")
        if "<BASE64_ENCODED_IMAGE>" in block:      # the seed's placeholder is not an image
            assert code == "422" and "data_base64" in body and "base64" in body
        else:
            assert code == "200", (block, body)


def test_the_seed_powershell_examples_send_what_works(hub, fake):
    """What Invoke-RestMethod sends for each PowerShell example (-Body as given, or
    ConvertTo-Json output), replayed; pwsh itself is not available here."""
    assert call(hub.url, "POST", "/models/load",
                b'{"model_key":"qwen/qwen3-4b-2507","exclusive":true}')[0] == 404   # not here
    fake.models.append("qwen/qwen3-4b-2507")
    assert call(hub.url, "POST", "/models/load",
                b'{"model_key":"qwen/qwen3-4b-2507","exclusive":true}')[2]["loaded"] is True
    assert call(hub.url, "GET", "/models")[0] == 200
    assert call(hub.url, "POST", "/models/unload",
                b'{"model_key":"qwen/qwen3-4b-2507"}')[2] == {"unloaded": ["qwen/qwen3-4b-2507"]}
    assert call(hub.url, "POST", "/models/unload", b'{"unload_all":true}')[0] == 200
    converted = ('{\r\n    "config":  {\r\n                   "temperature":  0.7,\r\n'
                 '                   "maxTokens":  100\r\n               },\r\n'
                 '    "messages":  [\r\n                     {\r\n'
                 '                         "role":  "system",\r\n'
                 '                         "content":  "You are helpful."\r\n'
                 '                     },\r\n                     {\r\n'
                 '                         "role":  "user",\r\n'
                 '                         "content":  "What is 2+2?"\r\n'
                 '                     }\r\n                 ]\r\n}').encode()
    assert call(hub.url, "POST", "/chat/regular", converted)[0] == 200
    vision = json.dumps({"messages": [{"role": "user", "content": "Describe this image",
                                       "images": [{"data_base64": b64(JPEG),
                                                   "mime_type": "image/jpeg"}]}],
                         "config": {"temperature": 0.7, "maxTokens": 256}}, indent=4).encode()
    assert call(hub.url, "POST", "/chat/vision", vision)[0] == 200
