"""Load benchmark (issue 8): many held streams, throughput, and cancel latency under load.

    python -m bench --only load

- 1,000 concurrent streams held open against a fake upstream that sends one token and then
  goes silent, direct to the fake and through the hub, with the memory each costs (RSS of
  the serving process, read from /proc, divided by the streams);
- non-streaming requests per second at concurrency 1 and 64, direct and through the hub,
  with the cores the serving process used meanwhile, its CPU a request, and how much of
  the machine stayed idle: a server held to under one core while CPU is left idle is
  bound by its GIL, not by the machine; and the hub's CPU a request at 64 over the fake's,
  which sets the hub's share of the direct rate when both are held by their GILs;
- EDISON stop latency, p50/p99, while the 1,000 streams are held open.
Targets: 1,000 streams with zero errors, at least 1,500 requests/s non-streaming, cancel
p99 under 100 ms. Printed, never asserted. The load generator is asyncio, in its own
process, so that it costs little of the 2 cores the hub and the fake share.
"""

import asyncio
import json
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from bench.ab import cpu_seconds
from bench.cancel import connect, one_round, start_holding_fake
from bench.run import percentile, start_fake, start_hub

STREAMS = 1000
WARM_UP = 20
HI = [{"role": "user", "content": "Hi"}]


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def request_bytes(url: str, body: dict) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    head = (f"POST {parts.path.rstrip('/')}/chat/completions HTTP/1.1\r\n"
            f"Host: {parts.hostname}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n")
    return parts.hostname, parts.port, head.encode() + payload


async def open_streams(url: str, count: int) -> tuple[list, int]:
    """Open `count` streams and read each to its first token; return the live writers."""
    host, port, request = request_bytes(url, {"model": "m", "messages": HI, "stream": True})

    async def one():
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        writer.write(request)
        while b'"content"' not in (line := await reader.readline()):
            if not line:
                raise ConnectionError("closed before the first token")
        return writer

    results = await asyncio.gather(*[one() for _ in range(count)], return_exceptions=True)
    writers = [r for r in results if not isinstance(r, BaseException)]
    return writers, count - len(writers)


async def close_all(writers: list) -> None:
    for writer in writers:
        writer.close()
    await asyncio.sleep(0.5)          # let both ends notice before the next measurement


async def throughput(url: str, concurrency: int = 64, seconds: float = 5.0):
    host, port, request = request_bytes(url, {"model": "m", "messages": HI})
    done, errors = [0], [0]
    deadline = time.monotonic() + seconds

    async def worker():
        reader, writer = await asyncio.open_connection(host, port)
        while time.monotonic() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            if head.startswith(b"HTTP/1.1 200"):
                done[0] += 1
            else:
                errors[0] += 1
        writer.close()

    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return done[0] / seconds, errors[0]


def machine_idle() -> tuple[int, int] | None:
    """(idle, total) CPU ticks of the whole machine so far, from /proc/stat."""
    try:
        ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return ticks[3] + ticks[4], sum(ticks)     # idle + iowait


def rate_and_cpu(loop, pid: int, url: str, concurrency: int) -> tuple[list[str], float | None]:
    """[requests/s (errors), "cores / CPU µs a request / machine idle %"] of one server,
    and its CPU seconds a request (None where /proc cannot tell)."""
    seconds = 5.0
    cpu, idle = cpu_seconds(pid), machine_idle()
    rate, errors = loop.run_until_complete(throughput(url, concurrency, seconds))
    cpu_after, idle_after = cpu_seconds(pid), machine_idle()
    if cpu is None or cpu_after is None or idle is None or idle_after is None or not rate:
        return [f"{rate:,.0f} ({errors})", "n/a"], None
    used = cpu_after - cpu
    idle_share = (idle_after[0] - idle[0]) / max(1, idle_after[1] - idle[1])
    per = used / (rate * seconds)
    return [f"{rate:,.0f} ({errors})",
            f"{used / seconds:.2f} / {1e6 * per:.0f} / {100 * idle_share:.0f}%"], per


def cpu_ratio(direct: float | None, hub: float | None) -> str:
    """The hub's CPU a request over the direct server's. Both servers are one Python process
    held to about a core by its GIL, so at c=64 each serves ~one core over its CPU a request,
    and the hub's share of the direct rate is about the inverse of this: 40% needs ≤ 2.5×
    (bench/README.md, "Eighth round")."""
    return f"{hub / direct:.1f}×" if direct and hub else "n/a"


def held_streams(loop, server_pid: int, url: str) -> tuple[list, list]:
    # A few streams first, on both sides, so what a server sets up once (a thread pool,
    # lazy imports, a database connection) is not divided among the held streams.
    writers, _ = loop.run_until_complete(open_streams(url, WARM_UP))
    loop.run_until_complete(close_all(writers))
    before = rss_kb(server_pid)
    writers, errors = loop.run_until_complete(open_streams(url, STREAMS))
    after = rss_kb(server_pid)
    per = f"{(after - before) / max(1, len(writers)):.0f} KB" if before and after else "n/a"
    return writers, [len(writers), errors, per]


def main() -> list[list]:
    loop = asyncio.new_event_loop()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fake, fake_url = start_holding_fake()
        hub, hub_url = start_hub(fake_url, Path(tmp) / "load.db")
        try:
            writers, direct = held_streams(loop, fake.pid, fake_url)
            loop.run_until_complete(close_all(writers))
            writers, through = held_streams(loop, hub.pid, hub_url + "/v1")
            control, seen, done, closed = connect(hub_url), len(_aborts(fake_url)), [], []
            for _ in range(100):
                to_done, to_close, seen = one_round(hub_url, fake_url, control, seen)
                done.append(to_done)
                closed.append(to_close)
            control.close()
            loop.run_until_complete(close_all(writers))
        finally:
            hub.terminate()
            hub.wait(10)
            fake.kill()
        rows.append([f"{STREAMS} held streams: open / errors / RSS per stream",
                     f"{direct[0]} / {direct[1]} / {direct[2]}",
                     f"{through[0]} / {through[1]} / {through[2]}"])
        ms = lambda s, q: f"{1000 * percentile(s, q):.1f}"   # noqa: E731
        rows.append([f"cancel → done, p50 / p99 ms (with {STREAMS} streams held)", "",
                     f"{ms(done, .5)} / {ms(done, .99)}"])
        rows.append([f"cancel → upstream closed, p50 / p99 ms (with {STREAMS} held)", "",
                     f"{ms(closed, .5)} / {ms(closed, .99)}"])
        fake, fake_url = start_fake()
        hub, hub_url = start_hub(fake_url, Path(tmp) / "load2.db")
        try:
            for concurrency in (1, 64):
                straight, direct_cpu = rate_and_cpu(loop, fake.pid, fake_url, concurrency)
                relayed, hub_cpu = rate_and_cpu(loop, hub.pid, hub_url + "/v1", concurrency)
                rows.append([f"non-streaming requests/s at concurrency {concurrency} (errors)",
                             straight[0], relayed[0]])
                rows.append(["  server cores / CPU µs a request / machine idle",
                             straight[1], relayed[1]])
            rows.append(["  CPU a request at concurrency 64, hub ÷ direct server", "",
                         cpu_ratio(direct_cpu, hub_cpu)])
        finally:
            hub.terminate()
            hub.wait(10)
            fake.kill()
    loop.close()
    return rows


def _aborts(fake_url: str) -> list:
    from bench.cancel import aborts
    return aborts(fake_url)
