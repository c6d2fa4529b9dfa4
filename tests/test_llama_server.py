"""Two real llama.cpp `llama-server` processes behind one pool, where the machine has them.

Needs `llama-server` on PATH and a small GGUF model in LLMHUB_TEST_GGUF (any chat model:
a 0.5B one answers in well under a second on a CPU). Skips cleanly otherwise.
"""

import os
import shutil
import subprocess
import threading
import time
from urllib.request import urlopen

import pytest

from http_client import call
from support import closed_port

BINARY = shutil.which("llama-server")
MODEL = os.environ.get("LLMHUB_TEST_GGUF", "")
pytestmark = pytest.mark.skipif(not BINARY or not os.path.isfile(MODEL),
                                reason="needs llama-server on PATH and LLMHUB_TEST_GGUF")


def ready(url: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            with urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        threading.Event().wait(0.2)      # a process starting up: nothing to wait on but it
    return False


@pytest.fixture
def servers():
    started = []
    for parallel in (2, 1):
        port = closed_port()
        process = subprocess.Popen([BINARY, "-m", MODEL, "--port", str(port), "--host",
                                    "127.0.0.1", "--parallel", str(parallel), "-c", "2048",
                                    "--alias", "tiny"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        started.append((process, f"http://127.0.0.1:{port}"))
    try:
        deadline = time.monotonic() + 120
        if not all(ready(url, deadline) for _, url in started):
            pytest.skip("llama-server did not become ready within 120 s")
        yield [url for _, url in started]
    finally:
        for process, _ in started:
            process.terminate()
            process.wait(10)


def test_a_pool_of_two_llama_servers_reads_their_slots_and_uses_both(make_hub, servers):
    hub = make_hub({"upstream": {"kind": "llamacpp"},
                    "upstream:b": {"kind": "llamacpp", "base_url": servers[1] + "/v1"},
                    "pool:tiny": {"targets": "default:tiny, b:tiny"},
                    "health": {"interval_seconds": 3600}}, upstream_url=servers[0] + "/v1")
    assert hub.hub.engine.prober.wait_rounds(1, timeout=30)
    states = {s["name"]: s for s in call(hub.url, "GET", "/v1/upstreams")[2]["data"]}
    assert states["default"]["slots"] == {"tiny": 2} and states["b"]["slots"] == {"tiny": 1}
    results = []
    body = {"model": "tiny", "max_tokens": 8,
            "messages": [{"role": "user", "content": "Say hi."}]}
    clients = [threading.Thread(target=lambda: results.append(
        call(hub.url, "POST", "/v1/chat/completions", body, timeout=120)[0]))
        for _ in range(6)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(180)
    assert results == [200] * 6
    states = {s["name"]: s for s in call(hub.url, "GET", "/v1/upstreams")[2]["data"]}
    assert states["default"]["targets"][0]["requests"] >= 1
    assert states["b"]["targets"][0]["requests"] >= 1
