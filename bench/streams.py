"""Held-streams benchmark: what 1,000 open streams cost the hub in memory (issue 11).

    python -m bench --only streams

The fake upstream sends every stream one chunk and then holds it, as a model in a long
prefill would. N clients each open a streaming chat completion and read that first chunk;
then the hub's resident memory is read and compared with its memory before, idle. Each
stream holds a handler thread, a worker thread and two sockets. The target is at most
70 KB of RSS a stream. Linux only (RSS is read from /proc); printed, never asserted.
"""

import http.client
import json
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit

from bench.cancel import start_holding_fake
from bench.run import start_hub

BODY = json.dumps({"model": "bench-model", "stream": True,
                   "messages": [{"role": "user", "content": "Hello!"}]}).encode()


def rss_kib(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next(int(line.split()[1]) for line in status.splitlines()
                if line.startswith("VmRSS:"))


def open_stream(base: str) -> http.client.HTTPConnection:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", body=BODY,
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200 or not response.read1(65536).startswith(b"data: "):
        raise RuntimeError(f"stream did not start: {response.status}")
    return conn


def main(count: int = 1000) -> list:
    fake, upstream = start_holding_fake()
    with tempfile.TemporaryDirectory() as tmp:
        hub, base = start_hub(upstream, Path(tmp) / "bench.db")
        conns, errors, lock = [], [], threading.Lock()
        try:
            for warm in range(20):                       # threads and pools warmed up
                open_stream(base).close()
            idle = rss_kib(hub.pid)

            def opener(n: int) -> None:
                for _ in range(n):
                    try:
                        conn = open_stream(base)
                    except (OSError, RuntimeError) as exc:
                        with lock:
                            errors.append(exc)
                        continue
                    with lock:
                        conns.append(conn)

            openers = [threading.Thread(target=opener, args=(count // 20,)) for _ in range(20)]
            for thread in openers:
                thread.start()
            for thread in openers:
                thread.join()
            held = rss_kib(hub.pid)
        finally:
            for conn in conns:
                conn.close()
            hub.terminate()
            hub.wait(10)
            fake.kill()
    if idle is None or held is None:
        return [["held streams", str(len(conns)), "n/a (no /proc)", "", str(len(errors))]]
    per_stream = (held - idle) / max(1, len(conns))
    return [["held streams", str(len(conns)), f"{idle / 1024:.1f}", f"{held / 1024:.1f}",
             f"{per_stream:.1f}", str(len(errors))]]


HEADER = ["scenario", "streams", "idle RSS (MiB)", "held RSS (MiB)", "KiB per stream",
          "errors"]

if __name__ == "__main__":
    sys.exit(print(main()))
