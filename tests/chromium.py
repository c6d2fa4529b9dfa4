"""Headless Chromium driven over the DevTools protocol on --remote-debugging-pipe.

Standard library only. Chromium reads commands on fd 3 and writes replies on fd 4, each a
JSON message ended by a NUL byte. Putting our pipes at fds 3 and 4 takes a dup2 in the
child; `preexec_fn` is unsafe in a process with threads, so a tiny Python launcher does the
dup2 and then execs Chromium.

    browser = Chromium.start(binary, tmp_path)
    page = browser.open("http://127.0.0.1:8000/")
    page.wait_for("document.title === 'llmhub'")      # a MutationObserver, not a sleep
"""

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

LAUNCHER = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
            "os.execv(sys.argv[3], sys.argv[3:])")
FLAGS = ["--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
         "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-quic", "--window-size=1100,800"]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


class Chromium:
    def __init__(self, process, commands: int, replies: int) -> None:
        self.process = process
        self._out = os.fdopen(commands, "wb", buffering=0)
        self._in = os.fdopen(replies, "rb", buffering=0)
        self._next = 0
        self._replies: dict[int, dict] = {}
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    @classmethod
    def start(cls, binary: str, profile: Path) -> "Chromium":
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()
        process = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, str(to_chrome_r), str(from_chrome_w), binary,
             *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(to_chrome_r, from_chrome_w), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        return cls(process, to_chrome_w, from_chrome_r)

    def _read(self) -> None:
        buffer = b""
        while data := self._in.read(65536):
            buffer += data
            *messages, buffer = buffer.split(b"\0")
            with self._cond:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._replies[message["id"]] = message
                self._cond.notify_all()

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 15) -> dict:
        with self._cond:
            self._next += 1
            call_id = self._next
        message = {"id": call_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._out.write(json.dumps(message).encode() + b"\0")
        with self._cond:
            if not self._cond.wait_for(lambda: call_id in self._replies, timeout):
                raise TimeoutError(f"{method} got no reply in {timeout} s")
            reply = self._replies.pop(call_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def open(self, url: str, own_context: bool = False) -> "Page":
        """A new tab at url; own_context: in a browser context of its own, with no
        localStorage or cookies shared with the other tabs, as a second device has."""
        params = {"url": "about:blank"}
        if own_context:
            params["browserContextId"] = self.send("Target.createBrowserContext")[
                "browserContextId"]
        target = self.send("Target.createTarget", params)["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target,
                                                      "flatten": True})["sessionId"]
        page = Page(self, session)
        page.send("Page.enable")
        page.send("Runtime.enable")
        page.goto(url)
        return page

    def fresh(self, base: str, path: str = "/", models: bool = True) -> "Page":
        """The chat page with nothing kept from an earlier test (localStorage cleared),
        once its model list is in unless models is False."""
        page = self.open(base + "/")
        page.evaluate("localStorage.clear()")
        page.goto(base + path)
        if models:
            page.wait_for("document.querySelectorAll('#model option').length > 0")
        return page

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (OSError, TimeoutError, RuntimeError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Page:
    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser, self.session = browser, session

    def send(self, method: str, params: dict | None = None, timeout: float = 15) -> dict:
        return self.browser.send(method, params, self.session, timeout)

    def goto(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    def evaluate(self, expression: str, timeout: float = 15):
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, timeout)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def wait_for(self, condition: str, timeout: float = 5.0) -> None:
        """Resolve when `condition` (JavaScript) holds: checked on every DOM change."""
        script = f"""new Promise(resolve => {{
          const test = () => {{ try {{ return !!({condition}); }} catch (e) {{ return false; }} }};
          if (test()) return resolve(true);
          const observer = new MutationObserver(() => {{
            if (test()) {{ observer.disconnect(); clearTimeout(timer); resolve(true); }} }});
          observer.observe(document, {{subtree: true, childList: true, characterData: true,
                                      attributes: true}});
          const timer = setTimeout(() => {{ observer.disconnect(); resolve(test()); }},
                                   {int(timeout * 1000)});
        }})"""
        if not self.evaluate(script, timeout + 5):
            raise AssertionError(f"never true: {condition}\n{self.text('body')[:2000]}")

    def text(self, selector: str) -> str:
        return self.evaluate(f"(document.querySelector({json.dumps(selector)}) || "
                             "{textContent: ''}).textContent")

    def click(self, selector: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")

    def type(self, selector: str, text: str) -> None:
        self.evaluate(f"(() => {{ const el = document.querySelector({json.dumps(selector)}); "
                      f"el.focus(); el.value = {json.dumps(text)}; }})()")

    def press(self, key: str) -> None:
        codes = {"Enter": 13, "Escape": 27}
        for kind in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", {
                "type": kind, "key": key, "code": key,
                "windowsVirtualKeyCode": codes[key],
                **({"text": "\r"} if key == "Enter" and kind == "keyDown" else {})})

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        return path


# The marks of a test module that needs a real browser: skip where none can run.
NEEDS_CHROMIUM = [
    pytest.mark.skipif(find_chromium() is None, reason="no Chromium installed (Debian: apt-get "
                                                       "install chromium); .ci/run installs it"),
    pytest.mark.skipif(sys.platform == "win32", reason="the DevTools pipe needs fds 3 and 4"),
]
