"""Secrets never leak (DESIGN §10): not through /health, an error body, a log line, the
startup line or a captured body, in any spelling JSON allows; and a public /health says only
whether the hub is up."""

import json
import logging
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import ROOT, write_ini
from fake_lmstudio import Script
from http_client import call, open_stream, sse_events
from llmhub.redaction import MASK, redact

UPSTREAM_KEY = "sk-upstream-secret/1"
HUB_KEY = "sk-hub-key-0042"
AUTH = {"Authorization": f"Bearer {HUB_KEY}"}
USER = [{"role": "user", "content": "hi"}]
FULL_HEALTH = {"status", "time", "version", "uptime_seconds", "upstreams", "database",
               "active_runs"}


def spellings(secret: str) -> list[str]:
    """The ways a JSON text may carry `secret`: as is, `/` as `\\/`, every character as
    `\\uXXXX`, and only the first one so."""
    return [secret, secret.replace("/", "\\/"), "".join(f"\\u{ord(c):04x}" for c in secret),
            f"\\u{ord(secret[0]):04x}" + secret[1:]]


def assert_hidden(shown, secret: str = UPSTREAM_KEY) -> None:
    """Neither `secret` nor any spelling of it, nor its part before the slash, is in `shown`:
    a text, or parsed JSON (read string by string, so no escaping of ours hides one)."""
    text = shown if isinstance(shown, str) else "\n".join(strings(shown))
    for spelling in spellings(secret) + [secret.split("/")[0]]:
        assert spelling not in text, spelling


def strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield key
            yield from strings(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from strings(value)


# --- an upstream that echoes the key it refused ---------------------------------------------

def plain(key: str) -> bytes:
    return json.dumps({"error": {"message": f"Invalid API key: {key}"}}).encode()


def slashes(key: str) -> bytes:      # text, not JSON: kept as it came
    return ("401 Unauthorized: bad key " + key.replace("/", "\\/")).encode()


def unicode(key: str) -> bytes:
    return ("bad key " + "".join(f"\\u{ord(c):04x}" for c in key)).encode()


class EchoingUpstream:
    """A model server that refuses every request with a 401 whose body echoes the bearer key
    it was sent, the way `spell` writes it."""

    def __init__(self, spell=plain) -> None:
        self.spell = spell
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()

    def _handler(self):
        echo = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                body = echo.spell(key)
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

        return Handler

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def echoing():
    started = []

    def start(spell=plain) -> EchoingUpstream:
        started.append(EchoingUpstream(spell))
        return started[-1]

    yield start
    for upstream in started:
        upstream.stop()


@pytest.fixture
def logged(caplog):
    """Every llmhub log line's message, fields and traceback, whatever an earlier
    logs.setup() did to propagation."""
    logger, formatter = logging.getLogger("llmhub"), logging.Formatter()
    level = logger.level
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.DEBUG)
    yield lambda: "\n".join(
        f"{formatter.format(r)} {getattr(r, 'fields', '')}" for r in caplog.records)
    logger.removeHandler(caplog.handler)
    logger.setLevel(level)


# --- /health ----------------------------------------------------------------------------------

@pytest.mark.parametrize("keys", [{"server": {"api_keys": HUB_KEY}},
                                  {"keys": {"ci": HUB_KEY}}])
def test_health_without_a_key_says_only_whether_the_hub_is_up(make_hub, keys):
    hub = make_hub(keys)
    for headers in ({}, {"Authorization": "Bearer sk-wrong"}):
        status, _, body = call(hub.url, "GET", "/health", headers=headers)
        assert status == 200 and body == {"status": "ok"}
    status, _, body = call(hub.url, "GET", "/health", headers=AUTH)
    assert status == 200 and set(body) == FULL_HEALTH and body["upstreams"][0]["reachable"]


def test_health_without_a_key_says_degraded_and_nothing_of_why(make_hub, echoing):
    upstream = echoing()
    hub = make_hub({"server": {"api_keys": HUB_KEY}, "upstream": {"api_key": UPSTREAM_KEY}},
                   upstream_url=upstream.url)
    assert call(hub.url, "GET", "/health")[2] == {"status": "degraded"}


def test_health_without_keys_configured_is_the_full_report(hub, fake):
    status, _, body = call(hub.url, "GET", "/health")
    assert status == 200 and set(body) == FULL_HEALTH
    assert body["upstreams"][0]["base_url"] == fake.url


@pytest.mark.parametrize("spell", [plain, slashes, unicode])
@pytest.mark.parametrize("keys", [{}, {"server": {"api_keys": HUB_KEY}}])
def test_health_never_shows_the_key_an_upstream_echoed(make_hub, echoing, logged, spell,
                                                       keys):
    upstream = echoing(spell)
    hub = make_hub({**keys, "upstream": {"api_key": UPSTREAM_KEY}},
                   upstream_url=upstream.url)
    body = call(hub.url, "GET", "/health", headers=AUTH)[2]
    assert body["status"] == "degraded" and not body["upstreams"][0]["reachable"]
    assert body["upstreams"][0]["error"]            # it still says why
    assert_hidden([body, call(hub.url, "GET", "/v1/upstreams", headers=AUTH)[2]])
    assert_hidden(logged())


# --- errors the upstream echoes a key in ------------------------------------------------------

@pytest.mark.parametrize("error", [
    f"Invalid API key: {UPSTREAM_KEY}",
    f"Incorrect API key provided: {UPSTREAM_KEY.replace('/', chr(92) + '/')}",
])
def test_a_chat_refused_with_the_key_echoed_never_shows_it(make_hub, fake, logged, error):
    hub = make_hub({"upstream": {"api_key": UPSTREAM_KEY}, "server": {"log_level": "debug"}})
    fake.enqueue(Script(status=401, error=error))
    status, headers, body = call(hub.url, "POST", "/v1/chat/completions",
                                 {"model": "m", "messages": USER})
    assert status == 401
    assert_hidden([body, call(hub.url, "GET", "/health")[2],
                   call(hub.url, "GET", "/v1/upstreams")[2],
                   call(hub.url, "GET", f"/v1/requests/{headers['X-Run-Id']}")[2]])
    assert_hidden(logged())


def test_a_retry_on_another_target_logs_the_refusal_without_the_key(make_hub, fake,
                                                                   echoing, logged):
    refusing = echoing()
    hub = make_hub({"upstream": {"api_key": UPSTREAM_KEY},
                    "upstream:b": {"base_url": fake.url},
                    "pool:qwen": {"targets": "default:m, b:m"}}, upstream_url=refusing.url)
    status, _, body = call(hub.url, "POST", "/v1/chat/completions",
                           {"model": "qwen", "messages": USER})
    assert status == 200 and len(fake.chat_requests()) == 1
    assert "Invalid API key: ***" in logged()     # the retry is logged, with its cause
    assert_hidden(logged())


def test_a_stream_error_frame_with_the_key_echoed_never_shows_it(make_hub, fake, logged):
    hub = make_hub({"upstream": {"api_key": UPSTREAM_KEY}})
    escaped = UPSTREAM_KEY.replace("/", "\\/")
    fake.enqueue(Script(chunks=["Hi"], error_event=f"key {escaped} expired mid-stream"))
    conn, response = open_stream(hub.url, "/v1/chat/completions",
                                 {"model": "m", "messages": USER, "stream": True})
    events = [json.loads(data) for _, data in sse_events(response) if data != "[DONE]"]
    conn.close()
    assert "key *** expired" in json.dumps(events)
    assert_hidden(events)
    assert_hidden(logged())


@pytest.mark.parametrize("message", [f"Invalid key {UPSTREAM_KEY}",
                                     f"Invalid key {UPSTREAM_KEY.replace('/', chr(92) + '/')}"])
def test_a_model_load_refused_with_the_key_echoed_never_shows_it(make_hub, fake, logged,
                                                                 message):
    hub = make_hub({"upstream": {"api_key": UPSTREAM_KEY}})
    fake.load_error = (401, {"error": {"message": message}})
    status, _, body = call(hub.url, "POST", "/models/load",
                           {"model_key": "qwen3-vl-4b-instruct"})
    assert status == 401 and body["loaded"] is False and "Invalid key ***" in body["error"]
    assert_hidden(body)
    assert_hidden(logged())


# --- captured bodies --------------------------------------------------------------------------

def test_captured_bodies_mask_secret_fields_and_spelled_keys(make_hub, fake):
    hub = make_hub({"log": {"capture_bodies": "true"}, "upstream": {"api_key": UPSTREAM_KEY}})
    raw = ('{"apiKey": "pipe-key-never-configured-1", "messages": [{"role": "user", '
           '"content": "keys: sk-upstream-secret\\/1 \\u0073k-upstream-secret/1 '
           '{\\"Authorization\\": \\"Bearer hidden-bearer-7\\"}"}], '
           '"metadata": {"client_secret": "cs-hidden-2", "x-api-key": "xak-hidden-3", '
           '"max_tokens": "64"}}')
    status, headers, _ = call(hub.url, "POST", "/v1/pipes/run", raw.encode())
    assert status == 200
    record = call(hub.url, "GET", f"/v1/requests/{headers['X-Run-Id']}")[2]
    kept = record["request_body"]
    assert '"apiKey": "***"' in kept and '"client_secret": "***"' in kept
    assert '"x-api-key": "***"' in kept and '"max_tokens": "64"' in kept
    for secret in ("pipe-key-never-configured-1", "cs-hidden-2", "xak-hidden-3",
                   "hidden-bearer-7"):
        assert secret not in json.dumps(record), secret
    assert_hidden(record)
    assert "keys: *** ***" in kept


def test_captured_bodies_keep_token_counts_and_logprob_tokens(make_hub, fake):
    hub = make_hub({"log": {"capture_bodies": "true"}})
    fake.enqueue(Script(chunks=["Hi", "!"]))
    status, headers, _ = call(hub.url, "POST", "/v1/chat/completions", {
        "model": "m", "messages": USER, "max_tokens": 50, "logprobs": True})
    assert status == 200
    record = call(hub.url, "GET", f"/v1/requests/{headers['X-Run-Id']}")[2]
    assert '"max_tokens": 50' in record["request_body"]
    reply = json.loads(record["response_body"])
    assert reply["usage"]["prompt_tokens"] >= 0 and MASK not in record["response_body"]
    assert [e["token"] for e in reply["choices"][0]["logprobs"]["content"]] == ["Hi", "!"]


# --- redact itself ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["apiKey", "api_key", "x-api-key", "Authorization",
                                  "password", "secret", "token", "access_token",
                                  "client_secret", "LB-LLM-Key", "llmKey", "refreshToken",
                                  "API_KEY", "proxy-authorization", "secretKey"])
def test_redact_masks_a_field_named_like_a_secret(name):
    text = f'{{"{name}": "v-1\\"x", "n": 1}}'
    assert redact(text, ()) == f'{{"{name}": "***", "n": 1}}'


@pytest.mark.parametrize("name", ["max_tokens", "input_tokens", "output_tokens", "total_tokens",
                                  "prompt_tokens", "completion_tokens", "reasoning_tokens",
                                  "cached_tokens", "model_key", "key", "prompt_cache_key",
                                  "tokenizer", "token_type", "author"])
def test_redact_keeps_fields_that_only_sound_like_one(name):
    text = f'{{"{name}": "kept-value"}}'
    assert redact(text, ()) == text


def test_redact_masks_a_field_in_json_quoted_in_json_and_after_any_letter():
    arguments = '{"arguments": "{\\"password\\": \\"hun\\\\\\"ter2\\", \\"n\\": 1}"}'
    assert redact(arguments, ()) == '{"arguments": "{\\"password\\": \\"***\\", \\"n\\": 1}"}'
    assert redact('{"x": "İİİİ", "apiKey": "abc"}', ()) == '{"x": "İİİİ", "apiKey": "***"}'


def test_redact_keeps_logprob_tokens_and_masks_a_value_cut_short():
    entry = '{"token": "Hello", "logprob": -0.5}'
    assert redact(entry, ()) == entry
    assert redact('{"messages": [], "apiKey": "pipe-ke', ()) == '{"messages": [], "apiKey": "***'


def test_redact_masks_every_json_spelling_of_a_known_secret():
    for spelling in spellings(UPSTREAM_KEY) + ["sk-upstream-secret%2F1"]:
        assert redact(f"key {spelling}.", (UPSTREAM_KEY,)) == "key ***.", spelling


def test_redact_masks_url_credentials_and_bearer_tokens():
    assert redact("GET http://user:pw-9@host/v1 failed", ()) == "GET http://***@host/v1 failed"
    assert redact("sent Authorization: Bearer abc123def456", ()) == \
        "sent Authorization: Bearer ***"
    assert redact("bearer instruments", ()) == "bearer instruments"


def test_redact_is_quick_on_a_large_body():
    import time
    body = json.dumps({"choices": [{"delta": {"content": "word " * 20}}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 5}}) * 400
    started = time.perf_counter()
    for _ in range(20):
        redact(body, ("sk-upstream-secret/1", "sk-hub-key-0042"))
    assert (time.perf_counter() - started) / 20 < 0.02      # a 100 KB body in under 20 ms


# --- the startup line -------------------------------------------------------------------------

def test_startup_line_never_shows_the_upstream_key(tmp_path, echoing):
    from support import ended, start
    upstream = echoing(slashes)
    ini = write_ini(tmp_path / "secret.ini", {"upstream": {"base_url": upstream.url,
                                                           "api_key": UPSTREAM_KEY}})
    process, line, _ = start([str(ROOT / "main.py"), "--config", str(ini)], tmp_path)
    try:
        process.send_signal(signal.SIGTERM)
        out, err = ended(process)
    finally:
        process.kill()
    assert "NOT reachable: 401 Unauthorized: bad key ***" in line, line
    assert_hidden(line + out + err)
