"""[models] stand_in: an alias whose model the upstream does not have uses the model it has
loaded, says so once in the log, and the reply names the model used (issue 29)."""

import threading

from conftest import ROOT
from http_client import call
from llmhub import logs
from llmhub.config import load_config
from llmhub.http.server import make_server
from llmhub.hub import Hub
from support import LogCatcher

HI = [{"role": "user", "content": "hi"}]
MISSING = "qwen2.5-14b-instruct"
LOADED = "qwen2.5-7b-instruct"
LINE = f"alias fast: {MISSING} not on upstream default; using {LOADED}"


def chat(hub, model):
    status, _, body = call(hub.url, "POST", "/v1/chat/completions",
                           {"model": model, "messages": HI})
    assert status == 200, body
    return body["model"]


def sent_models(fake):
    return [r.body["model"] for r in fake.chat_requests()]


def probed(make_hub, fake, aliases, stand_in="fast"):
    """A hub whose box has been probed once (the fixture's probes are off)."""
    # the loaded chat model is neither the first listed nor the only one loaded
    fake.models = ["qwen3-vl-4b-instruct", "text-embedding-nomic-embed-text-v1.5", LOADED]
    fake.loaded = {"text-embedding-nomic-embed-text-v1.5": ["text-embedding-nomic-embed-text-v1.5"],
                   LOADED: [LOADED]}
    hub = make_hub({"aliases": aliases, "models": {"stand_in": stand_in}})
    hub.hub.engine.prober.probe_all()
    return hub


def logged(action) -> str:
    out = LogCatcher()
    logs.setup("warning", "text", stream=out)
    try:
        action()
    finally:
        logs.setup("warning", "json")
    return out.text


def test_a_missing_model_is_stood_in_for_by_the_loaded_one_and_said_once(make_hub, fake):
    hub = probed(make_hub, fake, {"fast": MISSING, "gpt-4": "fast", "other": "fast"})
    replies = []
    text = logged(lambda: replies.extend(chat(hub, name) for name in ("fast", "gpt-4", "fast")))
    assert replies == [LOADED] * 3                 # the reply names the model used
    assert sent_models(fake) == [LOADED] * 3
    assert text.count(LINE) == 1, text             # one line, not one per request
    assert text.count("\n") == 1, text


def test_a_model_the_upstream_has_is_used_even_unloaded(make_hub, fake):
    hub = probed(make_hub, fake, {"fast": "qwen3-vl-4b-instruct"})
    text = logged(lambda: chat(hub, "fast"))
    assert sent_models(fake) == ["qwen3-vl-4b-instruct"]      # loaded on demand, not swapped
    assert [r.body["model"] for r in fake.load_requests()] == ["qwen3-vl-4b-instruct"]
    assert "not on upstream" not in text


def test_only_the_aliases_named_stand_in(make_hub, fake):
    hub = probed(make_hub, fake, {"fast": MISSING, "slow": MISSING}, stand_in="f*")
    assert chat(hub, "slow") == MISSING           # not named: the upstream says what it says
    assert chat(hub, MISSING) == MISSING          # a model asked for by name is never swapped
    assert chat(hub, "fast") == LOADED            # a pattern names it


def test_nothing_stands_in_before_a_probe_or_when_nothing_is_loaded(make_hub, fake):
    hub = make_hub({"aliases": {"fast": MISSING}, "models": {"stand_in": "fast"}})
    assert chat(hub, "fast") == MISSING           # nothing known yet: no guess
    fake.loaded = {}
    hub.hub.engine.prober.probe_all()
    assert chat(hub, "fast") == MISSING           # a stand-in never loads a model unasked


def test_an_older_lm_studio_says_what_is_loaded_in_api_v0(make_hub, fake):
    fake.native = "v0"
    hub = probed(make_hub, fake, {"fast": MISSING})
    assert chat(hub, "fast") == LOADED
    assert fake.load_requests() == []             # v0 cannot load: LM Studio does it


def test_listings_still_show_the_aliases_as_configured(make_hub, fake):
    hub = probed(make_hub, fake, {"fast": MISSING})
    models = {m["id"]: m for m in call(hub.url, "GET", "/v1/models")[2]["data"]}
    assert models["fast"]["alias_of"] == MISSING
    config = call(hub.url, "GET", "/config")[2]
    assert config["aliases"] == {"fast": MISSING} and config["models"]["stand_in"] == ["fast"]
    tags = [m["name"] for m in call(hub.url, "GET", "/api/tags")[2]["models"]]
    assert "fast:latest" in tags                  # Ollama's clients see it: it resolves


def test_the_shipped_config_makes_the_readmes_model_names_work(tmp_path, fake):
    """config.ini as shipped, against an LM Studio that has none of its models."""
    config = load_config(flags={"upstream": fake.url, "kind": "lmstudio", "port": "0",
                                "db": str(tmp_path / "hub.db"), "log_level": "warning"},
                         env={}, path=ROOT / "config.ini")
    server = make_server(Hub(config), raise_errors=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    try:
        server.hub.engine.prober.probe_all()
        assert [chat(server, name) for name in ("fast", "deep", "gpt-4", "gpt-3.5-turbo")] \
            == [LOADED] * 4
    finally:
        server.stop(grace=2)
        server.hub.close()
        thread.join(5)



def test_a_stand_in_keeps_its_pool_members_weight_tier_and_slots(make_hub, fake):
    """Only the model changes: a one-member pool's max_concurrent still holds."""
    fake.models = [LOADED]
    fake.loaded = {LOADED: [LOADED]}
    hub = make_hub({"aliases": {"fast": "solo"}, "models": {"stand_in": "fast"},
                    "pool:solo": {"targets": f"default:{MISSING} weight=2 tier=2 "
                                             "max_concurrent=1"}})
    hub.hub.engine.prober.probe_all()
    [stood_in] = hub.hub.engine.resolver.chain_pool(["fast", "solo"])
    assert (stood_in.model, stood_in.weight, stood_in.tier, stood_in.max_concurrent) == \
        (LOADED, 2.0, 2, 1)
