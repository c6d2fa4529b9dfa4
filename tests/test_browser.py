"""The web chat page in a real browser (headless Chromium over the DevTools pipe).

Each test drives the page as a user would, against the fake LM Studio, and checks what the
user sees and what reached the model server. Screenshots at 1280×800 and 390×844, light and
dark, are written to tests/screenshots/ for a person to look at.
"""

import json
import sys
import threading
from pathlib import Path

import pytest

from chromium import Chromium, find_chromium
from fake_lmstudio import Script
from http_client import call
from test_runs import closed_port

BINARY = find_chromium()
pytestmark = [
    pytest.mark.skipif(BINARY is None, reason="no Chromium installed (Debian: apt-get install "
                                              "chromium); .ci/run installs it"),
    pytest.mark.skipif(sys.platform == "win32", reason="the DevTools pipe needs fds 3 and 4"),
]
NEVER = threading.Event()
SHOTS = Path(__file__).resolve().parent / "screenshots"
LAST = "document.querySelector('#messages .msg.assistant:last-of-type')"
LAST_REPLY = f"{LAST}.querySelector('.body').textContent"
IDLE = "!document.querySelector('#send').disabled && !document.querySelector('.msg.live')"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = Chromium.start(BINARY, tmp_path_factory.mktemp("profile"))
    yield chromium
    chromium.close()


def fresh(browser, hub, path: str = "/"):
    page = browser.open(hub.url + "/")
    page.evaluate("localStorage.clear()")
    page.goto(hub.url + path)
    page.wait_for("document.querySelectorAll('#model option').length > 0")
    return page


def send(page, text: str, key: bool = True) -> None:
    page.wait_for(IDLE)
    page.type("#input", text)
    if key:
        page.press("Enter")
    else:
        page.click("#send")


def shown(page) -> list:
    return page.evaluate("[...document.querySelectorAll('#messages .msg .body')]"
                         ".map(b => b.textContent)")


def thread_of(page) -> str:
    return page.evaluate("decodeURIComponent(location.pathname.slice(3))")


# --- send, stream, stop, reload --------------------------------------------------------------

def test_tokens_stream_and_stop_stops_the_model_in_both_modes(browser, make_hub, fake):
    hub = make_hub()
    page = fresh(browser, hub)
    release = threading.Event()
    fake.enqueue(Script(chunks=["Hello", " from", " the", " page"], hold_first=release,
                        hold_after=2))
    send(page, "First question")
    page.wait_for(f"{LAST_REPLY} === 'Hello from'")            # tokens, as they come
    assert page.evaluate("!document.querySelector('#stop').disabled")
    assert page.evaluate("location.pathname").startswith("/c/conv_")   # a URL per chat
    release.set()
    page.wait_for(IDLE)
    assert shown(page) == ["First question", "Hello from the page"]
    assert "qwen2.5-7b-instruct" in page.text(f"#messages .msg.assistant .stats")
    assert "4 tokens" in page.text("#messages .msg.assistant .stats")
    assert page.evaluate("document.activeElement.id") == "input"   # focus stays for typing

    # Stop while streaming: the model server sees the abort; what came is kept, marked
    fake.enqueue(Script(chunks=["Partial", " never"], hold_first=NEVER, hold_after=1))
    send(page, "Second question", key=False)
    page.wait_for(f"{LAST_REPLY} === 'Partial'")
    page.click("#stop")
    assert fake.aborted.wait(5)
    page.wait_for(f"{LAST}.dataset.state === 'stopped' && {IDLE}")
    assert page.text(f"#messages .msg.assistant:last-of-type .who").endswith("stopped")

    # Stop with streaming off: /chat/cancel, and the stored partial answer, marked stopped
    fake.aborted.clear()
    page.evaluate("document.querySelector('#stream-responses').click()")
    assert page.evaluate("localStorage.getItem('streamResponses')") == "false"
    fake.enqueue(Script(chunks=["Half", " an answer", " never"], hold_first=NEVER,
                        hold_after=2))
    send(page, "Third question")
    assert fake.wait_requests(3)
    page.wait_for("document.querySelector('.msg.live .typing')")   # no tokens shown
    page.click("#stop")
    assert fake.aborted.wait(5)
    page.wait_for(f"{LAST}.dataset.state === 'stopped' && {IDLE}")
    assert shown(page)[-1] == "Half an answer"
    stored = call(hub.url, "GET", f"/v1/threads/{thread_of(page)}/messages")[2]
    assert stored[-1]["content"] == "Half an answer"
    assert stored[-1]["metadata"]["status"] == "cancelled"


def test_a_reload_or_a_thread_switch_mid_stream_does_not_cancel(browser, make_hub, fake):
    hub = make_hub()
    page = fresh(browser, hub)
    release = threading.Event()
    fake.enqueue(Script(chunks=["Still", " here", " after", " all"], hold_first=release,
                        hold_after=1))
    send(page, "Survive a reload")
    page.wait_for(f"{LAST_REPLY} === 'Still'")
    url = page.evaluate("location.href")
    page.goto(url)                                         # reload: re-attached, not cancelled
    page.wait_for("document.querySelector('.msg.live') && "
                  "document.querySelector('.msg.live .body').textContent === 'Still'")
    assert page.evaluate("!document.querySelector('#stop').disabled")
    page.click("#new-thread")                              # away, while it streams
    page.wait_for("location.pathname === '/' && !document.querySelector('.msg')")
    release.set()
    assert fake.chat_requests()[0].finished.wait(5)
    page.evaluate("history.back()")                        # back/forward reopen it
    page.wait_for(f"{IDLE} && document.querySelectorAll('.msg').length === 2")
    assert shown(page) == ["Survive a reload", "Still here after all"]
    assert not fake.chat_requests()[0].aborted
    page.evaluate("history.forward()")
    page.wait_for("location.pathname === '/' && !document.querySelector('.msg')")
    page.goto(url)                                         # a bookmark opens the chat
    page.wait_for("document.querySelectorAll('.msg').length === 2")
