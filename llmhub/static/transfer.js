// Export every chat at once, and import chats from llmhub's own exports and from the
// anchors' (issue 30 point 12):
// - llmhub: one chat {llmhub_export, thread, messages} (Export JSON) or all of them
//   {llmhub_export, chats: [{thread, messages}]} (Export all chats, here);
// - Open WebUI: Settings › Chats › Export Chats, an array of chat rows, each
//   {id, title, chat: {title, history: {messages: {id: {parentId, role, content, …}},
//   currentId}, messages}}: the branch that ends at currentId is imported;
// - llama.cpp's web UI: its conversations export, {conv: {name, currNode}, messages: [{id,
//   type, role, content, parent, extra}]} or an array of them: the branch ending at
//   currNode, its text files' and PDFs' text as fenced files, its images as images.
// Each chat becomes a thread with its title. Loaded before app.js; its functions use
// app.js's globals (api, state, setProblem, clearProblem, ApiError, loadThreads,
// openThread, download) and paging.js's postThread; app.js calls importChat.
"use strict";

const TRANSFER_PAGE = 5000;               // messages read a request when exporting

async function importChat(text) {
  try {
    let data;
    try { data = JSON.parse(text); } catch (error) {
      throw new ApiError("the file is not JSON", 0, "Import");
    }
    const chats = importedChats(data);
    let last = null;
    for (const chat of chats) {
      last = await postThread(chat.messages, { imported: chat.from });
      if (chat.title) {
        await api("POST", `/v1/threads/${encodeURIComponent(last.id)}/title`,
                  { title: chat.title.slice(0, 200) });
      }
    }
    clearProblem("import");
    await loadThreads();
    if (last) await openThread(last.id);
  } catch (error) {
    setProblem("import", error);
  }
}

function importedChats(data) {
  // the chats a file holds, each {title, from, messages: [{role, content}]}
  const list = Array.isArray(data) ? data : [data];
  const chats = list.map((item) => {
    if (item && item.llmhub_export && Array.isArray(item.chats)) return item.chats.map(llmhubChat);
    if (item && Array.isArray(item.messages) && item.conv) return [llamaCppChat(item)];
    if (item && (item.chat || item.history)) return [openWebUIChat(item)];
    if (item && Array.isArray(item.messages)) return [llmhubChat(item)];
    return [];
  }).flat().filter((chat) => chat.messages.length);
  if (!chats.length) {
    throw new ApiError("this file holds no chat llmhub can read (llmhub's, Open WebUI's or " +
                       "llama.cpp's web UI's export)", 0, "Import");
  }
  return chats;
}

function importedMessage(role, content) {
  return { role: role === "assistant" ? "assistant" : role === "system" ? "system" : "user",
           content };
}

function importable(m) {
  return m && typeof m.role === "string" && (typeof m.content === "string" ||
                                             Array.isArray(m.content));
}

function llmhubChat(item) {
  return { title: (item.thread || {}).title || "", from: "llmhub",
           messages: (item.messages || []).filter(importable)
             .map((m) => importedMessage(m.role, m.content)) };
}

function branchPath(byId, last, parentOf) {
  // the messages from the root to `last`, following each one's parent
  const path = [];
  let node = byId.get(last);
  while (node && path.length <= byId.size) {    // a loop in a broken file ends too
    path.unshift(node);
    node = byId.get(parentOf(node));
  }
  return path;
}

function openWebUIChat(item) {
  const chat = item.chat || item;
  const history = chat.history || {};
  const all = new Map(Object.entries(history.messages || {}));
  let messages = history.currentId && all.has(history.currentId)
    ? branchPath(all, history.currentId, (m) => m.parentId) : chat.messages || [];
  messages = messages.filter(importable);
  return { title: item.title || chat.title || "", from: "open-webui",
           messages: messages.map((m) => importedMessage(m.role, m.content)) };
}

function llamaCppChat(item) {
  const all = new Map(item.messages.map((m) => [m.id, m]));
  const conv = item.conv || {};
  let messages = conv.currNode && all.has(conv.currNode)
    ? branchPath(all, conv.currNode, (m) => m.parent)
    : [...item.messages].sort((a, b) => (a.timestamp || 0) - (b.timestamp || 0));
  messages = messages.filter((m) => m.type !== "root" && importable(m));
  return { title: conv.name || "", from: "llama.cpp",
           messages: messages.map((m) => importedMessage(m.role, llamaCppContent(m))) };
}

function llamaCppContent(m) {
  // its text, each attached text file or PDF text as a fenced file (as attachments.js
  // sends one), each image as an input_image part
  const extras = Array.isArray(m.extra) ? m.extra : [];
  const files = extras.filter((e) => e && typeof e.content === "string" && !e.base64Url)
    .map((e) => `\n\n\`\`\`\`${e.name || "file"}\n${e.content}\n\`\`\`\``).join("");
  const images = extras.filter((e) => e && typeof e.base64Url === "string" &&
                                      e.base64Url.startsWith("data:image/"));
  const text = m.content + files;
  if (!images.length) return text;
  return [{ type: "input_text", text },
          ...images.map((e) => ({ type: "input_image", image_url: e.base64Url }))];
}

// --- export all --------------------------------------------------------------------------

async function everyThread() {
  const threads = [];
  let before = null;
  for (;;) {
    const query = new URLSearchParams({ limit: "100" });
    if (before !== null) query.set("before", String(before));
    const { data, has_more } = await api("GET", "/v1/threads?" + query);
    threads.push(...data);
    if (!has_more || !data.length) return threads;
    before = data[data.length - 1].updated_at;
  }
}

async function everyMessage(threadId) {
  const messages = [];
  let after = null;
  for (;;) {
    const query = new URLSearchParams({ limit: String(TRANSFER_PAGE) });
    if (after) query.set("after", after);
    const page = await api("GET", `/v1/threads/${encodeURIComponent(threadId)}/messages?${query}`);
    messages.push(...page);
    if (page.length < TRANSFER_PAGE) return messages;
    after = page[page.length - 1].id;
  }
}

async function exportAll(control) {
  control.disabled = true;
  try {
    const chats = [];
    for (const thread of await everyThread()) {
      const messages = await everyMessage(thread.id);
      chats.push({ thread: { id: thread.id, title: thread.title || "",
                             metadata: thread.metadata || {} },
                   messages: messages.map((m) => ({ role: m.role, content: m.content,
                                                    metadata: m.metadata || {} })) });
    }
    clearProblem("export");
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([JSON.stringify({ llmhub_export: 1, chats }, null, 2)],
                                             { type: "application/json" }));
    link.download = `llmhub-chats-${new Date().toISOString().slice(0, 10)}.json`;
    link.className = "download";
    document.body.append(link);
    link.click();
    setTimeout(() => { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
  } catch (error) {
    setProblem("export", error, () => exportAll(control));
  } finally {
    control.disabled = false;
  }
}

{
  const control = document.createElement("button");
  control.type = "button";
  control.id = "export-all";
  control.textContent = "Export all chats";
  control.addEventListener("click", () => exportAll(control));
  document.getElementById("more-threads").after(control);
}
