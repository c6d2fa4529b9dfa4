"""Every dialect's hot path at concurrency 1: what each adds over the direct request.

    python -m bench --only dialects [--quick]

One instant fake, one hub configured with three upstreams that all point at it and
`[pool:trio]` over them. Each row is one request shape through the hub, measured in blocks
interleaved with its direct twin (the chat completion, or embeddings, it becomes upstream),
so drift falls on both. Besides latency, the hub process's CPU per request (from
/proc/PID/stat) is shown: on a shared machine it moves far less than wall clock.
"""

import socket
import tempfile
import time
from pathlib import Path

from bench.ab import cpu_seconds
from bench.routing import start_pool_hub
from bench.run import BODY, EMBED, Client, percentile, start_fake

HI = [{"role": "user", "content": "Hello!"}]
ANTHROPIC = {"anthropic-version": "2023-06-01"}

# An agent's turn some way into a session, as a coding agent sends it (~55 KB): 10 KB of
# instructions, 12 function tools, the history so far (60 turns of 400 characters), and
# the chat completion it becomes upstream, for its direct twin. Every byte of it is parsed,
# converted and encoded again per turn, where "Hello!" measures only the floor.
_PROPERTIES = {f"p{j}": {"type": "string", "description": "y" * 80} for j in range(6)}
_SCHEMA = {"type": "object", "properties": _PROPERTIES, "required": ["p0"]}
_TURNS = [("user" if i % 2 == 0 else "assistant", f"turn {i} " + "z" * 400) for i in range(60)]
INSTRUCTIONS = "You are a coding agent. " * 420
CODEX = {"model": "bench-model", "instructions": INSTRUCTIONS, "store": False,
         "tools": [{"type": "function", "name": f"tool{i}", "description": "x" * 300,
                    "parameters": _SCHEMA} for i in range(12)],
         "input": [{"type": "message", "role": role, "content": [
             {"type": "input_text" if role == "user" else "output_text", "text": text}]}
             for role, text in _TURNS]}
CLAUDE = {"model": "bench-model", "max_tokens": 4096, "system": INSTRUCTIONS,
          "tools": [{"name": f"tool{i}", "description": "x" * 300, "input_schema": _SCHEMA}
                    for i in range(12)],
          "messages": [{"role": role, "content": [{"type": "text", "text": text}]}
                       for role, text in _TURNS]}
AGENT_CHAT = {"model": "bench-model",
              "messages": [{"role": "system", "content": INSTRUCTIONS}] +
              [{"role": role, "content": text} for role, text in _TURNS],
              "tools": [{"type": "function", "function": {
                  "name": f"tool{i}", "description": "x" * 300, "parameters": _SCHEMA}}
                  for i in range(12)]}
# (row, hub path, hub body, headers, direct path, direct body). Ollama names a model the
# upstream lists: its dialect answers 404 "try pulling it" for any other, as Ollama does.
ROWS = (
    ("chat completions", "/v1/chat/completions", BODY, None, "/chat/completions", BODY),
    ("/v1/responses (stored)", "/v1/responses", {"model": "bench-model", "input": "Hello!"},
     None, "/chat/completions", BODY),
    ("/v1/responses store: false", "/v1/responses",
     {"model": "bench-model", "input": "Hello!", "store": False}, None,
     "/chat/completions", BODY),
    ("/v1/messages", "/v1/messages", {"model": "bench-model", "max_tokens": 64,
                                      "messages": HI}, ANTHROPIC, "/chat/completions", BODY),
    ("Ollama /api/chat", "/api/chat", {"model": "qwen2.5-7b-instruct", "messages": HI,
                                       "stream": False}, None, "/chat/completions", BODY),
    ("embeddings", "/v1/embeddings", EMBED, None, "/embeddings", EMBED),
    ("pool of three (trio)", "/v1/chat/completions", dict(BODY, model="trio"), None,
     "/chat/completions", BODY),
    ("/v1/responses, an agent's turn (55 KB)", "/v1/responses", CODEX, None,
     "/chat/completions", AGENT_CHAT),
    ("/v1/messages, an agent's turn (55 KB)", "/v1/messages", CLAUDE, ANTHROPIC,
     "/chat/completions", AGENT_CHAT),
)
HEADER = ["hot path (c=1, non-streaming)", "n", "direct p50", "hub p50", "added p50",
          "hub p99", "hub CPU µs/req"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed(client: Client, path: str, body: dict, headers: dict | None) -> float:
    started = time.perf_counter()
    response = client.post(body, path, headers)
    response.read()
    if response.status != 200:
        raise RuntimeError(f"{path}: {response.status}")
    return time.perf_counter() - started


def main(quick: bool = False) -> list[list]:
    blocks, per = (2, 20) if quick else (6, 100)
    fake, upstream = start_fake()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ollama = free_port()        # the Ollama dialect has a listener of its own
        hub_process, hub = start_pool_hub(upstream, Path(tmp), ("[ollama]", f"port = {ollama}"))
        try:
            direct, through = Client(upstream), Client(hub)
            ollama_client = Client(f"http://127.0.0.1:{ollama}")
            for name, path, body, headers, direct_path, direct_body in ROWS:
                d, h, cpu = [], [], 0.0     # CPU summed over the blocks: /proc counts
                                            # in 10 ms ticks, too coarse for one block
                client = ollama_client if path.startswith("/api/") else through
                for _ in range(10):                              # warm-up
                    timed(client, path, body, headers)
                for block in range(blocks):
                    for side in ("direct", "hub") if block % 2 == 0 else ("hub", "direct"):
                        if side == "direct":
                            d += [timed(direct, direct_path, direct_body, None)
                                  for _ in range(per)]
                            continue
                        before = cpu_seconds(hub_process.pid)
                        h += [timed(client, path, body, headers) for _ in range(per)]
                        after = cpu_seconds(hub_process.pid)
                        if before is not None and after is not None:
                            cpu += after - before
                ms = [1000 * percentile(s, q) for s, q in ((d, .5), (h, .5), (h, .99))]
                cpu_cell = f"{1e6 * cpu / len(h):.0f}" if cpu_seconds(hub_process.pid) else "n/a"
                rows.append([name, len(h), f"{ms[0]:.2f}", f"{ms[1]:.2f}",
                             f"{ms[1] - ms[0]:+.2f}", f"{ms[2]:.2f}", cpu_cell])
        finally:
            hub_process.terminate()
            hub_process.wait(10)
            fake.kill()
    return rows
