// llmhub's web chat. Replies are /v1/responses runs in the background, kept in the
// thread (a conversation): the page follows a run's events and can re-attach to them after
// a reload, a thread switch or a dropped network, because only Stop cancels a run.
// Rules: model output and stored messages reach the page as text (textContent,
// createElement; Markdown through markdown.js, which builds nodes), never as HTML. Every
// failure stays on screen, naming its request, with a Retry, until that request works.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const LIVE_KEY = "llmhub.live";          // threadId → {id, stream}: runs to re-attach to
const state = {
  threadId: null, thread: null, parent: null, messages: [], models: [],
  live: new Map(),                        // threadId → the run being followed
  cursor: null, search: "", attachments: [], stick: true, problems: new Map(),
  thoughts: new Map(),                    // threadId → the reasoning of its last reply, as
                                          // streamed (the thread's messages do not carry it)
  titles: new Map(),                      // threadId → title, as the list last said
};

// --- settings, kept in localStorage ------------------------------------------------------

const settings = {
  get stream() { return localStorage.getItem("streamResponses") !== "false"; },
  set stream(on) { localStorage.setItem("streamResponses", on ? "true" : "false"); },
  get apiKey() { return localStorage.getItem("apiKey") || ""; },
  set apiKey(key) { localStorage.setItem("apiKey", key); },
  get(name) { return localStorage.getItem("llmhub." + name) || ""; },
  set(name, value) { localStorage.setItem("llmhub." + name, value); },
};
const NUMBERS = { temperature: [0, 2], "top-p": [0, 1], "max-tokens": [1, 1e7] };

function number(name) {
  const raw = settings.get(name).trim();
  if (!raw) return undefined;
  const value = Number(raw), [low, high] = NUMBERS[name];
  return Number.isFinite(value) && value >= low && value <= high ? value : undefined;
}

function applyTheme() {
  const theme = settings.get("theme") || "system";
  if (theme === "system") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
}

// --- the hub's API -----------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, status, where) { super(message); this.status = status; this.where = where; }
}

function headers(extra = {}) {
  const all = { "Content-Type": "application/json", ...extra };
  if (settings.apiKey) all.Authorization = "Bearer " + settings.apiKey;
  return all;
}

async function request(method, path, body, signal) {
  let response;
  try {
    response = await fetch(path, { method, headers: headers(), signal,
                                   body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError("the hub cannot be reached (network error)", 0, `${method} ${path}`);
  }
  return response;
}

async function api(method, path, body, signal) {
  const response = await request(method, path, body, signal);
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(errorText(data, response.status), response.status,
                                       `${method} ${path.split("?")[0]}`);
  return data;
}

function errorText(data, status) {
  const error = data && (data.error || data.detail);
  const text = typeof error === "string" ? error : error && error.message;
  if (status === 401) return (text || "unauthorized") + ": enter the hub's API key in Settings";
  return text || "the hub answered " + status;
}

// --- problems: each stays, naming its request, until that request works -----------------

function setProblem(key, error, retry) {
  state.problems.set(key, { error, retry });
  drawProblems();
}

function clearProblem(key) {
  if (state.problems.delete(key)) drawProblems();
}

function drawProblems() {
  const box = $("#problems");
  box.replaceChildren(...[...state.problems.values()].map(({ error, retry }) => {
    const row = document.createElement("div");
    row.className = "problem";
    const text = document.createElement("span");
    text.textContent = (error.where ? error.where + " failed: " : "") + error.message;
    row.append(text);
    if (retry) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "retry";
      button.textContent = "Retry";
      button.addEventListener("click", retry);
      row.append(button);
    }
    return row;
  }));
  box.hidden = state.problems.size === 0;
}

// --- models ------------------------------------------------------------------------------

let modelsTimer = null;

async function loadModels() {
  clearTimeout(modelsTimer);
  try {
    const { data } = await api("GET", "/v1/models");
    state.models = data;
    const select = $("#model");
    const wanted = select.value || localStorage.getItem("model");
    select.replaceChildren(...data.map((model) => {
      const option = document.createElement("option");
      option.value = option.textContent = model.id;
      return option;
    }));
    if (wanted && data.some((m) => m.id === wanted)) select.value = wanted;
    clearProblem("models");
  } catch (error) {
    setProblem("models", error, loadModels);
    modelsTimer = setTimeout(loadModels, 5000);    // the list comes back with the upstream
  }
}

function chosenModel() {
  return state.models.find((m) => m.id === $("#model").value);
}

// --- the thread list ---------------------------------------------------------------------

async function loadThreads(more = false) {
  const params = new URLSearchParams({ limit: "50" });
  if (more && state.cursor) params.set("before", String(state.cursor));
  if (state.search) params.set("q", state.search);
  try {
    const { data, has_more } = await api("GET", "/v1/threads?" + params);
    const list = $("#thread-list");
    if (!more) list.replaceChildren();
    const shown = state.search ? data : data.filter((t) => !(t.metadata || {}).branch_of);
    list.append(...shown.map(threadItem));
    state.cursor = data.length ? data[data.length - 1].updated_at : null;
    $("#more-threads").hidden = !has_more;
    clearProblem("threads");
  } catch (error) { setProblem("threads", error, () => loadThreads(more)); }
}

function threadItem(thread) {
  state.titles.set(thread.id, thread.title || "Untitled chat");
  const item = document.createElement("li");
  item.dataset.threadId = thread.id;
  const open = button(thread.title || "Untitled chat", "open");
  if (thread.id === state.threadId) open.classList.add("current");
  open.addEventListener("click", () => openThread(thread.id));
  const rename = button("✎", "rename", "Rename");
  rename.addEventListener("click", () => renameThread(item, thread));
  const remove = button("✕", "delete", "Delete");
  remove.addEventListener("click", () => confirmDelete(item, thread));
  item.append(open, rename, remove);
  return item;
}

function button(text, className, label) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = text;
  if (label) { b.setAttribute("aria-label", label); b.title = label; }
  return b;
}

function renameThread(item, thread) {
  const input = document.createElement("input");
  input.className = "rename-input";
  input.value = thread.title || "";
  input.setAttribute("aria-label", "New title");
  item.replaceChildren(input);
  input.focus();
  input.select();
  input.addEventListener("keydown", async (event) => {
    if (event.key === "Escape") { event.stopPropagation(); loadThreads(); return; }
    if (event.key !== "Enter" || !input.value.trim()) return;
    try {
      await api("POST", `/v1/threads/${encodeURIComponent(thread.id)}/title`,
                { title: input.value.trim() });
      clearProblem("rename");
    } catch (error) { setProblem("rename", error); }
    loadThreads();
  });
}

function confirmDelete(item, thread) {
  const ask = document.createElement("span");
  ask.className = "confirm";
  ask.textContent = "Delete this chat?";
  const yes = button("Delete", "confirm-delete");
  const no = button("Keep", "cancel-delete");
  no.addEventListener("click", () => loadThreads());
  yes.addEventListener("click", async () => {
    try {
      const deleted = await deleteTree(thread);
      clearProblem("delete");
      if (deleted.includes(state.threadId)) newChat();
    } catch (error) { setProblem("delete", error); }
    loadThreads();
  });
  item.replaceChildren(ask, yes, no);
  yes.focus();
}

async function deleteTree(thread) {
  // its branches first: they are reached only through it. The ids deleted.
  const deleted = [];
  for (const branch of branchesOf(thread)) {
    const child = await api("GET", `/v1/threads/${encodeURIComponent(branch.id)}`)
      .catch(() => null);
    if (child) deleted.push(...await deleteTree(child));
  }
  await api("DELETE", `/v1/threads/${encodeURIComponent(thread.id)}`);
  return [...deleted, thread.id];
}

// --- opening a thread --------------------------------------------------------------------

function threadFromPath() {
  const match = location.pathname.match(/^\/c\/([^/]+)$/);
  return match ? decodeURIComponent(match[1]) : null;
}

async function openThread(threadId, push = true) {
  const refresh = state.threadId === threadId && !push;
  state.threadId = threadId;
  if (push && threadFromPath() !== threadId) history.pushState({}, "", "/c/" + encodeURIComponent(threadId));
  closeDrawer();
  markCurrent();
  try {
    const id = encodeURIComponent(threadId);
    const [thread, messages] = await Promise.all([api("GET", `/v1/threads/${id}`),
                                                  newestMessages(threadId)]);   // paging.js
    if (state.threadId !== threadId) return;          // another was opened meanwhile
    state.thread = thread;
    state.messages = messages.filter((m) => m.role === "user" || m.role === "assistant");
    const parent = (thread.metadata || {}).branch_of;
    state.parent = parent ? await api("GET", `/v1/threads/${encodeURIComponent(parent)}`)
      .catch(() => null) : null;
    clearProblem("open");
    drawMessages(refresh);
    resume(threadId);
  } catch (error) { setProblem("open", error, () => openThread(threadId, false)); }
}

function newChat() {
  state.threadId = state.thread = state.parent = null;
  state.messages = [];
  if (location.pathname !== "/") history.pushState({}, "", "/");
  drawMessages();
  markCurrent();
  closeDrawer();
  $("#input").focus();
}

function markCurrent() {
  for (const open of document.querySelectorAll("#thread-list .open")) {
    open.classList.toggle("current", open.parentElement.dataset.threadId === state.threadId);
  }
}

// --- drawing messages --------------------------------------------------------------------

function drawMessages(refresh = false) {
  // a refresh (the same thread, redrawn) keeps where the reader had scrolled to
  const box = $("#messages");
  const top = box.scrollTop;
  box.replaceChildren(...state.messages.map((message, index) => messageBox(message, index)));
  const older = olderButton();                              // paging.js: a long chat's start
  if (older) box.prepend(older);
  const live = state.live.get(state.threadId);
  if (live) box.append(liveBox(live));
  $("#chat-actions").hidden = !state.threadId;
  updateComposer();
  if (refresh && !state.stick) box.scrollTop = top;
  scrollToEnd(!refresh);
}

function textOf(content) {
  if (typeof content === "string") return content;
  return (content || []).filter((p) => p.type === "text" || p.type === "input_text" ||
                                       p.type === "output_text").map((p) => p.text).join("\n");
}

function imagesOf(content) {
  if (!Array.isArray(content)) return [];
  return content.filter((p) => p.type === "image_url" || p.type === "input_image")
    .map((p) => typeof p.image_url === "string" ? p.image_url : (p.image_url || {}).url)
    .filter((url) => typeof url === "string");
}

function shell(role) {
  const box = document.createElement("div");
  box.className = "msg " + role;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Assistant";
  const body = document.createElement("div");
  body.className = "body";
  const tools = document.createElement("div");
  tools.className = "tools";
  box.append(who, body, tools);
  return box;
}

function messageBox(message, index) {
  const box = shell(message.role);
  const text = textOf(message.content);
  const meta = message.metadata || {};
  box.dataset.index = index;
  if (message.role === "user") {
    showUserText($(".body", box), text);                    // attachments.js
    for (const url of imagesOf(message.content)) image(box, url);
  } else {
    const { reasoning, answer } = splitThinking(text);
    const streamed = index === state.messages.length - 1 && state.thoughts.get(state.threadId);
    if (reasoning || streamed) thinking(box, reasoning || streamed, false);
    renderMarkdown($(".body", box), answer);
    statLine(box, meta);
  }
  const flag = meta.status === "cancelled" ? "stopped" : meta.status === "failed" ? "failed" : null;
  if (flag) markFlag(box, flag);
  messageTools(box, message, index, text);
  return box;
}

function image(box, url) {
  if (!/^data:image\/(png|jpeg|gif|webp);base64,/.test(url)) return;   // never fetch a URL
  const img = document.createElement("img");
  img.className = "attached";
  img.alt = "attached image";
  img.src = url;
  $(".body", box).after(img);
}

function splitThinking(text) {
  const match = text.match(/^\s*<think>([\s\S]*?)(<\/think>|$)([\s\S]*)$/);
  return match ? { reasoning: match[1].trim(), answer: match[3].trimStart() }
               : { reasoning: "", answer: text };
}

function thinking(box, text, streaming) {
  let details = $(".thinking", box);
  if (!details) {
    details = document.createElement("details");
    details.className = "thinking";
    details.open = streaming;
    const summary = document.createElement("summary");
    summary.textContent = "Thinking";
    const inner = document.createElement("div");
    inner.className = "thought";
    details.append(summary, inner);
    $(".who", box).after(details);
  }
  $(".thought", details).textContent = text;
  $("summary", details).textContent = streaming ? "Thinking…" : "Thinking";
}

function statLine(box, meta) {
  if (!meta.model) return;
  const parts = [meta.requested_model ? `${meta.model} (asked: ${meta.requested_model})`
                                      : meta.model];
  if (meta.output_tokens != null) {
    parts.push(`${meta.output_tokens} ${meta.output_tokens === 1 ? "token" : "tokens"}`);
  }
  if (meta.tokens_per_second != null) parts.push(`${meta.tokens_per_second} tokens/s`);
  if (meta.ttft_ms != null) parts.push(`first token ${(meta.ttft_ms / 1000).toFixed(2)} s`);
  let line = $(".stats", box);
  if (!line) { line = document.createElement("div"); line.className = "stats"; $(".tools", box).before(line); }
  line.textContent = parts.join(" · ");
}

function markFlag(box, flag) {
  let label = $(".flag", box);
  if (!label) { label = document.createElement("span"); label.className = "flag"; $(".who", box).append(label); }
  label.textContent = flag;
  box.classList.remove("stopped", "failed");
  box.classList.add(flag);
  box.dataset.state = flag;
}

function messageTools(box, message, index, text) {
  const tools = $(".tools", box);
  const copy = button("Copy", "copy", "Copy this message");
  copy.dataset.copy = text;
  tools.append(copy);
  const last = index === state.messages.length - 1;
  if (message.role === "user") {
    const edit = button("Edit", "edit", "Edit and resend");
    edit.addEventListener("click", () => editMessage(box, index, text));
    tools.append(edit);
    switcher(tools, index);
  } else if (last) {
    const again = button("Regenerate", "regenerate", "Answer again (the old answer stays as a branch)");
    again.addEventListener("click", regenerate);
    tools.append(again);
  }
}

// --- branches: an edit or a regenerate forks the thread; a switcher joins the forks ------

function branchesOf(thread) {
  try { return JSON.parse((thread.metadata || {}).branches || "[]"); } catch (error) { return []; }
}

function siblings(index) {
  const meta = state.thread.metadata || {};
  const isBranchHere = meta.branch_of && Number(meta.branch_at) === index && state.parent;
  const parent = isBranchHere ? state.parent : state.thread;
  return [parent.id, ...branchesOf(parent).filter((b) => b.at === index).map((b) => b.id)];
}

function switcher(tools, index) {
  if (!state.thread) return;
  const ids = siblings(index);
  if (ids.length < 2) return;
  const at = ids.indexOf(state.threadId);
  const wrap = document.createElement("span");
  wrap.className = "switcher";
  const back = button("‹", "prev", "Previous version");
  const count = document.createElement("span");
  count.className = "count";
  count.textContent = `${at + 1}/${ids.length}`;
  const next = button("›", "next", "Next version");
  back.disabled = at <= 0;
  next.disabled = at >= ids.length - 1;
  back.addEventListener("click", () => openThread(ids[at - 1]));
  next.addEventListener("click", () => openThread(ids[at + 1]));
  wrap.append(back, count, next);
  tools.append(wrap);
}

function editMessage(box, index, text) {
  const area = document.createElement("textarea");
  area.className = "edit-input";
  area.value = text;
  area.setAttribute("aria-label", "Edited message");
  const save = button("Send", "save-edit");
  const cancel = button("Cancel", "cancel-edit");
  cancel.addEventListener("click", drawMessages);
  save.addEventListener("click", () => fork(index, area.value, imagesOf(state.messages[index].content)));
  $(".body", box).replaceChildren(area);
  $(".tools", box).replaceChildren(save, cancel);
  area.focus();
}

async function regenerate() {
  const index = state.messages.map((m) => m.role).lastIndexOf("user");
  if (index < 0) return;
  const message = state.messages[index];
  await fork(index, textOf(message.content), imagesOf(message.content));
}

async function fork(index, text, images) {
  if (!text.trim() || busy()) return;
  const parent = state.thread;
  try {
    index += await loadEveryOlder();        // paging.js: the whole chat, before it branches
    const kept = state.messages.slice(0, index).map((m) => ({ role: m.role, content: m.content }));
    const branch = await postThread(kept, { branch_of: parent.id,      // paging.js
                                            branch_at: String(index) });
    const branches = [...branchesOf(parent), { id: branch.id, at: index }];
    await api("POST", `/v1/threads/${encodeURIComponent(parent.id)}`,
              { metadata: { branches: JSON.stringify(branches) } });
    await api("POST", `/v1/threads/${encodeURIComponent(branch.id)}/title`,
              { title: threadTitle(parent.id) });
    clearProblem("branch");
    await openThread(branch.id);
    await send(text, images.map((url) => ({ kind: "image", dataUrl: url, name: "image" })),
               { name: false });           // a branch keeps its parent's title
  } catch (error) { setProblem("branch", error, () => fork(index, text, images)); }
}

// --- sending and following a reply -------------------------------------------------------

function busy() { return state.live.has(state.threadId); }

function updateComposer() {
  $("#stop").disabled = !busy();
  $("#send").disabled = busy();
}

async function send(text, attachments = state.attachments, { name = true } = {}) {
  if (!text.trim() && !attachments.length) return;
  if (busy()) return;
  const model = $("#model").value;
  const chosen = chosenModel();
  if (attachments.some((a) => a.kind === "image") && chosen && chosen.type &&
      chosen.type !== "vlm") {
    setProblem("send", new ApiError(`${model} cannot see images: choose a vision model, or ` +
                                    "remove the image", 0, ""));
    return;
  }
  clearProblem("send");
  const input = content(text, attachments);
  try {
    if (!state.threadId) {
      const conversation = await api("POST", "/v1/conversations", {});
      state.threadId = conversation.id;
      state.thread = { id: conversation.id, metadata: {} };
      history.pushState({}, "", "/c/" + encodeURIComponent(conversation.id));
    }
    const body = { model, conversation: state.threadId, background: true,
                   input: [{ type: "message", role: "user", content: input }],
                   instructions: settings.get("system").trim() || undefined,
                   temperature: number("temperature"), top_p: number("top-p"),
                   max_output_tokens: number("max-tokens") };
    const threadId = state.threadId;
    state.messages.push({ role: "user", content: input, metadata: {} });
    const created = await api("POST", "/v1/responses", body);
    const live = { id: created.id, threadId, stream: settings.stream, seq: -1, text: "",
                   reasoning: "",
                   firstReply: name && !state.messages.some((m) => m.role === "assistant") };
    remember(live);
    clearAttachments();
    follow(live);
  } catch (error) {
    setProblem("send", error, () => { $("#input").value = text; send(text, attachments); });
    if (state.threadId) openThread(state.threadId, false);
  }
  loadThreads();
}

function remember(live) {
  const kept = JSON.parse(localStorage.getItem(LIVE_KEY) || "{}");
  if (live.done) delete kept[live.threadId];
  else kept[live.threadId] = { id: live.id, stream: live.stream, firstReply: live.firstReply };
  localStorage.setItem(LIVE_KEY, JSON.stringify(kept));
}

function resume(threadId) {
  if (state.live.has(threadId)) return;
  const kept = JSON.parse(localStorage.getItem(LIVE_KEY) || "{}")[threadId];
  if (kept) follow({ ...kept, threadId, seq: -1, text: "", reasoning: "" });
}

async function follow(live) {
  state.live.set(live.threadId, live);
  live.controller = new AbortController();
  live.started = performance.now();
  if (live.threadId === state.threadId) drawMessages(true);
  try {
    const after = live.seq >= 0 ? `&starting_after=${live.seq}` : "";
    const response = await request("GET", `/v1/responses/${encodeURIComponent(live.id)}` +
                                   `?stream=true${after}`, undefined, live.controller.signal);
    if (response.status === 404) { live.done = true; remember(live); }   // long gone
    else if (!response.ok) {
      throw new ApiError(errorText(await response.json().catch(() => null), response.status),
                         response.status, "GET /v1/responses/" + live.id);
    } else {
      await readEvents(response, (event, data) => onEvent(live, event, data));
    }
  } catch (error) {
    if (error.name !== "AbortError") live.error = error;
  }
  await settle(live);
}

function onEvent(live, event, data) {
  live.seq = data.sequence_number ?? live.seq;
  if (event === "response.output_text.delta") live.text += data.delta;
  else if (event === "response.reasoning_text.delta") live.reasoning += data.delta;
  else if (event === "error") live.error = new ApiError(data.message, 0, "");
  else if (/^response\.(completed|incomplete|failed)$/.test(event)) {
    live.status = data.response.status;
    if (data.response.error) live.error = new ApiError(data.response.error.message, 0, "");
    return;
  } else return;
  if (live.firstAt === undefined) live.firstAt = performance.now();
  if (live.stream) drawLive(live);
}

let drawPending = null;
function drawLive(live) {
  if (drawPending) return;
  drawPending = requestAnimationFrame(() => {
    drawPending = null;
    if (live.threadId !== state.threadId) return;
    const box = $("#messages .msg.live");
    if (box) fillLive(box, live);
    scrollToEnd();
  });
}

function liveBox(live) {
  const box = shell("assistant");
  box.classList.add("live");
  fillLive(box, live);
  return box;
}

function fillLive(box, live) {
  const { reasoning, answer } = splitThinking(live.text);
  const thought = live.reasoning || reasoning;
  if (live.stream && thought) thinking(box, thought, true);
  const body = $(".body", box);
  if (!live.stream || (!answer && !thought)) {
    body.replaceChildren();
    const dots = document.createElement("span");
    dots.className = "typing";
    dots.setAttribute("aria-label", live.stream ? "Waiting for the first token" : "Generating");
    dots.textContent = live.stream ? "…" : "Generating…";
    body.append(dots);
  } else {
    renderMarkdown(body, answer);
  }
}

async function settle(live) {
  live.done = true;
  if (live.reasoning) state.thoughts.set(live.threadId, live.reasoning);
  else state.thoughts.delete(live.threadId);
  remember(live);
  state.live.delete(live.threadId);
  if (live.error && live.status !== "cancelled") {
    setProblem("reply", live.error, () => { clearProblem("reply"); regenerate(); });
  } else if (live.status === "completed") {
    clearProblem("reply");
  }
  if (live.threadId === state.threadId) {
    await openThread(live.threadId, false);
    announce();
  } else {
    updateComposer();
  }
  if (live.firstReply && live.status === "completed") nameThread(live.threadId);
}

async function nameThread(threadId) {
  try {
    await api("POST", `/v1/threads/${encodeURIComponent(threadId)}/title`);
  } catch (error) { /* the first message's start stays the title */ }
  loadThreads();
}

function announce() {
  const last = state.messages[state.messages.length - 1];
  if (last && last.role === "assistant") $("#announce").textContent = textOf(last.content);
}

async function stop() {
  const live = state.live.get(state.threadId);
  if (!live) return;
  try {
    if (live.stream) {
      await api("POST", `/v1/responses/${encodeURIComponent(live.id)}/cancel`);
    } else {                           // nothing streams to stop: cancel the run, stop waiting
      await api("POST", "/chat/cancel", { request_id: live.id });
      live.status = "cancelled";
      live.controller.abort();
    }
    clearProblem("stop");
  } catch (error) { setProblem("stop", error, stop); }
  $("#input").focus();
}

// --- attachments: attachments.js (addFiles, drawAttachments, clearAttachments, content,
// showUserText) -------------------------------------------------------------------------

// --- export and import -------------------------------------------------------------------

function exportJSON() {
  return JSON.stringify({ llmhub_export: 1, thread: { id: state.thread.id, title: threadTitle(),
                          metadata: state.thread.metadata || {} },
                          messages: state.messages.map((m) => ({ role: m.role, content: m.content,
                                                                 metadata: m.metadata || {} })) },
                        null, 2);
}

function exportMarkdown() {
  const lines = [`# ${threadTitle()}`, ""];
  for (const m of state.messages) {
    const who = m.role === "user" ? "You" : `Assistant${(m.metadata || {}).model ? ` (${m.metadata.model})` : ""}`;
    lines.push(`**${who}:**`, "", textOf(m.content), "");
  }
  return lines.join("\n");
}

function threadTitle(threadId = state.threadId) {
  // as listed; a branch (not listed) goes by its parent's
  const branchOf = threadId === state.threadId && ((state.thread || {}).metadata || {}).branch_of;
  return state.titles.get(threadId) || (branchOf && state.titles.get(branchOf)) || "Chat";
}

function download(text, type, extension) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type }));
  link.download = threadTitle().replace(/[^\w\- ]+/g, "").trim().slice(0, 60) + extension;
  link.className = "download";
  document.body.append(link);
  link.click();
  setTimeout(() => { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
  return link;
}

// importChat: transfer.js (llmhub's, Open WebUI's and llama.cpp's exports)

// --- copying -----------------------------------------------------------------------------

async function copyText(text, control) {
  try { await navigator.clipboard.writeText(text); }
  catch (error) {                       // no clipboard API here (plain http on a LAN name)
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  const before = control.textContent;
  control.textContent = "Copied";
  setTimeout(() => { control.textContent = before; }, 1200);
}

// --- scrolling, the drawer, the input ----------------------------------------------------

function scrollToEnd(force = false) {
  const box = $("#messages");
  if (force) state.stick = true;
  if (state.stick) box.scrollTop = box.scrollHeight;
  $("#jump").hidden = state.stick;
}

function closeDrawer() { document.body.classList.remove("show-threads"); $("#toggle-threads").setAttribute("aria-expanded", "false"); }
function toggleDrawer() {
  const open = document.body.classList.toggle("show-threads");
  $("#toggle-threads").setAttribute("aria-expanded", String(open));
}

function grow() {
  const input = $("#input");
  input.style.height = "auto";
  input.style.height = Math.min(input.scrollHeight + 2, window.innerHeight * 0.4) + "px";
}

function submit() {
  const text = $("#input").value;
  if (busy() || (!text.trim() && !state.attachments.length)) return;
  $("#input").value = "";
  grow();
  send(text);
  $("#input").focus();
}

// --- wiring ------------------------------------------------------------------------------

function wire() {
  $("#composer").addEventListener("submit", (event) => { event.preventDefault(); submit(); });
  $("#stop").addEventListener("click", stop);
  $("#input").addEventListener("input", grow);
  $("#input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); submit(); }
  });
  $("#input").addEventListener("paste", (event) => {
    const files = [...(event.clipboardData || {}).files || []];
    if (files.length) { event.preventDefault(); addFiles(files); }
  });
  $("main").addEventListener("dragover", (event) => event.preventDefault());
  $("main").addEventListener("drop", (event) => { event.preventDefault(); addFiles(event.dataTransfer.files); });
  $("#attach").addEventListener("click", () => $("#file").click());
  $("#file").addEventListener("change", (event) => { addFiles(event.target.files); event.target.value = ""; });
  document.addEventListener("keydown", (event) => {
    const mod = event.ctrlKey || event.metaKey;
    if (event.key === "Escape") {
      if (document.body.classList.contains("show-threads")) closeDrawer(); else stop();
    } else if (mod && event.shiftKey && event.key.toLowerCase() === "o") { event.preventDefault(); newChat(); }
    else if (mod && event.key.toLowerCase() === "k") { event.preventDefault(); openDrawerFor("#search"); }
    else if (mod && event.key.toLowerCase() === "b") { event.preventDefault(); toggleDrawer(); }
  });
  $("#layout").addEventListener("click", (event) => {    // a tap outside the drawer closes it
    if (document.body.classList.contains("show-threads") && !event.target.closest("nav")) closeDrawer();
  });
  $("#messages").addEventListener("click", (event) => {
    const copy = event.target.closest("[data-copy]");
    if (copy) copyText(copy.dataset.copy, copy);
  });
  $("#messages").addEventListener("scroll", () => {
    const box = $("#messages");
    state.stick = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    $("#jump").hidden = state.stick;
  });
  $("#jump").addEventListener("click", () => scrollToEnd(true));
  $("#new-thread").addEventListener("click", newChat);
  $("#toggle-threads").addEventListener("click", (event) => { event.stopPropagation(); toggleDrawer(); });
  $("#more-threads").addEventListener("click", () => loadThreads(true));
  let searchTimer = null;
  $("#search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { state.search = $("#search").value.trim(); loadThreads(); }, 200);
  });
  $("#export-json").addEventListener("click", () => download(exportJSON(), "application/json", ".json"));
  $("#export-md").addEventListener("click", () => download(exportMarkdown(), "text/markdown", ".md"));
  $("#import-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (file) await importChat(await file.text());
    event.target.value = "";
  });
  $("#model").addEventListener("change", () => localStorage.setItem("model", $("#model").value));
  wireSettings();
  window.addEventListener("popstate", () => {
    const threadId = threadFromPath();
    if (threadId) openThread(threadId, false); else newChat();
  });
}

function openDrawerFor(selector) {
  document.body.classList.add("show-threads");
  $("#toggle-threads").setAttribute("aria-expanded", "true");
  $(selector).focus();
}

function wireSettings() {
  $("#stream-responses").checked = settings.stream;
  $("#stream-responses").addEventListener("change", (e) => { settings.stream = e.target.checked; });
  $("#api-key").value = settings.apiKey;
  $("#api-key").addEventListener("change", (e) => {
    settings.apiKey = e.target.value;
    loadModels();
    loadThreads();
  });
  for (const name of ["system", "temperature", "top-p", "max-tokens", "theme"]) {
    const control = $("#setting-" + name);
    control.value = settings.get(name) || (name === "theme" ? "system" : "");
    control.addEventListener("change", () => { settings.set(name, control.value); applyTheme(); });
  }
  $("#open-settings").addEventListener("click", () => {
    const panel = $("#settings");
    panel.hidden = !panel.hidden;
    $("#open-settings").setAttribute("aria-expanded", String(!panel.hidden));
  });
}

applyTheme();
const phone = matchMedia("(max-width: 700px)");
const placeholder = () => {
  $("#input").placeholder = phone.matches ? "Message"
    : "Message (Enter sends, Shift+Enter for a new line, Esc stops)";
};
phone.addEventListener("change", placeholder);
placeholder();
wire();
loadModels();
loadThreads();
if (threadFromPath()) openThread(threadFromPath(), false); else drawMessages();
