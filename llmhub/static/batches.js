// The runs page's batches (issue 32): each batch of the key in the page's Key box (every
// batch, for an admin key), its status and progress, read from GET /v1/batches every two
// seconds while the page is visible; Cancel for a batch still running, and its output and
// error files to download. Self-contained: it adds its own section to the page.
"use strict";

(() => {
  const section = document.createElement("section");
  section.className = "wide";
  section.id = "batches";
  section.setAttribute("aria-labelledby", "batches-title");
  section.innerHTML = '<h2 id="batches-title">Batches</h2>' +
    '<table aria-labelledby="batches-title"><thead><tr><th scope="col">Batch</th>' +
    '<th scope="col">Status</th><th scope="col">Endpoint</th><th scope="col">Progress</th>' +
    '<th scope="col" class="number">Failed</th><th scope="col">Created</th>' +
    '<th scope="col">Files</th><th scope="col">Action</th></tr></thead><tbody></tbody></table>';
  document.querySelector("main").appendChild(section);
  const body = section.querySelector("tbody");
  const RUNNING = ["validating", "in_progress"];

  function auth() {
    const key = (document.getElementById("api-key").value || "").trim();
    return key ? { Authorization: "Bearer " + key } : {};
  }

  function text(row, value, className) {
    const td = row.insertCell();
    td.textContent = value === null || value === undefined ? "" : String(value);
    if (className) td.className = className;
    return td;
  }

  function progress(row, counts) {
    const td = row.insertCell();
    const done = counts.completed + counts.failed;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = (counts.total ? Math.round(60 * done / counts.total) : 0) + "px";
    td.append(bar, ` ${done} / ${counts.total}`);
  }

  async function download(fileId) {
    const response = await fetch(`/v1/files/${encodeURIComponent(fileId)}/content`,
                                 { headers: auth() });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await response.blob());
    link.download = fileId + ".jsonl";
    link.click();
    URL.revokeObjectURL(link.href);
  }

  function fileButton(td, label, fileId) {
    if (!fileId) return;
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = label;
    button.setAttribute("aria-label", `Download the ${label} file ${fileId}`);
    button.addEventListener("click", () => download(fileId));
    td.append(button, " ");
  }

  function draw(batches) {
    body.replaceChildren();
    for (const batch of batches) {
      const row = body.insertRow();
      row.dataset.batch = batch.id;
      text(row, batch.id);
      text(row, batch.status, "status-" + batch.status);
      text(row, batch.endpoint);
      progress(row, batch.request_counts || { total: 0, completed: 0, failed: 0 });
      text(row, batch.request_counts ? batch.request_counts.failed : "", "number");
      text(row, new Date(batch.created_at * 1000).toLocaleString());
      const files = row.insertCell();
      fileButton(files, "output", batch.output_file_id);
      fileButton(files, "errors", batch.error_file_id);
      const actions = row.insertCell();
      if (RUNNING.includes(batch.status)) {
        const cancel = document.createElement("button");
        cancel.type = "button";
        cancel.className = "cancel";
        cancel.textContent = "Cancel";
        cancel.setAttribute("aria-label", "Cancel batch " + batch.id);
        cancel.addEventListener("click", async () => {
          await fetch(`/v1/batches/${encodeURIComponent(batch.id)}/cancel`,
                      { method: "POST", headers: auth() });
          refresh();
        });
        actions.append(cancel);
      }
    }
  }

  async function refresh() {
    if (document.hidden) return;
    try {
      const response = await fetch("/v1/batches?limit=20", { headers: auth() });
      if (response.ok) draw((await response.json()).data);
    } catch (error) {
      // the hub restarting: the next tick tries again
    }
  }

  refresh();
  setInterval(refresh, 2000);
})();
