"""The official npm `ollama` client (ollama-js) through the hub's Ollama API: list, a
streamed chat, a tool call with object arguments, and errors that print as strings (an
object there shows as `[object Object]`, which is what Ollama clients met before the
dialect). Skipped without node or the package: LLMHUB_OLLAMA_JS names a folder holding
node_modules/ollama, else the npm prefix .ci/run installs it to."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fake_lmstudio import Script

CI_PREFIX = Path.home() / ".cache" / "llmhub-ci" / "ollama-js"
MODEL = "qwen2.5-7b-instruct"

SCRIPT = r"""
const { Ollama } = require(process.env.OLLAMA_JS)
const ollama = new Ollama({ host: process.env.HUB })
const say = (step, value) => console.log(JSON.stringify({ step, value }))
const weather = { type: 'function', function: { name: 'get_weather', parameters: {
  type: 'object', properties: { city: { type: 'string' } } } } }
async function main () {
  say('list', (await ollama.list()).models.map(m => m.name))
  let text = ''
  let last = null
  for await (const part of await ollama.chat({ model: process.env.MODEL, stream: true,
      messages: [{ role: 'user', content: 'hi' }] })) {
    text += part.message.content
    last = part
  }
  say('chat', { text, done: last.done, reason: last.done_reason, evals: last.eval_count })
  const called = await ollama.chat({ model: process.env.MODEL, tools: [weather],
    messages: [{ role: 'user', content: 'Weather in Oslo?' }] })
  say('tool', called.message.tool_calls)
  for (const ask of [
    () => ollama.chat({ model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] }),
    () => ollama.show({ model: 'no-such-model' })]) {
    try {
      await ask()
      say('error', null)
    } catch (error) {
      say('error', { message: String(error.message), status: error.status_code })
    }
  }
}
main().catch(error => { say('crash', String(error)); process.exit(1) })
"""


def ollama_js() -> Path | None:
    given = os.environ.get("LLMHUB_OLLAMA_JS")
    for folder in ([Path(given)] if given else []) + [CI_PREFIX]:
        package = folder / "node_modules" / "ollama"
        if (package / "package.json").exists():
            return package
    return None


@pytest.fixture
def run_js(hub, tmp_path):
    package, node = ollama_js(), shutil.which("node")
    if package is None or node is None:
        pytest.skip("node or the npm ollama package not found (set LLMHUB_OLLAMA_JS, or let "
                    ".ci/run install it)")
    hub.hub.engine.prober.probe_all()
    script = tmp_path / "client.cjs"
    script.write_text(SCRIPT, encoding="utf-8")

    def run() -> dict:
        done = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "OLLAMA_JS": str(package), "HUB": hub.url,
                                   "MODEL": MODEL})
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        assert done.returncode == 0, (done.stdout, done.stderr)
        steps: dict = {}
        for line in lines:
            steps.setdefault(line["step"], []).append(line["value"])
        return steps
    return run


def test_ollama_js_lists_chats_calls_tools_and_reads_errors_as_strings(run_js, fake):
    fake.enqueue(Script(), Script(chunks=[], tool_calls=[
        {"id": "c1", "name": "get_weather", "arguments": '{"city": "Oslo"}'}]))
    steps = run_js()
    assert f"{MODEL}:latest" in steps["list"][0]
    assert steps["chat"] == [{"text": "Hello from the fake!", "done": True, "reason": "stop",
                              "evals": 5}]
    assert steps["tool"][0][0]["function"] == {"index": 0, "name": "get_weather",
                                               "arguments": {"city": "Oslo"}}
    for error in steps["error"]:
        assert error["status"] == 404
        assert error["message"] == 'model "no-such-model" not found, try pulling it first'
