"""Instructions a request: the hub's CPU work counted, not timed.

    python -m bench --instructions [REF]

The hub runs under valgrind's callgrind, which counts the instructions the process executes
in user space: no kernel, no waiting, no other process. The count of a request repeats to
within about 1% from run to run, where the CPU time `--ab` reads swings by 10% on a shared
machine; so a change that saves 1% of a request shows in one run, and the figure to judge
a hot-path change by is this one (then `--ab` and the load rows for what it does to time).
What it does not see: system calls' own cost in the kernel, and waiting (for the GIL, a
lock, a socket), which the load rows measure.

Each tree (this one, and REF if given, checked out in a temporary worktree) gets one hub
under callgrind, against the instant fake. After a warm-up, each figure zeroes the counts
(`callgrind_control --zero`), makes its requests over one keep-alive connection, and dumps
the counts (`callgrind_control --dump`):

- instructions a non-streaming chat request;
- instructions a streamed chat request (read to its end);
- instructions a chunk of a 500-chunk stream (the relay path; the stream's own request is
  spread over its chunks, as in `--ab`);
- instructions a chunk of a 500-chunk non-streaming reply (the upstream call is a stream
  all the same: what each of a non-streaming request's chunks costs, without the relay);
- instructions a chunk of a 500-chunk `/v1/responses` stream (`store: false`, as Codex
  sends) and of a `/v1/messages` stream (as Claude Code reads): the other dialects'
  renderers, which encode every token's event rather than relay it;
- instructions a streamed turn of a coding agent some way into its session (bench/dialects.py
  `CODEX` and `CLAUDE`: 55 KB of instructions, tools and history), through `/v1/responses`
  and `/v1/messages`: what the hub's work grows to with the body.

The counts include the hub's background threads (a deadlines tick, the hangup watch) for the
time the requests take, which under valgrind is ~50 times longer than without: a few
thousand instructions a request at most. Needs valgrind (Linux: `apt install valgrind`).
"""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench import ab, run
from bench.ab import stop, worktree
from bench.dialects import CLAUDE, CODEX
from bench.run import BODY, Client, start_fake

ROOT = Path(__file__).resolve().parent.parent
LONG = 500
# (figure, how many, what each is): a non-streaming request costs ~1.5 million
# instructions, which valgrind runs at a few thousand requests a minute.
FIGURES = (("non-stream instructions/request", 100, lambda c: c.complete()),
           ("streamed instructions/request", 100,
            lambda c: c.post(dict(BODY, stream=True)).read()),
           (f"{LONG}-chunk stream instructions/chunk", 5, lambda c: c.relay(LONG)),
           (f"{LONG}-chunk reply instructions/chunk", 5,
            lambda c: c.complete(dict(BODY, model=f"fake-chunks-{LONG}"))),
           (f"/v1/responses {LONG}-chunk stream instructions/chunk", 3,
            lambda c: c.post({"model": f"fake-chunks-{LONG}", "input": "Hello!", "store": False,
                              "stream": True}, "/responses").read()),
           (f"/v1/messages {LONG}-chunk stream instructions/chunk", 3,
            lambda c: c.post(dict(BODY, model=f"fake-chunks-{LONG}", max_tokens=4096,
                                  stream=True), "/messages").read()),
           ("/v1/responses agent's turn (55 KB) instructions/request", 10,
            lambda c: c.post(dict(CODEX, stream=True), "/responses").read()),
           ("/v1/messages agent's turn (55 KB) instructions/request", 10,
            lambda c: c.post(dict(CLAUDE, stream=True), "/messages").read()))
HEADER = ["figure", "this tree", "REF", "difference"]


def available() -> bool:
    return shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None


def start_counted_hub(root: Path, upstream: str, folder: Path) -> tuple[subprocess.Popen, str]:
    """A hub from the tree at `root`, under callgrind (which writes its dumps to `folder`)."""
    process = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder / 'cg.out'}",
         run.HUB_PYTHON, str(root / "main.py"),
         "--port", "0", "--upstream", upstream, "--db", str(folder / "hub.db"),
         "--log-level", "error"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True, cwd=root, env={**os.environ, **run.HUB_ENV, **ab.HUB_ENV})
    line = process.stdout.readline()
    if " listening on " not in line:
        process.kill()
        raise RuntimeError(f"the hub under valgrind did not start: {line!r}")
    return process, line.split(" listening on ", 1)[1].split(" ", 1)[0]


def counted(pid: int, folder: Path, work) -> int:
    """Instructions the process `pid` executed while `work()` ran."""
    subprocess.run(["callgrind_control", "--zero", str(pid)], check=True,
                   capture_output=True)
    work()
    before = set(folder.glob("cg.out*"))
    subprocess.run(["callgrind_control", "--dump", str(pid)], check=True,
                   capture_output=True)
    [dump] = set(folder.glob("cg.out*")) - before
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no total in {dump}")


def measure(root: Path, upstream: str) -> dict:
    """{figure: instructions} for the hub of the tree at `root`."""
    folder = Path(tempfile.mkdtemp(prefix="llmhub-ir-"))
    process = None
    try:
        process, url = start_counted_hub(root, upstream, folder)
        client = Client(url + "/v1")
        for _ in range(20):                     # the first requests import and compile
            client.complete()
            client.post(dict(BODY, stream=True)).read()
        client.relay(LONG)
        values = {}
        for name, count, call in FIGURES:
            total = counted(process.pid, folder, lambda: [call(client) for _ in range(count)])
            values[name] = total / count / (LONG if "chunk" in name else 1)
        client.conn.close()
        return values
    finally:
        if process is not None:
            stop([process])
        shutil.rmtree(folder, ignore_errors=True)


def main(ref: str | None = None) -> list[list]:
    if not available():
        raise SystemExit("--instructions needs valgrind (Linux: apt install valgrind)")
    fake, upstream = start_fake()
    folder = Path(tempfile.mkdtemp(prefix="llmhub-ir-ref-"))
    try:
        started = time.monotonic()
        this = measure(ROOT, upstream)
        other = measure(worktree(ref, folder), upstream) if ref else None
        print(f"(counted by callgrind, {time.monotonic() - started:.0f} s)")
    finally:
        fake.kill()
        if ref:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(folder / "ref")], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
    rows = []
    for name, _, _ in FIGURES:
        a = this[name]
        if other is None:
            rows.append([name, f"{a:,.0f}"])
        else:
            b = other[name]
            rows.append([name, f"{a:,.0f}", f"{b:,.0f}", f"{a - b:+,.0f} ({(a - b) / b:+.1%})"])
    return rows
