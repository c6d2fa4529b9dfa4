"""A/B: this tree against a git ref, in interleaved blocks of one run.

    python -m bench --ab REF [--blocks 12] [--per-block 200]

REF is checked out in a temporary `git worktree add --detach` (removed afterwards). One
instant fake upstream serves two hub processes, one from each tree. In each block both hubs
are measured, in alternating order, on the same figures:

- hub CPU µs per non-streaming request and per streamed request: the hub process's user +
  system time (/proc/PID/stat) over the block, divided by its requests. On a shared machine
  this is the figure to judge a hot-path change by: other processes stretch wall-clock time,
  much less the CPU the hub itself spends;
- hub CPU µs per chunk of a 500-chunk stream (the relay path; per_block / 20 streams);
- non-streaming latency p50 and time to first token p50 at concurrency 1 (wall clock).

Both hubs are started afresh every BLOCKS_PER_PROCESS blocks. Two hub processes of the
same tree differ by themselves: an A/A run (this tree against its own commit, one process
each for the whole run) showed −2.7, −1.5 and +2.1 µs a relayed chunk (of ~22) and
−0.07 to +0.06 ms of time to first token, each with a spread that left out zero (hash
seeds, memory layout, which core). Fresh processes, started in alternating order, spread that bias over both trees.

Each figure is printed for both trees (the median over blocks; for CPU the mean, which is
all the CPU over all the requests), with the difference (this tree minus REF, of the
per-block differences likewise) and its spread (the per-block differences' 25th to 75th
percentile). A difference well inside its spread is not a difference.
"""

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.run import Client, percentile, start_fake, start_hub

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process, from /proc (None where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


LONG = 500          # chunks in the long stream: the per-chunk relay path


def measure(pid: int, client: Client, task: str, n: int) -> tuple[float, float]:
    """(p50 seconds, hub CPU seconds per request) of `n` requests."""
    call = (lambda: client.relay(LONG)) if task == "relay" else getattr(client, task)
    before = cpu_seconds(pid)
    samples = [call() for _ in range(n)]
    after = cpu_seconds(pid)
    cpu = (after - before) / n if before is not None and after is not None else float("nan")
    return percentile(samples, 0.5), cpu


FIGURES = (("non-stream hub CPU µs/request", "complete", 1), ("non-stream p50 ms", "complete", 0),
           ("streamed hub CPU µs/request", "first_token", 1), ("time to first token p50 ms",
                                                                "first_token", 0),
           (f"{LONG}-chunk stream hub CPU µs/chunk", "relay", LONG))


BLOCKS_PER_PROCESS = 2   # then both hubs are started afresh (the docstring says why)
# While one hub is measured, the other's client connection sits idle for a whole block
# (seconds at --per-block 500); past the hub's 5 s keep-alive default it is closed, and the
# next request dies with BrokenPipeError.
HUB_ENV = {"LLMHUB_SERVER_KEEPALIVE_TIMEOUT_SECONDS": "300"}


def compare(hubs: dict, blocks: int, per_block: int, values: dict | None = None) -> dict:
    """{figure: {label: [one value a block]}} for the hubs {label: (process, url)}, added
    to `values` (the blocks measured on earlier processes)."""
    clients = {label: Client(url + "/v1") for label, (_, url) in hubs.items()}
    for label, client in clients.items():                   # warm-up
        for _ in range(30):
            client.complete()
            client.first_token()
    if values is None:
        values = {name: {label: [] for label in hubs} for name, _, _ in FIGURES}
    labels = list(hubs)
    for block in range(blocks):
        for label in labels if block % 2 == 0 else labels[::-1]:
            pid, client = hubs[label][0].pid, clients[label]
            for task in ("complete", "first_token", "relay"):
                count = max(1, per_block // 20) if task == "relay" else per_block
                p50, cpu = measure(pid, client, task, count)
                for name, figure_task, per in FIGURES:   # per: CPU over so many (0: p50)
                    if figure_task == task:
                        values[name][label].append(cpu * 1e6 / per if per else p50 * 1e3)
    return values


def rows(values: dict, this: str, ref: str) -> list[list]:
    """CPU figures are the mean of the blocks (that is, all the CPU over all the requests:
    /proc counts in 10 ms ticks, coarse for one block); latencies the median."""
    out = []
    for name, by_label in values.items():
        middle = statistics.mean if "CPU" in name else statistics.median
        a, b = by_label[this], by_label[ref]
        diffs = sorted(round(x - y, 9) for x, y in zip(a, b))   # no 7e-13 for a tie
        spread = f"{percentile(diffs, .25):+.3g} … {percentile(diffs, .75):+.3g}"
        out.append([name, f"{middle(a):.3g}", f"{middle(b):.3g}", f"{middle(diffs):+.3g}",
                    spread])
    return out


def worktree(ref: str, folder: Path) -> Path:
    path = folder / "ref"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet",
                    str(path), ref], check=True)
    return path


def main(ref: str, blocks: int = 12, per_block: int = 200) -> list[list]:
    folder = Path(tempfile.mkdtemp(prefix="llmhub-ab-"))
    fake, upstream, processes = None, None, []
    try:
        ref_root = worktree(ref, folder)
        fake, upstream = start_fake()
        started, values, done = time.monotonic(), None, 0
        while done < blocks:
            trees = [("this tree", ROOT), (ref, ref_root)]
            started_hubs = {}
            for label, root in trees if done % 4 == 0 else trees[::-1]:   # who starts first
                process, url = start_hub(upstream, folder / f"{done}-{label[:4]}.db",
                                         HUB_ENV, root=root)
                processes.append(process)
                started_hubs[label] = (process, url)
            hubs = {label: started_hubs[label] for label, _ in trees}
            count = min(BLOCKS_PER_PROCESS, blocks - done)
            values = compare(hubs, count, per_block, values)
            stop(processes)
            done += count
        print(f"({blocks} blocks of {per_block} requests a figure and tree, hubs started "
              f"afresh every {BLOCKS_PER_PROCESS}, {time.monotonic() - started:.0f} s)")
        return rows(values, "this tree", ref)
    finally:
        stop(processes)
        if fake is not None:
            fake.kill()
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                        str(folder / "ref")], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


HEADER = ["figure", "this tree", "REF", "difference", "spread (p25 … p75)"]


def stop(processes: list) -> None:
    """End the hub processes started so far (and forget them)."""
    while processes:
        process = processes.pop()
        process.terminate()
        process.wait(10)
