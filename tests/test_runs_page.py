"""The live runs page (/runs) in a real browser: a run appears, its Cancel button stops
the model, and it shows in the request log."""

import json
import threading

from fake_lmstudio import Script
from http_client import call, open_stream
from chromium import NEEDS_CHROMIUM

pytestmark = NEEDS_CHROMIUM
NEVER = threading.Event()


def test_a_live_run_appears_is_cancelled_by_its_button_and_is_logged(browser, make_hub, fake):
    hub = make_hub({"keys": {"page": "sk-page-1"}})
    call(hub.url, "POST", "/v1/chat/completions", {"model": "m", "messages": [
        {"role": "user", "content": "warm up"}]}, headers={"Authorization": "Bearer sk-page-1"})
    page = browser.open(hub.url + "/runs")
    page.evaluate("localStorage.clear()")
    page.wait_for("document.querySelector('#problem').textContent.includes('needs a key')")
    page.type("#api-key", "sk-page-1")
    page.evaluate("document.querySelector('#api-key').dispatchEvent(new Event('change'))")
    page.wait_for("document.querySelectorAll('#log tbody tr').length === 1")
    assert "page" in page.text("#usage-key")                 # usage by key's name

    fake.enqueue(Script(chunks=["one", "two"], hold_first=NEVER, hold_after=1))
    conn, response = open_stream(hub.url, "/v1/chat/completions", {
        "model": "held", "stream": True, "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": "Bearer sk-page-1"})
    run_id = response.getheader("X-Run-Id")
    page.wait_for(f"!!document.querySelector('#live tr[data-run=\"{run_id}\"]')")
    page.click(f"#live tr[data-run=\"{run_id}\"] button.cancel")
    assert fake.aborted.wait(5)                               # the model really stopped
    page.wait_for(f"!document.querySelector('#live tr[data-run=\"{run_id}\"]')")
    page.wait_for("[...document.querySelectorAll('#log tbody tr')].some(r => "
                  f"r.textContent.includes('{run_id}') && r.textContent.includes('cancelled'))")
    conn.close()
    assert "sk-page-1" not in json.dumps(page.evaluate("document.body.innerText"))


def test_the_page_has_headed_tables_a_chart_a_way_to_the_chat_and_counts_cancelled_runs(
        browser, make_hub, fake):
    hub = make_hub()
    for word in ("one", "two"):
        call(hub.url, "POST", "/v1/chat/completions", {"model": "m", "messages": [
            {"role": "user", "content": word}]})
    fake.enqueue(Script(chunks=["one", "two"], hold_first=NEVER, hold_after=1))
    conn, response = open_stream(hub.url, "/v1/chat/completions", {
        "model": "held", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    run_id = response.getheader("X-Run-Id")
    assert call(hub.url, "POST", f"/v1/runs/{run_id}/cancel")[2]["status"] == "cancelled"
    conn.close()
    page = browser.open(hub.url + "/runs")
    page.wait_for("document.querySelectorAll('#log tbody tr.record').length === 3")
    row = page.evaluate("[...document.querySelectorAll('#log tbody tr')].find(r => "
                        f"r.textContent.includes('{run_id}')).lastChild.textContent")
    assert "?" not in row and "→" in row and row.endswith("~")   # counted, as an estimate
    headers = page.evaluate("[...document.querySelectorAll('table')].map(t => "
                            "[...t.querySelectorAll('thead th[scope=col]')].length)")
    assert all(count >= 5 for count in headers), headers
    # the chart: this hour's bar holds the three runs' tokens, named for a screen reader
    page.wait_for("document.querySelectorAll('#chart rect.tokens').length === 24")
    page.wait_for("document.querySelector('#chart-summary').textContent.startsWith("
                  "'3 requests')")
    assert "3 requests" in page.evaluate(
        "[...document.querySelectorAll('#chart rect title')].at(-1).textContent")
    page.evaluate("document.querySelector('#chart-span').value = 'day';"
                  "document.querySelector('#chart-span').dispatchEvent(new Event('change'))")
    page.wait_for("document.querySelectorAll('#chart rect.tokens').length === 30")
    assert page.evaluate("document.querySelector('#to-chat').getAttribute('href')") == "/"


def test_the_runs_page_follows_the_chat_pages_dark_theme(browser, hub):
    page = browser.open(hub.url + "/runs")
    light = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.evaluate("localStorage.setItem('llmhub.theme', 'dark')")
    page.goto(hub.url + "/runs")
    page.wait_for("document.documentElement.dataset.theme === 'dark'")
    dark = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.evaluate("localStorage.removeItem('llmhub.theme')")
    assert light == "rgb(246, 246, 247)" and dark == "rgb(23, 24, 27)"
