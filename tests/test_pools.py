"""Several model servers behind one hub: pools, least-busy routing by capacity, breakers,
failover before the first byte, thread affinity, warm-first, loads on demand, idle unload
and Retry-After. Three fake LM Studios on loopback; every wait is on an event or a state."""

import json
import threading

import pytest

from fake_lmstudio import FakeLMStudio, Script
from http_client import call, open_stream, sse_events
from support import wait_for

ASK = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def boxes():
    fakes = [FakeLMStudio().start() for _ in range(3)]
    for fake in fakes:
        fake.models, fake.loaded = ["m"], {"m": ["m"]}
    yield fakes
    for fake in fakes:
        try:
            fake.stop()
        except OSError:
            pass


def pool_hub(make_hub, boxes, targets="default:m, b:m, c:m", **sections):
    config = {"upstream:b": {"base_url": boxes[1].url},
              "upstream:c": {"base_url": boxes[2].url},
              "pool:qwen": {"targets": targets}}
    for section, values in sections.items():
        config.setdefault(section.replace("__", ":"), {}).update(values)
    return make_hub(config, upstream_url=boxes[0].url)


def served(boxes) -> list[int]:
    return [len(fake.chat_requests()) for fake in boxes]


def line_length(hub) -> int:
    return sum(len(line.runs) for line in hub.hub.engine.router._lines.values())


def upstream_state(hub, name: str) -> dict:
    states = call(hub.url, "GET", "/v1/upstreams")[2]["data"]
    return next(s for s in states if s["name"] == name)


def streams(hub, count: int, model: str = "qwen") -> list:
    """`count` streams, each open once its upstream has accepted it."""
    return [open_stream(hub.url, "/v1/chat/completions",
                        {"model": model, "messages": ASK, "stream": True})
            for _ in range(count)]


def drain(held: list) -> None:
    for conn, response in held:
        response.read()
        conn.close()


def ask(hub, model="qwen", headers=None, **fields):
    return call(hub.url, "POST", "/v1/chat/completions",
                {"model": model, "messages": ASK, **fields}, headers=headers)


# --- spreading by capacity -------------------------------------------------------------------

def test_64_concurrent_requests_are_spread_by_capacity(make_hub, boxes):
    """Capacity from each of its three sources: LM Studio's `parallel` (2), a pool member's
    max_concurrent (1), an upstream's max_concurrent (1). No box ever gets more at once."""
    boxes[0].parallel = {"m": 2}
    for fake in boxes:
        fake.default = Script(delay=0.004)
    hub = pool_hub(make_hub, boxes, targets="default:m, b:m max_concurrent=1, c:m",
                   health={"interval_seconds": 3600}, upstream__c={"max_concurrent": 1})
    assert hub.hub.engine.prober.wait_rounds(1)
    assert upstream_state(hub, "default")["slots"] == {"m": 2}
    results = []
    clients = [threading.Thread(target=lambda: results.append(ask(hub)[0])) for _ in range(64)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(30)
    assert results == [200] * 64
    a, b, c = served(boxes)
    assert a + b + c == 64
    assert [fake.most_in_flight for fake in boxes] == [2, 1, 1]
    assert a >= 1.5 * b and a >= 1.5 * c and min(b, c) >= 8, (a, b, c)


def test_a_pool_is_listed_once_with_its_targets(make_hub, boxes):
    hub = pool_hub(make_hub, boxes)
    data = call(hub.url, "GET", "/v1/models")[2]["data"]
    ids = [m["id"] for m in data]
    assert ids.count("m") == 1 and ids.count("qwen") == 1       # three boxes list m
    assert next(m for m in data if m["id"] == "qwen")["pool"] == ["default:m", "b:m", "c:m"]


def test_tiers_use_the_laptop_only_when_the_gpu_boxes_are_full(make_hub, boxes):
    release = threading.Event()
    boxes[0].default = boxes[1].default = Script(hold_first=release)
    hub = pool_hub(make_hub, boxes, targets="default:m max_concurrent=1, "
                   "b:m max_concurrent=1, c:m tier=2")
    held = streams(hub, 2)
    assert boxes[0].wait_requests(1) and boxes[1].wait_requests(1)
    assert ask(hub)[0] == 200
    assert served(boxes) == [1, 1, 1]
    release.set()
    drain(held)


# --- thread affinity -------------------------------------------------------------------------

def busy_first_box(hub, boxes):
    """Hold one stream on the first box, so that the next new conversation goes to b."""
    release = threading.Event()
    boxes[0].enqueue(Script(hold_first=release))
    held = streams(hub, 1)
    assert boxes[0].wait_requests(1)
    return release, held


def finish(release, held):
    release.set()
    drain(held)


AFFINITY = {"targets": "default:m max_concurrent=1, b:m max_concurrent=1, "
                       "c:m max_concurrent=1"}


def thread_begun_on_b(make_hub, boxes):
    """A hub whose pool's first box was full when a Langbase thread began: it began on b.
    The first box is free again, and idle."""
    hub = pool_hub(make_hub, boxes, **AFFINITY)
    release, held = busy_first_box(hub, boxes)
    _, headers, _ = call(hub.url, "POST", "/v1/pipes/run",
                         {"model": "qwen", "messages": ASK, "stream": False})
    finish(release, held)
    return hub, headers["lb-thread-id"]


def test_a_langbase_threads_turns_stay_on_the_box_of_its_first(make_hub, boxes):
    hub, thread_id = thread_begun_on_b(make_hub, boxes)
    for turn in range(3):
        status, _, _ = call(hub.url, "POST", "/v1/pipes/run",
                            {"model": "qwen", "threadId": thread_id, "stream": False,
                             "messages": [{"role": "user", "content": f"turn {turn}"}]})
        assert status == 200
    assert served(boxes) == [1, 4, 0]
    assert upstream_state(hub, "b")["targets"][0]["affinity_hits"] == 3
    assert ask(hub)[0] == 200 and served(boxes) == [2, 4, 0]   # a new chat: least busy


def test_a_responses_chain_and_a_claude_session_stay_on_one_box(make_hub, boxes):
    hub = pool_hub(make_hub, boxes, **AFFINITY)
    release, held = busy_first_box(hub, boxes)
    first = call(hub.url, "POST", "/v1/responses", {"model": "qwen", "input": "One"})[2]
    session = {"X-Claude-Code-Session-Id": "3f1e-session", "anthropic-version": "2023-06-01"}
    message = {"model": "qwen", "max_tokens": 20, "messages": ASK}
    assert call(hub.url, "POST", "/v1/messages", message, headers=session)[0] == 200
    finish(release, held)
    assert served(boxes) == [1, 2, 0]      # both began on b: the first box was full
    previous = first["id"]
    for _ in range(2):
        reply = call(hub.url, "POST", "/v1/responses", {"model": "qwen", "input": "More",
                                                         "previous_response_id": previous})
        assert reply[0] == 200
        previous = reply[2]["id"]
        assert call(hub.url, "POST", "/v1/messages", message, headers=session)[0] == 200
    assert served(boxes) == [1, 6, 0]


def test_a_client_that_stores_nothing_stays_on_one_box_by_its_prompt_cache_key(make_hub,
                                                                             boxes):
    hub = pool_hub(make_hub, boxes, **AFFINITY)
    release, held = busy_first_box(hub, boxes)
    codex = {"model": "qwen", "input": "One", "store": False, "prompt_cache_key": "sess-9"}
    assert call(hub.url, "POST", "/v1/responses", codex)[0] == 200
    finish(release, held)
    for _ in range(2):        # each turn resends it all, as a new response
        assert call(hub.url, "POST", "/v1/responses", dict(codex, input="More"))[0] == 200
    assert served(boxes) == [1, 3, 0]


def test_a_thread_leaves_its_box_when_that_box_is_full(make_hub, boxes):
    hub, thread_id = thread_begun_on_b(make_hub, boxes)
    release = threading.Event()
    boxes[1].enqueue(Script(hold_first=release))
    held = streams(hub, 1, model="b:m")                  # b is full now
    assert boxes[1].wait_requests(2)
    assert call(hub.url, "POST", "/v1/pipes/run", {
        "model": "qwen", "threadId": thread_id, "stream": False, "messages": ASK})[0] == 200
    assert served(boxes) == [2, 2, 0]
    finish(release, held)


# --- failures --------------------------------------------------------------------------------

def test_a_killed_box_loses_no_request_that_had_not_started(make_hub, boxes):
    """Three boxes of one slot each, twelve streams: three run (held after their first
    chunk), nine wait in the pool's line. The third box dies: its stream gets an error
    frame; every waiting request is served by the other two."""
    release = threading.Event()
    for fake in boxes:
        fake.default = Script(hold_first=release, hold_after=1)
    hub = pool_hub(make_hub, boxes, health={"failures": 2}, **AFFINITY)
    outcomes, lock = [], threading.Lock()

    def client():
        conn, response = open_stream(hub.url, "/v1/chat/completions",
                                     {"model": "qwen", "messages": ASK, "stream": True},
                                     timeout=30)
        events = sse_events(response)
        conn.close()
        with lock:
            outcomes.append("error" if any("error" in json.loads(data) for _, data in events
                                           if data != "[DONE]") else "ok")

    clients = [threading.Thread(target=client) for _ in range(12)]
    for each in clients:
        each.start()
    assert all(fake.wait_requests(1) for fake in boxes)
    assert wait_for(lambda: line_length(hub) == 9)
    boxes[2].kill()
    assert wait_for(lambda: outcomes == ["error"])       # the one in flight on c
    release.set()
    for each in clients:
        each.join(30)
    assert sorted(outcomes) == ["error"] + ["ok"] * 11
    assert len(boxes[2].chat_requests()) == 1
    state = upstream_state(hub, "c")
    assert state["state"] == "down" and state["cooldowns"] == 1


def test_a_box_that_comes_back_is_used_after_its_cooldown_and_a_trial(make_hub, boxes):
    boxes[1].kill()
    hub = pool_hub(make_hub, boxes, targets="b:m, default:m, c:m",
                   health={"failures": 2, "cooldown_seconds": 0.5})
    for _ in range(2):                    # b refuses: each request goes on to the next box
        assert ask(hub)[0] == 200
    assert served(boxes) == [2, 0, 0]
    state = upstream_state(hub, "b")
    assert state["state"] == "down" and state["cooldown_seconds_left"] > 0
    boxes[1].revive()
    assert ask(hub)[0] == 200             # in its cooldown, b is skipped though it is back
    assert served(boxes) == [3, 0, 0]
    assert wait_for(lambda: upstream_state(hub, "b")["cooldown_seconds_left"] == 0)
    assert ask(hub)[0] == 200             # the trial
    assert served(boxes) == [3, 1, 0] and upstream_state(hub, "b")["state"] == "healthy"
    assert ask(hub)[0] == 200 and served(boxes) == [3, 2, 0]   # first in order, healthy


def test_a_5xx_before_any_byte_goes_to_the_next_box_within_the_retry_budget(make_hub, boxes):
    for fake in boxes:
        fake.enqueue(Script(status=500, error={"message": "CUDA out of memory"}))
    hub = pool_hub(make_hub, boxes, routing={"retries": 1})
    status, _, body = ask(hub)
    assert status == 502 and "CUDA out of memory" in body["error"]["message"]
    assert served(boxes) == [1, 1, 0]     # one retry, then the error
    assert ask(hub)[0] == 200


def test_retry_after_is_honoured(make_hub, boxes):
    boxes[0].enqueue(Script(status=429, error={"message": "slow down"},
                            headers={"Retry-After": "30"}))
    hub = pool_hub(make_hub, boxes)
    assert ask(hub)[0] == 200 and served(boxes) == [1, 1, 0]   # on to b at once
    assert ask(hub)[0] == 200 and served(boxes) == [1, 2, 0]   # the first box is left alone
    assert upstream_state(hub, "default")["retry_after_seconds_left"] > 25


def test_retry_after_of_a_lone_upstream_reaches_the_client_and_is_kept(make_hub, fake):
    fake.enqueue(Script(status=503, error={"message": "busy"}, headers={"Retry-After": "20"}))
    hub = make_hub()
    status, headers, body = ask(hub, model="m")
    assert status == 503 and headers["Retry-After"] == "20"
    status, headers, body = ask(hub, model="m", stream=True)
    assert status == 503 and 1 <= int(headers["Retry-After"]) <= 20
    assert body["error"]["code"] == "upstream_busy" and len(fake.chat_requests()) == 1


# --- health probes ---------------------------------------------------------------------------

def test_probes_read_llama_cpp_health_and_slots_and_auth_failures(make_hub, boxes):
    boxes[1].llama, boxes[1].slots, boxes[1].health_status = True, 3, 503
    hub = pool_hub(make_hub, boxes, health={"interval_seconds": 3600},
                   upstream__b={"kind": "llamacpp"})
    assert hub.hub.engine.prober.wait_rounds(1)
    assert upstream_state(hub, "b")["state"] == "loading"
    assert ask(hub, model="b:m")[0] == 200          # a lone target is asked anyway
    boxes[1].health_status = 200
    hub.hub.engine.prober.probe_all()
    state = upstream_state(hub, "b")
    assert state["state"] == "healthy" and state["slots"] == {"m": 3}
    assert call(hub.url, "GET", "/health")[2]["upstreams"][1]["state"] == "healthy"


def test_a_box_that_refuses_the_key_is_skipped(make_hub, boxes):
    boxes[0].enqueue(Script(status=401, error={"message": "bad key"}))
    hub = pool_hub(make_hub, boxes)
    assert ask(hub)[0] == 200 and served(boxes) == [1, 1, 0]
    assert upstream_state(hub, "default")["state"] == "auth"
    assert ask(hub)[0] == 200 and served(boxes) == [1, 2, 0]


def test_discovered_pools_spread_a_bare_name_over_the_boxes_that_list_it(make_hub, boxes):
    boxes[2].models = ["other"]
    hub = pool_hub(make_hub, boxes, routing={"discover": "true"},
                   health={"interval_seconds": 3600}, upstream={"max_concurrent": 1})
    assert hub.hub.engine.prober.wait_rounds(1)
    release = threading.Event()
    boxes[0].enqueue(Script(hold_first=release))
    held = streams(hub, 1, model="m")
    assert boxes[0].wait_requests(1)
    assert ask(hub, model="m")[0] == 200
    assert served(boxes) == [1, 1, 0]
    finish(release, held)


# --- observability ---------------------------------------------------------------------------

def test_upstreams_metrics_and_the_log_name_the_target(make_hub, boxes):
    hub = pool_hub(make_hub, boxes, targets="b:m, c:m")
    status, _, body = ask(hub)
    assert status == 200
    state = upstream_state(hub, "b")
    assert state["kind"] == "lmstudio" and state["state"] == "healthy"
    assert state["targets"] == [{"model": "m", "in_flight": 0, "capacity": None,
                                 "requests": 1, "errors": 0, "affinity_hits": 0,
                                 "ttft_ms_avg": state["targets"][0]["ttft_ms_avg"]}]
    metrics = call(hub.url, "GET", "/metrics")[2].decode()
    assert 'llmhub_target_requests_total{upstream="b",model="m"} 1' in metrics
    assert 'llmhub_upstream_state{upstream="b",state="healthy"} 1' in metrics
    record = call(hub.url, "GET", "/v1/requests")[2]["data"][0]
    assert record["target"] == "b" and record["requested_model"] == "qwen"


# --- model lifecycle -------------------------------------------------------------------------

def test_a_warm_box_is_preferred_to_one_that_would_load(make_hub, boxes):
    boxes[0].loaded = {}
    hub = pool_hub(make_hub, boxes, health={"interval_seconds": 3600})
    assert hub.hub.engine.prober.wait_rounds(1)
    assert ask(hub)[0] == 200 and ask(hub)[0] == 200
    assert served(boxes) == [0, 2, 0]
    assert not [r for r in boxes[0].requests if r.path.endswith("/load")]


def test_a_cold_model_is_loaded_once_for_ten_concurrent_requests(make_hub, fake):
    fake.models, fake.loaded = ["m", "cold"], {"m": ["m"]}
    fake.load_hold = threading.Event()
    hub = make_hub({"health": {"interval_seconds": 3600},
                    "upstream": {"load_context_length": 8192}})
    assert hub.hub.engine.prober.wait_rounds(1)
    results = []
    clients = [threading.Thread(target=lambda: results.append(ask(hub, model="cold")[0]))
               for _ in range(10)]
    for client in clients:
        client.start()
    flights = hub.hub.engine.lifecycle.manager(None)._flights
    assert wait_for(lambda: flights and next(iter(flights.values())).waiters == 9)
    assert not fake.chat_requests()                 # nobody went before the model was in
    fake.load_hold.set()
    for client in clients:
        client.join(10)
    assert results == [200] * 10 and len(fake.chat_requests()) == 10
    assert [r.body for r in fake.load_requests()] == [{"model": "cold", "context_length": 8192,
                                              "echo_load_config": True}]


def test_a_model_the_hub_loaded_is_unloaded_when_idle(make_hub, fake):
    fake.models, fake.loaded = ["m", "cold"], {"m": ["m"]}
    hub = make_hub({"health": {"interval_seconds": 0.05},
                    "upstream": {"idle_unload_seconds": 0.2}})
    assert hub.hub.engine.prober.wait_rounds(1)
    assert ask(hub, model="cold")[0] == 200 and len(fake.load_requests()) == 1
    with fake.received:
        assert fake.received.wait_for(lambda: any(
            r.path == "/api/v1/models/unload" for r in fake.requests), 10)
    unloads = [r.body for r in fake.requests if r.path == "/api/v1/models/unload"]
    assert unloads == [{"instance_id": "cold"}]      # m was loaded by someone else: kept
    assert fake.loaded["m"] == ["m"] and fake.loaded["cold"] == []


def test_a_load_is_checked_for_the_context_length_asked_for(hub, fake):
    fake.fit_context = 4096
    status, _, body = call(hub.url, "POST", "/models/load",
                           {"model_key": "qwen3-vl-4b-instruct", "context_length": 32768})
    assert status == 502 and "4096" in body["error"] and "32768" in body["error"]


def test_model_management_takes_an_upstream_name(make_hub, boxes):
    boxes[1].models = ["m", "big"]
    hub = pool_hub(make_hub, boxes)
    body = call(hub.url, "GET", "/models?upstream=b")[2]
    assert body["upstream"] == "b" and [m["key"] for m in body["models"]] == ["m", "big"]
    status, _, body = call(hub.url, "POST", "/models/load",
                           {"model_key": "big", "upstream": "b", "exclusive": True})
    assert status == 200 and body["unloaded"] == ["m"]
    assert boxes[1].loaded == {"m": [], "big": ["big"]}
    assert boxes[0].loaded == {"m": ["m"]} and boxes[2].loaded == {"m": ["m"]}
    status, _, body = call(hub.url, "GET", "/models?upstream=nope")
    assert status == 404 and "nope" in json.dumps(body)


def test_a_request_waiting_for_its_model_to_load_gets_pings(make_hub, fake):
    fake.models, fake.loaded = ["m", "cold"], {"m": ["m"]}
    fake.load_hold = threading.Event()
    hub = make_hub({"health": {"interval_seconds": 3600}})
    assert hub.hub.engine.prober.wait_rounds(1)
    conn, response = open_stream(hub.url, "/v1/chat/completions",
                                 {"model": "cold", "messages": ASK, "stream": True})
    assert response.status == 200 and response.readline() == b": ping\n"
    assert upstream_state(hub, "default")["targets"][0]["in_flight"] == 1
    fake.load_hold.set()
    assert b"Hello" in response.read() and len(fake.load_requests()) == 1
    conn.close()


# --- the line and the weights ----------------------------------------------------------------

def test_a_full_pool_serves_its_line_first_in_first_out(make_hub, boxes):
    release_a, release_b = threading.Event(), threading.Event()
    boxes[0].default, boxes[1].default = Script(hold_first=release_a), \
        Script(hold_first=release_b)
    hub = pool_hub(make_hub, boxes, targets="default:m max_concurrent=1, "
                   "b:m max_concurrent=1")
    held = streams(hub, 2)
    assert boxes[0].wait_requests(1) and boxes[1].wait_requests(1)
    waiting = []
    for i in range(4):
        waiting.append(threading.Thread(target=ask, args=(hub,), kwargs={
            "model": "qwen", "messages": [{"role": "user", "content": f"r{i}"}]}))
        waiting[-1].start()
        assert wait_for(lambda: line_length(hub) == i + 1)
    positions = [run.queue_position for run in hub.hub.engine.live_runs()
                 if run.queue_position]
    assert sorted(positions) == [1, 2, 3, 4]
    release_a.set()                       # one box frees: the line drains through it
    for thread in waiting:
        thread.join(10)
    asked = [r.body["messages"][-1]["content"] for r in boxes[0].chat_requests()]
    assert asked == ["Hi", "r0", "r1", "r2", "r3"]
    release_b.set()
    drain(held)


def test_weights_share_out_targets_of_unknown_capacity(make_hub, boxes):
    release = threading.Event()
    for fake in boxes:
        fake.default = Script(hold_first=release)
    hub = pool_hub(make_hub, boxes, targets="default:m weight=2, b:m")
    held = streams(hub, 6)
    assert wait_for(lambda: sum(served(boxes)) == 6)
    assert served(boxes) == [4, 2, 0]
    release.set()
    drain(held)


def test_affinity_forgets_after_its_ttl_and_past_its_size():
    from llmhub.engine.routing import Affinity, Target
    affinity = Affinity(seconds=10, most=2)
    a, b = Target(object(), "a"), Target(object(), "b")
    affinity.put("t1", a, now=0)
    affinity.put("t2", b, now=1)
    assert affinity.get("t1", now=5) is a and affinity.get("t1", now=11) is None
    affinity.put("t3", a, now=2)
    affinity.put("t4", a, now=3)          # t2 is the oldest of three: forgotten
    assert affinity.get("t2", now=4) is None and len(affinity) == 2


def test_made_up_model_names_do_not_grow_the_routers_counters(make_hub, fake):
    hub = make_hub()
    router = hub.hub.engine.router
    router.max_slots = 8
    for i in range(30):
        assert ask(hub, model=f"made-up-{i}")[0] == 200
    assert len(router.slots) <= 8


def test_upstreams_are_behind_the_keys_and_health_shows_their_state(make_hub, boxes):
    hub = pool_hub(make_hub, boxes, server={"api_keys": "sk-local-1, sk-user-2"},
                   **{"key:key1": {"role": "admin"}})
    assert call(hub.url, "GET", "/v1/upstreams")[0] == 401
    user = {"Authorization": "Bearer sk-user-2"}
    assert call(hub.url, "GET", "/v1/upstreams", headers=user)[0] == 403   # admins' only
    key = {"Authorization": "Bearer sk-local-1"}
    assert ask(hub, headers=key)[0] == 200
    listed = call(hub.url, "GET", "/v1/upstreams", headers=key)[2]["data"]
    assert [s["name"] for s in listed] == ["default", "b", "c"]
    health = call(hub.url, "GET", "/health", headers=key)[2]["upstreams"]
    assert [(u["name"], u["state"], u["in_flight"]) for u in health] == [
        ("default", "healthy", 0), ("b", "healthy", 0), ("c", "healthy", 0)]
    assert health[0]["targets"][0]["requests"] == 1


def test_a_trial_the_box_answers_even_with_a_4xx_closes_its_breaker(make_hub, boxes):
    boxes[1].kill()
    hub = pool_hub(make_hub, boxes, targets="b:m, default:m",
                   health={"failures": 2, "cooldown_seconds": 0})
    for _ in range(2):
        assert ask(hub)[0] == 200
    assert upstream_state(hub, "b")["state"] == "down"
    boxes[1].revive()
    boxes[1].enqueue(Script(status=400, error={"message": "bad sampling value"}))
    status, _, body = ask(hub)                         # the trial: the box is up
    assert status == 400 and "bad sampling value" in body["error"]["message"]
    assert upstream_state(hub, "b")["state"] == "healthy"
