// Long chats (issue 30 point 8): a chat opens at its newest messages, a page at a time
// from the end (GET …/messages?order=desc), and older pages come as the reader scrolls up
// or presses "Load older messages". Before an edit or a regenerate branches the chat, the
// rest of its history is loaded, so the branch keeps all of it and its index is the
// message's place in the whole chat. Loaded before app.js; its functions use app.js's
// globals ($, state, api, request, ApiError, drawMessages); app.js calls newestMessages,
// olderButton, loadEveryOlder and postThread.
"use strict";

const PAGING_SIZE = 500;                  // messages a page: most chats fit in one

async function messagePage(threadId, after) {
  // one page, newest first from `after` back; returns it oldest first, and the cursor of
  // the page before it (null: this page reaches the chat's start)
  const query = new URLSearchParams({ limit: String(PAGING_SIZE), order: "desc",
                                      include: "reasoning" });   // each reply's, kept
  if (after) query.set("after", after);
  const path = `/v1/threads/${encodeURIComponent(threadId)}/messages?${query}`;
  const response = await request("GET", path);
  const data = await response.json().catch(() => null);
  if (!response.ok) throw apiError(data, response.status, "GET " + path.split("?")[0]);
  const more = response.headers.get("X-Has-More") === "true";
  return { messages: data.reverse(), cursor: more ? response.headers.get("X-Next-After") : null };
}

async function newestMessages(threadId) {
  // the chat's newest page; a chat opened again (a reply ended, a retry) keeps the older
  // pages the reader had loaded above it, so the view does not jump
  const { messages, cursor } = await messagePage(threadId, null);
  const shownBefore = state.older && state.older.threadId === threadId ? state.messages : [];
  const at = messages.length ? shownBefore.findIndex((m) => m.id === messages[0].id) : -1;
  if (cursor && at > 0) return shownBefore.slice(0, at).concat(messages);   // older kept
  state.older = { threadId, cursor, loading: null };       // cursor null: the chat's start
  return messages;
}

function pagingShown(messages) {
  return messages.filter((m) => m.role === "user" || m.role === "assistant");   // as app.js
}

function loadOlder() {
  // the page before the oldest shown, drawn above it with the reader's view kept in place;
  // one load at a time; resolves to how many messages came
  const older = state.older;
  if (!older || older.threadId !== state.threadId || !older.cursor) return Promise.resolve(0);
  if (older.loading) return older.loading;
  older.loading = (async () => {
    try {
      const { messages, cursor } = await messagePage(older.threadId, older.cursor);
      if (state.threadId !== older.threadId) return 0;
      const box = $("#messages");
      const height = box.scrollHeight, top = box.scrollTop;
      const added = pagingShown(messages);
      state.messages = added.concat(state.messages);
      state.older = { threadId: older.threadId, cursor, loading: null };
      drawMessages(true);
      box.scrollTop = top + box.scrollHeight - height;
      clearProblem("older");
      return added.length;
    } catch (error) {
      older.loading = null;
      setProblem("older", error, loadOlder);
      throw error;
    }
  })();
  return older.loading;
}

async function loadEveryOlder() {
  // the whole chat, before anything counts by a message's place in it; returns how many
  // messages were put before the ones shown
  let added = 0;
  while (state.older && state.older.threadId === state.threadId && state.older.cursor) {
    added += await loadOlder();
  }
  return added;
}

const PAGING_POST = 1000;                  // messages the hub takes in one request

async function postThread(messages, metadata) {
  // a new thread holding `messages`, however many: created with the first thousand, the
  // rest appended a thousand at a time (a long chat's branch, an imported chat)
  const thread = await api("POST", "/v1/threads", { messages: messages.slice(0, PAGING_POST),
                                                    metadata });
  for (let at = PAGING_POST; at < messages.length; at += PAGING_POST) {
    await api("POST", `/v1/threads/${encodeURIComponent(thread.id)}/messages`,
              messages.slice(at, at + PAGING_POST));
  }
  return thread;
}

function olderButton() {
  if (!state.older || state.older.threadId !== state.threadId || !state.older.cursor) return null;
  const more = button("Load older messages", "older");
  more.addEventListener("click", () => loadOlder().catch(() => {}));
  return more;
}

document.getElementById("messages").addEventListener("scroll", (event) => {
  if (event.target.scrollTop < 400) loadOlder().catch(() => {});
});

// The phone drawer's backdrop: a tap on it closes the drawer (app.js closeDrawer).
document.getElementById("drawer-backdrop").addEventListener("click", () => closeDrawer());
