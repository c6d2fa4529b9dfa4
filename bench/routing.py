"""Routing benchmark (issue 16): what choosing among a pool's targets adds to a request.

    python -m bench --only routing

One fake LM Studio, one hub process configured with three upstreams that all point at it
and `[pool:trio]` over them. At concurrency 1 the same non-streaming request is sent, in
interleaved blocks, for `bench-model` (one target, as before pools) and for `trio` (the
router picks the least busy of three, counts it in flight, records affinity and health),
so the machine's drift falls on both alike. The difference of the two is the routing
overhead; the target is under 0.05 ms. The router's own acquire and release are also timed
in process, without sockets. Printed, never asserted.
"""

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench import run
from bench.run import Client, percentile, start_fake

ROOT = Path(__file__).resolve().parent.parent
BLOCKS, PER_BLOCK = 40, 50


def start_pool_hub(upstream: str, folder: Path, extra: tuple = ()):
    """A hub whose [pool:trio] spreads bench-model over three upstreams (one fake);
    `extra` config lines are appended."""
    ini = folder / "config.ini"
    ini.write_text("\n".join([
        "[server]", "log_level = error", f"db_path = {folder / 'bench.db'}",
        "[upstream]", f"base_url = {upstream}",
        "[upstream:b]", f"base_url = {upstream}",
        "[upstream:c]", f"base_url = {upstream}",
        "[pool:trio]", "targets = default:bench-model, b:bench-model, c:bench-model",
        *extra]) + "\n", encoding="utf-8")
    process = subprocess.Popen([run.HUB_PYTHON, str(ROOT / "main.py"), "--port", "0",
                                "--config", str(ini)], stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    return process, line.split(" listening on ", 1)[1].split(" ", 1)[0]


def end_to_end(hub: str, blocks: int) -> dict:
    client = Client(hub + "/v1")
    samples = {"bench-model": [], "trio": []}
    for model in samples:                                    # warm-up
        for _ in range(20):
            client.complete({"model": model, "messages": [{"role": "user", "content": "Hi"}]})
    for block in range(blocks):
        order = ("bench-model", "trio") if block % 2 == 0 else ("trio", "bench-model")
        for model in order:
            body = {"model": model, "messages": [{"role": "user", "content": "Hi"}]}
            samples[model] += [client.complete(body) for _ in range(PER_BLOCK)]
    return samples


def in_process(rounds: int = 20000) -> tuple[float, float]:
    """µs per acquire + release: a lone target, and a pool of three."""
    from llmhub.config import load_config
    from llmhub.engine.routing import Router, Target
    from llmhub.upstream import make_upstreams

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "empty.ini").write_text("", encoding="utf-8")
        config = load_config(env={}, path=Path(tmp) / "empty.ini")
    upstreams = make_upstreams(config)
    upstream = upstreams["default"]
    router = Router(config, {"default": upstream, "b": upstream})

    class Run:
        status, info, gate = "queued", {}, None

    lone = [Target(upstream, "m")]
    trio = [Target(upstream, "m"), Target(upstream, "n"), Target(upstream, "o")]
    out = []
    for pool in (lone, trio):
        run = Run()
        started = time.perf_counter()
        for _ in range(rounds):
            target = router.acquire(run, pool, "thread-1")
            router.opened(target, "thread-1")
            router.release(target)
        out.append((time.perf_counter() - started) / rounds * 1e6)
    return out[0], out[1]


def main(quick: bool = False) -> list:
    fake, direct = start_fake()
    with tempfile.TemporaryDirectory() as tmp:
        hub_process, hub = start_pool_hub(direct, Path(tmp))
        try:
            samples = end_to_end(hub, 10 if quick else BLOCKS)
        finally:
            hub_process.terminate()
            hub_process.wait(10)
            fake.kill()
    lone, pool = samples["bench-model"], samples["trio"]
    lone_us, trio_us = in_process(2000 if quick else 20000)
    ms = [1000 * percentile(s, q) for s in (lone, pool) for q in (0.5, 0.99)]
    means = [1000 * statistics.fmean(s) for s in (lone, pool)]
    return [
        ["one target (bench-model), ms", len(lone), f"{ms[0]:.3f}", f"{ms[1]:.3f}",
         f"{means[0]:.3f}"],
        ["pool of three (trio), ms", len(pool), f"{ms[2]:.3f}", f"{ms[3]:.3f}",
         f"{means[1]:.3f}"],
        ["routing added, ms", "", f"{ms[2] - ms[0]:+.3f}", f"{ms[3] - ms[1]:+.3f}",
         f"{means[1] - means[0]:+.3f}"],
        ["router acquire+opened+release, in process, µs", "", f"{lone_us:.1f} (one)",
         f"{trio_us:.1f} (three)", ""],
    ]


