"""The web chat page in a real browser (headless Chromium over the DevTools pipe)."""

import sys
import threading

import pytest

from chromium import Chromium, find_chromium
from fake_lmstudio import Script
from test_runs import closed_port

BINARY = find_chromium()
pytestmark = [
    pytest.mark.skipif(BINARY is None, reason="no Chromium installed (Debian: apt-get install "
                                              "chromium); .ci/run installs it"),
    pytest.mark.skipif(sys.platform == "win32", reason="the DevTools pipe needs fds 3 and 4"),
]
NEVER = threading.Event()
LAST_REPLY = "document.querySelector('#messages .msg.assistant:last-child .body').textContent"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = Chromium.start(BINARY, tmp_path_factory.mktemp("profile"))
    yield chromium
    chromium.close()


def send(page, text: str, key: bool = True) -> None:
    page.wait_for("!document.querySelector('#send').disabled")
    page.type("#input", text)
    if key:
        page.press("Enter")
    else:
        page.click("#send")


def test_chat_stop_reload_and_injection(browser, make_hub, fake, tmp_path):
    hub = make_hub()
    page = browser.open(hub.url + "/")
    page.evaluate("localStorage.clear()")
    page.wait_for("document.querySelectorAll('#model option').length > 0")
    assert page.evaluate("document.querySelector('#model').value") == "qwen2.5-7b-instruct"

    # tokens appear one by one: the page shows the first two while the model still works
    release = threading.Event()
    fake.enqueue(Script(chunks=["Hello", " from", " the", " page"], hold_first=release,
                        hold_after=2))
    send(page, "First question")
    page.wait_for(f"{LAST_REPLY} === 'Hello from'")
    assert page.evaluate("!document.querySelector('#stop').disabled")     # Stop is live
    release.set()
    page.wait_for(f"{LAST_REPLY} === 'Hello from the page'")
    page.wait_for("document.querySelector('#stop').disabled")

    # Stop mid-stream: the upstream sees the abort, the page keeps the partial reply
    fake.enqueue(Script(chunks=["Partial", " never"], hold_first=NEVER, hold_after=1))
    send(page, "Second question", key=False)
    page.wait_for(f"{LAST_REPLY} === 'Partial'")
    page.click("#stop")
    assert fake.aborted.wait(2)
    page.wait_for("document.querySelector('#messages .msg.assistant:last-child')"
                  ".dataset.state === 'stopped'")
    assert page.text("#messages .msg.assistant:last-child .who").endswith("stopped")

    # reload: the thread is in the list, and opening it shows the whole conversation
    page.goto(hub.url + "/")
    page.wait_for("document.querySelectorAll('#thread-list button').length === 1")
    assert page.text("#thread-list button") == "First question"
    page.click("#thread-list button")
    page.wait_for("document.querySelectorAll('#messages .msg').length === 4")
    texts = page.evaluate("[...document.querySelectorAll('#messages .msg .body')]"
                          ".map(b => b.textContent)")
    assert texts == ["First question", "Hello from the page", "Second question", "Partial"]
    assert page.evaluate("document.querySelector('#messages .msg:last-child').dataset.state") \
        == "stopped"

    # model output is text: markup in it stays text, code blocks render safely
    attack = '<img src=x onerror="window.pwned=1"> and ```js\nalert(1)\n```'
    fake.enqueue(Script(chunks=[attack]))
    send(page, "Be evil")
    page.wait_for(f"{LAST_REPLY}.includes('and')")
    page.wait_for("document.querySelector('#stop').disabled")
    assert page.evaluate("document.querySelectorAll('#messages img').length") == 0
    assert page.evaluate("window.pwned === undefined")
    assert page.text("#messages .msg.assistant:last-child .body").startswith('<img src=x onerror=')
    assert page.text("#messages .msg.assistant:last-child pre code") == "alert(1)\n"
    shot = page.screenshot(tmp_path / "chat.png")
    assert shot.stat().st_size > 1000


def test_settings_errors_keyboard_and_phone_width(browser, make_hub, fake, tmp_path):
    hub = make_hub()
    page = browser.open(hub.url + "/")
    page.evaluate("localStorage.clear()")
    page.goto(hub.url + "/")
    page.wait_for("document.querySelectorAll('#model option').length > 0")

    # streamResponses off: a non-streaming request (POST /responses), kept in localStorage
    page.click("#stream-responses")
    assert page.evaluate("localStorage.getItem('streamResponses')") == "false"
    send(page, "No stream please")
    page.wait_for(f"{LAST_REPLY} === 'Hello from the fake!'")
    assert fake.chat_requests()[-1].body["stream"] is True        # the hub still streams up
    page.click("#stream-responses")

    # Esc stops a stream
    fake.enqueue(Script(chunks=["Esc", " never"], hold_first=NEVER, hold_after=1))
    send(page, "Stop me with Esc")
    page.wait_for(f"{LAST_REPLY} === 'Esc'")
    page.press("Escape")
    assert fake.aborted.wait(2)

    # phone width: the thread list folds away behind a button
    page.send("Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844,
                                                      "deviceScaleFactor": 2, "mobile": True})
    page.wait_for("getComputedStyle(document.querySelector('#toggle-threads')).display "
                  "!== 'none'")
    assert page.evaluate("getComputedStyle(document.querySelector('nav')).display") == "none"
    page.screenshot(tmp_path / "phone.png")
    page.send("Emulation.clearDeviceMetricsOverride")


def test_upstream_down_is_shown_in_the_page(browser, make_hub):
    hub = make_hub(upstream_url=f"http://127.0.0.1:{closed_port()}/v1")
    page = browser.open(hub.url + "/")
    page.wait_for("document.querySelector('#status').textContent.includes('models')")
    send(page, "Anyone there?")
    page.wait_for("document.querySelector('#status').textContent.includes('Could not "
                  "connect to LM Studio')")
    assert page.evaluate("document.querySelector('#messages .msg.assistant:last-child')"
                         ".dataset.state") == "failed"
