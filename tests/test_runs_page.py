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
