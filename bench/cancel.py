"""Stop-latency benchmark: how fast EDISON's Stop really stops the model (issue 6).

    python -m bench --only cancel

Each round opens an EDISON stream (`/chat/stream`, SSE) on an upstream that has sent one
token and then goes silent, waits for that token, and sends `POST /chat/cancel`. Measured
from the moment the cancel is sent:
- until the `done` event (`stopped: true`) reaches the streaming client;
- until the fake upstream sees its connection closed (its own monotonic clock: on Linux and
  Windows both processes read the same clock).
The same for a background `/v1/responses` run cancelled with `POST
/v1/responses/{id}/cancel`. The target is under 100 ms p99; the seed promised under one
second. Printed, not asserted.
"""

import http.client
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from bench.run import ROOT, percentile, start_hub


def start_holding_fake() -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_lmstudio.py"),
                                "--hold-after", "1"], stdout=subprocess.PIPE, text=True)
    return process, process.stdout.readline().strip()


def connect(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)


def aborts(fake_url: str) -> list:
    conn = connect(fake_url)
    conn.request("GET", "/__fake/aborts")
    seen = json.loads(conn.getresponse().read())
    conn.close()
    return seen


def one_round(hub: str, fake: str, control: http.client.HTTPConnection, before: int):
    stream = connect(hub)
    stream.request("POST", "/chat/stream", body=json.dumps({"message": "Hi", "model": "m"}),
                   headers={"Content-Type": "application/json",
                            "Accept": "text/event-stream"})
    response = stream.getresponse()
    request_id = None
    while True:                                   # init, then the first token
        line = response.readline()
        if line.startswith(b"data: ") and request_id is None:
            request_id = json.loads(line[6:])["request_id"]
        if line.startswith(b"event: token"):
            break
    sent = time.monotonic()
    control.request("POST", "/chat/cancel", body=json.dumps({"request_id": request_id}),
                    headers={"Content-Type": "application/json"})
    control.getresponse().read()
    while not response.readline().startswith(b"event: done"):
        pass
    done = time.monotonic() - sent
    stream.close()
    while len(seen := aborts(fake)) <= before:
        time.sleep(0.001)                         # the benchmark may poll; tests may not
    return done, seen[-1] - sent, len(seen)


def responses_round(hub: str, fake: str, control: http.client.HTTPConnection, before: int):
    """A background /v1/responses run, cancelled once its first token is in."""
    control.request("POST", "/v1/responses", body=json.dumps(
        {"model": "m", "input": "Hi", "background": True}),
        headers={"Content-Type": "application/json"})
    response_id = json.loads(control.getresponse().read())["id"]
    while True:                                   # polled: a background run has no stream
        control.request("GET", f"/v1/responses/{response_id}")
        output = json.loads(control.getresponse().read())["output"]
        if output and output[0]["content"][0]["text"]:
            break
        time.sleep(0.001)
    sent = time.monotonic()
    control.request("POST", f"/v1/responses/{response_id}/cancel")
    control.getresponse().read()
    answered = time.monotonic() - sent
    while len(seen := aborts(fake)) <= before:
        time.sleep(0.001)
    return answered, seen[-1] - sent, len(seen)


def main(rounds: int = 100) -> list[list]:
    fake_process, fake = start_holding_fake()
    with tempfile.TemporaryDirectory() as tmp:
        hub_process, hub = start_hub(fake, Path(tmp) / "cancel.db")
        control = connect(hub)
        done, closed, count = [], [], 0
        answered, responses_closed = [], []
        try:
            for _ in range(rounds):
                to_done, to_close, count = one_round(hub, fake, control, count)
                done.append(to_done)
                closed.append(to_close)
            for _ in range(rounds):
                to_answer, to_close, count = responses_round(hub, fake, control, count)
                answered.append(to_answer)
                responses_closed.append(to_close)
        finally:
            control.close()
            hub_process.terminate()
            hub_process.wait(10)
            fake_process.kill()
    ms = lambda s, q: f"{1000 * percentile(s, q):.1f}"   # noqa: E731
    return [["cancel → done event at the client", rounds, ms(done, .5), ms(done, .99),
             f"{1000 * max(done):.1f}"],
            ["cancel → upstream connection closed", rounds, ms(closed, .5), ms(closed, .99),
             f"{1000 * max(closed):.1f}"],
            ["/v1/responses cancel → its reply", rounds, ms(answered, .5),
             ms(answered, .99), f"{1000 * max(answered):.1f}"],
            ["/v1/responses cancel → upstream closed", rounds, ms(responses_closed, .5),
             ms(responses_closed, .99), f"{1000 * max(responses_closed):.1f}"]]
