"""OpenAI's Codex CLI (`codex exec`) through the hub's Responses API, on Codex's default
provider settings: a custom `[model_providers]` entry with `wire_api = "responses"` and a key
from an environment variable (docs/clients.md's snippet). The fake LM Studio scripts every answer:
first a call to Codex's own shell tool (`exec_command`), which Codex really runs, then the
final text. Skipped when no Codex binary is found: LLMHUB_CODEX, else `codex` on PATH, else
the npm prefix .ci/run installs it to."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fake_lmstudio import Script

CI_PREFIX = Path.home() / ".cache" / "llmhub-ci" / "codex"
MODEL = "qwen2.5-7b-instruct"           # the fake's loaded model
KEY_ENV = "LLMHUB_CODEX_TEST_KEY"
TIMEOUT = 120                           # seconds for one `codex exec`; a run takes a few


def codex_binary() -> str | None:
    given = os.environ.get("LLMHUB_CODEX")
    if given:
        return given
    found = shutil.which("codex")
    if found:
        return found
    ci = CI_PREFIX / "node_modules" / ".bin" / "codex"
    return str(ci) if ci.exists() else None


def codex_or_skip() -> str:
    binary = codex_binary()
    if binary is None:
        pytest.skip("Codex CLI not found (set LLMHUB_CODEX, put `codex` on PATH, or let "
                    ".ci/run install @openai/codex)")
    try:
        version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                 timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"Codex CLI at {binary} does not run: {error}")
    if version.returncode != 0:
        pytest.skip(f"Codex CLI at {binary} does not run: {version.stderr.strip()[:200]}")
    return binary


def codex_home(path: Path, base_url: str, extra: str = "") -> Path:
    """A CODEX_HOME whose config.toml points at the hub, as docs/clients.md's snippet does."""
    path.mkdir()
    (path / "config.toml").write_text(f'''
model = "{MODEL}"
model_provider = "llmhub"

[model_providers.llmhub]
name = "llmhub"
base_url = "{base_url}"
env_key = "{KEY_ENV}"
wire_api = "responses"
{extra}''', encoding="utf-8")
    return path


def run_codex(binary: str, home: Path, workdir: Path, prompt: str):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CODEX_", "OPENAI_", "LLMHUB_CODEX"))}
    env.update(CODEX_HOME=str(home), HOME=str(home), **{KEY_ENV: "sk-local-test"})
    # The hub is what is under test, not Codex's sandbox (bubblewrap needs user
    # namespaces, which some CI boxes lack); the only command run is the scripted one.
    return subprocess.run(
        [binary, "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox",
         "--color", "never", "-C", str(workdir), prompt],
        cwd=workdir, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=TIMEOUT)


def test_codex_exec_runs_its_shell_tool_through_the_hub(make_hub, fake, tmp_path):
    binary = codex_or_skip()
    hub = make_hub()
    workdir = tmp_path / "work"
    workdir.mkdir()
    target = workdir / "made-by-codex.txt"
    command = f"echo codex-was-here > {target.name} && echo wrote-it"
    fake.enqueue(
        Script(chunks=[], tool_calls=[{"id": "call_codex_1", "name": "exec_command",
                                       "arguments": json.dumps({"cmd": command})}]),
        Script(chunks=["The file", " is made."]))
    home = codex_home(tmp_path / "codex-home", hub.url + "/v1")

    done = run_codex(binary, home, workdir, "Create the file made-by-codex.txt.")

    report = f"codex exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    assert target.read_text().strip() == "codex-was-here", report      # Codex ran its tool
    assert "The file is made." in done.stdout, report

    chats = fake.chat_requests()
    assert len(chats) == 2, report
    first, second = chats[0].body, chats[1].body
    # Codex's tools went upstream as chat functions, its shell tool among them as it is.
    functions = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert "cmd" in functions["exec_command"]["parameters"]["properties"]
    # The second turn carries the call and its result, paired by id.
    messages = second["messages"]
    calls = [c for m in messages if m["role"] == "assistant" for c in m.get("tool_calls") or ()]
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] \
        == [("exec_command", {"cmd": command})]
    results = [m for m in messages if m["role"] == "tool"]
    assert len(results) == 1 and results[0]["tool_call_id"] == calls[0]["id"]
    assert "wrote-it" in str(results[0]["content"])
    # The first turn's messages come first again: the conversation is replayed whole.
    assert messages[:len(first["messages"])] == first["messages"]


def test_codex_applies_a_patch_through_its_custom_tool(make_hub, fake, tmp_path):
    """Named like an OpenAI model, Codex sends `apply_patch` as a custom tool with a
    grammar (and tool_search, web_search, which the hub leaves out): the model's call comes
    back as a custom_tool_call, Codex applies the patch, and its custom_tool_call_output
    goes back to the model as the tool's result."""
    binary = codex_or_skip()
    hub = make_hub({"aliases": {"gpt-5.5": MODEL}})
    workdir = tmp_path / "work"
    workdir.mkdir()
    patch = "*** Begin Patch\n*** Add File: patched.txt\n+patched by codex\n*** End Patch\n"
    fake.enqueue(
        Script(chunks=[], tool_calls=[{"id": "call_patch_1", "name": "apply_patch",
                                       "arguments": json.dumps({"input": patch})}]),
        Script(chunks=["Patched."]))
    home = codex_home(tmp_path / "codex-home", hub.url + "/v1").joinpath("config.toml")
    home.write_text(home.read_text().replace(f'model = "{MODEL}"', 'model = "gpt-5.5"'))

    done = run_codex(binary, home.parent, workdir, "Add patched.txt.")

    report = f"codex exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    assert (workdir / "patched.txt").read_text().strip() == "patched by codex", report
    first, second = (r.body for r in fake.chat_requests())
    tool = next(t["function"] for t in first["tools"] if t["function"]["name"] == "apply_patch")
    assert tool["parameters"]["required"] == ["input"], report
    assert not {"tool_search", "web_search"} & {t["function"]["name"] for t in first["tools"]}
    calls = [c for m in second["messages"] for c in m.get("tool_calls") or ()]
    assert json.loads(calls[0]["function"]["arguments"]) == {"input": patch}, report
    results = [m for m in second["messages"] if m["role"] == "tool"]
    assert results[0]["tool_call_id"] == "call_patch_1" and results[0]["content"], report


def test_codex_with_websockets_on_falls_back_to_http_at_once(make_hub, fake, tmp_path):
    """`supports_websockets = true` makes Codex try a WebSocket upgrade of /v1/responses
    first. The hub answers it 426 Upgrade Required, on which Codex goes over to HTTP at
    once; any other refusal (404, 405) makes it retry the upgrade five times with backoff
    ("Reconnecting... n/5", seconds) before it falls back."""
    binary = codex_or_skip()
    hub = make_hub()
    workdir = tmp_path / "work"
    workdir.mkdir()
    fake.enqueue(Script(chunks=["Over", " HTTP."]))
    home = codex_home(tmp_path / "codex-home", hub.url + "/v1", "supports_websockets = true\n")

    done = run_codex(binary, home, workdir, "Say hi.")

    report = f"codex exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0 and "Over HTTP." in done.stdout, report
    assert "Reconnecting" not in done.stderr, report
    assert len(fake.chat_requests()) == 1, report
