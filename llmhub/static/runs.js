// The live runs page: a feed from GET /v1/runs/events (SSE read with fetch, so it can send
// the key), Cancel buttons that stop the model, the request log, usage by key and model.
// A chart of tokens and requests over time from GET /v1/usage, drawn as SVG by hand.
// No build step, no external assets; every value goes into the page as text, never HTML.
"use strict";

// The chat page's theme setting holds here too ("system" follows the browser).
const theme = localStorage.getItem("llmhub.theme");
if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;

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

function fill(table, rows, draw, empty) {
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const item of rows) draw(body.insertRow(), item);
  if (!rows.length && empty) {
    const td = cell(body.insertRow(), empty, "empty");
    td.colSpan = table.tHead.rows[0].cells.length;
  }
}

function number(row, text) { return cell(row, text, "number"); }

// A record's tokens: "in → out", "~" when the hub estimated them (a cancelled run, or an
// upstream that did not count); a record without counts says so instead of "? → ?".
function tokens(r) {
  if (r.input_tokens == null && r.output_tokens == null) return "not counted";
  const side = (n) => n == null ? "–" : String(n);
  return `${side(r.input_tokens)} → ${side(r.output_tokens)}${r.estimated ? " ~" : ""}`;
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
    number(row, ms(run.elapsed_ms)); number(row, run.tokens);
    const button = document.createElement("button");
    button.type = "button"; button.textContent = "Cancel"; button.className = "cancel";
    button.setAttribute("aria-label", "Cancel run " + run.id);
    button.addEventListener("click", () => cancel(run.id, button));
    row.insertCell().append(button);
  }, "Nothing is running now.");
}

function drawLog(records) {
  fill(document.getElementById("log"), records.filter(matches), (row, r) => {
    row.className = "record";
    cell(row, new Date(r.at * 1000).toLocaleTimeString()); cell(row, r.run_id);
    cell(row, r.key); cell(row, r.dialect); cell(row, r.model);
    cell(row, r.status, "status-" + r.status); number(row, ms(r.ttft_ms));
    number(row, ms(r.duration_ms));
    const counted = number(row, tokens(r));
    if (r.estimated) counted.title = "estimated by the hub: the upstream did not count them";
    row.tabIndex = 0;                     // a row opens its record: by keyboard too
    row.addEventListener("click", () => openRecord(r.run_id));
    row.addEventListener("keydown", (event) => {
      if (event.key === "Enter") openRecord(r.run_id);
    });
  }, "No request yet.");
}

function drawUsage(id, groups) {
  const most = Math.max(1, ...groups.map(g => g.input_tokens + g.output_tokens));
  fill(document.getElementById(id), groups, (row, g) => {
    cell(row, g.group); number(row, g.requests);
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = Math.round(120 * (g.input_tokens + g.output_tokens) / most) + "px";
    const td = cell(row, "");
    td.append(bar, " " + (g.input_tokens + g.output_tokens) + " tokens");
    cell(row, g.errors ? g.errors + " failed" : ""); number(row, ms(g.ttft_p50_ms));
  }, "No usage yet.");
}

function draw() {
  if (!latest) return;
  drawLive(latest.runs);
  drawLog(latest.requests);
  drawUsage("usage-key", latest.usage.key);
  drawUsage("usage-model", latest.usage.model);
  const newest = latest.requests.length ? latest.requests[0].run_id : "";
  if (newest !== chartedAfter) { chartedAfter = newest; chart(); }
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
    fill(document.getElementById("upstreams"), health.upstreams || [], (row, u) => {
      cell(row, u.name); cell(row, u.kind); cell(row, u.base_url);
      cell(row, u.reachable ? `up, ${u.latency_ms} ms` : `down: ${u.error}`,
           u.reachable ? "" : "status-failed");
      cell(row, u.state || "", ["down", "auth"].includes(u.state) ? "status-failed" : "");
      cell(row, `${u.in_flight || 0} running, ${u.queued || 0} queued`);
    }, "Enter the hub's key to see its upstreams.");
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

// --- the chart: tokens (bars) and requests (a line) per hour or day ---------------------

const SVG = "http://www.w3.org/2000/svg";
const SPANS = { hour: { count: 24, step: 3600e3 }, day: { count: 30, step: 86400e3 } };
let chartedAfter = null;                  // the newest record the chart has counted

function slotName(time, group) {          // as /v1/usage names a group (UTC)
  const iso = new Date(time).toISOString();
  return group === "hour" ? iso.slice(0, 13) + ":00Z" : iso.slice(0, 10);
}

async function chart() {
  const group = document.getElementById("chart-span").value;
  const { count, step } = SPANS[group];
  const end = Math.floor(Date.now() / step) * step;
  const slots = Array.from({ length: count }, (_, i) => end - (count - 1 - i) * step);
  try {
    const response = await fetch(`/v1/usage?group_by=${group}&from=${slots[0] / 1000}`,
                                 { headers: headers() });
    if (!response.ok) return;             // the feed says what is wrong (a key, the hub)
    const byName = new Map((await response.json()).data.map((g) => [g.group, g]));
    drawChart(slots.map((time) => {
      const g = byName.get(slotName(time, group)) || {};
      return { time, tokens: (g.input_tokens || 0) + (g.output_tokens || 0),
               requests: g.requests || 0 };
    }), group);
  } catch (error) { /* the feed reports the hub being away */ }
}

function svg(name, attributes, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawChart(points, group) {
  const box = document.getElementById("chart");
  const width = Math.max(300, box.clientWidth || 600), height = 140, left = 44, bottom = 18;
  const plot = { w: width - left - 44, h: height - bottom - 8 };
  const most = Math.max(1, ...points.map((p) => p.tokens));
  const mostRequests = Math.max(1, ...points.map((p) => p.requests));
  const slot = plot.w / points.length;
  const every = Math.ceil(points.length / Math.max(2, Math.floor(plot.w / 56)));   // labels
  const label = (time) => group === "hour" ? new Date(time).getHours() + ":00"
    : new Date(time).toLocaleDateString(undefined, { month: "short", day: "numeric",
                                                     timeZone: "UTC" });   // a UTC day
  const nodes = [svg("line", { class: "axis", x1: left, x2: left + plot.w, y1: 8 + plot.h,
                               y2: 8 + plot.h }),
                 svg("text", { x: left - 4, y: 16, "text-anchor": "end" }, String(most)),
                 svg("text", { x: left + plot.w + 4, y: 16 }, String(mostRequests))];
  const line = [];
  points.forEach((p, i) => {
    const x = left + i * slot, h = plot.h * p.tokens / most;
    const bar = svg("rect", { class: "tokens", x: x + 1, width: Math.max(1, slot - 2),
                              y: 8 + plot.h - h, height: h });
    bar.append(svg("title", {}, `${label(p.time)}: ${p.tokens} tokens, ${p.requests} requests`));
    nodes.push(bar);
    const y = 8 + plot.h - plot.h * p.requests / mostRequests;
    line.push(`${x + slot / 2},${y}`);
    if (p.requests) nodes.push(svg("circle", { class: "dot", cx: x + slot / 2, cy: y, r: 2.5 }));
    if (i % every === 0) {
      nodes.push(svg("text", { x: x + slot / 2, y: height - 4, "text-anchor": "middle" },
                     label(p.time)));
    }
  });
  nodes.push(svg("polyline", { class: "requests", points: line.join(" ") }));
  box.setAttribute("viewBox", `0 0 ${width} ${height}`);
  box.replaceChildren(...nodes);
  const tokens = points.reduce((sum, p) => sum + p.tokens, 0);
  const requests = points.reduce((sum, p) => sum + p.requests, 0);
  const span = group === "hour" ? "the last 24 hours" : "the last 30 days";
  document.getElementById("chart-summary").textContent =
    `${requests} requests and ${tokens} tokens over ${span}; the busiest ` +
    `${group} had ${most === 1 && !tokens ? 0 : most} tokens.`;
}

document.getElementById("chart-span").addEventListener("change", chart);
keyInput.addEventListener("change", () => localStorage.setItem("apiKey", keyInput.value));
filterInput.addEventListener("input", draw);
upstreams();
setInterval(upstreams, 10000);
follow();
