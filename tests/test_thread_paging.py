"""GET /v1/threads/{id}/messages?order=desc: a thread paged from its newest message back
(the chat page opens a long chat at its end with it), for the thread's owner only."""

from http_client import call

ALICE = {"Authorization": "Bearer sk-alice"}
BOB = {"Authorization": "Bearer sk-bob"}


def test_messages_page_from_the_newest_back_for_their_owner_only(make_hub):
    hub = make_hub({"keys": {"alice": "sk-alice", "bob": "sk-bob"}})
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"}
                for i in range(7)]
    thread = call(hub.url, "POST", "/v1/threads", {"messages": messages}, headers=ALICE)[2]["id"]
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
