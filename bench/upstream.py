"""A fake upstream with realistic latency: the fake LM Studio, paced.

    python -m bench.upstream [--first-token-ms 50] [--tokens-per-s 100] [--tokens 10]

prints its base URL and serves until killed. Every chat completion waits `--first-token-ms`
before its reply starts, then sends `--tokens` tokens `1/--tokens-per-s` apart (a
non-streaming reply waits as long, then comes whole): the mock upstream the gateway
benchmarks use, rather than the instant fake that measures the floor. A model named
`fake-chunks-N` still gets N tokens. With no flags it is the instant fake.
"""

import argparse
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def paced_fake(first_token: float, rate: float, tokens: int):
    """A started FakeLMStudio whose every answer is paced as the flags say."""
    sys.path.insert(0, str(ROOT / "tests"))
    from fake_lmstudio import FakeLMStudio, Script, _Handler

    gap = 1 / rate if rate else 0.0
    answer = _Handler._answer

    def paced(self, body, script, received):
        if first_token:
            time.sleep(first_token)
        if gap and not body.get("stream"):
            for _ in range(tokens - 1):   # sleep by sleep, as the stream does: each sleep
                time.sleep(gap)          # overshoots a little, and both add up alike
        return answer(self, body, script, received)

    _Handler._answer = paced
    # Token by token means small writes apart: without TCP_NODELAY (the stdlib server's
    # default) Nagle holds each until the last is acknowledged, and the hub's or client's
    # delayed ACK can make that tens of ms. Node's http server (LM Studio) and asyncio
    # servers (uvicorn, vLLM) set it by default.
    _Handler.disable_nagle_algorithm = True
    fake = FakeLMStudio()
    fake.default = Script(chunks=[" tok"] * tokens, delay=gap)
    return fake.start()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first-token-ms", type=float, default=0.0)
    parser.add_argument("--tokens-per-s", type=float, default=0.0, help="0: all at once")
    parser.add_argument("--tokens", type=int, default=5)
    args = parser.parse_args(argv)
    fake = paced_fake(args.first_token_ms / 1000, args.tokens_per_s, args.tokens)
    print(fake.url, flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
