"""Long chats (issue 30 point 8): the thread message API pages from the newest back
(`order=desc`, owner-checked like every thread read), and the chat page opens a chat of
1,200 messages at its end, loads older pages on scroll up or by its button, and loads the
whole history before a regenerate branches it."""

from chromium import NEEDS_CHROMIUM
from http_client import call
from support import wait_for

ALICE = {"Authorization": "Bearer sk-alice"}
BOB = {"Authorization": "Bearer sk-bob"}


def long_thread(hub, count: int, headers=None) -> str:
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"}
                for i in range(count)]
    status, _, thread = call(hub.url, "POST", "/v1/threads", {"messages": messages[:600]},
                             headers=headers)
    assert status == 200
    if messages[600:]:                     # one request takes at most so many
        assert call(hub.url, "POST", f"/v1/threads/{thread['id']}/messages", messages[600:],
                    headers=headers)[0] == 200
    return thread["id"]


def test_messages_page_from_the_newest_back_for_their_owner_only(make_hub):
    hub = make_hub({"keys": {"alice": "sk-alice", "bob": "sk-bob"}})
    thread = long_thread(hub, 7, ALICE)
    path = f"/v1/threads/{thread}/messages?order=desc&limit=3"
    status, headers, page = call(hub.url, "GET", path, headers=ALICE)
    assert [m["content"] for m in page] == ["m6", "m5", "m4"] and headers["X-Has-More"] == "true"
    after = headers["X-Next-After"]
    assert after == page[-1]["id"] and "order=desc" in headers["Link"]
    _, headers, page = call(hub.url, "GET", f"{path}&after={after}", headers=ALICE)
    assert [m["content"] for m in page] == ["m3", "m2", "m1"]
    _, headers, page = call(hub.url, "GET", f"{path}&after={headers['X-Next-After']}",
                            headers=ALICE)
    assert [m["content"] for m in page] == ["m0"] and headers["X-Has-More"] == "false"
    _, _, oldest_first = call(hub.url, "GET", f"/v1/threads/{thread}/messages?limit=2",
                              headers=ALICE)
    assert [m["content"] for m in oldest_first] == ["m0", "m1"]        # the default is kept
    status, _, body = call(hub.url, "GET", path, headers=BOB)          # not Bob's: unknown
    assert status == 404
    status, _, body = call(hub.url, "GET", path.replace("desc", "sideways"), headers=ALICE)
    assert status == 400 and body["error"]["param"] == "order"


COUNT = "document.querySelectorAll('#messages .msg').length"
LAST_BODY = "[...document.querySelectorAll('#messages .msg .body')].at(-1).textContent"


@NEEDS_CHROMIUM[0]
@NEEDS_CHROMIUM[1]
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
