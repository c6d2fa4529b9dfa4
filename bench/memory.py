"""Memory benchmark (issue 26): what a large request body costs the hub while it is served.

    python -m bench --only memory

Eight clients at once each POST a 14.7 MiB body (an 11 MiB image as base64, the size an
agent sends for a screenshot) to /v1/chat/completions, /v1/responses (which stores its
input) and /v1/messages (translated to the OpenAI wire). Reported: the hub process's peak
RSS above its RSS before the burst, per body and as a multiple of the body. Linux only: the
peak is /proc/PID/status VmHWM, reset through /proc/PID/clear_refs before each burst.
"""

import base64
import http.client
import json
import os
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit

from bench.run import start_fake, start_hub

CONCURRENCY = 8
IMAGE_BYTES = 11 * 1024 * 1024
MiB = 1 << 20


def bodies(image: str) -> dict:
    url = "data:image/png;base64," + image
    return {
        "/v1/chat/completions": {"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": url}}]}]},
        "/v1/responses": {"model": "m", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": url}]}]},
        "/v1/messages": {"model": "m", "max_tokens": 64, "messages": [{"role": "user",
            "content": [{"type": "text", "text": "What is this?"},
                        {"type": "image", "source": {"type": "base64", "media_type":
                                                     "image/png", "data": image}}]}]},
    }


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def post(url: str, path: str, payload: bytes, errors: list) -> None:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        conn.request("POST", path, body=payload, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            errors.append(response.status)
    except OSError as exc:
        errors.append(repr(exc))
    finally:
        conn.close()


def burst(pid: int, url: str, path: str, payload: bytes) -> tuple[float, list]:
    """Peak RSS growth (MiB) while CONCURRENCY clients send `payload` at once."""
    post(url, path, payload, [])                   # warm: imports, caches, the route
    Path(f"/proc/{pid}/clear_refs").write_text("5")   # VmHWM := VmRSS (Linux 4.0+)
    before = status_kib(pid, "VmRSS")
    errors: list = []
    clients = [threading.Thread(target=post, args=(url, path, payload, errors))
               for _ in range(CONCURRENCY)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    return (status_kib(pid, "VmHWM") - before) / 1024, errors


def main() -> list[list]:
    image = base64.b64encode(os.urandom(IMAGE_BYTES)).decode("ascii")
    fake, fake_url = start_fake()
    rows = []
    try:
        for path, body in bodies(image).items():
            payload = json.dumps(body).encode()
            peak, errors = fresh_hub_burst(fake_url, path, payload)
            size = len(payload) / MiB
            rows.append([path, f"{size:.1f}", CONCURRENCY, f"{peak:.0f}",
                         f"{peak / CONCURRENCY:.1f}", f"{peak / CONCURRENCY / size:.1f}x",
                         len(errors)])
    finally:
        fake.terminate()
        fake.wait(10)
    return rows


def fresh_hub_burst(fake_url: str, path: str, payload: bytes) -> tuple[float, list]:
    """A hub of its own per route: memory a process's allocator kept from an earlier burst
    would otherwise hide the next one's."""
    with tempfile.TemporaryDirectory() as tmp:
        hub, hub_url = start_hub(fake_url, Path(tmp) / "hub.db")
        try:
            return burst(hub.pid, hub_url, path, payload)
        finally:
            hub.terminate()
            hub.wait(10)
