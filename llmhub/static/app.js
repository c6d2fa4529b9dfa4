// llmhub's web chat. Replies are /v1/responses runs in the background, kept in the
// thread (a conversation): the page follows a run's events and can re-attach to them after
// a reload, a thread switch, a dropped network or from a second device (GET /v1/runs?thread_id
// finds the run in progress), because only Stop cancels a run.
// Rules: model output and stored messages reach the page as text (textContent,
// createElement; Markdown through markdown.js, which builds nodes), never as HTML. Every
// failure stays on screen in the user's words, with a Retry where one helps, until it no
// longer applies; an unreachable hub is one line that clears itself when the hub is back.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const LIVE_KEY = "llmhub.live";          // threadId → {id, stream}: runs to re-attach to
const state = {
  threadId: null, thread: null, parent: null, messages: [], models: [],
  live: new Map(),                        // threadId → the run being followed
  cursor: null, search: "", attachments: [], stick: true, problems: new Map(),
  waiting: new Map(),                     // key → retry: what failed while the hub was away
  upstreams: null, modelsAsked: false, modelsError: null, defaultModel: "",
  toolResults: new Map(),                 // tool_call_id → the tool message's content
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
const NUMBERS = { temperature: ["Temperature", 0, 2], "top-p": ["Top-p", 0, 1],
                  "max-tokens": ["Max tokens", 1, 1e7] };

function number(name) {
  const raw = settings.get(name).trim();
  return raw && !settingError(name, raw) ? Number(raw) : undefined;
}

function settingError(name, raw) {
  // why a number setting cannot be used as typed ("" when it can, or is empty)
  if (!NUMBERS[name] || !raw.trim()) return "";
  const [label, low, high] = NUMBERS[name], value = Number(raw);
  if (!Number.isFinite(value) || value < low || value > high) {
    return `${label} must be a number from ${low} to ${high.toLocaleString("en")}`;
  }
  if (name === "max-tokens" && !Number.isInteger(value)) return `${label} must be a whole number`;
  return "";
}

function applyTheme() {
  const theme = settings.get("theme") || "system";
  if (theme === "system") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
}

// --- the hub's API -----------------------------------------------------------------------

class ApiError extends Error {
  // status null (or 0): refused here, before asking the hub; `unreachable` (unreachable()):
  // the hub did not answer at all
  constructor(message, status = null, where = "", code = null) {
    super(message); this.status = status; this.where = where; this.code = code;
  }
}

function unreachable(where) {
  // no answer at all: the hub is down, restarting, or the network is
  return Object.assign(new ApiError("the hub is not answering", 0, where), { unreachable: true });
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
    throw unreachable(`${method} ${path}`);
  }
  return response;
}

async function api(method, path, body, signal) {
  const response = await request(method, path, body, signal);
  const data = await response.json().catch(() => null);
  if (!response.ok) throw apiError(data, response.status, `${method} ${path.split("?")[0]}`);
  return data;
}

function apiError(data, status, where) {
  const error = data && (data.error || data.detail);
  const text = typeof error === "string" ? error : error && error.message;
  const code = error && typeof error === "object" ? error.code || null : null;
  if (status === 401) {
    return new ApiError((text || "unauthorized") + ": enter the hub's API key in Settings",
                        status, where, code);
  }
  return new ApiError(text || "the hub answered " + status, status, where, code);
}

// --- problems: each in the user's words, until it no longer applies ----------------------

const WHAT = {                            // what the user was doing when a request failed
  models: "Could not list the models", threads: "Could not load your chats",
  open: "Could not open this chat", send: "Your message was not sent",
  reply: "The reply failed", stop: "Could not stop the reply",
  rename: "Could not rename the chat", delete: "Could not delete the chat",
  branch: "Could not start a new version", import: "Could not import the file",
};
const HUB_AWAY = "The hub is not answering: is `python main.py` still running? " +
                 "This goes away by itself when the hub is back.";

function setProblem(key, error, retry) {
  if (hubGone(error)) {                   // one line for a hub that is away, not one per request
    state.problems.delete(key);
    state.waiting.set(key, retry);
    hubAway();
    return;
  }
  state.problems.set(key, { error, retry });
  drawProblems();
}

function clearProblem(key) {
  state.waiting.delete(key);
  if (state.problems.delete(key)) drawProblems();
}

function clearChatProblems() {
  // a failed reply, send or fork belongs to the chat it was in: gone when another opens
  for (const key of ["reply", "send", "branch", "stop", "open"]) clearProblem(key);
}

function drawProblems() {
  const box = $("#problems");
  box.replaceChildren(...[...state.problems].map(([key, { error, retry }]) => {
    const row = document.createElement("div");
    row.className = "problem";
    const text = document.createElement("span");
    text.textContent = WHAT[key] ? `${WHAT[key]}: ${error.message}` : error.message;
    row.append(text);
    if (retry) {
      const again = button("Retry", "retry");
      again.addEventListener("click", retry);
      row.append(again);
    }
    return row;
  }));
  box.hidden = state.problems.size === 0;
}

function hubGone(error) {
  // no answer at all, or a hub on its way out (Langbase's error shape has no code for it)
  return error.unreachable || error.code === "shutting_down" ||
    (error.status === 503 && /^The hub is shutting down/.test(error.message));
}

let hubTimer = null;
function hubAway() {
  if (!state.problems.has("hub")) {
    state.problems.set("hub", { error: new ApiError(HUB_AWAY), retry: checkHub });
    drawProblems();
  }
  clearTimeout(hubTimer);
  hubTimer = setTimeout(checkHub, 2000);
}

async function checkHub() {
  // any answer from /health means the hub is up: then what failed meanwhile is asked again
  clearTimeout(hubTimer);
  try { await fetch("/health", { cache: "no-store" }); }
  catch (error) { hubTimer = setTimeout(checkHub, 2000); return; }
  state.problems.delete("hub");
  drawProblems();
  const retries = [...state.waiting.values()];
  state.waiting.clear();
  for (const retry of retries) if (retry) retry();
}

function friendly(error, model) {
  // the hub's words, where they name an internal thing, said as the user sees it
  if (error.code === "model_not_found") {
    return new ApiError(`the model “${model}” is not on the upstream: choose another in ` +
                        "the Model list", error.status, error.where, error.code);
  }
  return error;
}

// --- models: real ones and aliases apart, with the hub's hints; a default that exists ----

let modelsTimer = null, modelsLoading = null;   // the list being asked for: Send waits for it

function loadModels() {
  modelsLoading = askModels().finally(() => { modelsLoading = null; });
  return modelsLoading;
}

async function askModels() {
  clearTimeout(modelsTimer);
  const upstreams = loadUpstreams();
  try {
    const { data } = await api("GET", "/v1/models");
    state.models = data;
    state.modelsAsked = true;
    state.modelsError = null;
    drawModels();
    clearProblem("models");
    const refused = state.problems.get("send");
    if (refused && refused.error.code === "no_model" && $("#model").value) clearProblem("send");
    if (!data.some((m) => !m.alias_of)) modelsTimer = setTimeout(loadModels, 5000);
  } catch (error) {
    if (hubGone(error)) {                        // the hub, not its upstream: the list stays
      setProblem("models", error, loadModels);
      return;
    }
    state.models = [];
    state.modelsError = error;
    state.modelsAsked = true;
    drawModels();
    // an upstream that is down is told on the welcome screen, not as a failure of the page
    if (error.status === 503 || error.status === 502) clearProblem("models");
    else setProblem("models", error, loadModels);
    modelsTimer = setTimeout(loadModels, 5000);    // the list comes back with the upstream
  }
  await upstreams;
  const shown = $("#messages .welcome");        // the welcome screen, told what is new
  if (shown) shown.replaceWith(welcome());
}

async function loadUpstreams() {
  // which upstream the hub uses, and the configured default model: for the welcome screen
  try { state.upstreams = (await api("GET", "/v1/upstreams")).data; }
  catch (error) { state.upstreams = null; }
  try { state.defaultModel = ((await api("GET", "/config")).models || {}).default || ""; }
  catch (error) { state.defaultModel = ""; }
}

function drawModels() {
  const select = $("#model");
  const wanted = select.value;
  const real = state.models.filter((m) => !m.alias_of);
  const aliases = state.models.filter((m) => m.alias_of);
  const group = (label, models) => {
    const optgroup = document.createElement("optgroup");
    optgroup.label = label;
    optgroup.append(...models.map((model) => {
      const option = document.createElement("option");
      option.value = model.id;
      option.textContent = modelLabel(model);
      return option;
    }));
    return optgroup;
  };
  select.replaceChildren(...[real.length && group("Models", real),
                             aliases.length && group("Aliases", aliases)].filter(Boolean));
  selectModel(wanted);
}

function modelLabel(model) {
  if (model.alias_of) return `${model.id} → ${model.alias_of}`;
  const hints = [model.loaded ? "loaded" : null, model.type === "vlm" ? "vision" : null]
    .filter(Boolean);
  return hints.length ? `${model.id} (${hints.join(", ")})` : model.id;
}

function hasModel(id) { return !!id && state.models.some((m) => m.id === id); }

function selectModel(wanted) {
  // this chat's choice, else the last one made, else the configured default if the upstream
  // has it, else a loaded model, else any
  const real = state.models.filter((m) => !m.alias_of);
  const loaded = real.find((m) => m.loaded);
  const choice = [wanted, chatModel(state.threadId), localStorage.getItem("model"),
                  state.defaultModel, loaded && loaded.id, real[0] && real[0].id,
                  state.models[0] && state.models[0].id].find(hasModel);
  $("#model").value = choice || "";
}

function chatModel(threadId) {
  // the model a chat was answered with, as chosen: kept here, else its last reply's
  if (!threadId) return null;
  const kept = localStorage.getItem("llmhub.model." + threadId);
  if (kept || threadId !== state.threadId) return kept;
  const last = [...state.messages].reverse().find((m) => m.role === "assistant");
  const meta = (last && last.metadata) || {};
  return meta.requested_model || meta.model || null;
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
    if (!more && state.search && !shown.length) list.append(noResults(state.search));
    state.cursor = data.length ? data[data.length - 1].updated_at : null;
    $("#more-threads").hidden = !has_more;
    clearProblem("threads");
  } catch (error) { setProblem("threads", error, () => loadThreads(more)); }
}

function threadItem(thread) {
  const title = thread.title || "Untitled chat";
  state.titles.set(thread.id, title);
  const item = document.createElement("li");
  item.dataset.threadId = thread.id;
  const open = button(title, "open");
  open.title = title;                       // the whole title, where the row cuts it short
  open.addEventListener("click", () => openThread(thread.id));
  // one Tab stop per chat: its rename and delete are reached with the arrow keys (or F2,
  // Delete) from its row, and shown on hover or focus
  const rename = button("✎", "rename", "Rename " + title);
  rename.addEventListener("click", () => renameThread(item, thread));
  const remove = button("✕", "delete", "Delete " + title);
  remove.addEventListener("click", () => confirmDelete(item, thread));
  rename.tabIndex = remove.tabIndex = -1;
  item.append(open, rename, remove);
  item.addEventListener("keydown", (event) => rowKeys(event, item, thread));
  markCurrent(item);
  return item;
}

function rowKeys(event, item, thread) {
  const controls = [...item.querySelectorAll(".open, .rename, .delete")];
  const at = controls.indexOf(document.activeElement);
  if (at < 0) return;
  if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
    event.preventDefault();
    controls[(at + (event.key === "ArrowRight" ? 1 : controls.length - 1)) % controls.length].focus();
  } else if (event.key === "F2") {
    event.preventDefault();
    renameThread(item, thread);
  } else if (event.key === "Delete") {
    event.preventDefault();
    confirmDelete(item, thread);
  }
}

function noResults(query) {
  const item = document.createElement("li");
  item.className = "no-results";
  item.textContent = `No chats match “${query}”`;
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
  localStorage.removeItem("llmhub.model." + thread.id);
  return [...deleted, thread.id];
}

// --- opening a thread --------------------------------------------------------------------

function threadFromPath() {
  const match = location.pathname.match(/^\/c\/([^/]+)$/);
  return match ? decodeURIComponent(match[1]) : null;
}

async function openThread(threadId, push = true) {
  const refresh = state.threadId === threadId && !push;
  if (state.threadId !== threadId) clearChatProblems();
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
    state.toolResults = new Map(messages.filter((m) => m.role === "tool" && m.tool_call_id)
      .map((m) => [m.tool_call_id, textOf(m.content)]));
    state.messages = messages.filter((m) => m.role === "user" || m.role === "assistant");
    const parent = (thread.metadata || {}).branch_of;
    state.parent = parent ? await api("GET", `/v1/threads/${encodeURIComponent(parent)}`)
      .catch(() => null) : null;
    clearProblem("open");
    if (!refresh) selectModel(null);
    markCurrent();
    drawMessages(refresh);
    resume(threadId);
  } catch (error) {                      // a chat that is gone is not helped by a Retry
    setProblem("open", error, error.status === 404 ? null : () => openThread(threadId, false));
  }
}

function newChat() {
  clearChatProblems();
  state.threadId = state.thread = state.parent = null;
  state.messages = [];
  if (location.pathname !== "/") history.pushState({}, "", "/");
  selectModel(null);
  drawMessages();
  markCurrent();
  closeDrawer();
  $("#input").focus();
}

function markCurrent(only) {
  // the open chat's row, or on a branch (not listed) the row of the chat it branched from
  const meta = (state.thread && state.thread.id === state.threadId && state.thread.metadata) || {};
  const parentMeta = (state.parent && state.parent.metadata) || {};
  const ids = [state.threadId, meta.branch_of, parentMeta.branch_of].filter(Boolean);
  const rows = only ? [only] : document.querySelectorAll("#thread-list li[data-thread-id]");
  for (const row of rows) {
    const current = ids.includes(row.dataset.threadId);
    $(".open", row).classList.toggle("current", current);
    if (current) $(".open", row).setAttribute("aria-current", "page");
    else $(".open", row).removeAttribute("aria-current");
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
  if (!state.threadId && !state.messages.length) box.append(welcome());
  $("#chat-actions").hidden = !state.threadId;
  updateComposer();
  if (refresh && !state.stick) box.scrollTop = top;
  scrollToEnd(!refresh);
}

// --- the welcome screen: which upstream, its models, what to try, what to do without any --

const SAMPLES = ["Explain how a hash map works, with a short example in Python.",
                 "Write a haiku about a quiet server room.",
                 "Give me three ideas for a weekend project with a Raspberry Pi.",
                 "Summarise the difference between TCP and UDP in a table."];
const KINDS = { lmstudio: "LM Studio", llamacpp: "llama.cpp", mock: "the built-in mock model",
                openai: "an OpenAI-compatible server", anthropic: "Anthropic" };

function welcome() {
  const box = element("section", "welcome");
  box.setAttribute("aria-labelledby", "welcome-title");
  const title = element("h2", "", "Chat with your local models");
  title.id = "welcome-title";
  box.append(title, upstreamLine());
  if (!state.modelsAsked) return box;           // no advice before the answer
  const real = state.models.filter((m) => !m.alias_of);
  if (!real.length) {
    box.append(noModelsHelp());
    return box;
  }
  box.append(element("h3", "", "Models"), bullets(real.map(modelLabel)));
  const aliases = state.models.filter((m) => m.alias_of);
  if (aliases.length) {
    box.append(element("h3", "", "Aliases (names the hub maps to a model)"),
               bullets(aliases.map(modelLabel)));
  }
  box.append(element("h3", "", "Try"));
  const samples = element("div", "samples");
  for (const text of SAMPLES) {
    const sample = button(text, "sample");
    sample.addEventListener("click", () => { $("#input").value = text; submit(); });
    samples.append(sample);
  }
  box.append(samples);
  return box;
}

function upstreamLine() {
  const where = (state.upstreams || []).map((u) => `${KINDS[u.kind] || u.kind} at ${u.base_url}`);
  const named = where.length ? where.join(", ") : "its upstream";
  const count = state.models.filter((m) => !m.alias_of).length;
  const text = !state.modelsAsked ? `The hub uses ${named}: asking it for its models…`
    : state.modelsError
    ? `The hub uses ${named}, which did not answer: ${state.modelsError.message}`
    : `The hub uses ${named}, which answered with ${count} ${count === 1 ? "model" : "models"}.`;
  return element("p", "upstream", text);
}

function noModelsHelp() {
  const help = element("div", "no-models");
  const steps = bullets(["Start LM Studio (or the server the hub points at) and load a model, or",
                         "restart the hub with a mock model to try the page: "]);
  steps.lastChild.append(element("code", "", "python main.py --upstream mock"));
  help.append(element("p", "", "There is no model to chat with yet. To get one:"), steps);
  const again = button("Check again", "check-models");
  again.addEventListener("click", loadModels);
  help.append(again);
  return help;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function bullets(texts) {
  const ul = document.createElement("ul");
  ul.append(...texts.map((text) => element("li", "", text)));
  return ul;
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
    if (message.reasoning || reasoning) thinking(box, message.reasoning || reasoning, false);
    toolCalls(box, (message.tool_calls || []).map((c) => ({
      id: c.id, name: (c.function || {}).name, arguments: (c.function || {}).arguments })));
    renderMarkdown($(".body", box), answer);
    statLine(box, meta);
  }
  const [flag, why] = ending(meta);
  if (flag) markFlag(box, flag, why);
  messageTools(box, message, index, text);
  return box;
}

const INTERRUPTIONS = {                 // a cancel no one asked for, by the hub's reason
  shutdown: "the hub shut down before the reply finished",
  client_gone: "the client that asked for the reply went away before it finished",
  unreachable: "the hub stopped answering before the reply finished: what it kept shows " +
               "when it is back",     // the page's own, never stored
};

function ending(meta) {
  // how a reply ended, when not simply finished: [flag, why in the user's words]
  if (meta.status === "failed") return ["failed", meta.error || "the reply failed"];
  if (meta.status === "cancelled" && meta.cancel_reason in INTERRUPTIONS) {
    return ["interrupted", INTERRUPTIONS[meta.cancel_reason]];
  }
  if (meta.status === "cancelled") return ["stopped", ""];   // someone's Stop
  if (meta.finish_reason === "length") {
    return ["cut off", "the reply reached its token limit (Max tokens in Settings, or the model's)"];
  }
  return [null, ""];
}

function toolCalls(box, calls) {
  // each call the model made, folded: its name, its arguments, and the tool's result
  for (const call of calls) {
    const details = element("details", "tool-call");
    const summary = element("summary", "", `Tool call: ${call.name || "?"}`);
    const args = element("pre", "arguments", pretty(call.arguments));
    details.append(summary, element("div", "label", "Arguments"), args);
    const result = state.toolResults.get(call.id);
    if (result !== undefined) {
      details.append(element("div", "label", "Result"), element("pre", "result", pretty(result)));
    }
    $(".body", box).before(details);
  }
}

function pretty(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch (error) { return text || ""; }
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

function markFlag(box, flag, why = "") {
  let label = $(".flag", box);
  if (!label) { label = document.createElement("span"); label.className = "flag"; $(".who", box).append(label); }
  label.textContent = flag;
  box.classList.remove("stopped", "failed", "interrupted", "cut-off");
  box.classList.add(flag.replace(" ", "-"));
  box.dataset.state = flag;
  let reason = $(".reason", box);
  if (why && !reason) { reason = element("div", "reason"); $(".tools", box).before(reason); }
  if (reason) reason.textContent = why;
}

function messageTools(box, message, index, text) {
  const tools = $(".tools", box);
  const copy = button("Copy", "copy", "Copy this message");
  copy.dataset.copy = text;
  tools.append(copy);
  if (message.role === "user") {
    const edit = button("Edit", "edit", "Edit and resend");
    edit.addEventListener("click", () => editMessage(box, index, text));
    tools.append(edit);
    switcher(tools, index);
    return;
  }
  const again = button("Regenerate", "regenerate", "Answer again (the old answer stays as a branch)");
  again.addEventListener("click", () => regenerate(index));
  tools.append(again);
  const last = index === state.messages.length - 1;
  if (last && (message.metadata || {}).finish_reason === "length") {
    const more = button("Continue", "continue", "Continue the reply where it was cut off");
    more.addEventListener("click", () => send(CONTINUE, []));
    tools.append(more);
  }
}

const CONTINUE = "Continue exactly where your last reply stopped.";

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
  const resend = () => fork(index, area.value, imagesOf(state.messages[index].content));
  cancel.addEventListener("click", () => drawMessages(true));
  save.addEventListener("click", resend);
  area.addEventListener("keydown", (event) => {      // as in the message box
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      resend();
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      drawMessages(true);
    }
  });
  $(".body", box).replaceChildren(area);
  $(".tools", box).replaceChildren(save, cancel);
  area.focus();
}

async function regenerate(replyIndex = state.messages.length - 1) {
  // answer again the question this reply answered: a branch from there
  const index = state.messages.slice(0, replyIndex).map((m) => m.role).lastIndexOf("user");
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
  if (!$("#model").value && modelsLoading) await modelsLoading;   // sent as the page opened
  const model = $("#model").value;
  const refusal = sendRefusal(model, attachments);
  if (refusal) {                          // refused here (no Retry: it cannot help), and no
    setProblem("send", refusal);          // chat is made for it
    if (!$("#input").value) $("#input").value = text;
    return;
  }
  clearProblem("send");
  const input = content(text, attachments);
  const fresh = !state.threadId;          // a chat made for this message goes if it fails
  try {
    if (fresh) {
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
    localStorage.setItem("llmhub.model." + threadId, model);     // this chat's choice
    state.messages.push({ role: "user", content: input, metadata: {} });
    drawMessages();                       // your message at once, scrolled to, even if you
                                          // had scrolled up
    const created = await api("POST", "/v1/responses", body);
    const live = { id: created.id, threadId, stream: settings.stream, seq: -1, text: "",
                   reasoning: "", calls: [], model,
                   firstReply: name && !state.messages.some((m) => m.role === "assistant") };
    remember(live);
    clearAttachments();
    follow(live);
  } catch (error) {
    if (fresh && state.threadId) await dropChat(state.threadId);
    if (!$("#input").value) $("#input").value = text;      // the words are not lost
    setProblem("send", friendly(error, model), () => {
      clearProblem("send");
      $("#input").value = "";
      send(text, attachments, { name });
    });
    if (state.threadId) openThread(state.threadId, false);
  }
  loadThreads();
}

function sendRefusal(model, attachments) {
  if (!model) {
    const why = state.modelsError ? `the upstream did not answer (${state.modelsError.message})`
                                  : "the upstream has no model";
    return new ApiError(`there is no model to answer: ${why}. Start LM Studio and load a ` +
                        "model, or run python main.py --upstream mock", null, "", "no_model");
  }
  const chosen = chosenModel();
  if (attachments.some((a) => a.kind === "image") && chosen && chosen.type &&
      chosen.type !== "vlm") {
    return new ApiError(`${model} cannot see images: choose a vision model, or remove the image`);
  }
  return null;
}

async function dropChat(threadId) {
  // the chat made for a message the hub refused: nothing in it, so nothing is lost
  await api("DELETE", `/v1/threads/${encodeURIComponent(threadId)}`).catch(() => null);
  localStorage.removeItem("llmhub.model." + threadId);
  state.threadId = state.thread = state.parent = null;
  state.messages = [];
  history.replaceState({}, "", "/");
  drawMessages();
}

function remember(live) {
  const kept = JSON.parse(localStorage.getItem(LIVE_KEY) || "{}");
  if (live.done) delete kept[live.threadId];
  else kept[live.threadId] = { id: live.id, stream: live.stream, firstReply: live.firstReply };
  localStorage.setItem(LIVE_KEY, JSON.stringify(kept));
}

async function resume(threadId) {
  // re-attach to this chat's reply in progress: one this browser started, else one the
  // hub says is answering here (started on another device)
  if (state.live.has(threadId)) return;
  const kept = JSON.parse(localStorage.getItem(LIVE_KEY) || "{}")[threadId];
  if (kept) return follow(liveRun({ ...kept, threadId }));
  const runs = await api("GET", "/v1/runs?thread_id=" + encodeURIComponent(threadId))
    .catch(() => null);
  const run = runs && runs.data.find((r) => r.dialect === "v1-responses");
  if (run && state.threadId === threadId && !state.live.has(threadId)) {
    follow(liveRun({ id: run.id, threadId, stream: true, model: run.requested_model }));
  }
}

function liveRun(fields) {
  return { seq: -1, text: "", reasoning: "", calls: [], ...fields };
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
    if (response.status === 404) { live.done = true; remember(live); }   // long gone: the
    else if (!response.ok) {                                            // chat shows its end
      throw apiError(await response.json().catch(() => null), response.status, "");
    } else {
      await readEvents(response, (event, data) => onEvent(live, event, data));
    }
  } catch (error) {
    if (error.name === "AbortError") { /* stopped waiting */ }
    else live.error = error instanceof ApiError ? error : unreachable("");
  }
  await settle(live);
}

function onEvent(live, event, data) {
  live.seq = data.sequence_number ?? live.seq;
  if (data.response && data.response.model) live.model = data.response.model;
  const item = data.item || {};
  if (event === "response.output_text.delta") live.text += data.delta;
  else if (event === "response.reasoning_text.delta") live.reasoning += data.delta;
  else if (event === "response.output_item.added" && item.type === "function_call") {
    live.calls.push({ id: item.call_id, name: item.name, arguments: item.arguments || "" });
  } else if (event === "response.function_call_arguments.delta" && live.calls.length) {
    live.calls[live.calls.length - 1].arguments += data.delta;
  } else if (event === "error") live.error = new ApiError(data.message, null, "", data.code);
  else if (/^response\.(completed|incomplete|failed)$/.test(event)) {
    live.status = data.response.status;
    const error = data.response.error;
    if (error) live.error = new ApiError(error.message, null, "", error.code);
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
  for (const old of box.querySelectorAll(".tool-call")) old.remove();
  if (live.stream) toolCalls(box, live.calls);
  const body = $(".body", box);
  if (!live.stream || (!answer && !thought && !live.calls.length)) {
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
  remember(live);
  state.live.delete(live.threadId);
  const here = live.threadId === state.threadId;
  if (live.error && hubGone(live.error)) {
    // the hub went away mid-reply: what came stays on screen, marked, until the hub is
    // back and shows what it kept
    if (here) {
      state.messages.push({ role: "assistant", content: live.text, reasoning: live.reasoning,
                            metadata: { status: "cancelled", cancel_reason: "unreachable" } });
      drawMessages(true);
    }
    setProblem("reply", live.error, () => {
      if (state.threadId === live.threadId) openThread(live.threadId, false);
    });
  } else if (live.error && live.status !== "cancelled" && here) {
    setProblem("reply", friendly(live.error, live.model),
               () => { clearProblem("reply"); regenerate(); });
  } else if (here) {
    clearProblem("reply");
  }
  if (here) {
    await openThread(live.threadId, false);
    announce();
  } else {
    updateComposer();
  }
  // a reply cut at Max tokens is still a reply: the chat gets its title
  if (live.firstReply && ["completed", "incomplete"].includes(live.status)) {
    nameThread(live.threadId);
  }
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
      // Esc stops a reply only from the message box: in search, settings or the model list
      // it is those controls' own Esc
      if (document.body.classList.contains("show-threads")) closeDrawer();
      else if (event.target === $("#input")) stop();
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
  $("#import").addEventListener("click", () => $("#import-file").click());
  $("#import-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (file) await importChat(await file.text());
    event.target.value = "";
  });
  $("#model").addEventListener("change", () => {     // the choice sticks, to this chat too
    localStorage.setItem("model", $("#model").value);
    if (state.threadId) localStorage.setItem("llmhub.model." + state.threadId, $("#model").value);
  });
  wireSettings();
  document.addEventListener("visibilitychange", () => {
    // back to this tab (a phone woken up): the chat as it is now, and a reply another
    // device started in it, followed
    if (!document.hidden && state.threadId && !busy()) openThread(state.threadId, false);
  });
  window.addEventListener("popstate", () => {
    const threadId = threadFromPath();
    if (threadId) openThread(threadId, false); else newChat();
  });
}

function saveSetting(name, control) {
  // a number out of range is refused here, said next to its field, and not saved: the
  // request keeps the last good value (or the model's own)
  const why = settingError(name, control.value);
  const note = $(`#${control.id}-error`);
  control.setAttribute("aria-invalid", String(!!why));
  control.setCustomValidity(why);
  if (note) note.textContent = why;
  if (why) return;
  settings.set(name, control.value);
  applyTheme();
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
    control.addEventListener("change", () => saveSetting(name, control));
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
