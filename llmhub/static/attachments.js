// Attachments, as llama.cpp's web UI and Open WebUI show them: a chip per file (a thumbnail
// for an image, name and size for a text file), a PDF's text extracted here in the browser
// (or the PDF refused with the reason), and in a sent message each file folded under its
// name with a preview, never its whole text in the bubble.
// On the wire a text file (or a PDF's text) rides in the message text as a fenced block
// named for the file (````name … ````), which every model reads; an image is an input_image
// part. showUserText finds those blocks again in a stored message.
// Loaded before app.js; its functions use app.js's globals ($, state, button, setProblem,
// clearProblem, ApiError); app.js calls addFiles, drawAttachments, clearAttachments, content
// and showUserText.
// Top-level names here are function declarations or ATTACH_*: app.js shares the scope.
"use strict";

const ATTACH_IMAGE_MAX = 10 * 1024 * 1024, ATTACH_TEXT_MAX = 512 * 1024;
const ATTACH_PDF_MAX = 20 * 1024 * 1024;
const ATTACH_TEXT_NAMES =
  /\.(txt|md|py|js|ts|json|csv|ya?ml|toml|ini|html|css|c|h|cpp|rs|go|java|sh|sql|log)$/i;
const ATTACH_FENCE = /\n\n````([^\n`]*)\n([\s\S]*?)\n````(?=\n\n````|$)/g;

function takesImages(model) {
  // for the model picker (the `page` helper's): whether a listed model can see images
  return !!model && (model.type === "vlm" || model.vision === true ||
                     (model.capabilities || []).includes("vision"));
}

function sizeText(bytes) {
  return bytes < 1024 ? bytes + " B" : bytes < 1048576 ? Math.round(bytes / 1024) + " KB"
    : (bytes / 1048576).toFixed(1) + " MB";
}

async function addFiles(files) {
  clearProblem("attach");                 // a refusal stays until the next files come
  for (const file of [...files]) {        // a copy: the input's list is emptied at once
    try {
      const attachment = await readAttachment(file);
      state.attachments.push(attachment);
      drawAttachments();
    } catch (error) {
      refuseFile(file, error.message);
    }
  }
}

async function readAttachment(file) {
  if (/^image\/(png|jpeg|gif|webp)$/.test(file.type)) {
    if (file.size > ATTACH_IMAGE_MAX) throw new Error("is over 10 MB");
    const dataUrl = await new Promise((done, fail) => {
      const reader = new FileReader();
      reader.onload = () => done(reader.result);
      reader.onerror = () => fail(new Error("could not be read"));
      reader.readAsDataURL(file);
    });
    return { kind: "image", name: file.name, size: file.size, dataUrl };
  }
  if (file.type === "application/pdf" || /\.pdf$/i.test(file.name)) {
    if (file.size > ATTACH_PDF_MAX) throw new Error("is over 20 MB");
    const text = await pdfText(new Uint8Array(await file.arrayBuffer()));
    return { kind: "text", name: file.name, size: file.size, text, from: "pdf" };
  }
  if (file.type.startsWith("text/") || ATTACH_TEXT_NAMES.test(file.name)) {
    if (file.size > ATTACH_TEXT_MAX) throw new Error("is over 512 KB");
    return { kind: "text", name: file.name, size: file.size, text: await file.text() };
  }
  throw new Error("is neither an image (PNG, JPEG, GIF, WebP), a PDF nor a text file");
}

function refuseFile(file, why) {
  setProblem("attach", new ApiError(`${file.name} ${why}`, 0, ""));
}

function drawAttachments() {
  $("#attachments").replaceChildren(...state.attachments.map((a, i) => {
    const chip = document.createElement("span");
    chip.className = "chip " + a.kind;
    if (a.kind === "image") {
      const thumb = document.createElement("img");
      thumb.className = "thumb";
      thumb.alt = "";                     // the chip's name says what it is
      thumb.src = a.dataUrl;
      chip.append(thumb);
    } else {
      chip.title = a.text.slice(0, 400);  // a preview on hover
    }
    const name = document.createElement("span");
    name.className = "chip-name";
    name.textContent = a.name;
    const size = document.createElement("span");
    size.className = "chip-size";
    size.textContent = a.from === "pdf" ? `PDF, ${lineCount(a.text)} lines of text`
      : a.kind === "text" ? `${lineCount(a.text)} lines` : sizeText(a.size || 0);
    const remove = button("×", "remove", "Remove " + a.name);
    remove.addEventListener("click", () => { state.attachments.splice(i, 1); drawAttachments(); });
    chip.append(name, size, remove);
    return chip;
  }));
}

function clearAttachments() { state.attachments = []; drawAttachments(); }

function lineCount(text) { return text ? text.replace(/\n$/, "").split("\n").length : 0; }

function content(text, attachments) {
  // what a user turn sends: its text, each text file as a fenced block named for the file
  const files = attachments.filter((a) => a.kind === "text")
    .map((a) => `\n\n\`\`\`\`${a.name}\n${a.text}\n\`\`\`\``).join("");
  const images = attachments.filter((a) => a.kind === "image");
  if (!images.length) return text + files;
  return [{ type: "input_text", text: text + files },
          ...images.map((a) => ({ type: "input_image", image_url: a.dataUrl }))];
}

function showUserText(body, text) {
  // a user message: its own words, then each attached file folded under its name
  const files = [];
  const words = text.replace(ATTACH_FENCE, (_, name, fileText) => {
    files.push({ name, text: fileText });
    return "";
  });
  body.textContent = words;
  if (!files.length) return;
  const list = document.createElement("div");
  list.className = "files";
  for (const file of files) {
    const fold = document.createElement("details");
    fold.className = "file";
    const summary = document.createElement("summary");
    const name = document.createElement("span");
    name.className = "chip-name";
    name.textContent = file.name || "file";
    const size = document.createElement("span");
    size.className = "chip-size";
    size.textContent = `${lineCount(file.text)} lines`;
    summary.append(name, size);
    const preview = document.createElement("pre");
    preview.textContent = file.text;
    fold.append(summary, preview);
    list.append(fold);
  }
  body.after(list);
}

// --- PDF text, read here ---------------------------------------------------------------
// Enough of PDF for the text of ordinary documents: each content stream, plain or
// FlateDecode (DecompressionStream), read for its text operators (Tj, TJ, ' and ") between
// BT and ET, with a line break where the text moves down. What it cannot read it refuses,
// saying why: an encrypted file, a scan (no text), fonts with their own glyph codes.

async function pdfText(bytes) {
  const raw = latin1(bytes);
  if (!raw.startsWith("%PDF-")) throw new Error("is not a PDF (no %PDF- header)");
  if (/\/Encrypt\s/.test(raw)) throw new Error("is encrypted: save an unprotected copy first");
  const pages = [];
  for (const stream of pdfStreams(raw, bytes)) {
    const filters = (stream.dict.match(/\/Filter\s*(\[[^\]]*\]|\/\w+)/) || [])[1] || "";
    const names = filters.match(/\/\w+/g) || [];
    if (names.some((n) => n !== "/FlateDecode")) continue;      // images, fonts in other codes
    if (/\/(Subtype\s*\/Image|Type\s*\/XObject|Length1|Type\s*\/XRef)/.test(stream.dict)) continue;
    let data = stream.data;
    if (names.length) {
      try { data = await inflate(data); } catch (error) { continue; }
    }
    const text = contentText(latin1(data));
    if (text.trim()) pages.push(text.trim());
  }
  const text = pages.join("\n\n");
  if (!text.trim()) throw new Error("has no text this page can read (a scanned PDF?)");
  const readable = (text.match(/[\p{L}\p{N}\p{P}\s]/gu) || []).length / text.length;
  if (readable < 0.85) {
    throw new Error("keeps its text in font codes this page cannot read: copy the text out " +
                    "of a PDF viewer instead");
  }
  return text;
}

function latin1(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 32768) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 32768));
  }
  return text;
}

function* pdfStreams(raw, bytes) {
  const start = /stream\r?\n/g;
  let match;
  while ((match = start.exec(raw))) {
    if (raw.slice(match.index - 3, match.index) === "end") continue;
    const dictStart = raw.lastIndexOf("<<", match.index);
    const dict = raw.slice(dictStart, match.index);
    const begin = match.index + match[0].length;
    const length = (dict.match(/\/Length\s+(\d+)(?!\s+\d+\s+R)/) || [])[1];
    let end = length !== undefined ? begin + Number(length) : -1;
    if (end < begin || raw.slice(end, end + 12).trim().slice(0, 9) !== "endstream") {
      end = raw.indexOf("endstream", begin);         // an indirect or wrong /Length
      if (end < 0) return;
    }
    yield { dict, data: bytes.subarray(begin, end) };
    start.lastIndex = end;
  }
}

async function inflate(data) {
  const stream = new Blob([data]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function* pdfTokens(ops) {
  // a content stream's tokens: {s} a string, [..] an array, a number, or a word
  let i = 0, array = null;
  const emit = (value) => { if (array) { array.push(value); return false; } return true; };
  while (i < ops.length) {
    const c = ops[i];
    if (/\s/.test(c)) { i++; continue; }
    if (c === "%") { while (i < ops.length && ops[i] !== "\n") i++; continue; }
    if (c === "(") {                       // a literal string: balanced parentheses inside
      let depth = 0, j = i;
      for (; j < ops.length; j++) {
        if (ops[j] === "\\") { j++; continue; }
        if (ops[j] === "(") depth++;
        else if (ops[j] === ")" && --depth === 0) break;
      }
      const value = { s: pdfString(ops.slice(i, j + 1)) };
      i = j + 1;
      if (emit(value)) yield value;
      continue;
    }
    if (ops.startsWith("<<", i) || ops.startsWith(">>", i)) { i += 2; continue; }
    if (c === "<") {
      const j = ops.indexOf(">", i);
      const value = { s: hexString(ops.slice(i, j + 1)) };
      i = j < 0 ? ops.length : j + 1;
      if (emit(value)) yield value;
      continue;
    }
    if (c === "[") { array = []; i++; continue; }
    if (c === "]") { const value = array || []; array = null; i++; yield value; continue; }
    const word = /^(\/[^\s\/\[\]()<>{}%]*|[-+]?\d*\.?\d+|[^\s\/\[\]()<>{}%]+)/
      .exec(ops.slice(i, i + 200));
    if (!word) { i++; continue; }
    i += word[0].length;
    const value = /^[-+]?\d*\.?\d+$/.test(word[0]) ? Number(word[0]) : word[0];
    if (emit(value)) yield value;
  }
}

function contentText(ops) {
  // the text a content stream shows: operands kept until their operator comes
  const out = [];
  let operands = [], inText = false, lastY = null;
  const last = () => operands[operands.length - 1];
  const text = (value) => value && value.s !== undefined ? decodeText(value.s) : "";
  for (const token of pdfTokens(ops)) {
    if (typeof token !== "string" || token[0] === "/") { operands.push(token); continue; }
    if (token === "BT") inText = true;
    else if (token === "ET") inText = false;
    else if (inText && token === "Tj") out.push(text(last()));
    else if (inText && (token === "'" || token === '"')) out.push("\n", text(last()));
    else if (inText && token === "TJ") {
      for (const item of Array.isArray(last()) ? last() : []) {
        if (typeof item === "number") { if (item < -200) out.push(" "); }
        else out.push(text(item));
      }
    } else if (inText && (token === "Td" || token === "TD")) {
      if (typeof last() === "number" && last() !== 0) out.push("\n");
      else if (out.length && !/\s$/.test(out[out.length - 1])) out.push(" ");
    } else if (inText && token === "Tm") {
      if (lastY !== null && last() !== lastY) out.push("\n");
      lastY = last();
    } else if (inText && token === "T*") out.push("\n");
    operands = [];
  }
  return out.join("").replace(/[ \t]+\n/g, "\n").replace(/\n{3,}/g, "\n\n");
}

function decodeText(bytes) {
  // a PDF text string: UTF-16BE after its byte-order mark, else one byte a character
  if (!bytes.startsWith("\xfe\xff")) return bytes;
  let text = "";
  for (let i = 2; i + 1 < bytes.length; i += 2) {
    text += String.fromCharCode(bytes.charCodeAt(i) * 256 + bytes.charCodeAt(i + 1));
  }
  return text;
}

function pdfString(literal) {
  const escapes = { n: "\n", r: "\r", t: "\t", b: "\b", f: "\f" };
  return literal.slice(1, -1).replace(/\\(\d{1,3}|[\s\S])/g, (_, c) =>
    /^\d/.test(c) ? String.fromCharCode(parseInt(c, 8)) : c === "\n" || c === "\r" ? ""
      : escapes[c] || c);
}

function hexString(hex) {
  const digits = hex.slice(1, -1).replace(/\s+/g, "");
  let text = "";
  for (let i = 0; i < digits.length; i += 2) {
    text += String.fromCharCode(parseInt(digits.slice(i, i + 2).padEnd(2, "0"), 16));
  }
  return text;
}
