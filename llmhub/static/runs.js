// The live runs page: a feed from GET /v1/runs/events (SSE read with fetch, so it can send
// the key), Cancel buttons that stop the model, the request log, usage by key and model.
// No build step, no external assets; every value goes into the page as text, never HTML.
"use strict";

const keyInput = document.getElementById("api-key");
const filterInput = document.getElementById("filter");
const problem = document.getElementById("problem");
keyInput.value = localStorage.getItem("apiKey") || "";
let latest = null;

function headers() {
  const key = keyInput.value.trim();
  return key ? { Authorization: "Bearer " + key } : {};
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function fill(table, rows, draw) {
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const item of rows) draw(body.insertRow(), item);
}

function ms(value) { return value === null || value === undefined ? "" : Math.round(value) + " ms"; }

function matches(record) {
  const wanted = filterInput.value.trim().toLowerCase();
  return !wanted || [record.key, record.model, record.status, record.dialect]
    .some(v => String(v || "").toLowerCase().includes(wanted));
}

function drawLive(runs) {
  fill(document.getElementById("live"), runs, (row, run) => {
    row.dataset.run = run.id;
    cell(row, run.id); cell(row, run.dialect); cell(row, run.key);
    cell(row, run.model || run.requested_model);
    cell(row, run.queue_position ? `queued (${run.queue_position})` : run.status);
    cell(row, ms(run.elapsed_ms)); cell(row, run.tokens);
    const button = document.createElement("button");
    button.type = "button"; button.textContent = "Cancel"; button.className = "cancel";
    button.addEventListener("click", () => cancel(run.id, button));
    row.insertCell().append(button);
  });
}

function drawLog(records) {
  fill(document.getElementById("log"), records.filter(matches), (row, r) => {
    row.className = "record";
    cell(row, new Date(r.at * 1000).toLocaleTimeString()); cell(row, r.run_id);
    cell(row, r.key); cell(row, r.dialect); cell(row, r.model);
    cell(row, r.status, "status-" + r.status); cell(row, ms(r.ttft_ms));
    cell(row, ms(r.duration_ms));
    cell(row, `${r.input_tokens ?? "?"} → ${r.output_tokens ?? "?"}${r.estimated ? " ~" : ""}`);
    row.addEventListener("click", () => openRecord(r.run_id));
  });
}

function drawUsage(id, groups) {
  const most = Math.max(1, ...groups.map(g => g.input_tokens + g.output_tokens));
  fill(document.getElementById(id), groups, (row, g) => {
    cell(row, g.group); cell(row, g.requests + " req");
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = Math.round(120 * (g.input_tokens + g.output_tokens) / most) + "px";
    const td = cell(row, "");
    td.append(bar, " " + (g.input_tokens + g.output_tokens) + " tokens");
    cell(row, g.errors ? g.errors + " failed" : ""); cell(row, ms(g.ttft_p50_ms));
  });
}

function draw() {
  if (!latest) return;
  drawLive(latest.runs);
  drawLog(latest.requests);
  drawUsage("usage-key", latest.usage.key);
  drawUsage("usage-model", latest.usage.model);
}

async function cancel(runId, button) {
  button.disabled = true;
  const response = await fetch(`/v1/runs/${encodeURIComponent(runId)}/cancel`,
                               { method: "POST", headers: headers() });
  if (!response.ok) problem.textContent = `Cancel failed: HTTP ${response.status}`;
}

async function openRecord(runId) {
  const box = document.getElementById("record");
  const response = await fetch(`/v1/requests/${encodeURIComponent(runId)}`,
                               { headers: headers() });
  const record = await response.json();
  const pre = document.createElement("pre");
  pre.textContent = JSON.stringify(record, null, 2);
  box.replaceChildren(pre);
}

async function upstreams() {
  try {
    const health = await (await fetch("/health")).json();
    fill(document.getElementById("upstreams"), health.upstreams, (row, u) => {
      cell(row, u.name); cell(row, u.kind); cell(row, u.base_url);
      cell(row, u.reachable ? `up, ${u.latency_ms} ms` : `down: ${u.error}`,
           u.reachable ? "" : "status-failed");
      cell(row, u.state || "", ["down", "auth"].includes(u.state) ? "status-failed" : "");
      cell(row, `${u.in_flight || 0} running, ${u.queued || 0} queued`);
    });
  } catch (error) { /* the feed reports the hub being away */ }
}

async function follow() {
  for (;;) {
    try {
      const response = await fetch("/v1/runs/events", { headers: headers() });
      if (response.status === 401) {
        problem.textContent = "This hub needs a key: enter it above.";
        await new Promise(done => keyInput.addEventListener("change", done, { once: true }));
        continue;
      }
      problem.textContent = "";
      await readEvents(response, (event, data) => { latest = data; draw(); });
    } catch (error) {
      problem.textContent = "The hub is not answering; retrying…";
    }
    await new Promise(done => setTimeout(done, 1000));
  }
}

keyInput.addEventListener("change", () => localStorage.setItem("apiKey", keyInput.value));
filterInput.addEventListener("input", draw);
upstreams();
setInterval(upstreams, 10000);
follow();
