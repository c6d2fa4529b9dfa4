"""The web chat page in a real browser (headless Chromium over the DevTools pipe).

Each test drives the page as a user would, against the fake LM Studio, and checks what the
user sees and what reached the model server. Screenshots at 1280×800 and 390×844, light and
dark, are written to tests/screenshots/ for a person to look at.
"""

import json
import threading
import time
from pathlib import Path

from chromium import NEEDS_CHROMIUM
from fake_lmstudio import Script
from http_client import call

pytestmark = NEEDS_CHROMIUM
NEVER = threading.Event()
SHOTS = Path(__file__).resolve().parent / "screenshots"
LAST = "document.querySelector('#messages .msg.assistant:last-of-type')"
LAST_REPLY = f"{LAST}.querySelector('.body').textContent"
IDLE = "!document.querySelector('#send').disabled && !document.querySelector('.msg.live')"


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
    page = browser.fresh(hub.url)
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
    assert "qwen2.5-7b-instruct" in page.text("#messages .msg.assistant .stats")
    assert "4 tokens" in page.text("#messages .msg.assistant .stats")
    assert page.evaluate("document.activeElement.id") == "input"   # focus stays for typing

    # Stop while streaming: the model server sees the abort; what came is kept, marked
    fake.enqueue(Script(chunks=["Partial", " never"], hold_first=NEVER, hold_after=1))
    send(page, "Second question", key=False)
    page.wait_for(f"{LAST_REPLY} === 'Partial'")
    page.click("#stop")
    assert fake.aborted.wait(5)
    page.wait_for(f"{LAST}.dataset.state === 'stopped' && {IDLE}")
    assert page.text("#messages .msg.assistant:last-of-type .who").endswith("stopped")
    assert page.evaluate("document.activeElement.id") == "input"

    # Esc stops too
    fake.aborted.clear()
    fake.enqueue(Script(chunks=["Esc", " never"], hold_first=NEVER, hold_after=1))
    send(page, "Stop me with Esc")
    page.wait_for(f"{LAST_REPLY} === 'Esc'")
    page.press("Escape")
    assert fake.aborted.wait(5)
    page.wait_for(f"{LAST}.dataset.state === 'stopped' && {IDLE}")

    # Stop with streaming off: /chat/cancel, and the stored partial answer, marked stopped
    fake.aborted.clear()
    page.evaluate("document.querySelector('#stream-responses').click()")
    assert page.evaluate("localStorage.getItem('streamResponses')") == "false"
    fake.enqueue(Script(chunks=["Half", " an answer", " never"], hold_first=NEVER,
                        hold_after=2))
    send(page, "Third question")
    assert fake.wait_requests(4)
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
    page = browser.fresh(hub.url)
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


def response_status(hub, response_id: str) -> str:
    return call(hub.url, "GET", f"/v1/responses/{response_id}")[2]["status"]


def test_closing_the_tab_mid_reply_does_not_cancel_it(browser, make_hub, fake):
    # a short grace: were a background run still ended when its follower leaves, it would be
    # cancelled well inside the wait below
    hub = make_hub({"responses": {"resume_grace_seconds": "0.2"}})
    page = browser.fresh(hub.url)
    release = threading.Event()
    fake.enqueue(Script(chunks=["First", " part", " and", " the", " rest."],
                        hold_first=release, hold_after=2))
    send(page, "Keep going without me")
    page.wait_for(f"{LAST_REPLY} === 'First part'")
    thread = thread_of(page)
    response_id = page.evaluate(
        f"JSON.parse(localStorage.getItem('llmhub.live'))[{json.dumps(thread)}].id")
    [run] = [r for r in hub.hub.engine.live_runs() if r.id == response_id]
    assert run.log.followed                                 # the page is its reader

    target = page.send("Target.getTargetInfo")["targetInfo"]["targetId"]
    browser.send("Target.closeTarget", {"targetId": target})
    deadline = time.monotonic() + 5                         # seen on the pump's next quiet tick
    while run.log.followed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not run.log.followed, "the hub never saw the closed tab's stream end"
    alone_until = time.monotonic() + 1.0                    # five graces with no reader
    while time.monotonic() < alone_until:
        assert response_status(hub, response_id) == "in_progress"
        time.sleep(0.05)
    assert not fake.chat_requests()[0].aborted

    release.set()
    deadline = time.monotonic() + 5
    while response_status(hub, response_id) == "in_progress" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert response_status(hub, response_id) == "completed"
    stored = call(hub.url, "GET", f"/v1/threads/{thread}/messages")[2]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[-1]["content"] == "First part and the rest."
    assert fake.chat_requests()[0].finished.is_set()
    assert not fake.chat_requests()[0].aborted


# --- Markdown, safely ------------------------------------------------------------------------

MARKDOWN = """## Plan for **today**

Some *italic*, some _more_, some `inline <b>code</b>` and a [safe link](https://example.com/a?b=1).
A [bad link](javascript:alert(1)) and [data](data:text/html,<script>alert(1)</script>) stay text.
Mail [me](mailto:me@example.com).

- first
- second
  - nested **bold**
1. one
2. two

| name | value |
|:-----|------:|
| a    | 1     |
| <img src=x onerror=window.pwned=1> | 2 |

> quoted *words*

````markdown
```js
alert("inner fence")
```
````

<script>window.pwned = 1</script>
<img src=x onerror="window.pwned=1">
"""


def test_markdown_renders_as_nodes_and_nothing_a_model_writes_runs(browser, make_hub, fake):
    hub = make_hub()
    page = browser.fresh(hub.url)
    fake.enqueue(Script(chunks=[MARKDOWN[:40], MARKDOWN[40:]]))
    send(page, "Show me Markdown")
    page.wait_for(f"{IDLE} && {LAST}.querySelector('table')")
    body = f"{LAST}.querySelector('.body')"
    count = lambda selector: page.evaluate(f"{body}.querySelectorAll('{selector}').length")
    assert page.evaluate(f"{body}.querySelector('h2').textContent") == "Plan for today"
    assert page.evaluate(f"{body}.querySelector('h2 strong').textContent") == "today"
    assert count("em") == 3 and count("strong") == 2
    assert page.evaluate(f"{body}.querySelector('p code').textContent") == "inline <b>code</b>"
    links = page.evaluate(f"[...{body}.querySelectorAll('a')].map(a => a.href)")
    assert links == ["https://example.com/a?b=1", "mailto:me@example.com"]
    first = page.text("#messages .msg.assistant:last-of-type p")
    assert "A bad link and" in first and "stay text" in first
    assert count("ul > li") == 3 and count("ul ul > li") == 1 and count("ol > li") == 2
    assert page.evaluate(f"[...{body}.querySelectorAll('td')].map(c => c.textContent)") == [
        "a", "1", "<img src=x onerror=window.pwned=1>", "2"]
    assert page.evaluate(f"{body}.querySelector('td:nth-child(2)').style.textAlign") == "right"
    assert page.evaluate(f"{body}.querySelector('blockquote em').textContent") == "words"
    assert page.evaluate(f"{body}.querySelector('.code .lang').textContent") == "markdown"
    assert page.evaluate(f"{body}.querySelector('pre code').textContent") == \
        '```js\nalert("inner fence")\n```'
    assert count("img") == 0 and count("script") == 0
    assert page.evaluate("document.querySelectorAll('[onerror]').length") == 0
    assert page.evaluate("window.pwned === undefined")
    assert "<script>window.pwned = 1</script>" in page.text(
        "#messages .msg.assistant:last-of-type .body")


VECTORS = ["<svg onload=window.pwned=1>", "[x](JAVASCRIPT:window.pwned=1)",
           "[x]( javascript:window.pwned=1)", "[x](java&#x73;cript:window.pwned=1)",
           "<a href=\"javascript:window.pwned=1\">a</a>", "![x](javascript:window.pwned=1)",
           "<javascript:window.pwned=1>", "[x](vbscript:msgbox(1))",
           "<iframe src=javascript:window.pwned=1>", "`<img src=x onerror=window.pwned=1>`",
           "```\n</code></pre><img src=x onerror=window.pwned=1>\n```",
           "[a](https://ok.example/\" onmouseover=\"window.pwned=1)"]


def test_xss_vectors_stay_inert(browser, make_hub, fake):
    hub = make_hub()
    page = browser.fresh(hub.url)
    fake.enqueue(Script(chunks=["\n\n".join(VECTORS)]))
    send(page, "Try to escape")
    page.wait_for(f"{IDLE} && document.querySelectorAll('.msg').length === 2")
    body = f"{LAST}.querySelector('.body')"
    hrefs = page.evaluate(f"[...{body}.querySelectorAll('a')].map(a => a.href)")
    assert all(h.startswith(("https:", "http:", "mailto:")) for h in hrefs), hrefs
    assert page.evaluate(f"{body}.querySelectorAll('svg, img, iframe, script').length") == 0
    assert page.evaluate("[...document.querySelectorAll('*')].filter(e => [...e.attributes]"
                         ".some(a => a.name.startsWith('on'))).length") == 0
    page.evaluate(f"[...{body}.querySelectorAll('a')].forEach(a => a.dispatchEvent("
                  "new MouseEvent('mouseover')))")
    assert page.evaluate("window.pwned === undefined")


# --- copy, regenerate, edit and branches -----------------------------------------------------

def test_copy_regenerate_and_edit_keep_every_branch_reachable(browser, make_hub, fake):
    hub = make_hub()
    page = browser.fresh(hub.url)
    page.evaluate("navigator.clipboard.writeText = (text) => { window.copied = text; "
                  "return Promise.resolve(); }")
    fake.enqueue(Script(chunks=["Answer A:\n```py\nprint(1)\n```"]))
    send(page, "Question one")
    page.wait_for(f"{IDLE} && {LAST}.querySelector('.copy-code')")
    page.click("#messages .msg.assistant .copy-code")
    assert page.evaluate("window.copied") == "print(1)"
    page.click("#messages .msg.user .copy")
    assert page.evaluate("window.copied") == "Question one"
    page.click("#messages .msg.assistant .tools .copy")
    assert page.evaluate("window.copied").startswith("Answer A:")

    first = thread_of(page)
    fake.enqueue(Script(chunks=["Answer B"]))
    page.click("#messages .msg.assistant .regenerate")
    page.wait_for(f"{IDLE} && {LAST_REPLY} === 'Answer B'")
    assert thread_of(page) != first
    assert page.text("#messages .msg.user .switcher .count") == "2/2"
    assert json.loads(page.evaluate("exportJSON()"))["thread"]["title"] == "A fine title"
    assert fake.chat_requests()[-1].body["messages"][-1]["content"] == "Question one"
    page.click("#messages .msg.user .switcher .prev")
    page.wait_for(f"{LAST_REPLY}.startsWith('Answer A')")
    assert thread_of(page) == first and page.text(".msg.user .switcher .count") == "1/2"

    fake.enqueue(Script(chunks=["Answer C"]))
    page.click("#messages .msg.user .edit")
    page.type("#messages .msg.user .edit-input", "Question one, edited")
    page.click("#messages .msg.user .save-edit")
    page.wait_for(f"{IDLE} && {LAST_REPLY} === 'Answer C'")
    assert shown(page) == ["Question one, edited", "Answer C"]
    assert page.text("#messages .msg.user .switcher .count") == "3/3"
    page.click("#messages .msg.user .switcher .prev")
    page.wait_for(f"{LAST_REPLY} === 'Answer B'")
    assert len(page.evaluate("[...document.querySelectorAll('#thread-list li')]")) == 1

    # deleting the chat deletes its branches with it: none is left unreachable
    page.click("#thread-list .delete")
    page.click("#thread-list .confirm-delete")
    page.wait_for("location.pathname === '/' && !document.querySelector('#thread-list li')")
    assert call(hub.url, "GET", "/v1/threads")[2]["data"] == []


# --- threads: titles, rename, delete, search, paging, export, import -------------------------

def item(title: str) -> str:
    return (f"[...document.querySelectorAll('#thread-list li')].find(li => "
            f"li.querySelector('.open') && li.querySelector('.open').textContent === {title!r})")


def test_threads_are_named_renamed_searched_paged_deleted_exported_imported(
        browser, make_hub, fake):
    hub = make_hub()
    for i in range(55):                     # made by an API client: they show up too
        call(hub.url, "POST", "/v1/threads", {"messages": [
            {"role": "user", "content": f"API thread number {i}"}]})
    page = browser.fresh(hub.url)
    page.wait_for("document.querySelectorAll('#thread-list li').length === 50")
    page.click("#more-threads")
    page.wait_for("document.querySelectorAll('#thread-list li').length === 55")
    assert page.evaluate("document.querySelector('#more-threads').hidden")

    fake.enqueue(Script(chunks=["Go in spring."]))
    fake.title = Script(chunks=["\"Paris trip plans.\""])
    send(page, "When should I visit Paris?")
    page.wait_for(item("Paris trip plans"))               # named by the summary model
    assert "When should I visit Paris?" in \
        fake.title_requests()[-1].body["messages"][1]["content"]

    page.evaluate(f"{item('Paris trip plans')}.querySelector('.rename').click()")
    page.type("#thread-list .rename-input", "Spring in Paris")
    page.evaluate("document.querySelector('#thread-list .rename-input').dispatchEvent("
                  "new KeyboardEvent('keydown', {key: 'Enter'}))")
    page.wait_for(item("Spring in Paris"))

    page.type("#search", "spring")                        # a title
    page.evaluate("document.querySelector('#search').dispatchEvent(new Event('input'))")
    page.wait_for("document.querySelectorAll('#thread-list li').length === 1")
    page.type("#search", "number 7")                      # a message's content
    page.evaluate("document.querySelector('#search').dispatchEvent(new Event('input'))")
    page.wait_for("document.querySelectorAll('#thread-list li').length === 1 && "
                  "document.querySelector('#thread-list .open').textContent.includes('7')")
    page.type("#search", "")
    page.evaluate("document.querySelector('#search').dispatchEvent(new Event('input'))")
    page.wait_for("document.querySelectorAll('#thread-list li').length === 50")

    exported = json.loads(page.evaluate("exportJSON()"))
    assert exported["thread"]["title"] == "Spring in Paris"
    assert [m["content"] for m in exported["messages"]] == ["When should I visit Paris?",
                                                            "Go in spring."]
    markdown = page.evaluate("exportMarkdown()")
    assert markdown.startswith("# Spring in Paris") and "**You:**" in markdown
    assert "**Assistant (qwen2.5-7b-instruct):**" in markdown
    page.evaluate("window.downloads = []; const click = HTMLAnchorElement.prototype.click; "
                  "HTMLAnchorElement.prototype.click = function () { "
                  "window.downloads.push(this.download); }")
    page.click("#export-md")
    page.click("#export-json")
    assert page.evaluate("window.downloads") == ["Spring in Paris.md", "Spring in Paris.json"]

    exported["thread"]["title"] = "Imported trip"
    page.evaluate(f"importChat({json.dumps(json.dumps(exported))})")
    page.wait_for(f"{item('Imported trip')} && document.querySelectorAll('.msg').length === 2")
    assert shown(page) == ["When should I visit Paris?", "Go in spring."]
    page.evaluate("importChat('not json')")
    page.wait_for("document.querySelector('#problems').textContent.includes('not JSON')")

    page.evaluate(f"{item('Imported trip')}.querySelector('.delete').click()")
    page.wait_for("document.querySelector('#thread-list .confirm')")
    page.click("#thread-list .cancel-delete")             # kept
    page.wait_for(item("Imported trip"))
    page.evaluate(f"{item('Imported trip')}.querySelector('.delete').click()")
    page.click("#thread-list .confirm-delete")
    page.wait_for(f"!{item('Imported trip')} && location.pathname === '/'")


# --- attachments, reasoning, settings, themes, scrolling -------------------------------------

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360f8cf00000301010018dd8db00000"
                    "000049454e44ae426082")


def attach(page, *paths) -> None:
    """Choose files in the hidden file input, as the file dialog would."""
    document = page.send("DOM.getDocument")["root"]["nodeId"]
    node = page.send("DOM.querySelector", {"nodeId": document, "selector": "#file"})["nodeId"]
    page.send("DOM.setFileInputFiles", {"nodeId": node, "files": [str(p) for p in paths]})


def test_images_and_text_files_reach_the_model_and_come_back(browser, make_hub, fake,
                                                            tmp_path):
    hub = make_hub()
    page = browser.fresh(hub.url)
    image, notes = tmp_path / "dot.png", tmp_path / "notes.txt"
    image.write_bytes(PNG)
    notes.write_text("remember the milk", encoding="utf-8")
    attach(page, image)
    page.wait_for("document.querySelectorAll('#attachments .chip').length === 1")
    send(page, "What is this?")                 # the text model cannot see: refused here
    page.wait_for("document.querySelector('#problems').textContent.includes('cannot see "
                  "images')")
    assert not fake.chat_requests()
    page.evaluate("const s = document.querySelector('#model'); s.value = "
                  "'qwen3-vl-4b-instruct'; s.dispatchEvent(new Event('change'))")
    attach(page, notes)
    page.wait_for("document.querySelectorAll('#attachments .chip').length === 2")
    page.click("#send")
    page.wait_for(IDLE + " && document.querySelectorAll('.msg').length === 2")
    sent = fake.chat_requests()[-1].body["messages"][-1]["content"]
    assert sent[0]["type"] == "text" and "remember the milk" in sent[0]["text"]
    assert sent[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert page.evaluate("document.querySelectorAll('#attachments .chip').length") == 0
    page.goto(page.evaluate("location.href"))   # reopened: the stored image is shown again
    page.wait_for("document.querySelector('.msg.user img.attached')")
    assert page.evaluate("document.querySelector('.msg.user img.attached').naturalWidth") == 1

    # paste and drop attach too; a file that is neither image nor text is refused by name
    files = ("(() => { const dt = new DataTransfer(); dt.items.add(new File([new Uint8Array("
             f"{list(PNG)})], 'pasted.png', {{type: 'image/png'}})); ")
    page.evaluate(files + "document.querySelector('#input').dispatchEvent("
                  "new ClipboardEvent('paste', {clipboardData: dt, bubbles: true})); })()")
    page.evaluate("(() => { const dt = new DataTransfer(); dt.items.add(new File(['a,b'], "
                  "'data.csv', {type: 'text/csv'})); dt.items.add(new File(['MZ'], 'tool.exe', "
                  "{type: 'application/x-msdownload'})); document.querySelector('main')"
                  ".dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true})); "
                  "})()")
    page.wait_for("document.querySelectorAll('#attachments .chip').length === 2")
    assert "tool.exe is neither an image" in page.text("#problems")
    assert page.evaluate("[...document.querySelectorAll('#attachments .chip')].map(c => "
                         "c.className + ': ' + c.querySelector('.chip-name').textContent)") in (
        ["chip image: pasted.png", "chip text: data.csv"],
        ["chip text: data.csv", "chip image: pasted.png"])


def test_reasoning_streams_in_a_thinking_block_after_a_waiting_indicator(browser, make_hub,
                                                                         fake):
    hub = make_hub()
    page = browser.fresh(hub.url)
    accepted, thought = threading.Event(), threading.Event()
    fake.enqueue(Script(reasoning=["Let me", " think."], chunks=["Forty-two."],
                        hold_headers=accepted, hold_first=thought, hold_after=2))
    send(page, "Think first")
    page.wait_for("document.querySelector('.msg.live .typing')")     # alive, before tokens
    accepted.set()
    page.wait_for("document.querySelector('.msg.live .thinking .thought') && document"
                  ".querySelector('.msg.live .thinking .thought').textContent === "
                  "'Let me think.'")
    assert page.evaluate("document.querySelector('.msg.live .thinking').open")
    thought.set()
    page.wait_for(f"{IDLE} && {LAST_REPLY} === 'Forty-two.'")
    assert page.text("#messages .msg.assistant:last-of-type .thought") == "Let me think."
    assert not page.evaluate(f"{LAST}.querySelector('.thinking').open")   # folded when done

    during = threading.Event()
    fake.enqueue(Script(chunks=["<think>Inline", " thoughts</think>", "The answer."],
                        hold_first=during, hold_after=2))
    send(page, "Think inline")
    page.wait_for("document.querySelector('.msg.live .thinking .thought') && document"
                  ".querySelector('.msg.live .thinking .thought').textContent === "
                  "'Inline thoughts'")
    during.set()
    page.wait_for(f"{IDLE} && {LAST_REPLY} === 'The answer.'")
    assert page.text("#messages .msg.assistant:last-of-type .thought") == "Inline thoughts"


def set_value(page, selector: str, value: str, event: str = "change") -> None:
    page.evaluate(f"(() => {{ const el = document.querySelector({json.dumps(selector)}); "
                  f"el.value = {json.dumps(value)}; "
                  f"el.dispatchEvent(new Event({json.dumps(event)})); }})()")


BACKGROUND = "getComputedStyle(document.body).backgroundColor"


def test_settings_persist_and_shape_the_request_and_the_theme_follows(browser, make_hub,
                                                                     fake):
    hub = make_hub({"aliases": {"quick": "qwen2.5-7b-instruct"}})
    page = browser.fresh(hub.url)
    set_value(page, "#model", "quick")                      # an alias: the line says who
    send(page, "Who answers?")
    page.wait_for(IDLE + " && document.querySelector('.msg.assistant .stats')")
    assert page.text(".msg.assistant .stats").startswith(
        "qwen2.5-7b-instruct (asked: quick) · 5 tokens")
    page.click("#new-thread")
    page.click("#open-settings")
    set_value(page, "#setting-system", "Answer like a pirate.")
    set_value(page, "#setting-temperature", "0.3")
    set_value(page, "#setting-max-tokens", "64")
    set_value(page, "#setting-top-p", "0.9")
    set_value(page, "#setting-theme", "dark")
    assert page.evaluate(BACKGROUND) == "rgb(23, 24, 27)"
    page.goto(hub.url + "/")                                # kept across a reload
    page.wait_for("document.querySelectorAll('#model option').length > 0")
    assert page.evaluate("[document.querySelector('#setting-system').value, document."
                         "querySelector('#setting-temperature').value, document.querySelector("
                         "'#setting-theme').value]") == ["Answer like a pirate.", "0.3", "dark"]
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    send(page, "Ahoy?")
    page.wait_for(IDLE + " && document.querySelectorAll('.msg').length === 2")
    body = fake.chat_requests()[-1].body
    assert body["messages"][0] == {"role": "system", "content": "Answer like a pirate."}
    assert (body["temperature"], body["max_tokens"], body["top_p"]) == (0.3, 64, 0.9)
    set_value(page, "#setting-theme", "light")
    assert page.evaluate(BACKGROUND) == "rgb(246, 246, 247)"
    set_value(page, "#setting-theme", "system")             # the default follows the OS
    page.send("Emulation.setEmulatedMedia", {"features": [
        {"name": "prefers-color-scheme", "value": "dark"}]})
    assert page.evaluate(BACKGROUND) == "rgb(23, 24, 27)"
    page.send("Emulation.setEmulatedMedia", {"features": [
        {"name": "prefers-color-scheme", "value": "light"}]})
    assert page.evaluate(BACKGROUND) == "rgb(246, 246, 247)"


def test_auto_scroll_follows_until_the_user_scrolls_up_and_replies_are_announced_whole(
        browser, make_hub, fake):
    hub = make_hub()
    page = browser.fresh(hub.url)
    rest = threading.Event()
    lines = [f"Line {i} of a long answer.\n\n" for i in range(80)]
    fake.enqueue(Script(chunks=lines, hold_first=rest, hold_after=40))
    send(page, "Write a lot")
    at_bottom = ("(() => { const m = document.querySelector('#messages'); "
                 "return m.scrollHeight - m.scrollTop - m.clientHeight < 40; })()")
    page.wait_for("document.querySelector('.msg.live .body') && document.querySelector("
                  "'.msg.live .body').textContent.includes('Line 39')")
    page.wait_for(at_bottom)                               # it followed the reply down
    assert page.evaluate("document.querySelector('#messages').scrollHeight > "
                         "document.querySelector('#messages').clientHeight")
    assert page.text("#announce") == ""                    # not token by token
    page.evaluate("const m = document.querySelector('#messages'); m.scrollTop = 0; "
                  "m.dispatchEvent(new Event('scroll'))")
    page.wait_for("!document.querySelector('#jump').hidden")
    rest.set()
    page.wait_for(IDLE)
    assert page.evaluate("document.querySelector('#messages').scrollTop") == 0   # left alone
    page.click("#jump")
    page.wait_for(at_bottom + " && document.querySelector('#jump').hidden")
    assert page.text("#announce").startswith("Line 0 of a long answer.")
    assert "Line 79" in page.text("#announce")


# --- errors that stay until fixed --------------------------------------------------------------

def problems(page) -> str:
    return page.text("#problems")


def test_errors_say_why_with_retry_until_the_request_works(browser, make_hub, fake):
    fake.kill()                                            # the model server is down
    hub = make_hub()
    page = browser.open(hub.url + "/")
    page.evaluate("localStorage.clear()")
    page.goto(hub.url + "/")
    page.wait_for("document.querySelector('.welcome .upstream').textContent.includes("
                  "'did not answer')")                     # said where it matters, not a fault
    fake.revive()                                          # it comes back: the list refreshes
    page.wait_for("document.querySelectorAll('#model option').length > 0 && "
                  "document.querySelector('.welcome .upstream').textContent.includes("
                  "'answered with 2 models')", timeout=10)
    fake.enqueue(Script(status=500, error={"message": "CUDA out of memory"}))
    send(page, "Will this work?")
    page.wait_for("document.querySelector('#problems').textContent.includes("
                  "'The reply failed: CUDA out of memory')")
    assert "/v1/" not in problems(page)                    # no internal request named
    page.wait_for(f"{LAST} && {LAST}.dataset.state === 'failed' && {IDLE}")
    assert "CUDA out of memory" in page.text("#messages .msg.assistant .reason")
    page.click("#problems .retry")                         # Retry asks again, and it works
    page.wait_for(f"{IDLE} && {LAST_REPLY} === 'Hello from the fake!' && "
                  "document.querySelector('#problems').hidden")


def test_a_key_error_clears_once_the_key_works(browser, make_hub, fake):
    hub = make_hub({"server": {"api_keys": "sk-page-key"}})
    page = browser.open(hub.url + "/")
    page.evaluate("localStorage.clear()")
    page.goto(hub.url + "/")
    page.wait_for("document.querySelector('#problems').textContent.includes('API key')")
    page.click("#open-settings")
    set_value(page, "#api-key", "sk-page-key")
    page.wait_for("document.querySelectorAll('#model option').length > 0 && "
                  "document.querySelector('#problems').hidden")


# --- phone, keyboard, icon, screenshots --------------------------------------------------------

def box_of(page, selector: str) -> dict:
    return page.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                         ".getBoundingClientRect(); return {width: r.width, height: r.height}; })()")


def key(page, name: str, **modifiers) -> None:
    flags = (2 if modifiers.get("ctrl") else 0) | (8 if modifiers.get("shift") else 0)
    for kind in ("keyDown", "keyUp"):
        page.send("Input.dispatchKeyEvent", {"type": kind, "key": name, "modifiers": flags,
                                             "code": "Key" + name.upper(),
                                             "windowsVirtualKeyCode": ord(name.upper())})


def test_phone_keyboard_shortcuts_icon_and_screenshots(browser, make_hub, fake):
    hub = make_hub()
    page = browser.fresh(hub.url)
    status, headers, icon = call(hub.url, "GET", "/favicon.ico")
    assert status == 200 and headers["Content-Type"] == "image/x-icon" and icon[:4] == \
        b"\x00\x00\x01\x00"
    fake.enqueue(Script(chunks=["# A heading\n\nSome **bold** text, a list:\n\n- one\n- two\n\n"
                                "```python\nprint('hello')\n```"]))
    send(page, "Show the look")
    page.wait_for(IDLE + " && document.querySelectorAll('.msg').length === 2")
    paint = page.evaluate("performance.getEntriesByName('first-contentful-paint')[0]"
                          "?.startTime ?? null")

    key(page, "k", ctrl=True)                               # search
    assert page.evaluate("document.activeElement.id") == "search"
    key(page, "o", ctrl=True, shift=True)                   # new chat
    page.wait_for("location.pathname === '/' && !document.querySelector('.msg')")
    page.evaluate("history.back()")
    page.wait_for("document.querySelectorAll('.msg').length === 2")

    SHOTS.mkdir(exist_ok=True)
    for width, height, name in ((1280, 800, "desktop"), (390, 844, "phone")):
        page.send("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1,
            "mobile": width < 700})
        for theme in ("light", "dark"):
            set_value(page, "#setting-theme", theme)
            page.screenshot(SHOTS / f"chat-{name}-{theme}.png")
    set_value(page, "#setting-theme", "system")

    # the phone: the drawer opens from its button and closes on Esc or a tap outside
    assert page.evaluate("getComputedStyle(document.querySelector('nav')).display") == "none"
    page.click("#toggle-threads")
    page.wait_for("getComputedStyle(document.querySelector('nav')).display !== 'none'")
    page.screenshot(SHOTS / "chat-phone-drawer.png")
    page.press("Escape")
    page.wait_for("getComputedStyle(document.querySelector('nav')).display === 'none'")
    key(page, "b", ctrl=True)                               # toggle the sidebar
    page.wait_for("getComputedStyle(document.querySelector('nav')).display !== 'none'")
    page.click("#messages")
    page.wait_for("getComputedStyle(document.querySelector('nav')).display === 'none'")
    for selector in ("#send", "#stop", "#attach", "#toggle-threads", "#model",
                     "#messages .msg .tools button", "#messages .copy-code"):
        size = box_of(page, selector)
        assert size["height"] >= 44 and size["width"] >= 44, (selector, size)
    assert page.evaluate("document.querySelector('#input').placeholder") == "Message"
    one_line = box_of(page, "#input")["height"]
    page.type("#input", "one\ntwo\nthree\nfour")
    page.evaluate("document.querySelector('#input').dispatchEvent(new Event('input'))")
    assert box_of(page, "#input")["height"] > one_line + 30      # it grows with its text
    page.send("Emulation.clearDeviceMetricsOverride")
    (SHOTS / "first-paint.json").write_text(json.dumps({"first_contentful_paint_ms": paint}))
