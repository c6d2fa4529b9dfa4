"""Open-loop benchmark: a fixed request rate, as Vegeta and the gateway benchmarks drive it.

    python -m bench --only openloop [--rate 100] [--seconds 4] [--first-token-ms 50]
                                    [--tokens-per-s 100] [--tokens 10]

Requests are scheduled at fixed times (`rate` a second) whether or not earlier ones have
answered, and each one's latency is measured from its scheduled send time, not from when a
connection was free to send it: the time a request waited to be sent is part of its latency
(coordinated omission corrected, as wrk2 and Vegeta do). A closed loop hides a stall: its
clients stop sending while they wait, so the stall is one slow sample, not the hundreds a
steady flow of users would have seen.

The upstream is bench/upstream.py's paced fake (first token after a set delay, tokens at a
set rate). Direct (client → fake) and through the hub alternate in blocks in one run, so
the machine's drift falls on both. The load generator is asyncio in its own process; its
own lag (scheduled → written) is reported too, so a generator that fell behind shows.

The hub asks its upstream for a stream even when its client asked for a whole reply, and
the paced fake takes longer to write ten chunks than one reply. So the non-streaming
figure gets a third row: the hub against that stream, asked for directly and read to its
end, in the same blocks. The first row is what a client sees; the third, the hub's share.
"""

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from bench.run import percentile, start_hub

ROOT = Path(__file__).resolve().parent.parent
MARKER = b'"content"'


def start_paced_fake(first_token_ms: float, tokens_per_s: float, tokens: int):
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.upstream", "--first-token-ms", str(first_token_ms),
         "--tokens-per-s", str(tokens_per_s), "--tokens", str(tokens)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT)
    return process, process.stdout.readline().strip()


def request_bytes(url: str, path: str, body: bytes, headers: dict | None = None) -> tuple:
    parts = urlsplit(url)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (f"POST {parts.path.rstrip('/')}{path} HTTP/1.1\r\nHost: {parts.hostname}\r\n"
            f"Content-Type: application/json\r\n{extra}Content-Length: {len(body)}\r\n\r\n")
    return parts.hostname, parts.port, head.encode() + body


async def read_reply(reader) -> tuple[int, float | None]:
    """(status, when the first token came, for a stream) of one reply, read to its end."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    if b"transfer-encoding: chunked" not in lower:
        length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        return status, None
    first = None
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        data = await reader.readexactly(size + 2)
        if first is None and MARKER in data:
            first = time.perf_counter()
        if not size:
            return status, first


class Result:
    def __init__(self) -> None:
        self.latency, self.first_token, self.lag, self.errors = [], [], [], 0


async def open_loop(url: str, path: str, body: bytes, rate: float, seconds: float,
                    headers: dict | None = None, max_connections: int = 512) -> Result:
    """Send `rate` requests a second for `seconds`, each at its scheduled time."""
    host, port, request = request_bytes(url, path, body, headers)
    idle: list = []
    slots = asyncio.Semaphore(max_connections)
    result = Result()

    async def one(at: float) -> None:
        async with slots:              # waiting here is waiting to be sent: it counts
            conn = idle.pop() if idle else None
            try:
                if conn is None:
                    conn = await asyncio.open_connection(host, port, limit=1 << 20)
                reader, writer = conn
                result.lag.append(time.perf_counter() - at)
                writer.write(request)
                status, first = await read_reply(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                result.errors += 1
                if conn is not None:
                    conn[1].close()
                return
            done = time.perf_counter()
            if status != 200:
                result.errors += 1
            result.latency.append(done - at)
            if first is not None:
                result.first_token.append(first - at)
            idle.append(conn)

    count = max(1, int(rate * seconds))
    start = time.perf_counter() + 0.01
    tasks = []
    for i in range(count):
        at = start + i / rate
        if (wait := at - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.ensure_future(one(at)))
    await asyncio.gather(*tasks)
    for _, writer in idle:
        writer.close()
    return result


def run(url: str, path: str, body: bytes, rate: float, seconds: float,
        headers: dict | None = None) -> Result:
    return asyncio.run(open_loop(url, path, body, rate, seconds, headers))


def merge(results: list) -> Result:
    merged = Result()
    for r in results:
        merged.latency += r.latency
        merged.first_token += r.first_token
        merged.lag += r.lag
        merged.errors += r.errors
    return merged


NON_STREAM = b'{"model": "bench-model", "messages": [{"role": "user", "content": "Hello!"}]}'
STREAM = (b'{"model": "bench-model", "stream": true, '
          b'"messages": [{"role": "user", "content": "Hello!"}]}')
# what the hub sends the upstream for NON_STREAM (upstream/openai.py `streamed`)
STREAMED = (b'{"model": "bench-model", "stream": true, "stream_options": {"include_usage": '
            b'true}, "messages": [{"role": "user", "content": "Hello!"}]}')


def main(rate: float = 100, seconds: float = 4, first_token_ms: float = 50,
         tokens_per_s: float = 100, tokens: int = 10, blocks: int = 4) -> list[list]:
    """Rows: figure, direct, hub, added; each p50 / p90 / p99 in ms."""
    fake, direct = start_paced_fake(first_token_ms, tokens_per_s, tokens)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        hub_process, hub = start_hub(direct, Path(tmp) / "bench.db")
        hub += "/v1"
        try:
            for name, body, figure in (("non-streaming", NON_STREAM, "latency"),
                                       ("streaming", STREAM, "first_token")):
                # A non-streaming request reaches the upstream as a stream (the hub always
                # asks for one: bench/README.md, "Second round"), so it is also set against
                # the direct stream the hub's call is, read to its end.
                sides = [(direct, body), (hub, body)] + \
                    ([(direct, STREAMED)] if figure == "latency" else [])
                runs: dict = {side: [] for side in sides}
                for url, sent in sides:                                    # warm-up
                    run(url, "/chat/completions", sent, rate, min(0.5, seconds / blocks))
                for block in range(blocks):
                    turn = sides[block % len(sides):] + sides[:block % len(sides)]
                    for url, sent in turn:
                        runs[url, sent].append(run(url, "/chat/completions", sent, rate,
                                                   seconds / blocks))
                d, h = merge(runs[direct, body]), merge(runs[hub, body])
                label = "latency" if figure == "latency" else "time to first token"
                rows.append(percentile_row(f"{name} {label} at {rate:g}/s",
                                           getattr(d, figure), getattr(h, figure),
                                           d.errors, h.errors))
                rows.append(percentile_row("  generator lag (scheduled → sent)", d.lag,
                                           h.lag, 0, 0))
                if (direct, STREAMED) in runs:
                    whole = merge(runs[direct, STREAMED])
                    rows.append(percentile_row("  against the direct stream it becomes",
                                               whole.latency, h.latency, whole.errors,
                                               h.errors))
        finally:
            hub_process.terminate()
            hub_process.wait(10)
            fake.kill()
    return rows


def percentile_row(name: str, direct: list, hub: list, d_err: int, h_err: int) -> list:
    def cell(samples):
        return " / ".join(f"{1000 * percentile(samples, q):.2f}" for q in (.5, .9, .99))
    added = " / ".join(f"{1000 * (percentile(hub, q) - percentile(direct, q)):+.2f}"
                       for q in (.5, .9, .99))
    return [name, len(hub), cell(direct), cell(hub), added, f"{d_err} / {h_err}"]


HEADER = ["figure (ms: p50 / p90 / p99)", "n", "direct", "through the hub", "added",
          "errors d / h"]
