// A small in-page accessibility checker in the spirit of axe-core's rules that matter most
// for these pages, needing no network: valid roles, an accessible name for every control,
// image and landmark, unique ids, a page language, table headers, and text contrast of at
// least 4.5:1 (3:1 for large text) against the background it is drawn on.
// Evaluated as an expression: it returns a list of {rule, where, detail} violations.
(() => {
  const ROLES = new Set(["alert", "alertdialog", "application", "article", "banner", "button",
    "cell", "checkbox", "columnheader", "combobox", "complementary", "contentinfo", "dialog",
    "document", "feed", "figure", "form", "grid", "gridcell", "group", "heading", "img", "link",
    "list", "listbox", "listitem", "log", "main", "marquee", "math", "menu", "menubar",
    "menuitem", "menuitemcheckbox", "menuitemradio", "navigation", "none", "note", "option",
    "presentation", "progressbar", "radio", "radiogroup", "region", "row", "rowgroup",
    "rowheader", "scrollbar", "search", "searchbox", "separator", "slider", "spinbutton",
    "status", "switch", "tab", "table", "tablist", "tabpanel", "term", "textbox", "timer",
    "toolbar", "tooltip", "tree", "treegrid", "treeitem"]);
  const problems = [];
  const where = (el) => el.id ? "#" + el.id : el.tagName.toLowerCase() +
    (el.className && typeof el.className === "string" ? "." + el.className.split(" ")[0] : "") +
    (el.textContent ? ` "${el.textContent.trim().slice(0, 30)}"` : "");
  const report = (rule, el, detail = "") => problems.push({ rule, where: where(el), detail });

  const visible = (el) => {
    if (el.closest("[hidden], [aria-hidden=true]")) return false;
    const style = getComputedStyle(el);
    if (style.display === "none" || style.visibility === "hidden") return false;
    const box = el.getBoundingClientRect();
    return box.width > 0 && box.height > 0;
  };

  function name(el) {
    const labelled = el.getAttribute("aria-labelledby");
    if (labelled) {
      const text = labelled.split(/\s+/).map((id) => document.getElementById(id))
        .filter(Boolean).map((n) => n.textContent).join(" ").trim();
      if (text) return text;
    }
    if ((el.getAttribute("aria-label") || "").trim()) return el.getAttribute("aria-label");
    if (el.labels && [...el.labels].some((l) => l.textContent.trim())) return "label";
    if (el.tagName === "IMG") return el.getAttribute("alt");
    if (el.tagName === "INPUT" && ["button", "submit", "reset"].includes(el.type)) return el.value;
    if (!["INPUT", "SELECT", "TEXTAREA"].includes(el.tagName) && el.textContent.trim()) {
      return el.textContent.trim();
    }
    return (el.getAttribute("title") || "").trim();
  }

  if (!document.documentElement.lang) report("html-has-lang", document.documentElement);
  if (!document.title.trim()) report("document-title", document.documentElement);

  for (const el of document.querySelectorAll("[role]")) {
    for (const role of el.getAttribute("role").split(/\s+/)) {
      if (!ROLES.has(role)) report("aria-roles", el, role);
    }
  }
  const ids = new Map();
  for (const el of document.querySelectorAll("[id]")) ids.set(el.id, (ids.get(el.id) || 0) + 1);
  for (const [id, count] of ids) if (count > 1) report("duplicate-id", document.getElementById(id));

  const named = "button, a[href], input:not([type=hidden]), select, textarea, img, " +
    "svg[role=img], " +
    "[role=button], [role=link], [role=checkbox], [role=img], [role=dialog], nav, [role=region]";
  for (const el of document.querySelectorAll(named)) {
    if (el.type === "file" && !visible(el)) continue;          // opened by its button
    if (!visible(el) && el.tagName !== "IMG") continue;
    if (el.tagName === "IMG" ? el.getAttribute("alt") === null : !name(el)) {
      report(el.tagName === "IMG" ? "image-alt" : "name", el);
    }
  }
  for (const table of document.querySelectorAll("table")) {
    if (visible(table) && !table.querySelector("th")) report("table-headers", table);
  }

  // contrast: every visible text node's colour against the first opaque background under it
  const parse = (c) => {
    const m = c.match(/rgba?\(([\d.]+),\s*([\d.]+),\s*([\d.]+)(?:,\s*([\d.]+))?\)/);
    return m ? [+m[1], +m[2], +m[3], m[4] === undefined ? 1 : +m[4]] : null;
  };
  const over = (top, bottom) =>
    top.slice(0, 3).map((v, i) => v * top[3] + bottom[i] * (1 - top[3]));
  function background(el) {
    const layers = [];
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      const style = getComputedStyle(node);
      if (style.backgroundImage !== "none" && !style.backgroundImage.startsWith("linear")) {
        return null;                                             // an image: not judged
      }
      const colour = parse(style.backgroundColor);
      if (colour && colour[3] > 0) layers.push(colour);
      if (colour && colour[3] === 1) break;
    }
    let result = [255, 255, 255];
    const canvas = parse(getComputedStyle(document.documentElement).backgroundColor);
    if (canvas && canvas[3] === 1) result = canvas.slice(0, 3);
    for (const layer of layers.reverse()) result = over(layer, result);
    return result;
  }
  const luminance = (rgb) => {
    const [r, g, b] = rgb.map((v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const seen = new Set();
  for (let text = walker.nextNode(); text; text = walker.nextNode()) {
    const el = text.parentElement;
    if (!text.textContent.trim() || seen.has(el) || !visible(el)) continue;
    if (el.closest("svg, .sr-only, option")) continue;
    if (el.closest("button:disabled, input:disabled, select:disabled, textarea:disabled")) continue;
    seen.add(el);
    const style = getComputedStyle(el);
    const colour = parse(style.color), back = background(el);
    if (!colour || !back) continue;
    let opacity = 1;                      // an ancestor's opacity fades the text too
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      opacity *= +getComputedStyle(node).opacity;
    }
    const fore = over([colour[0], colour[1], colour[2], colour[3] * opacity], back);
    const [hi, lo] = [luminance(fore), luminance(back)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize), bold = +style.fontWeight >= 700;
    const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < needed) report("color-contrast", el, `${ratio.toFixed(2)} < ${needed}`);
  }
  return problems;
})()
