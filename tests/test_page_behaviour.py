"""The chat page's behaviour a daily user meets (issue 30 points 3–6, 9, 10, 12; issue 29.3),
in headless Chromium against the fake LM Studio.

Controls are found as a user (or a screen reader) finds them: by their role and accessible
name in the browser's accessibility tree (CDP Accessibility.queryAXTree), and waited for on
DOM changes, never on sleeps.
"""

import json
import threading
import time

from chromium import NEEDS_CHROMIUM, Page
from fake_lmstudio import Script
from http_client import call

pytestmark = NEEDS_CHROMIUM
NEVER = threading.Event()
IDLE = "!document.querySelector('#send').disabled && !document.querySelector('.msg.live')"
LAST = "document.querySelector('#messages .msg.assistant:last-of-type')"
NEXT_CHANGE = """new Promise(resolve => {
  const observer = new MutationObserver(() => { observer.disconnect(); resolve(true); });
  observer.observe(document, {subtree: true, childList: true, characterData: true,
                              attributes: true});
  setTimeout(() => { observer.disconnect(); resolve(false); }, 250); })"""


# --- finding things by role and name ------------------------------------------------------------

class Node:
    """One element, found in the accessibility tree, acted on through its DOM node."""

    def __init__(self, page, backend_id: int) -> None:
        self.page = page
        self.object = page.send("DOM.resolveNode", {"backendNodeId": backend_id})["object"]

    def call(self, function: str):
        result = self.page.send("Runtime.callFunctionOn", {
            "functionDeclaration": function, "objectId": self.object["objectId"],
            "returnByValue": True, "awaitPromise": True})
        return result["result"].get("value")

    def click(self) -> None:
        self.call("function () { this.click(); }")

    def focus(self) -> None:
        self.call("function () { this.focus(); }")

    @property
    def text(self) -> str:
        return self.call("function () { return this.textContent; }")

    def attribute(self, name: str):
        return self.call(f"function () {{ return this.getAttribute({json.dumps(name)}); }}")


def query(page, role: str, name: str | None = None) -> list:
    root = page.send("DOM.getDocument", {"depth": 0})["root"]["backendNodeId"]
    params = {"backendNodeId": root, "role": role}
    if name is not None:
        params["accessibleName"] = name
    nodes = page.send("Accessibility.queryAXTree", params)["nodes"]
    return [n["backendDOMNodeId"] for n in nodes if not n.get("ignored")
            and "backendDOMNodeId" in n]


def find(page, role: str, name: str | None = None, timeout: float = 5.0) -> Node:
    """The first element with this role and accessible name, once there is one."""
    deadline = time.monotonic() + timeout
    while not (found := query(page, role, name)):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {role} named {name!r}\n{page.text('body')[:1500]}")
        page.evaluate(NEXT_CHANGE)
    return Node(page, found[0])


def gone(page, role: str, name: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while query(page, role, name):
        if time.monotonic() > deadline:
            raise AssertionError(f"still a {role} named {name!r}")
        page.evaluate(NEXT_CHANGE)


def alert_text(page) -> str:
    return page.text("#problems")


def send(page, text: str) -> None:
    page.wait_for(IDLE)
    box = find(page, "textbox", "Message")
    box.focus()
    box.call(f"function () {{ this.value = {json.dumps(text)}; }}")
    page.press("Enter")


def thread_of(page) -> str:
    return page.evaluate("decodeURIComponent(location.pathname.slice(3))")


# --- 3: errors that say why ----------------------------------------------------------------------

def test_model_not_found_says_so_on_the_reply_and_retry_works(browser, make_hub, fake):
    hub = make_hub()
    page = browser.fresh(hub.url)
    fake.enqueue(Script(status=404, error={"message": "model 'qwen2.5-7b-instruct' not found",
                                           "type": "invalid_request_error",
                                           "code": "model_not_found"}))
    send(page, "Are you there?")
    page.wait_for(f"{IDLE} && {LAST} && {LAST}.dataset.state === 'failed'")
    alert = find(page, "alert")
    assert "The reply failed: the model “qwen2.5-7b-instruct” is not on the upstream: " \
           "choose another in the Model list" in alert.text
    assert "/v1/" not in alert.text                          # no internal request named
    assert "not found" in page.text("#messages .msg.assistant .reason")   # kept on the reply
    find(page, "button", "Retry").click()                    # the default script answers
    page.wait_for(f"{IDLE} && {LAST}.querySelector('.body').textContent === "
                  "'Hello from the fake!' && document.querySelector('#problems').hidden")


def offline(page, on: bool) -> None:
    page.send("Network.enable")
    page.send("Network.emulateNetworkConditions", {"offline": on, "latency": 0,
                                                   "downloadThroughput": -1,
                                                   "uploadThroughput": -1})


def test_a_hub_shutdown_is_not_a_stop_and_an_unreachable_hub_is_one_line_that_clears(
        browser, make_hub, fake):
    hub = make_hub()
    page = browser.fresh(hub.url)
    fake.enqueue(Script(chunks=["Half", " never"], hold_first=NEVER, hold_after=1))
    send(page, "Tell me everything")
    page.wait_for("document.querySelector('.msg.live .body') && "
                  "document.querySelector('.msg.live .body').textContent === 'Half'")
    hub.hub.registry.cancel_all("shutdown")                  # what a hub shutting down does
    page.wait_for(f"{IDLE} && {LAST} && {LAST}.dataset.state === 'interrupted'")
    assert page.text("#messages .msg.assistant .who").endswith("interrupted")   # not "stopped"
    assert "the hub shut down" in page.text("#messages .msg.assistant .reason")
    assert page.text("#messages .msg.assistant .body") == "Half"
    find(page, "button", "Answer again (the old answer stays as a branch)")

    offline(page, True)                                      # the hub cannot be reached:
    find(page, "button", "+ New chat").click()               # every request fails…
    page.evaluate("history.back()")
    find(page, "searchbox", "Search chats").call(
        "function () { this.value = 'x'; this.dispatchEvent(new Event('input')); }")
    page.wait_for("document.querySelector('#problems').textContent.includes("
                  "'The hub is not answering')")
    page.wait_for("document.querySelector('#problems').textContent.includes("
                  "'The hub is not answering') && !document.querySelector('#problems')"
                  ".textContent.includes('Could not')")       # …said once, not per request
    assert page.evaluate("document.querySelectorAll('#problems .problem').length") == 1
    offline(page, False)                                     # back: the line goes by itself
    page.wait_for(f"document.querySelector('#problems').hidden && {LAST} && "
                  f"{LAST}.dataset.state === 'interrupted'", timeout=10)


# --- 29.3: the welcome screen ----------------------------------------------------------------------

def test_welcome_names_the_upstream_and_what_to_do_and_send_makes_no_empty_chat(
        browser, make_hub, fake):
    fake.kill()                                             # no LM Studio running
    hub = make_hub({"aliases": {"quick": "qwen2.5-7b-instruct"}})
    page = browser.fresh(hub.url, models=False)
    find(page, "region", "Chat with your local models")
    page.wait_for("document.querySelector('.welcome .upstream').textContent.includes("
                  "'did not answer')")
    text = find(page, "region", "Chat with your local models").text
    assert f"The hub uses LM Studio at {fake.url}, which did not answer" in text
    assert "Start LM Studio" in text and "python main.py --upstream mock" in text
    assert page.evaluate("document.querySelector('#problems').hidden")   # not a page fault

    send(page, "hello?")                                    # no model: refused, no chat made
    page.wait_for("document.querySelector('#problems').textContent.includes("
                  "'there is no model to answer')")
    assert "python main.py --upstream mock" in alert_text(page)
    assert page.evaluate("location.pathname") == "/"
    assert call(hub.url, "GET", "/v1/threads")[2]["data"] == []
    assert page.evaluate("document.querySelector('#input').value") == "hello?"   # kept

    fake.revive()
    find(page, "button", "Check again").click()
    find(page, "heading", "Models")
    page.wait_for("document.querySelector('#problems').hidden")   # no longer applies
    text = find(page, "region", "Chat with your local models").text
    assert "which answered with 2 models" in text
    assert "qwen2.5-7b-instruct (loaded)" in text and "qwen3-vl-4b-instruct (vision)" in text
    assert "quick → qwen2.5-7b-instruct" in text
    page.evaluate("document.querySelector('#input').value = ''")
    fake.enqueue(Script(chunks=["A hash map…"]))
    find(page, "button", "Explain how a hash map works, with a short example in Python.").click()
    page.wait_for(f"{IDLE} && {LAST} && {LAST}.querySelector('.body').textContent === "
                  "'A hash map…'")
    assert not page.evaluate("document.querySelector('.welcome')")


# --- 4: a reply cut at Max tokens -------------------------------------------------------------------

def test_a_reply_cut_by_max_tokens_is_marked_continued_and_titled(browser, make_hub, fake):
    hub = make_hub()
    page = browser.fresh(hub.url)
    fake.enqueue(Script(chunks=["The first half of"], finish_reason="length"))
    send(page, "Write an essay")
    page.wait_for(f"{IDLE} && {LAST} && {LAST}.dataset.state === 'cut off'")
    assert "token limit" in page.text("#messages .msg.assistant .reason")
    find(page, "listitem", None)                              # the chat list has the chat…
    page.wait_for("[...document.querySelectorAll('#thread-list .open')].some(b => "
                  "b.textContent === 'A fine title')")        # …named by the summary model
    fake.enqueue(Script(chunks=[" the essay."]))
    find(page, "button", "Continue the reply where it was cut off").click()
    page.wait_for(f"{IDLE} && {LAST}.querySelector('.body').textContent.includes('the essay.')")
    assert "Continue" in fake.chat_requests()[-1].body["messages"][-1]["content"]
    gone(page, "button", "Continue the reply where it was cut off")


# --- 5: keyboard and scroll --------------------------------------------------------------------------

def test_esc_stops_only_from_the_message_box(browser, make_hub, fake):
    hub = make_hub()
    page = browser.fresh(hub.url)
    release = threading.Event()
    fake.enqueue(Script(chunks=["Going", " on", " to", " the end."], hold_first=release,
                        hold_after=1))
    send(page, "Talk")
    page.wait_for("document.querySelector('.msg.live .body').textContent === 'Going'")
    find(page, "button", "Settings").click()
    for role, name in (("searchbox", "Search chats"), ("combobox", "Model"),
                       ("textbox", "System prompt")):
        find(page, role, name).focus()
        page.press("Escape")
    release.set()                                  # none of those Escs stopped it
    page.wait_for(f"{IDLE} && {LAST}.querySelector('.body').textContent === "
                  "'Going on to the end.'")
    assert not fake.chat_requests()[0].aborted and not page.evaluate(f"{LAST}.dataset.state")
    fake.enqueue(Script(chunks=["Stop", " me"], hold_first=NEVER, hold_after=1))
    send(page, "Again")                            # focus is in the message box
    page.wait_for("document.querySelector('.msg.live .body').textContent === 'Stop'")
    page.press("Escape")
    assert fake.aborted.wait(5)
    page.wait_for(f"{IDLE} && {LAST}.dataset.state === 'stopped'")


AT_BOTTOM = ("(() => { const m = document.querySelector('#messages'); "
             "return m.scrollHeight - m.scrollTop - m.clientHeight < 40; })()")


def test_send_scrolls_to_you_edit_keys_regenerate_any_reply_and_branch_highlight(
        browser, make_hub, fake):
    hub = make_hub()
    page = browser.fresh(hub.url)
    fake.enqueue(Script(chunks=[f"Line {i}.\n\n" for i in range(80)]))
    send(page, "First")
    page.wait_for(f"{IDLE} && {LAST}.querySelector('.body').textContent.includes('Line 79')")
    page.evaluate("const m = document.querySelector('#messages'); m.scrollTop = 0; "
                  "m.dispatchEvent(new Event('scroll'))")
    page.wait_for("!document.querySelector('#jump').hidden")
    hold = threading.Event()
    fake.enqueue(Script(chunks=["Second answer"], hold_first=hold))
    send(page, "Second")                           # while scrolled up: brought to it
    page.wait_for("document.querySelector('.msg.live')")
    page.wait_for(AT_BOTTOM)
    hold.set()
    page.wait_for(f"{IDLE} && {LAST}.querySelector('.body').textContent === 'Second answer'")

    # the edit box: Esc cancels, Enter sends
    first_thread = thread_of(page)
    edits = page.evaluate("document.querySelectorAll('.msg.user .edit').length")
    assert edits == 2
    page.evaluate("document.querySelectorAll('.msg.user .edit')[1].click()")
    box = find(page, "textbox", "Edited message")
    box.focus()
    page.press("Escape")
    gone(page, "textbox", "Edited message")
    assert page.evaluate("document.querySelectorAll('.msg.user .body')[1].textContent") == \
        "Second"
    requests = len(fake.chat_requests())
    page.evaluate("document.querySelectorAll('.msg.user .edit')[1].click()")
    box = find(page, "textbox", "Edited message")
    box.focus()
    box.call("function () { this.value = 'Second, edited'; }")
    fake.enqueue(Script(chunks=["Edited answer"]))
    page.press("Enter")
    page.wait_for(f"{IDLE} && {LAST}.querySelector('.body').textContent === 'Edited answer'")
    assert len(fake.chat_requests()) == requests + 1
    assert fake.chat_requests()[-1].body["messages"][-1]["content"] == "Second, edited"
    assert thread_of(page) != first_thread                    # a branch…
    row = find(page, "button", "A fine title")                # …and its chat stays current
    assert row.attribute("aria-current") == "page"

    # regenerate the first reply, not only the last
    regenerates = page.evaluate("document.querySelectorAll('.msg.assistant .regenerate')"
                                ".length")
    assert regenerates == 2
    fake.enqueue(Script(chunks=["Another first answer"]))
    page.evaluate("document.querySelectorAll('.msg.assistant .regenerate')[0].click()")
    page.wait_for(f"{IDLE} && document.querySelectorAll('.msg').length === 2 && "
                  f"{LAST}.querySelector('.body').textContent === 'Another first answer'")
    assert fake.chat_requests()[-1].body["messages"][-1]["content"] == "First"
    assert find(page, "button", "A fine title").attribute("aria-current") == "page"


# --- 6: tool calls and reasoning -----------------------------------------------------------------------

def test_tool_calls_and_reasoning_are_shown_folded_and_kept_after_a_reload(browser, make_hub,
                                                                             fake):
    hub = make_hub()
    page = browser.fresh(hub.url)
    fake.enqueue(Script(reasoning=["Weather needs", " a lookup."], chunks=["Checking."],
                        tool_calls=[{"id": "call_1", "name": "get_weather",
                                     "arguments": '{"city": "Paris"}'}]))
    send(page, "Weather in Paris?")
    page.wait_for(f"{IDLE} && {LAST} && {LAST}.querySelector('.tool-call')")
    call_box = find(page, "group", None)
    assert call_box
    assert page.text("#messages .msg.assistant .tool-call summary") == "Tool call: get_weather"
    assert not page.evaluate(f"{LAST}.querySelector('.tool-call').open")      # folded
    assert json.loads(page.text("#messages .msg.assistant .tool-call .arguments")) == \
        {"city": "Paris"}
    page.goto(page.evaluate("location.href"))             # a reload keeps both
    page.wait_for(f"{LAST} && {LAST}.querySelector('.tool-call') && "
                  f"{LAST}.querySelector('.thinking')")
    assert page.text("#messages .msg.assistant .thought") == "Weather needs a lookup."
    assert page.text("#messages .msg.assistant .tool-call summary") == "Tool call: get_weather"

    # an agent's thread: each call with its result
    status, _, thread = call(hub.url, "POST", "/v1/threads", {"messages": [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "", "tool_calls": [{
            "id": "call_9", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "call_9", "content": "{\"temp_c\": -3}"},
        {"role": "assistant", "content": "It is -3 °C in Oslo."}]})
    assert status == 200
    page.goto(hub.url + "/c/" + thread["id"])
    page.wait_for("document.querySelector('.tool-call .result')")
    assert json.loads(page.text(".tool-call .result")) == {"temp_c": -3}
    assert page.text(".tool-call summary") == "Tool call: get_weather"


# --- 9: the model picker ----------------------------------------------------------------------------------

def options(page) -> list:
    return page.evaluate("[...document.querySelectorAll('#model optgroup')].map(g => "
                         "[g.label, [...g.children].map(o => o.textContent)])")


def test_model_picker_sets_aliases_apart_with_hints_a_real_default_and_a_choice_per_chat(
        browser, make_hub, fake):
    fake.loaded = {"qwen3-vl-4b-instruct": ["qwen3-vl-4b-instruct"]}
    hub = make_hub({"aliases": {"quick": "qwen2.5-7b-instruct"},
                    "models": {"default": "not-on-this-upstream"}})
    page = browser.fresh(hub.url)
    assert options(page) == [["Models", ["qwen2.5-7b-instruct",
                                         "qwen3-vl-4b-instruct (loaded, vision)"]],
                             ["Aliases", ["quick → qwen2.5-7b-instruct"]]]
    picker = find(page, "combobox", "Model")
    assert picker.call("function () { return this.value; }") == "qwen3-vl-4b-instruct"

    def choose(model):
        page.evaluate(f"(() => {{ const s = document.querySelector('#model'); s.value = {model!r};"
                      f" s.dispatchEvent(new Event('change')); }})()")

    choose("quick")
    send(page, "Chat A")
    page.wait_for(f"{IDLE} && {LAST}")
    chat_a = thread_of(page)
    find(page, "button", "+ New chat").click()
    page.wait_for("location.pathname === '/'")
    choose("qwen2.5-7b-instruct")
    send(page, "Chat B")
    page.wait_for(f"{IDLE} && {LAST}")
    chat_b = thread_of(page)
    assert [r.body["model"] for r in fake.chat_requests()] == ["qwen2.5-7b-instruct"] * 2
    page.goto(hub.url + "/c/" + chat_a)                      # each chat keeps its choice
    page.wait_for("document.querySelector('#model').value === 'quick'")
    page.goto(hub.url + "/c/" + chat_b)
    page.wait_for("document.querySelector('#model').value === 'qwen2.5-7b-instruct'")
    page.evaluate("localStorage.clear()")                    # another browser: from the chat
    page.goto(hub.url + "/c/" + chat_a)
    page.wait_for("document.querySelector('#model').value === 'quick'")


# --- 12: polish -----------------------------------------------------------------------------------------------

CONTRAST = """(() => {
  const rgb = (s) => s.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number);
  const lum = (c) => { const [r, g, b] = c.map(v => { v /= 255; return v <= 0.03928 ? v / 12.92
                       : Math.pow((v + 0.055) / 1.055, 2.4); }); return 0.2126 * r + 0.7152 * g
                       + 0.0722 * b; };
  const style = getComputedStyle(document.querySelector('#send'));
  const a = lum(rgb(style.color)), b = lum(rgb(style.backgroundColor));
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05); })()"""


def test_polish_contrast_import_titles_search_tab_stops_and_settings(browser, make_hub, fake):
    hub = make_hub()
    long_title = "A very long title that the narrow chat list cannot show in full, not at all"
    status, _, thread = call(hub.url, "POST", "/v1/threads", {"messages": [
        {"role": "user", "content": "hi"}]})
    call(hub.url, "POST", f"/v1/threads/{thread['id']}/title", {"title": long_title})
    call(hub.url, "POST", "/v1/threads", {"messages": [{"role": "user", "content": "other"}]})
    page = browser.fresh(hub.url)
    page.wait_for("document.querySelectorAll('#thread-list li').length === 2")

    for theme in ("dark", "light"):                           # Send is readable in both
        page.evaluate(f"document.documentElement.dataset.theme = '{theme}'")
        assert page.evaluate(CONTRAST) >= 4.5, theme
    page.evaluate("delete document.documentElement.dataset.theme")

    find(page, "button", "Import a chat…")                    # no raw file control shown
    assert page.evaluate("[...document.querySelectorAll('nav input[type=file]')]"
                         ".every(i => i.hidden && !i.offsetParent)")

    row = find(page, "button", long_title)
    assert row.attribute("title") == long_title               # the whole title on hover

    # one Tab stop per chat; its rename and delete by the arrow keys
    stops = page.evaluate("[...document.querySelectorAll('#thread-list li')].map(li => "
                          "[...li.querySelectorAll('button, input')].filter(e => "
                          "e.tabIndex >= 0).length)")
    assert stops == [1, 1]
    row.focus()
    page.send("Input.dispatchKeyEvent", {"type": "keyDown", "key": "ArrowRight",
                                         "code": "ArrowRight", "windowsVirtualKeyCode": 39})
    page.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": "ArrowRight",
                                         "code": "ArrowRight", "windowsVirtualKeyCode": 39})
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == \
        "Rename " + long_title

    search = find(page, "searchbox", "Search chats")
    search.call("function () { this.value = 'zebra crossing'; "
                "this.dispatchEvent(new Event('input')); }")
    page.wait_for("document.querySelector('#thread-list .no-results')")
    assert [Node(page, n).text for n in query(page, "listitem")
            if Node(page, n).call("function () { return !!this.closest('#thread-list'); }")] \
        == ["No chats match “zebra crossing”"]

    # out-of-range settings are refused in the form, said there, and not sent
    find(page, "button", "Settings").click()
    temperature = find(page, "spinbutton", "Temperature")
    temperature.call("function () { this.value = '5'; this.dispatchEvent(new Event('change')); }")
    page.wait_for("document.querySelector('#setting-temperature-error').textContent")
    assert page.text("#setting-temperature-error") == "Temperature must be a number from 0 to 2"
    assert temperature.attribute("aria-invalid") == "true"
    assert page.evaluate("localStorage.getItem('llmhub.temperature')") is None
    send(page, "Hot?")
    page.wait_for(f"{IDLE} && {LAST}")
    assert "temperature" not in fake.chat_requests()[-1].body
    temperature.call("function () { this.value = '0.5'; "
                     "this.dispatchEvent(new Event('change')); }")
    assert temperature.attribute("aria-invalid") == "false"
    assert page.evaluate("localStorage.getItem('llmhub.temperature')") == "0.5"


# --- 10: a second device ------------------------------------------------------------------------------------

def second_device(browser, url: str) -> Page:
    """A page in a browser context of its own: no localStorage shared with the first."""
    return browser.open(url, own_context=True)


def test_a_second_device_follows_a_reply_live_and_can_stop_it(browser, make_hub, fake):
    hub = make_hub()
    phone_page = None
    page = browser.fresh(hub.url)
    more = threading.Event()
    fake.enqueue(Script(chunks=["Seen", " from", " afar", " never"], hold_first=more,
                        hold_after=1))
    send(page, "Long job")
    page.wait_for("document.querySelector('.msg.live .body').textContent === 'Seen'")
    phone_page = second_device(browser, page.evaluate("location.href"))
    phone_page.wait_for("document.querySelector('.msg.live .body') && document.querySelector("
                        "'.msg.live .body').textContent === 'Seen'")
    stop = find(phone_page, "button", "Stop")
    assert stop.call("function () { return !this.disabled; }")
    stop.click()
    assert fake.aborted.wait(5)
    for each in (phone_page, page):
        each.wait_for(f"{IDLE} && {LAST} && {LAST}.dataset.state === 'stopped'")
