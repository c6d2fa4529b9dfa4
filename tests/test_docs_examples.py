"""The docs' examples run as written (issue 29), the way llama.cpp and Ollama keep theirs.

Every ```sh block of README.md and docs/**/*.md runs in bash, in order, one shell session per
file, against a hub on the project's own config.ini whose upstream is the fake LM Studio; curl
fails on any 4xx/5xx unless the block is marked as showing an error. Every ```powershell
twin runs through tests/powershell.py, in a session of its own against a second hub. A
block marked `<!-- example: not run (reason) -->` is only checked for a twin.
"""

import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from fake_lmstudio import FakeLMStudio, Relay
from llmhub.config import load_config
from llmhub.http.server import make_server
from llmhub.hub import Hub
from powershell import PowerShellError, Session

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
        *sorted((ROOT / "bench").glob("*.md"))]
ADDRESS = re.compile(r"(?:127\.0\.0\.1|localhost):8000")
MARK = re.compile(r"<!--\s*example:\s*(error|not run)\b[^>]*-->")
# Models the shipped config.ini names, so its aliases resolve on the fake as on a real box.
MODELS = ["qwen2.5-14b-instruct", "qwen2.5-32b-instruct", "qwen2.5-72b-instruct",
          "qwen3-vl-4b-instruct", "qwen/qwen3-4b-2507", "qwen2.5-7b-instruct",
          "text-embedding-nomic-embed-text-v1.5"]


@dataclass
class Block:
    path: Path
    line: int
    lang: str
    text: str
    mark: str | None        # "error", "not run" or None

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, each with the marker on the line before it."""
    out, lines = [], path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^(\s*)(```+)(\w*)", lines[i])
        if not fence:
            i += 1
            continue
        indent, ticks, lang = fence[1], fence[2], fence[3]
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == ticks)
        mark = MARK.search(lines[i - 1]) if i else None
        text = "\n".join(line[len(indent):] for line in lines[i + 1:end])
        twin_of = out[-1] if out and lang == "powershell" and out[-1].lang == "sh" else None
        inherited = twin_of.mark if twin_of else None    # a twin shares its curl's marker
        out.append(Block(path, i + 1, lang, text, mark[1] if mark else inherited))
        i = end + 1
    return out


def calls_hub(block: Block) -> bool:
    return block.lang == "sh" and "curl " in block.text and bool(ADDRESS.search(block.text))


def with_examples() -> list[Path]:
    return [p for p in DOCS if any(b.lang in ("sh", "powershell") for b in blocks(p))]


# --- the hub the examples talk to ----------------------------------------------------------

def serve(tmp_path: Path, fake: FakeLMStudio, name: str):
    config = load_config(flags={"port": 0, "db": tmp_path / f"{name}.db", "kind": "lmstudio",
                                "upstream": fake.url, "log_level": "warning"},
                         env={}, path=ROOT / "config.ini")
    server = make_server(Hub(config), raise_errors=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def hubs(tmp_path):
    fake = FakeLMStudio().start()
    fake.models = list(MODELS)
    fake.relays.update({
        "/v1/rerank": Relay(body=b'{"results": [{"index": 1, "relevance_score": 0.98}]}'),
        "/tokenize": Relay(body=b'{"tokens": [9707, 1879]}'),
        "/detokenize": Relay(body=b'{"content": "Hello world"}'),
        "/v1/audio/transcriptions": Relay(body=b'{"text": "Hello."}'),
        "/v1/audio/translations": Relay(body=b'{"text": "Hello."}'),
        "/v1/audio/speech": Relay(body=b"ID3", content_type="audio/mpeg"),
        "/v1/images/generations": Relay(body=b'{"created": 1, "data": [{"b64_json": "iVBO"}]}'),
        "/v1/images/edits": Relay(body=b'{"created": 1, "data": [{"b64_json": "iVBO"}]}'),
    })
    started = [serve(tmp_path, fake, "sh"), serve(tmp_path, fake, "powershell")]
    yield [f"127.0.0.1:{server.server_address[1]}" for server, _ in started]
    for server, thread in started:
        server.stop(grace=2)
        server.hub.close()
        thread.join(5)
    fake.stop()


def workdir(tmp_path: Path, name: str) -> Path:
    """An empty folder with the small files the examples upload."""
    folder = tmp_path / name
    folder.mkdir()
    for sample in ("hello.wav", "bonjour.wav"):
        (folder / sample).write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    (folder / "cat.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    return folder


# --- the tests -----------------------------------------------------------------------------

def shell_script(path: Path, address: str) -> str:
    parts = ["set -eo pipefail",
             'hub_curl() { command curl --fail-with-body -sS "$@"; }',
             'error_curl() { command curl -sS "$@"; }',
             "curl() { hub_curl \"$@\"; }"]
    for block in blocks(path):
        if block.lang != "sh" or block.mark == "not run":
            continue
        parts.append(f"echo '@@ example {block}' >&2")
        if block.mark == "error":
            parts.append('curl() { error_curl "$@"; }')
        parts.append(ADDRESS.sub(address, block.text))
        parts.append('curl() { hub_curl "$@"; }')
        parts.append("echo")
    return "\n".join(parts) + "\n"


@pytest.mark.skipif(not shutil.which("bash") or not shutil.which("curl"),
                    reason="needs bash and curl")
@pytest.mark.parametrize("path", with_examples(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_examples_run_as_written(path, hubs, tmp_path):
    script = shell_script(path, hubs[0])
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run(["bash", "-c", script], cwd=workdir(tmp_path, "sh"), env=env,
                          capture_output=True, timeout=240)
    err = done.stderr.decode("utf-8", "replace")
    failed = (re.findall(r"@@ example (\S+)", err) or ["(before the first)"])[-1]
    assert done.returncode == 0, (f"the example at {failed} failed "
                                  f"({done.returncode}):\n{err[-2000:]}\n"
                                  f"{done.stdout.decode('utf-8', 'replace')[-1500:]}")


@pytest.mark.parametrize("path", with_examples(), ids=lambda p: str(p.relative_to(ROOT)))
def test_powershell_twins_run_as_written(path, hubs, tmp_path):
    session = Session(workdir(tmp_path, "powershell"))
    for block in blocks(path):
        if block.lang != "powershell" or block.mark == "not run":
            continue
        session.allow_errors = block.mark == "error"
        try:
            session.run(ADDRESS.sub(hubs[1], block.text))
        except PowerShellError as error:
            pytest.fail(f"the PowerShell example at {block} failed: {error}")


@pytest.mark.parametrize("path", with_examples(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_curl_example_has_a_powershell_twin(path):
    found = blocks(path)
    lonely = [str(block) for block, after in zip(found, found[1:] + [None])
              if calls_hub(block) and (after is None or after.lang != "powershell")]
    assert not lonely, f"curl examples without a PowerShell twin right after: {lonely}"


def test_the_powershell_reader_refuses_what_it_cannot_check(tmp_path):
    """A twin outside the subset fails, instead of passing unread."""
    session = Session(tmp_path)
    with pytest.raises(PowerShellError):
        session.run("Invoke-WebRequest http://127.0.0.1:1/ -UseBasicParsing")
    with pytest.raises(PowerShellError):
        session.run("Invoke-RestMethod http://127.0.0.1:1/ -TimeoutSec 5")
    session.run("$body = @'\n{\"a\": \"\u043f\u0440\u0438\u0432\u0435\u0442\"}\n'@")
    assert session.value("([Text.Encoding]::UTF8.GetBytes($body))") == \
        '{"a": "\u043f\u0440\u0438\u0432\u0435\u0442"}'.encode("utf-8")


def test_the_docs_have_examples_that_are_run():
    """The runner must find the examples, or every test above passes on nothing."""
    readme = blocks(ROOT / "README.md")
    assert sum(calls_hub(b) and b.mark != "not run" for b in readme) >= 3
    assert sum(b.lang == "powershell" for b in readme) >= 3
