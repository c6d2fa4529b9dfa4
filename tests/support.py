"""What many tests share: waiting on a condition, a port nothing listens on, reading SSE
from a live response, a log stream to wait on, the real process, and a team of keys."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading


def wait_for(predicate, timeout: float = 10.0) -> bool:
    """Poll a condition the hub exposes no event for; bounded, and quick when it holds."""
    done = threading.Event()
    for _ in range(int(timeout / 0.005)):
        if predicate():
            return True
        done.wait(0.005)
    return predicate()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- SSE from a live response -----------------------------------------------------------------

def parse_sse(raw: bytes) -> list[dict]:
    events = []
    for block in raw.decode("utf-8").split("\n\n"):
        if not block.strip():
            continue
        event = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                continue                      # a comment: EDISON's pings
            name, _, value = line.partition(": ")
            event[name] = value
        if "data" in event:
            event["data"] = json.loads(event["data"])
            events.append(event)
    return events


def read_until(response, name: str, count: int = 1) -> list[dict]:
    """Read a live SSE stream until `count` events called `name` have arrived."""
    buffer = b""
    while True:
        buffer += response.read1(65536)
        complete = buffer[:buffer.rfind(b"\n\n") + 2] if b"\n\n" in buffer else b""
        events = parse_sse(complete)
        if sum(e["event"] == name for e in events) >= count:
            return events


class LogCatcher:
    """A log stream tests can wait on: the server logs after the response has gone out."""

    def __init__(self):
        self.text, self._cond = "", threading.Condition()

    def write(self, text):
        with self._cond:
            self.text += text
            self._cond.notify_all()

    def flush(self):
        pass

    def wait_lines(self, count, timeout=5):
        with self._cond:
            self._cond.wait_for(lambda: self.text.count("\n") >= count, timeout)
            return self.text


# --- the real process -------------------------------------------------------------------------

def start(args, tmp_path, env=None):
    """`python main.py …` (or `-m llmhub`) on port 0: the process, its first line, its URL."""
    process = subprocess.Popen(
        [sys.executable, *args, "--port", "0", "--db", str(tmp_path / "cli.db"),
         "--log-level", "warning"], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        # faulthandler: a hub that does not stop can be made to print its threads (ended())
        env={**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {})})
    line = process.stdout.readline().strip()
    url = line.split(" listening on ", 1)[1].split(" ", 1)[0] if "listening on" in line else None
    return process, line, url


def stop(process, sig=signal.SIGTERM):
    process.send_signal(sig)
    try:
        ended(process)
        return process.returncode
    finally:
        process.kill()
        process.stdout.close()
        process.stderr.close()


def ended(process, timeout: float = 10) -> tuple[str, str]:
    """The process's (stdout, stderr) once it exits. One that has not exited in `timeout`
    fails the test with every thread's traceback (SIGABRT, which faulthandler answers with
    them; Windows has no such signal, so there only the timeout is said)."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        if hasattr(signal, "SIGABRT") and sys.platform != "win32":
            process.send_signal(signal.SIGABRT)
        try:
            out, err = process.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        raise AssertionError(f"the hub did not exit within {timeout} s; its output:\n"
                             f"{out}\n{err}") from None


# --- a team of keys (issue 24) ------------------------------------------------------------------

TEAM = {"keys": {"alice": "sk-alice-1", "bob": "sk-bob-2", "root": "sk-root-3",
                 "carol": "sk-carol-4"},
        "key:root": {"role": "admin"},
        "key:carol": {"models": "qwen*", "manage_models": "true", "max_concurrent": "1",
                      "max_background": "1"},
        "aliases": {"fast": "qwen2.5-7b-instruct"},
        "fallbacks": {"qwen-a": "llama-b"}}
ALICE, BOB, ROOT, CAROL = ({"Authorization": f"Bearer {key}"} for key in
                           ("sk-alice-1", "sk-bob-2", "sk-root-3", "sk-carol-4"))
