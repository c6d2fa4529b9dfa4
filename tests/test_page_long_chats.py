"""Long chats (issue 30 point 8): the chat page opens a chat of 1,200 messages at its end,
loads older pages on scroll up or by its button, keeps them when the chat is opened again,
and loads the whole history before a regenerate branches it (the API it pages with:
tests/test_thread_paging.py)."""

from chromium import NEEDS_CHROMIUM
from http_client import call
from support import wait_for

pytestmark = NEEDS_CHROMIUM


def long_thread(hub, count: int) -> str:
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"}
                for i in range(count)]
    status, _, thread = call(hub.url, "POST", "/v1/threads", {"messages": messages[:600]})
    assert status == 200
    if messages[600:]:                     # one request takes at most so many
        assert call(hub.url, "POST", f"/v1/threads/{thread['id']}/messages",
                    messages[600:])[0] == 200
    return thread["id"]


COUNT = "document.querySelectorAll('#messages .msg').length"
LAST_BODY = "[...document.querySelectorAll('#messages .msg .body')].at(-1).textContent"


def test_a_long_chat_opens_at_its_end_and_loads_older_messages_upwards(browser, make_hub,
                                                                       fake):
    hub = make_hub()
    thread = long_thread(hub, 1200)
    page = browser.open(hub.url + "/")
    page.evaluate("localStorage.clear()")
    page.goto(f"{hub.url}/c/{thread}")
    page.wait_for(f"{COUNT} === 500")
    assert page.evaluate(LAST_BODY) == "m1199"                          # the newest shown
    assert page.evaluate("document.querySelector('#messages').scrollTop > 0")
    page.evaluate("document.querySelector('#messages').scrollTop = 0;"
                  "document.querySelector('#messages').dispatchEvent(new Event('scroll'))")
    page.wait_for(f"{COUNT} === 1000")
    # the reader's view stays where it was: the message that was first is still in sight
    assert page.evaluate("document.querySelector('#messages').scrollTop > 1000")
    page.click("#messages button.older")
    page.wait_for(f"{COUNT} === 1200 && !document.querySelector('#messages button.older')")
    assert page.evaluate("document.querySelector('#messages .msg .body').textContent") == "m0"
    page.evaluate(f"openThread('{thread}', false)")     # opened again (a reply ended): kept
    assert page.evaluate(COUNT) == 1200

    # a regenerate in a chat opened at its end branches with its whole history
    page.goto(f"{hub.url}/c/{thread}")
    page.wait_for(f"{COUNT} === 500")
    page.click("#messages .msg.assistant:last-of-type .regenerate")
    page.wait_for("location.pathname !== '/c/" + thread + "' && "
                  f"{COUNT} === 1200 && !document.querySelector('.msg.live')")
    branch = page.evaluate("decodeURIComponent(location.pathname.slice(3))")
    _, _, meta = call(hub.url, "GET", f"/v1/threads/{branch}")
    assert meta["metadata"]["branch_at"] == "1198"
    path = f"/v1/threads/{branch}/messages?limit=5000"
    assert wait_for(lambda: len(call(hub.url, "GET", path)[2]) == 1200)   # and its reply
    stored = call(hub.url, "GET", path)[2]
    assert [m["content"] for m in stored[:2]] == ["m0", "m1"] and stored[1198]["content"] == \
        "m1198" and stored[1199]["role"] == "assistant"
