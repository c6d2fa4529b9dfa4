// llmhub's web chat: EDISON's stream and Stop over fetch, threads from the store.
// Rule: model output and stored messages are text. They go into the page through
// textContent and createElement only, never through innerHTML, so nothing a model says
// can become markup or script.
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = { threadId: null, requestId: null, controller: null, streaming: false };
const settings = {
  get stream() { return localStorage.getItem("streamResponses") !== "false"; },
  set stream(on) { localStorage.setItem("streamResponses", on ? "true" : "false"); },
  get apiKey() { return localStorage.getItem("apiKey") || ""; },
  set apiKey(key) { localStorage.setItem("apiKey", key); },
};

function headers(extra = {}) {
  const all = { "Content-Type": "application/json", ...extra };
  if (settings.apiKey) all.Authorization = "Bearer " + settings.apiKey;
  return all;
}

async function api(method, path, body) {
  const response = await fetch(path, { method, headers: headers(),
                                       body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new Error(errorText(data, response.status));
  return data;
}

function errorText(data, status) {
  const error = data && (data.error || data.detail);
  const text = typeof error === "string" ? error : error && error.message;
  return text || "The hub answered " + status;
}

function showStatus(text) { $("#status").textContent = text || ""; }

// --- rendering: text only ------------------------------------------------------------------

function renderText(element, text) {
  // Code fences become <pre><code>, everything else a text node; line breaks come from CSS.
  element.replaceChildren();
  text.split("```").forEach((part, i) => {
    if (i % 2 === 0) { if (part) element.append(document.createTextNode(part)); return; }
    const pre = document.createElement("pre");
    const code = document.createElement("code");
    code.textContent = part.replace(/^[\w+-]*\n/, "");
    pre.append(code);
    element.append(pre);
  });
}

function addMessage(role, text, flag) {
  const box = document.createElement("div");
  box.className = "msg " + role;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Assistant";
  const body = document.createElement("div");
  body.className = "body";
  box.append(who, body);
  renderText(body, text || "");
  if (flag) markFlag(box, flag);
  $("#messages").append(box);
  box.scrollIntoView({ block: "end" });
  return box;
}

function markFlag(box, flag) {
  const label = document.createElement("span");
  label.className = "flag";
  label.textContent = flag;
  box.querySelector(".who").append(label);
  box.classList.add(flag);
  box.dataset.state = flag;
}

function setStreaming(on) {
  state.streaming = on;
  $("#stop").disabled = !on;
  $("#send").disabled = on;
}

// --- threads and models --------------------------------------------------------------------

async function loadThreads() {
  try {
    const { data } = await api("GET", "/v1/threads?limit=50");
    const list = $("#thread-list");
    list.replaceChildren(...data.map((thread) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = thread.title || "Untitled chat";
      button.dataset.threadId = thread.id;
      if (thread.id === state.threadId) button.classList.add("current");
      button.addEventListener("click", () => openThread(thread.id));
      item.append(button);
      return item;
    }));
  } catch (error) { showStatus("Could not list threads: " + error.message); }
}

async function openThread(threadId) {
  stop();
  state.threadId = threadId;
  $("#messages").replaceChildren();
  document.body.classList.remove("show-threads");
  try {
    const messages = await api("GET", `/v1/threads/${encodeURIComponent(threadId)}/messages`);
    for (const message of messages) {
      if (message.role !== "user" && message.role !== "assistant") continue;
      const text = typeof message.content === "string" ? message.content
        : (message.content || []).map((p) => p.text || "").join(" ");
      const status = (message.metadata || {}).status;
      addMessage(message.role, text, status === "cancelled" ? "stopped"
                                      : status === "failed" ? "failed" : null);
    }
    showStatus("");
  } catch (error) { showStatus("Could not open the thread: " + error.message); }
  loadThreads();
}

async function loadModels() {
  try {
    const { data } = await api("GET", "/v1/models");
    const select = $("#model");
    const saved = localStorage.getItem("model");
    select.replaceChildren(...data.map((model) => {
      const option = document.createElement("option");
      option.value = option.textContent = model.id;
      return option;
    }));
    if (saved && data.some((m) => m.id === saved)) select.value = saved;
  } catch (error) { showStatus("Could not list models: " + error.message); }
}

// --- sending -------------------------------------------------------------------------------

async function send() {
  const text = $("#input").value;
  if (!text.trim() || state.streaming) return;
  $("#input").value = "";
  showStatus("");
  addMessage("user", text);
  const reply = addMessage("assistant", "");
  setStreaming(true);
  try {
    if (settings.stream) await streamReply(text, reply);
    else await wholeReply(text, reply);
  } catch (error) {
    if (reply.dataset.state !== "stopped") {
      markFlag(reply, "failed");
      showStatus(error.name === "TypeError" ? "The network is gone: the hub cannot be reached."
                                            : error.message);
    }
  } finally {
    setStreaming(false);
    state.controller = null;
    state.requestId = null;
    loadThreads();
  }
}

async function streamReply(text, reply) {
  state.controller = new AbortController();
  const body = { message: text, model: $("#model").value || undefined };
  if (state.threadId) body.thread_id = state.threadId;
  let response;
  try {
    response = await fetch("/chat/stream", {
      method: "POST", body: JSON.stringify(body), signal: state.controller.signal,
      headers: headers({ Accept: "text/event-stream" }) });
  } catch (error) {
    if (error.name === "AbortError") return;
    throw error;
  }
  if (!response.ok) throw new Error(errorText(await response.json().catch(() => null),
                                              response.status));
  let answer = "";
  await readEvents(response, (event, data) => {
    if (event === "init") { state.requestId = data.request_id; state.threadId = data.thread_id; }
    else if (event === "token") { answer += data.t; renderText(reply.querySelector(".body"), answer); }
    else if (event === "error") { showStatus(data.message); markFlag(reply, "failed"); }
    else if (event === "done" && data.stopped && reply.dataset.state !== "stopped") {
      markFlag(reply, "stopped");
    }
  });
}

async function wholeReply(text, reply) {
  const body = { model: $("#model").value || undefined, input: text };
  if (state.threadId) body.thread_id = state.threadId; else body.create_thread = true;
  const result = await api("POST", "/responses", body);
  state.threadId = result.metadata.thread_id;
  renderText(reply.querySelector(".body"), result.output_text);
}

function stop() {
  if (!state.streaming) return;
  const reply = $("#messages .msg.assistant:last-child");
  if (reply && reply.dataset.state !== "stopped") markFlag(reply, "stopped");
  if (state.requestId) {
    api("POST", "/chat/cancel", { request_id: state.requestId })
      .catch((error) => showStatus("Stop: " + error.message));
  }
  if (state.controller) state.controller.abort();
}

// --- wiring --------------------------------------------------------------------------------

$("#composer").addEventListener("submit", (event) => { event.preventDefault(); send(); });
$("#stop").addEventListener("click", stop);
$("#input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});
document.addEventListener("keydown", (event) => { if (event.key === "Escape") stop(); });
$("#new-thread").addEventListener("click", () => {
  stop(); state.threadId = null; $("#messages").replaceChildren(); showStatus(""); loadThreads();
});
$("#toggle-threads").addEventListener("click", () => document.body.classList.toggle("show-threads"));
$("#model").addEventListener("change", () => localStorage.setItem("model", $("#model").value));
$("#stream-responses").checked = settings.stream;
$("#stream-responses").addEventListener("change", (e) => { settings.stream = e.target.checked; });
$("#api-key").value = settings.apiKey;
$("#api-key").addEventListener("change", (e) => { settings.apiKey = e.target.value; loadModels(); loadThreads(); });

loadModels();
loadThreads();
