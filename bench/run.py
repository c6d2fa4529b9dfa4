"""Relay benchmark: the hub against the direct upstream, side by side in one run.

    python -m bench    (or: python bench/run.py)  [--quick] [--only relay|dialects|openloop|
                       threads|conversations|cancel|load|routing|memory]
    python -m bench --ab REF       this tree against a git ref, interleaved (bench/ab.py)
    python -m bench --instructions [REF]   instructions a request, counted (bench/instructions.py)
    python -m bench --hub-python PATH ...   the hub under another interpreter (a free-threaded
                                            build, say); the fakes and clients stay on this one

bench/README.md explains every figure and keeps the dated table of results. This module is
the closed loop: a fixed number of clients, each sending its next request when the last one
answered, against an instant fake. bench/openloop.py is the open loop (a fixed rate against
a paced fake), the way the gateway benchmarks measure.

The fake LM Studio (tests/fake_lmstudio.py) and the hub each run in their own process, so
neither shares a GIL with the load generator. Each scenario is measured direct (client →
fake) and through the hub (client → hub → fake), at concurrency 1, 16 and 64, with one
keep-alive connection per client thread:

- non-streaming latency p50/p99, and the hub's added latency;
- time to first token of a stream, and the hub's added time;
- the same through Anthropic's Messages API (`/v1/messages`), against the direct
  chat-completions stream it becomes;
- embeddings latency (`/v1/embeddings`);
- chunks per second relayed by one long stream per client.

Targets (issue 2): added p50 under 1 ms for non-streaming at concurrency 1; at least 10,000
chunks/s relayed; no errors at concurrency 64. Timings are printed, never asserted.
"""

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
BODY = {"model": "bench-model", "messages": [{"role": "user", "content": "Hello!"}]}
EMBED = {"model": "bench-embed", "input": ["Hello!", "A second passage."]}
MESSAGES = {"model": "bench-model", "max_tokens": 256, "stream": True,
            "messages": [{"role": "user", "content": "Hello!"}]}


# --- processes -------------------------------------------------------------------------------

def start_fake() -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_lmstudio.py")],
                               stdout=subprocess.PIPE, text=True)
    return process, process.stdout.readline().strip()


# Every load generator here is one loopback client: it may hold as many connections as the
# whole hub (the load bench holds 1,000 streams), not the 256 one address gets by default.
HUB_ENV = {"LLMHUB_SERVER_MAX_CONNECTIONS_PER_CLIENT": "2000"}

# The interpreter every hub process runs under (--hub-python). Only the hub's: the fakes and
# the load generators stay on this one, so the direct figures of two runs compare.
HUB_PYTHON = sys.executable


def use_hub_python(path: str) -> None:
    """Every hub this run starts runs under `path`. Set on bench.run, which the other
    benchmarks read it from, and here too: run as a script, this file is __main__ as well."""
    import bench.run
    global HUB_PYTHON
    HUB_PYTHON = bench.run.HUB_PYTHON = path


def start_hub(upstream: str, db: Path, env: dict | None = None,
              root: Path = ROOT) -> tuple[subprocess.Popen, str]:
    """A hub process from the tree at `root` (another checkout, for an A/B)."""
    process = subprocess.Popen(
        [HUB_PYTHON, str(root / "main.py"), "--port", "0", "--upstream", upstream,
         "--db", str(db), "--log-level", "error"], stdout=subprocess.PIPE, text=True,
        env={**os.environ, **HUB_ENV, **(env or {})}, cwd=root)
    line = process.stdout.readline()
    return process, line.split(" listening on ", 1)[1].split(" ", 1)[0]


# --- one client thread -----------------------------------------------------------------------

class Client:
    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        self.conn.connect()
        self.prefix = parts.path.rstrip("/")

    def post(self, body: dict, path: str = "/chat/completions",
             headers: dict | None = None) -> http.client.HTTPResponse:
        self.conn.request("POST", self.prefix + path, body=json.dumps(body).encode(),
                          headers={"Content-Type": "application/json", **(headers or {})})
        return self.conn.getresponse()

    def complete(self, body: dict = BODY, path: str = "/chat/completions") -> float:
        started = time.perf_counter()
        response = self.post(body, path)
        response.read()
        if response.status != 200:
            raise RuntimeError(response.status)
        return time.perf_counter() - started

    def first_token(self, body: dict | None = None, path: str = "/chat/completions",
                    marker: bytes = b'"content"', headers: dict | None = None) -> float:
        started = time.perf_counter()
        response = self.post(body or dict(BODY, stream=True), path, headers)
        while marker not in (line := response.readline()):
            if not line:
                raise RuntimeError("stream ended before a token")
        elapsed = time.perf_counter() - started
        response.read()
        return elapsed

    def embed(self) -> float:
        return self.complete(EMBED, "/embeddings")

    def first_message_token(self) -> float:
        """Time to the first text_delta of an Anthropic Messages stream (/v1/messages)."""
        return self.first_token(MESSAGES, "/messages", b'"text_delta"',
                                {"anthropic-version": "2023-06-01"})

    def relay(self, chunks: int) -> float:
        started = time.perf_counter()
        response = self.post(dict(BODY, stream=True, model=f"fake-chunks-{chunks}"))
        seen = response.read().count(b'"content"')
        if seen < chunks:
            raise RuntimeError(f"only {seen} of {chunks} chunks")
        return time.perf_counter() - started


def run_clients(base: str, concurrency: int, per_client: int, task: str, *args):
    """Run `task` per_client times on each of `concurrency` threads; (samples, errors)."""
    samples, errors, lock = [], [], threading.Lock()
    barrier = threading.Barrier(concurrency)

    def worker():
        try:
            client = Client(base)
        except OSError as exc:
            with lock:
                errors.append(repr(exc))
            barrier.abort()
            return
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            pass
        for _ in range(per_client):
            try:
                sample = getattr(client, task)(*args)
            except Exception as exc:   # counted, not fatal: the benchmark reports errors
                with lock:
                    errors.append(repr(exc))
                client = Client(base)
                continue
            with lock:
                samples.append(sample)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return samples, errors, time.perf_counter() - started


# --- scenarios -------------------------------------------------------------------------------

def percentile(samples: list, q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def latency_rows(name, task, direct, hub, levels, total, hub_task=None):
    """`hub_task` measures the hub with another request than the direct one (the same
    model call in another dialect: /v1/messages against the fake's chat completions)."""
    rows, hub_task = [], hub_task or task
    for concurrency in levels:
        per = max(5, total // concurrency)
        run_clients(direct, concurrency, 3, task)          # warm-up
        run_clients(hub, concurrency, 3, hub_task)
        d, d_err, _ = run_clients(direct, concurrency, per, task)
        h, h_err, _ = run_clients(hub, concurrency, per, hub_task)
        ms = [1000 * percentile(s, q) for s in (d, h) for q in (0.5, 0.99)]
        rows.append([name, concurrency, len(h), f"{ms[0]:.2f}", f"{ms[2]:.2f}",
                     f"{ms[2] - ms[0]:+.2f}", f"{ms[1]:.2f}", f"{ms[3]:.2f}",
                     f"{ms[3] - ms[1]:+.2f}", len(d_err) + len(h_err)])
    return rows


def throughput_rows(direct, hub, levels, chunks):
    rows = []
    for concurrency in levels:
        per = 2 if concurrency < 64 else 1
        d, d_err, d_wall = run_clients(direct, concurrency, per, "relay", chunks)
        h, h_err, h_wall = run_clients(hub, concurrency, per, "relay", chunks)
        rate = [len(s) * chunks / wall for s, wall in ((d, d_wall), (h, h_wall))]
        rows.append([f"chunks/s ({chunks}-chunk streams)", concurrency, len(h),
                     f"{rate[0]:,.0f}", f"{rate[1]:,.0f}",
                     f"{100 * rate[1] / rate[0]:.0f}%", "", "", "", len(d_err) + len(h_err)])
    return rows


HEADER = ["scenario", "conc", "n", "direct p50", "hub p50", "added p50", "direct p99",
          "hub p99", "added p99", "errors"]


def table(rows: list, header: list = HEADER) -> str:
    lines = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |" for line in lines]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="llmhub's "
                                     "benchmarks, direct beside the hub (bench/README.md)")
    parser.add_argument("--quick", action="store_true", help="fewer requests, for a smoke run")
    parser.add_argument("--only", choices=("relay", "dialects", "openloop", "threads",
                                           "conversations", "cancel", "load", "routing",
                                           "memory"),
                        help="run one benchmark")
    parser.add_argument("--ab", metavar="REF", help="compare this tree with a git ref "
                        "(hub CPU per request, p50, TTFT) in interleaved blocks, and stop")
    parser.add_argument("--instructions", metavar="REF", nargs="?", const="",
                        help="count the hub's instructions a request under valgrind, this "
                        "tree (and REF, if given), and stop")
    parser.add_argument("--blocks", type=int, default=12, help="--ab: blocks per tree")
    parser.add_argument("--per-block", type=int, default=200, help="--ab: requests a block")
    parser.add_argument("--rate", type=float, default=100, help="openloop: requests/s")
    parser.add_argument("--seconds", type=float, default=8, help="openloop: per figure")
    parser.add_argument("--first-token-ms", type=float, default=50,
                        help="openloop: the paced fake's delay before its first token")
    parser.add_argument("--tokens-per-s", type=float, default=100,
                        help="openloop: the paced fake's token rate")
    parser.add_argument("--tokens", type=int, default=10, help="openloop: tokens a reply")
    parser.add_argument("--hub-python", metavar="PATH", help="run the hub under this "
                        "interpreter (e.g. a free-threaded python3.14t); the fakes and load "
                        "generators stay on this one")
    args = parser.parse_args(argv)
    if args.hub_python:
        use_hub_python(args.hub_python)
    if args.ab:
        from bench import ab
        rows = ab.main(args.ab, args.blocks, args.per_block)
        print(f"\nllmhub A/B: this tree against {args.ab} (median of blocks; difference "
              "= this tree − REF)")
        print(table(rows, [*ab.HEADER[:2], args.ab, *ab.HEADER[3:]]))
        return 0
    if args.instructions is not None:
        from bench import instructions
        ref = args.instructions or None
        rows = instructions.main(ref)
        print("\nllmhub instructions a request (user space, counted by callgrind"
              + (f"; difference = this tree − {ref})" if ref else ")"))
        header = instructions.HEADER[:2] + ([ref, instructions.HEADER[3]] if ref else [])
        print(table(rows, header))
        return 0
    if args.only in (None, "relay"):
        relay(args.quick)
    if args.only in (None, "dialects"):
        from bench import dialects
        print("\nllmhub dialect hot paths (ms; concurrency 1, blocks interleaved with the "
              "direct request each becomes)")
        print(table(dialects.main(args.quick), dialects.HEADER))
    if args.only in (None, "openloop"):
        from bench import openloop
        seconds = 2 if args.quick else args.seconds
        rows = openloop.main(args.rate, seconds, args.first_token_ms, args.tokens_per_s,
                             args.tokens)
        print(f"\nllmhub open-loop benchmark: {args.rate:g} requests/s for {seconds:g} s "
              f"each way; paced fake: first token {args.first_token_ms:g} ms, "
              f"{args.tokens} tokens at {args.tokens_per_s:g}/s; latency from the "
              "scheduled send time")
        print(table(rows, openloop.HEADER))
    if args.only in (None, "threads"):
        from bench import threads
        rows = threads.main(10_000 if args.quick else threads.SIZE)
        print("\nllmhub threads benchmark (ms)")
        print(table(rows, ["scenario", "n", "p50", "p99"]))
    if args.only in (None, "conversations"):
        from bench import conversations
        rows = conversations.main(5_000 if args.quick else conversations.SIZE,
                                  3 if args.quick else 10)
        print("\nllmhub conversations benchmark (ms)")
        print(table(rows, ["scenario", "n", "p50", "p99"]))
    if args.only in (None, "cancel"):
        from bench import cancel
        rows = cancel.main(20 if args.quick else 100)
        print("\nllmhub stop-latency benchmark (ms, from sending the cancel request)")
        print(table(rows, ["scenario", "n", "p50", "p99", "max"]))
    if args.only in (None, "load"):
        from bench import load
        print("\nllmhub load benchmark")
        print(table(load.main(), ["scenario", "direct to the fake", "through the hub"]))
    if args.only in (None, "routing"):
        from bench import routing
        print("\nllmhub routing benchmark (concurrency 1, interleaved blocks)")
        print(table(routing.main(args.quick), ["scenario", "n", "p50", "p99", "mean"]))
    if args.only in (None, "memory"):
        from bench import memory
        print(f"\nllmhub memory benchmark ({memory.CONCURRENCY} large bodies at once; peak RSS "
              "above the RSS before, in MiB)")
        print(table(memory.main(), ["route", "body MiB", "conc", "peak MiB",
                                    "per body MiB", "per body / body", "errors"]))
    return 0


def relay(quick: bool) -> None:
    total, chunks = (100, 500) if quick else (1000, 2000)
    levels = (1, 16, 64)
    fake, direct = start_fake()
    with tempfile.TemporaryDirectory() as tmp:
        hub_process, hub = start_hub(direct, Path(tmp) / "bench.db")
        try:
            hub += "/v1"
            rows = latency_rows("non-streaming latency (ms)", "complete", direct, hub,
                                levels, total)
            rows += latency_rows("time to first token (ms)", "first_token", direct, hub,
                                 levels, total // 2)
            rows += latency_rows("/v1/messages first token (ms)", "first_token", direct, hub,
                                 (1, 16), total // 2, hub_task="first_message_token")
            rows += latency_rows("embeddings latency (ms)", "embed", direct, hub, (1, 16),
                                 total // 2)
            rows += throughput_rows(direct, hub, levels, chunks)
        finally:
            hub_process.terminate()
            hub_process.wait(10)
            fake.kill()
    print(f"llmhub relay benchmark: Python {sys.version.split()[0]}, {os.cpu_count()} cores, "
          "fake upstream, hub and load generator in three processes. For chunks/s the three "
          "middle columns hold the direct rate, the hub's rate and the hub's share.")
    print(table(rows))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
