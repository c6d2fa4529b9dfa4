"""Export every chat at once, and import the anchors' exports (issue 30 point 12): Open
WebUI's chat export (an array of chat rows whose history is a tree of messages) and
llama.cpp's web UI conversations export ({conv, messages}, one or many), each chat as a
thread with its title and the branch its export had open; a file of neither is refused
saying what it is not."""

import json

from chromium import NEEDS_CHROMIUM
from http_client import call

pytestmark = NEEDS_CHROMIUM

# The shapes the anchors write: Open WebUI's Settings › Chats › Export Chats (the rows of
# its chats table, `chat` as its frontend saved it) and llama.cpp's web UI (its
# ExportedConversation type: the conversation and its messages, a synthetic root first).
OPEN_WEBUI = [{
    "id": "7f6c", "user_id": "u1", "title": "Trip to Lisbon", "updated_at": 1733400000,
    "created_at": 1733390000, "share_id": None, "archived": False, "pinned": False,
    "meta": {}, "folder_id": None,
    "chat": {"id": "", "title": "Trip to Lisbon", "models": ["qwen2.5"], "params": {},
             "history": {"currentId": "a2", "messages": {
                 "u1": {"id": "u1", "parentId": None, "childrenIds": ["a1", "a2"],
                        "role": "user", "content": "Plan two days in Lisbon",
                        "timestamp": 1733390000, "models": ["qwen2.5"]},
                 "a1": {"id": "a1", "parentId": "u1", "childrenIds": [], "role": "assistant",
                        "content": "an older answer", "model": "qwen2.5",
                        "timestamp": 1733390001},
                 "a2": {"id": "a2", "parentId": "u1", "childrenIds": [], "role": "assistant",
                        "content": "Day one: Alfama.", "model": "qwen2.5",
                        "timestamp": 1733390002}}},
             "messages": [], "tags": [], "timestamp": 1733390000}}]

LLAMA_CPP = [{
    "conv": {"id": "c1", "name": "Rust lifetimes", "lastModified": 1733400000,
             "currNode": "m2"},
    "messages": [
        {"id": "r", "convId": "c1", "type": "root", "timestamp": 1, "role": "system",
         "content": "", "parent": None, "children": ["m1"]},
        {"id": "m1", "convId": "c1", "type": "text", "timestamp": 2, "role": "user",
         "content": "Explain this", "parent": "r", "children": ["m2"],
         "extra": [{"type": "TEXT", "name": "main.rs", "content": "fn main() {}"}]},   # type unread
        {"id": "m2", "convId": "c1", "type": "text", "timestamp": 3, "role": "assistant",
         "content": "It is an empty program.", "parent": "m1", "children": [],
         "thinking": "", "model": "qwen"}]}]


def load(page, data, name: str = "export.json") -> None:
    """Give the import control a file, as the file dialog would."""
    text = json.dumps(json.dumps(data))
    page.evaluate(f"""(() => {{ const dt = new DataTransfer();
      dt.items.add(new File([{text}], {json.dumps(name)}, {{type: 'application/json'}}));
      const input = document.querySelector('#import-file'); input.files = dt.files;
      input.dispatchEvent(new Event('change')); }})()""")


def threads(hub) -> dict:
    listed = call(hub.url, "GET", "/v1/threads?limit=100")[2]["data"]
    return {t["title"]: [(m["role"], m["content"]) for m in call(
        hub.url, "GET", f"/v1/threads/{t['id']}/messages")[2]] for t in listed}


def test_open_webui_and_llama_cpp_exports_import_as_titled_threads(browser, make_hub):
    hub = make_hub()
    page = browser.fresh(hub.url)
    load(page, OPEN_WEBUI)
    page.wait_for("document.querySelectorAll('.msg').length === 2")
    load(page, LLAMA_CPP)
    page.wait_for("[...document.querySelectorAll('#thread-list li')].length === 2 && "
                  "document.querySelector('.msg.user details.file')")
    stored = threads(hub)
    assert stored["Trip to Lisbon"] == [("user", "Plan two days in Lisbon"),
                                        ("assistant", "Day one: Alfama.")]   # its open branch
    assert stored["Rust lifetimes"] == [
        ("user", "Explain this\n\n````main.rs\nfn main() {}\n````"),
        ("assistant", "It is an empty program.")]
    load(page, {"hello": "world"}, "other.json")
    page.wait_for("document.querySelector('#problems').textContent.includes('holds no chat')")


def test_export_all_chats_holds_every_chat_and_imports_back(browser, make_hub):
    hub = make_hub()
    for title, words in (("First", "one"), ("Second", "two")):
        thread = call(hub.url, "POST", "/v1/threads", {"messages": [
            {"role": "user", "content": words}, {"role": "assistant", "content": "ok"}]})[2]
        call(hub.url, "POST", f"/v1/threads/{thread['id']}/title", {"title": title})
    page = browser.fresh(hub.url)
    page.evaluate("""window.exported = new Promise(resolve => {
      new MutationObserver((changes, observer) => {
        const link = document.querySelector('a.download');
        if (link) { observer.disconnect(); fetch(link.href).then(r => r.json()).then(resolve); }
      }).observe(document.body, {childList: true}); }), true""")
    page.wait_for("document.querySelector('#export-all')")
    page.click("#export-all")
    page.wait_for("document.querySelector('a.download') || "
                  "!document.querySelector('#problems').hidden")
    assert page.evaluate("document.querySelector('#problems').hidden"), page.text("#problems")
    exported = page.evaluate("window.exported")
    assert exported["llmhub_export"] == 1
    assert sorted((c["thread"]["title"], c["messages"][0]["content"])
                  for c in exported["chats"]) == [("First", "one"), ("Second", "two")]
    load(page, exported)                              # and back: two more threads
    page.wait_for("[...document.querySelectorAll('#thread-list li')].length === 4")
    assert sorted(threads(hub)) == ["First", "Second"]      # titles kept (two of each)
