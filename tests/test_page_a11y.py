"""The chat page and the runs page pass an axe-style check (tests/a11y_check.js: roles,
accessible names, unique ids, table headers, text contrast 4.5:1) in light and dark, at
desktop and phone sizes, with no network; and each state is screenshotted to
tests/screenshots/ for a person to look at."""

from pathlib import Path

import pytest

from chromium import NEEDS_CHROMIUM
from fake_lmstudio import Script
from http_client import call

pytestmark = NEEDS_CHROMIUM
CHECK = (Path(__file__).resolve().parent / "a11y_check.js").read_text(encoding="utf-8")
SHOTS = Path(__file__).resolve().parent / "screenshots"
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
REPLY = ("# Heading\n\nSome **bold** text and `code`, a [link](https://example.com):\n\n"
         "- one\n- two\n\n```python\nprint('hello')\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |")


def look(page, size: str, theme: str) -> None:
    width, height = SIZES[size]
    page.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                     "deviceScaleFactor": 1,
                                                     "mobile": size == "phone"})
    page.send("Emulation.setEmulatedMedia", {"features": [
        {"name": "prefers-color-scheme", "value": theme}]})


def violations(page) -> list:
    return page.evaluate(CHECK)


@pytest.fixture
def chat(make_hub, fake):
    """A hub with one chat in it: a question and a rich Markdown answer, and a request in
    the log for the runs page."""
    hub = make_hub()
    fake.enqueue(Script(chunks=[REPLY]))
    conversation = call(hub.url, "POST", "/v1/conversations", {})[2]["id"]
    status, _, _ = call(hub.url, "POST", "/v1/responses", {
        "model": "m", "conversation": conversation,
        "input": [{"type": "message", "role": "user",
                   "content": "Show me Markdown\n\n````notes.txt\nfirst line\nsecond\n````"}]})
    assert status == 200
    return hub, conversation


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_chat_page_passes_the_checks_in_each_look(browser, chat, size, theme):
    hub, conversation = chat
    page = browser.open(hub.url + "/")
    page.evaluate("localStorage.clear()")
    look(page, size, theme)
    page.goto(f"{hub.url}/c/{conversation}")
    page.wait_for("document.querySelectorAll('#messages .msg').length === 2 && "
                  "document.querySelectorAll('#model option').length > 0")
    SHOTS.mkdir(exist_ok=True)
    shot = page.screenshot(SHOTS / f"a11y-chat-{size}-{theme}.png")
    found = violations(page)
    if size == "phone":                   # the drawer, open over its backdrop
        page.click("#toggle-threads")
        page.wait_for("document.body.classList.contains('show-threads')")
        page.screenshot(SHOTS / f"a11y-chat-{size}-{theme}-drawer.png")
        found += violations(page)
        page.click("#toggle-threads")
    page.click("#open-settings")
    page.wait_for("!document.querySelector('#settings').hidden")
    page.screenshot(SHOTS / f"a11y-chat-{size}-{theme}-settings.png")
    found += violations(page)
    page.send("Emulation.clearDeviceMetricsOverride")
    print(f"screenshots: {shot.parent}")
    assert not found, found


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_runs_page_passes_the_checks_in_each_look(browser, chat, size, theme):
    hub, _ = chat
    page = browser.open(hub.url + "/runs")
    look(page, size, theme)
    page.goto(hub.url + "/runs")
    page.wait_for("document.querySelectorAll('#log tbody tr.record').length === 1 && "
                  "document.querySelectorAll('#chart rect').length === 24")
    SHOTS.mkdir(exist_ok=True)
    shot = page.screenshot(SHOTS / f"a11y-runs-{size}-{theme}.png")
    found = violations(page)
    page.send("Emulation.clearDeviceMetricsOverride")
    print(f"screenshots: {shot.parent}")
    assert not found, found


def test_the_checker_finds_what_it_looks_for(browser, hub):
    """The checker itself: a page with one fault of each kind is caught on each."""
    page = browser.open(hub.url + "/runs")
    page.evaluate("""(() => {
      document.body.insertAdjacentHTML('beforeend', '<div id="bad">' +
        '<button></button><img src="/favicon.ico"><span role="bogus">x</span>' +
        '<p style="color:#999;background:#fff">faint</p><table><tr><td>1</td></tr></table>' +
        '<i id="api-key"></i></div>'); })()""")
    rules = {v["rule"] for v in violations(page)}
    assert {"name", "image-alt", "aria-roles", "color-contrast", "table-headers",
            "duplicate-id"} <= rules, rules


def test_on_a_phone_settings_are_44_px_and_the_drawer_has_a_backdrop_that_closes_it(
        browser, hub):
    page = browser.open(hub.url + "/")
    look(page, "phone", "light")
    page.goto(hub.url + "/")
    page.wait_for("document.querySelectorAll('#model option').length > 0")
    page.click("#open-settings")
    page.wait_for("!document.querySelector('#settings').hidden")
    fields = "#settings input, #settings select, #settings textarea, #settings label.check"
    heights = page.evaluate(f"""[...document.querySelectorAll('{fields}, #to-runs')]
      .filter(e => e.type !== 'checkbox')
      .map(e => [e.id || e.className, e.getBoundingClientRect().height])""")
    assert all(height >= 44 for _, height in heights), heights
    box = page.evaluate("document.querySelector('#stream-responses').getBoundingClientRect()"
                        ".height")
    assert box >= 24                                      # in a 44 px row
    page.click("#open-settings")
    page.click("#toggle-threads")
    page.wait_for("getComputedStyle(document.querySelector('#drawer-backdrop')).display "
                  "=== 'block'")
    assert page.evaluate("getComputedStyle(document.querySelector('#drawer-backdrop'))"
                         ".backgroundColor") == "rgba(0, 0, 0, 0.45)"
    page.click("#drawer-backdrop")
    page.wait_for("!document.body.classList.contains('show-threads')")
    page.send("Emulation.clearDeviceMetricsOverride")
