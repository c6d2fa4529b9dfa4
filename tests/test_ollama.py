"""Ollama's API (`/api/*`) through the real server, with the official `ollama` client and
LangChain's ChatOllama where installed, and raw HTTP for the wire details they hide."""

import base64
import json
import math
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fake_lmstudio import Script
from http_client import call, connect, open_stream
from support import closed_port

MODEL = "qwen2.5-7b-instruct"
COLD = "qwen3-vl-4b-instruct"          # listed by the fake, not loaded
HI = [{"role": "user", "content": "hi"}]
ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
NEVER = threading.Event()
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def lines(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]


@pytest.fixture
def probed(hub):
    """A hub whose box has listed its models (what the health probe does every 10 s)."""
    hub.hub.engine.prober.probe_all()
    return hub


@pytest.fixture
def client(probed):
    ollama = pytest.importorskip("ollama")
    return ollama.Client(host=probed.url)


# --- the probe endpoints ---------------------------------------------------------------------

def test_unknown_api_paths_answer_ollamas_string_error(hub):
    status, _, body = call(hub.url, "GET", "/api/nothing-here")
    assert status == 404 and isinstance(body["error"], str)
    status, _, body = call(hub.url, "POST", "/api/blobs/sha256:abc", b"data")
    assert status == 501 and isinstance(body["error"], str)


def test_root_answers_ollama_is_running_to_clients_and_json_to_who_asks(hub):
    status, headers, body = call(hub.url, "GET", "/")
    assert status == 200 and body == b"Ollama is running"
    assert headers["Content-Type"].startswith("text/plain")
    conn = connect(hub.url)
    conn.request("HEAD", "/")
    response = conn.getresponse()
    assert response.status == 200 and response.read() == b""
    conn.close()
    status, _, body = call(hub.url, "GET", "/", headers={"Accept": "application/json"})
    assert status == 200 and body["name"] == "llmhub"
    axios = {"Accept": "application/json, text/plain, */*"}    # compares the text
    assert call(hub.url, "GET", "/", headers=axios)[2] == b"Ollama is running"


def test_a_browser_extension_may_call_it_and_a_web_page_may_not(hub):
    for origin in ("chrome-extension://jfgfiigpkhlkbnfnbobbkinehhfdhndo",
                   "moz-extension://4b1a-uuid"):
        status, headers, _ = call(hub.url, "GET", "/api/version", headers={"Origin": origin})
        assert status == 200 and headers["Access-Control-Allow-Origin"] == origin
    assert call(hub.url, "GET", "/api/version",
                headers={"Origin": "https://evil.example"})[0] == 403


def test_version_tags_show_and_ps_through_the_client(client, probed):
    assert client._client.get("/api/version").json()["version"]
    names = [m.model for m in client.list().models]
    assert f"{MODEL}:latest" in names and f"{COLD}:latest" in names
    assert "fast:latest" in names or all(":" in n for n in names)   # aliases listed too
    listed = next(m for m in client.list().models if m.model == f"{MODEL}:latest")
    assert listed.details.family == "qwen2" and listed.details.quantization_level == "Q4_K_M"
    assert listed.details.parameter_size == "7B" and listed.size == 4_683_073_536

    shown = client.show(f"{MODEL}:latest")
    assert shown.capabilities == ["completion", "tools"]
    assert shown.modelinfo["general.architecture"] == "qwen2"
    assert shown.modelinfo["qwen2.context_length"] == 32768    # trained, as Ollama says
    assert "vision" in client.show(COLD).capabilities

    running = client.ps().models         # the loaded context is /api/ps's
    assert [m.model for m in running] == [f"{MODEL}:latest"]
    assert running[0].context_length == 4096


def test_show_capabilities_from_config_where_the_upstream_is_silent(make_hub, fake):
    fake.native = "none"            # an upstream that says nothing of its models
    hub = make_hub({"ollama": {"thinking": "qwen2.5-*", "vision": "*-vl-*"}})
    hub.hub.engine.prober.probe_all()
    status, _, body = call(hub.url, "POST", "/api/show", {"model": MODEL})
    assert status == 200
    assert body["capabilities"] == ["completion", "tools", "thinking"]
    assert "vision" in call(hub.url, "POST", "/api/show", {"name": COLD})[2]["capabilities"]


def test_every_listed_name_shows_and_chats_on_every_route(make_hub, fake):
    """Copilot's sequence: /api/tags, /api/show of each (one 404 and it drops the whole
    list), then /v1/chat/completions with the name as listed (`x:latest`)."""
    hub = make_hub({"aliases": {"fast": MODEL, "ghost": "no-such-model"}})
    hub.hub.engine.prober.probe_all()
    names = [m["name"] for m in call(hub.url, "GET", "/api/tags")[2]["models"]]
    assert "fast:latest" in names and "ghost:latest" not in names
    for name in names:
        status, _, shown = call(hub.url, "POST", "/api/show", {"model": name})
        assert status == 200 and "completion" in shown["capabilities"], name
    assert call(hub.url, "POST", "/api/show", {"model": "fast"})[2]["model_info"][
        "general.basename"] == "fast"
    for name, sent in ((f"{MODEL}:latest", MODEL), ("fast:latest", MODEL)):
        status, _, body = call(hub.url, "POST", "/v1/chat/completions",
                               {"model": name, "messages": HI})
        assert status == 200 and fake.chat_requests()[-1].body["model"] == sent


def test_a_model_named_with_its_tag_upstream_keeps_it(make_hub, fake):
    fake.models = ["llama3.2:latest"]       # an Ollama server as the upstream
    hub = make_hub()
    hub.hub.engine.prober.probe_all()
    assert call(hub.url, "POST", "/v1/chat/completions",
                {"model": "llama3.2:latest", "messages": HI})[0] == 200
    assert fake.chat_requests()[-1].body["model"] == "llama3.2:latest"


def test_an_unknown_model_is_ollamas_404_with_a_string(client, probed):
    import ollama
    for ask in (lambda: client.chat(model="nope", messages=HI),
                lambda: client.show("nope"),
                lambda: client.embed(model="nope:7b", input="x")):
        with pytest.raises(ollama.ResponseError) as caught:
            ask()
        assert caught.value.status_code == 404
        assert caught.value.error.startswith('model "nope') and "not found" in \
            caught.value.error


# --- chat ------------------------------------------------------------------------------------

def test_chat_streams_ndjson_by_default_and_ends_with_the_counts(probed, fake):
    conn, response = open_stream(probed.url, "/api/chat", {"model": MODEL, "messages": HI})
    assert response.status == 200
    assert response.getheader("Content-Type").startswith("application/x-ndjson")
    got = lines(response.read())
    conn.close()
    assert "".join(g["message"]["content"] for g in got) == "Hello from the fake!"
    assert all(g["model"] == MODEL and g["created_at"].endswith("Z") for g in got)
    assert [g["done"] for g in got] == [False] * (len(got) - 1) + [True]
    last = got[-1]
    assert last["done_reason"] == "stop" and last["eval_count"] == 5
    assert last["prompt_eval_count"] > 0
    for name in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(last[name], int) and last[name] >= 0
    assert last["total_duration"] >= last["eval_duration"]


def test_chat_not_streamed_and_options_reach_the_upstream(client, fake):
    reply = client.chat(model=f"{MODEL}:latest", messages=HI, stream=False, options={
        "temperature": 0.3, "top_p": 0.8, "top_k": 20, "num_predict": 64, "stop": ["\n\n"],
        "seed": 7, "repeat_penalty": 1.1, "num_ctx": 8192, "num_gpu": 99})
    assert reply.message.content == "Hello from the fake!" and reply.done
    assert reply.done_reason == "stop" and reply.eval_count == 5
    sent = fake.chat_requests()[-1].body
    assert sent["model"] == MODEL
    assert (sent["temperature"], sent["top_p"], sent["top_k"], sent["max_tokens"],
            sent["stop"], sent["seed"], sent["repeat_penalty"]) == \
        (0.3, 0.8, 20, 64, ["\n\n"], 7, 1.1)
    assert "num_ctx" not in sent and "num_gpu" not in sent and "options" not in sent
    client.chat(model=MODEL, messages=HI, options={"num_predict": -1})
    assert "max_tokens" not in fake.chat_requests()[-1].body


def test_tools_go_out_with_object_arguments_and_come_back_as_openai(client, fake):
    fake.enqueue(Script(chunks=[], tool_calls=[
        {"id": "call_9", "name": "get_weather", "arguments": '{"city": "Paris"}'}]))
    reply = client.chat(model=MODEL, messages=[{"role": "user", "content": "Weather?"}],
                        tools=[WEATHER])
    call_ = reply.message.tool_calls[0]
    assert call_.function.name == "get_weather" and call_.function.arguments == {"city": "Paris"}
    assert fake.chat_requests()[-1].body["tools"] == [WEATHER]

    client.chat(model=MODEL, tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "18 C, sunny", "tool_name": "get_weather"}])
    sent = fake.chat_requests()[-1].body["messages"]
    asked = sent[1]["tool_calls"][0]
    assert asked["type"] == "function" and asked["function"]["name"] == "get_weather"
    assert json.loads(asked["function"]["arguments"]) == {"city": "Paris"}
    assert sent[2] == {"role": "tool", "content": "18 C, sunny", "tool_call_id": asked["id"]}


def test_streamed_tool_calls_come_whole_before_the_last_line(probed, fake):
    fake.enqueue(Script(chunks=["Let me check."], tool_calls=[
        {"id": "c1", "name": "get_weather", "arguments": '{"city": "Oslo"}'}]))
    status, _, data = call(probed.url, "POST", "/api/chat", {
        "model": MODEL, "messages": HI, "tools": [WEATHER]})
    got = lines(data)
    calls = [g["message"]["tool_calls"] for g in got if g["message"].get("tool_calls")]
    assert calls == [[{"id": "c1", "function": {"index": 0, "name": "get_weather",
                                                "arguments": {"city": "Oslo"}}}]]
    assert got[-1]["done"] and got[-1]["done_reason"] == "stop"


def test_images_become_data_uris_and_bad_ones_a_400_naming_the_field(client, probed, fake):
    client.chat(model=COLD, messages=[{"role": "user", "content": "What is this?",
                                       "images": [PNG]}])
    content = fake.chat_requests()[-1].body["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "What is this?"}
    assert content[1]["image_url"]["url"] == \
        "data:image/png;base64," + base64.b64encode(PNG).decode()
    status, _, body = call(probed.url, "POST", "/api/chat", {
        "model": COLD, "messages": [{"role": "user", "content": "x", "images": ["!!!"]}]})
    assert status == 400 and body == {"error": "'messages.0.images.0' is not valid base64"}


def test_format_schema_think_and_thinking(client, fake):
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}}
    client.chat(model=MODEL, messages=HI, format=schema, think="high")
    sent = fake.chat_requests()[-1].body
    assert sent["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "response", "schema": schema}}
    assert sent["reasoning_effort"] == "high"
    client.chat(model=MODEL, messages=HI, format="json")
    assert fake.chat_requests()[-1].body["response_format"]["json_schema"]["schema"] == \
        {"type": "object"}

    fake.enqueue(Script(reasoning=["Let me ", "think."]))
    reply = client.chat(model=MODEL, messages=HI, think=True)
    assert reply.message.thinking == "Let me think." and reply.message.content == \
        "Hello from the fake!"
    fake.enqueue(Script(reasoning=["hidden"]))
    reply = client.chat(model=MODEL, messages=HI, think=False)
    assert not reply.message.thinking
    status, _, _ = call(client._client.base_url.__str__().rstrip("/"), "POST", "/api/chat",
                        {"model": MODEL, "messages": HI, "think": "max", "stream": False})
    assert status == 200 and fake.chat_requests()[-1].body["reasoning_effort"] == "high"


def test_bad_input_is_a_400_with_a_string_naming_the_field(probed):
    for body, field in (({"model": MODEL, "messages": "hi"}, "messages"),
                        ({"model": MODEL, "messages": [{"role": "bot", "content": "x"}]},
                         "messages.0.role"),
                        ({"model": MODEL, "messages": HI, "options": {"temperature": "hot"}},
                         "temperature"),
                        ({"model": MODEL, "messages": HI, "format": 5}, "format"),
                        ({"model": MODEL, "messages": HI, "keep_alive": "soon"}, "keep_alive"),
                        ({"messages": HI}, "model")):
        status, _, reply = call(probed.url, "POST", "/api/chat", body)
        assert status == 400 and isinstance(reply["error"], str) and field in reply["error"]
    status, _, reply = call(probed.url, "POST", "/api/chat", b"{not json")
    assert status == 400 and isinstance(reply["error"], str)


def test_a_client_that_leaves_cancels_the_run_and_the_upstream_stops(probed, fake):
    fake.enqueue(Script(hold_first=NEVER))
    conn, response = open_stream(probed.url, "/api/chat", {"model": MODEL, "messages": HI})
    run_id = response.getheader("X-Run-Id")
    assert fake.wait_requests(1)
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    assert fake.aborted.wait(5)
    run = probed.hub.registry.get(run_id)
    assert run is None or run.wait(5)
    assert probed.hub.registry.status(run_id) == "cancelled"


# --- generate --------------------------------------------------------------------------------

def test_generate_streams_and_sends_system_and_prompt_as_chat(client, fake):
    parts = list(client.generate(model=MODEL, prompt="Why?", system="Be brief.", stream=True))
    assert "".join(p.response for p in parts) == "Hello from the fake!"
    assert parts[-1].done and parts[-1].done_reason == "stop" and parts[-1].eval_count == 5
    assert fake.chat_requests()[-1].body["messages"] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"}]


def test_generate_raw_or_with_a_suffix_is_a_text_completion(client, fake):
    reply = client.generate(model=MODEL, prompt="def add(a, b):", suffix="\n    return c")
    assert reply.response and reply.done
    sent = [r for r in fake.requests if r.path == "/v1/completions"][-1].body
    assert sent["prompt"] == "def add(a, b):" and sent["suffix"] == "\n    return c"
    client.generate(model=MODEL, prompt="[INST] hi [/INST]", raw=True)
    sent = [r for r in fake.requests if r.path == "/v1/completions"][-1].body
    assert sent["prompt"] == "[INST] hi [/INST]" and "suffix" not in sent


def test_keep_alive_loads_and_unloads(client, probed, fake):
    loads = lambda: [r.body["model"] for r in fake.requests  # noqa: E731
                     if r.path == "/api/v1/models/load"]
    reply = client.generate(model=COLD, prompt="")
    assert reply.done_reason == "load" and loads() == [COLD]
    assert fake.loaded[COLD] == [COLD]
    reply = client.generate(model=COLD, prompt="", keep_alive=0)
    assert reply.done_reason == "unload" and fake.loaded[COLD] == []

    # a run with keep_alive 0 unloads its model once it is over
    client.chat(model=MODEL, messages=HI, keep_alive=0)
    with fake.received:
        assert fake.received.wait_for(lambda: any(
            r.path == "/api/v1/models/unload" and r.body == {"instance_id": MODEL}
            for r in fake.requests), 5)
    reply = client.chat(model=COLD, messages=[], keep_alive="10m")
    assert reply.done_reason == "load"


def test_num_ctx_is_the_context_of_a_load_the_request_causes(client, probed, fake):
    client.chat(model=COLD, messages=HI, options={"num_ctx": 16384})
    loads = [r.body for r in fake.requests if r.path == "/api/v1/models/load"]
    assert loads[-1]["model"] == COLD and loads[-1]["context_length"] == 16384
    assert "num_ctx" not in fake.chat_requests()[-1].body
    client.chat(model=COLD, messages=HI, options={"num_ctx": 32768})    # loaded: kept
    assert len([r for r in fake.requests if r.path == "/api/v1/models/load"]) == 1
    fake.loaded[COLD] = []                  # unloaded by someone else: the probe sees it
    probed.hub.engine.prober.probe_all()
    reply = client.generate(model=COLD, prompt="", options={"num_ctx": 8192})
    assert reply.done_reason == "load"
    assert [r.body for r in fake.requests
            if r.path == "/api/v1/models/load"][-1]["context_length"] == 8192


def test_keep_alive_takes_go_durations_and_sets_the_idle_unload(client, probed, fake):
    lifecycle = probed.hub.engine.lifecycle
    for given, seconds in (("2h45m", 9900), ("1h0m0s", 3600), (90, 90), ("-1s", math.inf)):
        client.chat(model=MODEL, messages=HI, keep_alive=given)
        assert lifecycle._keep[("default", MODEL)] == seconds     # set before the reply


# --- embeddings and management ---------------------------------------------------------------

def test_embed_and_the_older_embeddings(client, fake):
    reply = client.embed(model=MODEL, input=["a", "bb"], dimensions=3)
    assert reply.embeddings == [[0.1, 0.5, -0.25], [0.2, 0.5, -0.25]]
    assert reply.model == MODEL
    sent = [r for r in fake.requests if r.path == "/v1/embeddings"][-1].body
    assert sent == {"model": MODEL, "input": ["a", "bb"], "dimensions": 3}
    assert client.embed(model=MODEL, input="a").embeddings == [[0.1, 0.5, -0.25]]
    assert client.embeddings(model=MODEL, prompt="a").embedding == [0.1, 0.5, -0.25]
    assert client.embed(model=MODEL, input="").embeddings == []      # Ollama's answer


def test_pull_of_a_model_the_upstream_has_succeeds_and_management_is_refused(client, probed):
    import ollama
    assert client.pull(MODEL).status == "success"
    assert [p.status for p in client.pull(MODEL, stream=True)][-1] == "success"
    with pytest.raises(ollama.ResponseError) as caught:
        client.delete(MODEL)
    assert caught.value.status_code == 501 and "lms" in caught.value.error
    with pytest.raises(ollama.ResponseError):
        client.copy(MODEL, "mine")


def test_pull_downloads_through_lm_studio_and_streams_its_progress(client, probed, fake):
    import ollama
    fake.catalog = {"ibm/granite-4-micro": 2_100_000_000}
    probed.hub.engine.lifecycle.managers["default"].poll_seconds = 0
    progress = list(client.pull("ibm/granite-4-micro", stream=True))
    assert [p.status for p in progress] == ["pulling manifest"] + \
        ["pulling ibm/granite-4-micro"] * 2 + ["success"]
    assert (progress[2].total, progress[2].completed) == (2_100_000_000, 2_100_000_000)
    assert progress[2].digest.startswith("sha256:")
    assert progress[1].total == 2_100_000_000
    # the upstream was probed again: the model is known at once
    assert client.show("ibm/granite-4-micro:latest").capabilities[0] == "completion"
    with pytest.raises(ollama.ResponseError) as caught:
        client.pull("not-in-any-catalog")
    assert caught.value.status_code == 404 and "catalog" in caught.value.error


def test_pull_where_no_upstream_downloads_says_what_to_do(make_hub, fake):
    ollama = pytest.importorskip("ollama")
    fake.llama = True                     # a llama.cpp server loads and downloads nothing
    hub = make_hub({"upstream": {"kind": "llamacpp"}})
    hub.hub.engine.prober.probe_all()
    with pytest.raises(ollama.ResponseError) as caught:
        ollama.Client(host=hub.url).pull("llama3.2")
    assert caught.value.status_code == 404
    assert "none of them downloads models" in caught.value.error


# --- the same hub for every client -----------------------------------------------------------

def test_keys_own_ollama_runs_and_the_request_log_shows_them(make_hub, fake):
    ollama = pytest.importorskip("ollama")
    hub = make_hub({"keys": {"alice": "sk-alice", "bob": "sk-bob"}})
    hub.hub.engine.prober.probe_all()
    status, _, body = call(hub.url, "POST", "/api/chat", {"model": MODEL, "messages": HI})
    assert status == 401 and isinstance(body["error"], str)
    alice = ollama.Client(host=hub.url, headers={"Authorization": "Bearer sk-alice"})
    alice.chat(model=MODEL, messages=HI)
    records = call(hub.url, "GET", "/v1/requests",
                   headers={"Authorization": "Bearer sk-alice"})[2]["data"]
    assert records[0]["key"] == "alice" and records[0]["dialect"] == "ollama"
    assert call(hub.url, "GET", "/v1/requests",
                headers={"Authorization": "Bearer sk-bob"})[2]["data"] == []


def test_only_a_key_that_manages_models_unloads_them(make_hub, fake):
    """A model's idle time is everyone's: keep_alive from a key without manage_models is
    ignored on a chat, and an explicit unload is Ollama's 403 string."""
    hub = make_hub({"keys": {"alice": "sk-alice", "ops": "sk-ops"},
                    "key:ops": {"manage_models": "true"}})
    hub.hub.engine.prober.probe_all()
    alice, ops = ({"Authorization": f"Bearer sk-{k}"} for k in ("alice", "ops"))
    status, _, body = call(hub.url, "POST", "/api/generate",
                           {"model": MODEL, "keep_alive": 0, "stream": False}, headers=alice)
    assert status == 403 and isinstance(body["error"], str)
    assert call(hub.url, "POST", "/api/chat", {"model": MODEL, "messages": HI, "stream": False,
                                               "keep_alive": "5m"}, headers=alice)[0] == 200
    assert ("default", MODEL) not in hub.hub.engine.lifecycle._keep   # set before the reply
    assert fake.loaded[MODEL] == [MODEL]
    status, _, body = call(hub.url, "POST", "/api/generate",
                           {"model": MODEL, "keep_alive": 0, "stream": False}, headers=ops)
    assert status == 200 and body["done_reason"] == "unload" and fake.loaded[MODEL] == []


def test_langchain_chat_ollama(probed, fake):
    chat_ollama = pytest.importorskip("langchain_ollama")
    llm = chat_ollama.ChatOllama(model=MODEL, base_url=probed.url, temperature=0.2)
    assert llm.invoke("hi").content == "Hello from the fake!"
    assert "".join(c.content for c in llm.stream("hi")) == "Hello from the fake!"
    fake.enqueue(Script(chunks=[], tool_calls=[
        {"id": "c1", "name": "get_weather", "arguments": '{"city": "Rome"}'}]))
    answer = llm.bind_tools([WEATHER]).invoke("Weather in Rome?")
    assert answer.tool_calls[0]["name"] == "get_weather"
    assert answer.tool_calls[0]["args"] == {"city": "Rome"}


def test_the_ollama_listener_serves_the_same_hub(tmp_path, fake):
    port = closed_port()
    config = tmp_path / "config.ini"
    config.write_text(f"[server]\nport = 0\ndb_path = {tmp_path / 'hub.db'}\n"
                      f"[upstream]\nbase_url = {fake.url}\nkind = lmstudio\n"
                      f"[ollama]\nport = {port}\n", encoding="utf-8")
    process = subprocess.Popen([sys.executable, "-m", "llmhub", "--config", str(config),
                                "--log-level", "warning"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                               env={"PYTHONPATH": str(ROOT)})
    try:
        first = process.stdout.readline()
        second = process.stdout.readline()
        assert f":{port}" in second, (first, second)
        url = f"http://127.0.0.1:{port}"
        assert call(url, "GET", "/")[2] == b"Ollama is running"
        status, _, body = call(url, "POST", "/api/chat", {"model": MODEL, "messages": HI,
                                                           "stream": False})
        assert status == 200 and body["message"]["content"] == "Hello from the fake!"
    finally:
        process.terminate()
        process.wait(10)

