// Markdown for model output, built as DOM nodes: never an HTML string, so nothing a model
// writes can become markup or script. Blocks: fenced code (any fence length, ``` or ~~~,
// with a language label), headings, blockquotes, lists (nested, ordered or not), tables,
// rules, display math, paragraphs. Inline: code spans, math, bold, italics, links. A link
// keeps its text and becomes an <a> only for http, https and mailto addresses; images are
// never fetched (a model's ![x](url) is a link). Anything not understood stays text. Math
// ($…$, $$…$$, \(…\), \[…\]) is typeset by math.js as MathML; a fenced block in a known
// language is coloured by highlight.js. Both build nodes too.
"use strict";

const SAFE_SCHEMES = ["http:", "https:", "mailto:"];

function safeHref(href) {
  try {
    const url = new URL(href);
    return SAFE_SCHEMES.includes(url.protocol) ? url.href : null;
  } catch (error) { return null; }
}

function el(tag, parent, text) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (parent) parent.append(node);
  return node;
}

// --- inline ------------------------------------------------------------------------------

const ESCAPABLE = /[\\`*_[\]()#+\-.!|>~{}$]/;

function inline(parent, text) {
  let buffer = "";
  const flush = () => { if (buffer) { parent.append(document.createTextNode(buffer)); buffer = ""; } };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "\n") { flush(); el("br", parent); i++; continue; }
    const math = (c === "$" || c === "\\") && mathAt(text, i);
    if (math) {
      flush();
      typeset(parent, math.tex, math.display, text.slice(i, math.end));
      i = math.end;
      continue;
    }
    if (c === "\\" && ESCAPABLE.test(text[i + 1] || "")) { buffer += text[i + 1]; i += 2; continue; }
    if (c === "`") {
      const run = text.slice(i).match(/^`+/)[0];
      const end = text.indexOf(run, i + run.length);
      if (end > 0) {
        flush();
        el("code", parent, text.slice(i + run.length, end).replace(/^ (.*) $/, "$1"));
        i = end + run.length;
        continue;
      }
      buffer += run; i += run.length; continue;
    }
    if ((c === "*" || c === "_") && text[i + 1] === c) {
      const end = text.indexOf(c + c, i + 2);
      if (end > i + 2) { flush(); inline(el("strong", parent), text.slice(i + 2, end)); i = end + 2; continue; }
    }
    if (c === "*" || (c === "_" && !/\w/.test(text[i - 1] || ""))) {
      const end = findEmphasisEnd(text, i + 1, c);
      if (end > i + 1) { flush(); inline(el("em", parent), text.slice(i + 1, end)); i = end + 1; continue; }
    }
    if (c === "~" && text[i + 1] === "~") {
      const end = text.indexOf("~~", i + 2);
      if (end > i + 2) { flush(); inline(el("del", parent), text.slice(i + 2, end)); i = end + 2; continue; }
    }
    if (c === "[" || (c === "!" && text[i + 1] === "[")) {
      const link = linkAt(text, i);
      if (link) {
        flush();
        const href = safeHref(link.url);
        const label = link.label || link.url;
        if (href) {
          const a = el("a", parent);
          a.href = href; a.rel = "noopener noreferrer"; a.target = "_blank";
          inline(a, label);
        } else {
          inline(parent, label);      // not a safe address: its text alone
        }
        i = link.end;
        continue;
      }
    }
    if ((c === "h" || c === "<") && /^<?https?:\/\//.test(text.slice(i, i + 9)) &&
        !/\w/.test(text[i - 1] || "")) {
      const bare = text.slice(i).match(/^<?(https?:\/\/[^\s<>"]*[^\s<>".,;:!?)'])>?/);
      const href = bare && safeHref(bare[1]);
      if (href) {
        flush();
        const a = el("a", parent, bare[1]);
        a.href = href; a.rel = "noopener noreferrer"; a.target = "_blank";
        i += bare[0].length;
        continue;
      }
    }
    buffer += c; i++;
  }
  flush();
}

function linkAt(text, i) {
  // [label](url "title"): the url may hold balanced parentheses, as CommonMark allows
  const head = text.slice(i).match(/^!?\[([^\]\n]*)\]\(\s*/);
  if (!head) return null;
  let j = i + head[0].length, depth = 0, url = "";
  for (; j < text.length; j++) {
    const c = text[j];
    if (/\s/.test(c)) break;
    if (c === "(") depth++;
    if (c === ")") { if (depth === 0) break; depth--; }
    url += c;
  }
  const tail = text.slice(j).match(/^(?:\s+"[^"]*")?\s*\)/);
  if (!tail) return null;
  return { label: head[1], url: url.replace(/^<(.*)>$/, "$1"), end: j + tail[0].length };
}

function findEmphasisEnd(text, from, marker) {
  for (let j = from; j < text.length; j++) {
    if (text[j] === "\\") { j++; continue; }
    if (text[j] === "`") { const close = text.indexOf("`", j + 1); if (close < 0) return -1; j = close; continue; }
    if (text[j] === marker && text[j + 1] !== marker && text[j - 1] !== " " &&
        (marker === "*" || !/\w/.test(text[j + 1] || ""))) return j;
  }
  return -1;
}

// A paragraph's lines, each newline a line break (as chat models expect), read as one text
// so that math, code spans and emphasis may run across lines.
function inlineLines(parent, lines) {
  inline(parent, lines.map((line) => line.replace(/\s+$/, "")).join("\n"));
}

// --- math ----------------------------------------------------------------------------------

// Math at text[i], or null. \(…\) and \[…\] always are; $$…$$ is display math; a single $
// follows Pandoc and markdown-it-texmath so that prices stay text: no space after the
// opening $ and none before the closing one, no digit before the opening or after the
// closing, all on one line ("it costs $5 and $10" has no math); a $ inside {braces}, as in
// \text{for $n$ terms}, does not close.
function mathAt(text, i) {
  const next = text[i + 1] || "";
  if (text[i] === "\\") {
    if (next !== "(" && next !== "[") return null;
    const end = text.indexOf(next === "(" ? "\\)" : "\\]", i + 2);
    return end > i + 2 ? { tex: text.slice(i + 2, end), display: next === "[", end: end + 2 } : null;
  }
  if (next === "$") {
    const end = text.indexOf("$$", i + 2);
    return end > i + 2 ? { tex: text.slice(i + 2, end), display: true, end: end + 2 } : null;
  }
  if (!next || /\s/.test(next) || /\d/.test(text[i - 1] || "")) return null;
  for (let j = i + 1, depth = 0; j < text.length && text[j] !== "\n"; j++) {
    if (text[j] === "\\") { j++; continue; }
    if (text[j] === "{" || text[j] === "}") depth += text[j] === "{" ? 1 : -1;
    if (text[j] !== "$" || depth > 0 || /\s/.test(text[j - 1])) continue;
    return /\d/.test(text[j + 1] || "") ? null : { tex: text.slice(i + 1, j), display: false, end: j + 1 };
  }
  return null;
}

// The MathML of `tex`; what math.js cannot typeset is shown as its source, delimiters and all.
function typeset(parent, tex, display, source) {
  const math = renderMath(tex, display);
  if (!math) { parent.append(source); return; }
  if (!display) { parent.append(math); return; }
  const box = el("span", parent);                  // a span: it may sit inside a paragraph
  box.className = "math-display";
  box.append(math);
}

// $$ or \[ at the start of a line, closed on a later line or at the end of this one: the
// whole block is one formula. Null when it is not such a block (then it is paragraph text).
function displayMath(lines, i, opener) {
  const closer = opener === "$$" ? "$$" : "\\]";
  let text = lines[i].replace(MATH_OPEN, "");
  for (let j = i; j < lines.length; j++) {
    if (j > i) { if (!lines[j].trim()) return null; text += "\n" + lines[j]; }
    const end = text.indexOf(closer);
    if (end < 0) continue;
    if (text.slice(end + closer.length).trim()) return null;
    return { tex: text.slice(0, end), next: j + 1 };
  }
  return null;
}

// --- blocks ------------------------------------------------------------------------------

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$/;
const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}> ?/;
const ITEM = /^( *)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const MATH_OPEN = /^ {0,3}(\$\$|\\\[)/;
const TABLE_RULE = /^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*$/;

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) ||
         ITEM.test(line) || MATH_OPEN.test(line);
}

function cells(line) {
  return line.trim().replace(/^\|/, "").replace(/\|$/, "").split(/(?<!\\)\|/).map((c) => c.trim());
}

function blocks(parent, lines, tight = false) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if ((m = line.match(FENCE))) {
      const fence = m[1];
      const body = [];
      i++;
      while (i < lines.length && !new RegExp(`^ {0,3}${fence[0] === "`" ? "`" : "~"}{${fence.length},}\\s*$`).test(lines[i])) {
        body.push(lines[i]); i++;
      }
      i++;                                        // the closing fence (or the end)
      codeBlock(parent, body.join("\n"), m[2]);
      continue;
    }
    if (!line.trim()) { i++; continue; }
    const formula = (m = line.match(MATH_OPEN)) && displayMath(lines, i, m[1]);
    if (formula) {
      typeset(parent, formula.tex, true, lines.slice(i, formula.next).join("\n"));
      i = formula.next;
      continue;
    }
    if ((m = line.match(HEADING))) { inline(el("h" + m[1].length, parent), m[2]); i++; continue; }
    if (RULE.test(line)) { el("hr", parent); i++; continue; }
    if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && (QUOTE.test(lines[i]) || (lines[i].trim() && inner.length &&
                                                           !startsBlock(lines[i])))) {
        inner.push(lines[i].replace(QUOTE, "")); i++;
      }
      blocks(el("blockquote", parent), inner);
      continue;
    }
    if (line.includes("|") && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1]) &&
        lines[i + 1].includes("-")) {
      i = table(parent, lines, i);
      continue;
    }
    if ((m = line.match(ITEM))) { i = list(parent, lines, i, m); continue; }
    const paragraph = [];
    while (i < lines.length && lines[i].trim() && (!paragraph.length || !startsBlock(lines[i]))) {
      paragraph.push(lines[i]); i++;
    }
    inlineLines(tight ? parent : el("p", parent), paragraph);
  }
}

function codeBlock(parent, code, language) {
  const figure = el("div", parent);
  figure.className = "code";
  const bar = el("div", figure);
  bar.className = "code-bar";
  el("span", bar, language || "text").className = "lang";
  const copy = el("button", bar, "Copy");
  copy.type = "button";
  copy.className = "copy-code";
  copy.dataset.copy = code;
  const pre = el("pre", figure);
  const tag = el("code", pre);
  if (language) tag.dataset.lang = language;
  highlight(tag, code, language);
}

function table(parent, lines, i) {
  const head = cells(lines[i]);
  const aligns = cells(lines[i + 1]).map((c) => c.startsWith(":") && c.endsWith(":") ? "center"
    : c.endsWith(":") ? "right" : c.startsWith(":") ? "left" : "");
  const wrap = el("div", parent);
  wrap.className = "table";
  const t = el("table", wrap);
  const row = el("tr", el("thead", t));
  head.forEach((cell, n) => { const th = el("th", row); if (aligns[n]) th.style.textAlign = aligns[n]; inline(th, cell); });
  const body = el("tbody", t);
  i += 2;
  while (i < lines.length && lines[i].includes("|") && lines[i].trim()) {
    const tr = el("tr", body);
    cells(lines[i]).slice(0, head.length).forEach((cell, n) => {
      const td = el("td", tr); if (aligns[n]) td.style.textAlign = aligns[n]; inline(td, cell);
    });
    i++;
  }
  return i;
}

function list(parent, lines, i, first) {
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const node = el(ordered ? "ol" : "ul", parent);
  if (ordered && parseInt(first[2], 10) !== 1) node.start = parseInt(first[2], 10);
  let loose = false;
  while (i < lines.length) {
    const m = lines[i].match(ITEM);
    if (!m || m[1].length !== indent || /\d/.test(m[2]) !== ordered) break;
    const item = [m[3]];
    const contentIndent = m[1].length + m[2].length + 1;
    i++;
    while (i < lines.length) {
      const next = lines[i];
      if (!next.trim()) {
        const following = lines[i + 1] || "";
        if (following.trim() && (following.match(/^ */)[0].length >= contentIndent ||
                                 (ITEM.test(following) && following.match(/^ */)[0].length === indent))) {
          if (following.match(/^ */)[0].length < contentIndent) loose = true;
          item.push(""); i++; continue;
        }
        break;
      }
      const spaces = next.match(/^ */)[0].length;
      if (spaces >= contentIndent || (spaces > indent && ITEM.test(next))) {
        item.push(next.slice(Math.min(spaces, contentIndent))); i++; continue;
      }
      if (ITEM.test(next) || startsBlock(next)) break;
      item.push(next.trim()); i++;                   // a lazy continuation line
    }
    blocks(el("li", node), item, !loose && !item.includes(""));
  }
  return i;
}

function renderMarkdown(container, text) {
  container.replaceChildren();
  blocks(container, String(text).replace(/\r\n?/g, "\n").split("\n"));
}
