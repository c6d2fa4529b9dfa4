// TeX math as native MathML, built with createElementNS: never an HTML string, so nothing
// a model writes between $…$ can become markup. The subset is what models emit: scripts,
// \frac \sqrt \binom, greek letters, operators and relations, big operators with limits,
// \left…\right, \text, font commands (\mathbf, \mathbb, \mathcal…), accents, and the
// matrix, cases and aligned environments. A command it does not know is shown as its own
// text ("\foo"), never dropped; input it cannot parse at all is shown as its source.
"use strict";

// One global, renderMath: the helpers stay inside, clear of the page's other scripts.
const renderMath = (() => {
  const MATHML = "http://www.w3.org/1998/Math/MathML";
  const MAX_DEPTH = 60;          // nesting past this is not math a model meant: show the source
  const MAX_TEX = 20000;

  function mml(tag, children, attrs) {
    const node = document.createElementNS(MATHML, tag);
    if (typeof children === "string") node.textContent = children;
    else if (children) for (const child of children) if (child) node.append(child);
    if (attrs) for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
    return node;
  }

  const row = (nodes) => nodes.length === 1 ? nodes[0] : mml("mrow", nodes);
  const mo = (text, attrs) => mml("mo", text, attrs);
  const fence = (text) => mo(text, { stretchy: "true", fence: "true" });
  const space = (width) => mml("mspace", null, { width });
  // |x| and \|v\|: a bar is a fence, not an infix operator with space on both sides.
  const bar = (text) => mo(text, { lspace: "0", rspace: "0" });

  // --- what each command means ---------------------------------------------------------------

  function table(pairs) {
    const map = new Map();
    for (const [names, char] of pairs) for (const name of names.split(" ")) map.set(name, char);
    return map;
  }

  const GREEK = table([
    ["alpha", "α"], ["beta", "β"], ["gamma", "γ"], ["delta", "δ"], ["epsilon", "ϵ"],
    ["varepsilon", "ε"], ["zeta", "ζ"], ["eta", "η"], ["theta", "θ"], ["vartheta", "ϑ"],
    ["iota", "ι"], ["kappa", "κ"], ["lambda", "λ"], ["mu", "μ"], ["nu", "ν"], ["xi", "ξ"],
    ["omicron", "ο"], ["pi", "π"], ["varpi", "ϖ"], ["rho", "ρ"], ["varrho", "ϱ"],
    ["sigma", "σ"], ["varsigma", "ς"], ["tau", "τ"], ["upsilon", "υ"], ["phi", "ϕ"],
    ["varphi", "φ"], ["chi", "χ"], ["psi", "ψ"], ["omega", "ω"], ["Gamma", "Γ"],
    ["Delta", "Δ"], ["Theta", "Θ"], ["Lambda", "Λ"], ["Xi", "Ξ"], ["Pi", "Π"], ["Sigma", "Σ"],
    ["Upsilon", "Υ"], ["Phi", "Φ"], ["Psi", "Ψ"], ["Omega", "Ω"],
    ["infty", "∞"], ["partial", "∂"], ["nabla", "∇"], ["hbar", "ℏ"], ["ell", "ℓ"],
    ["Re", "ℜ"], ["Im", "ℑ"], ["aleph", "ℵ"], ["emptyset varnothing", "∅"], ["wp", "℘"],
    ["imath", "ı"], ["jmath", "ȷ"], ["top", "⊤"], ["bot", "⊥"],
  ]);

  const OPERATORS = table([
    ["cdot", "⋅"], ["times", "×"], ["div", "÷"], ["pm", "±"], ["mp", "∓"], ["ast", "∗"],
    ["star", "⋆"], ["circ", "∘"], ["bullet", "∙"], ["oplus", "⊕"], ["ominus", "⊖"],
    ["otimes", "⊗"], ["odot", "⊙"], ["cup", "∪"], ["cap", "∩"], ["setminus", "∖"],
    ["wedge land", "∧"], ["vee lor", "∨"], ["neg lnot", "¬"], ["forall", "∀"], ["exists", "∃"],
    ["nexists", "∄"], ["leq le", "≤"], ["geq ge", "≥"], ["neq ne", "≠"], ["approx", "≈"],
    ["equiv", "≡"], ["sim", "∼"], ["simeq", "≃"], ["cong", "≅"], ["propto", "∝"],
    ["ll", "≪"], ["gg", "≫"], ["leqslant", "⩽"], ["geqslant", "⩾"], ["prec", "≺"],
    ["succ", "≻"], ["in", "∈"], ["notin", "∉"], ["ni", "∋"], ["subset", "⊂"], ["supset", "⊃"],
    ["subseteq", "⊆"], ["supseteq", "⊇"], ["subsetneq", "⊊"], ["perp", "⊥"],
    ["parallel", "∥"], ["mid", "∣"], ["nmid", "∤"], ["to rightarrow", "→"],
    ["leftarrow gets", "←"], ["leftrightarrow", "↔"], ["Rightarrow", "⇒"], ["Leftarrow", "⇐"],
    ["Leftrightarrow", "⇔"], ["implies", "⟹"], ["impliedby", "⟸"], ["iff", "⟺"],
    ["mapsto", "↦"], ["longrightarrow", "⟶"], ["longleftarrow", "⟵"], ["uparrow", "↑"],
    ["downarrow", "↓"], ["hookrightarrow", "↪"], ["rightleftharpoons", "⇌"],
    ["angle", "∠"], ["triangle", "△"], ["square", "□"], ["therefore", "∴"], ["because", "∵"],
    ["ldots dots dotsc dotsb", "…"], ["cdots", "⋯"], ["vdots", "⋮"], ["ddots", "⋱"],
    ["prime", "′"], ["degree", "°"], ["colon", ":"], ["vert lvert rvert", "|"],
    ["Vert lVert rVert |", "‖"], ["langle", "⟨"], ["rangle", "⟩"], ["lfloor", "⌊"],
    ["rfloor", "⌋"], ["lceil", "⌈"], ["rceil", "⌉"], ["{ lbrace", "{"], ["} rbrace", "}"],
    ["lbrack", "["], ["rbrack", "]"], ["backslash", "∖"], ["# % & $ _", null],
    ["bmod mod", "mod"], ["dagger", "†"], ["checkmark", "✓"], ["lt", "<"], ["gt", ">"],
    ["leqq", "≦"], ["geqq", "≧"], ["nleq", "≰"], ["ngeq", "≱"], ["asymp", "≍"], ["doteq", "≐"],
    ["coloneqq", "≔"], ["triangleq", "≜"], ["models", "⊨"], ["vdash", "⊢"], ["diamond", "⋄"],
    ["sqcup", "⊔"], ["sqcap", "⊓"], ["uplus", "⊎"], ["sqsubseteq", "⊑"], ["Uparrow", "⇑"],
    ["Downarrow", "⇓"], ["updownarrow", "↕"], ["nearrow", "↗"], ["searrow", "↘"],
    ["longmapsto", "⟼"], ["Longrightarrow", "⟹"], ["Longleftarrow", "⟸"],
    ["Longleftrightarrow", "⟺"], ["longleftrightarrow", "⟷"], ["leftharpoonup", "↼"],
    ["rightharpoonup", "⇀"], ["complement", "∁"], ["intercal", "⊺"], ["S", "§"], ["P", "¶"],
    ["pounds", "£"], ["euro", "€"], ["copyright", "©"], ["textdegree", "°"], ["sharp", "♯"],
    ["flat", "♭"], ["natural", "♮"], ["bigstar", "★"], ["cdotp", "⋅"], ["ldotp", "."],
  ]);

  const BARS = new Set(["vert", "lvert", "rvert", "Vert", "lVert", "rVert", "|"]);

  // Big operators take their limits above and below in display math (movablelimits).
  const BIG = table([
    ["sum", "∑"], ["prod", "∏"], ["coprod", "∐"], ["bigcup", "⋃"], ["bigcap", "⋂"],
    ["bigoplus", "⨁"], ["bigotimes", "⨂"], ["bigvee", "⋁"], ["bigwedge", "⋀"],
    ["bigsqcup", "⨆"],
  ]);
  const INTEGRALS = table([["int", "∫"], ["iint", "∬"], ["iiint", "∭"], ["oint", "∮"]]);
  const FUNCTIONS = new Set(("sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh coth " +
                             "log ln lg exp dim ker hom deg arg").split(" "));
  const LIMIT_FUNCTIONS = new Set("lim liminf limsup max min sup inf det gcd lcm Pr argmax argmin"
                                  .split(" "));

  const SPACES = table([[", thinspace", "0.1667em"], [": > medspace", "0.2222em"],
                        ["; thickspace", "0.2778em"], ["quad", "1em"], ["qquad", "2em"],
                        [" ", "0.25em"], ["! negthinspace", "0em"]]);

  // [character, under (true) or over]
  const ACCENTS = table([
    ["hat", "^"], ["widehat", "^"], ["tilde", "~"], ["widetilde", "~"], ["bar", "¯"],
    ["overline", "‾"], ["vec", "→"], ["overrightarrow", "→"], ["overleftarrow", "←"],
    ["dot", "˙"], ["ddot", "¨"], ["check", "ˇ"], ["breve", "˘"], ["acute", "´"],
    ["grave", "`"], ["mathring", "˚"], ["overbrace", "⏞"],
  ]);
  const UNDER = table([["underline", "_"], ["underbrace", "⏟"], ["underleftarrow", "←"],
                       ["underrightarrow", "→"]]);

  const TEXT = new Set("text textrm textnormal mbox textup textsf texttt textbf textit emph hbox"
                       .split(" "));
  const FRACTIONS = new Set(["frac", "dfrac", "tfrac", "cfrac"]);
  const BIG_DELIMITERS = table([["big bigl bigr bigm", "1.2em"], ["Big Bigl Bigr Bigm", "1.8em"],
                                ["bigg biggl biggr biggm", "2.4em"],
                                ["Bigg Biggl Biggr Biggm", "3em"]]);
  const IGNORED = new Set("nonumber notag limits nolimits hline smash mathstrut strut " +
                          "displaystyle textstyle scriptstyle scriptscriptstyle".split(" "));

  // Mathematical alphanumerics: MathML Core has no mathvariant but "normal", so \mathbf and
  // friends map letters to their Unicode styled forms. [A, a, 0] starts, holes as exceptions.
  const ALPHABETS = {
    mathbf: [0x1D400, 0x1D41A, 0x1D7CE, {}], boldsymbol: [0x1D400, 0x1D41A, 0x1D7CE, {}],
    bm: [0x1D400, 0x1D41A, 0x1D7CE, {}],
    mathbb: [0x1D538, 0x1D552, 0x1D7D8, { C: "ℂ", H: "ℍ", N: "ℕ", P: "ℙ", Q: "ℚ", R: "ℝ",
                                          Z: "ℤ" }],
    mathcal: [0x1D49C, 0x1D4B6, null, { B: "ℬ", E: "ℰ", F: "ℱ", H: "ℋ", I: "ℐ", L: "ℒ",
                                        M: "ℳ", R: "ℛ", e: "ℯ", g: "ℊ", o: "ℴ" }],
    mathscr: [0x1D49C, 0x1D4B6, null, { B: "ℬ", E: "ℰ", F: "ℱ", H: "ℋ", I: "ℐ", L: "ℒ",
                                        M: "ℳ", R: "ℛ", e: "ℯ", g: "ℊ", o: "ℴ" }],
    mathfrak: [0x1D504, 0x1D51E, null, { C: "ℭ", H: "ℌ", I: "ℑ", R: "ℜ", Z: "ℨ" }],
    mathsf: [0x1D5A0, 0x1D5BA, 0x1D7E2, {}], mathtt: [0x1D670, 0x1D68A, 0x1D7F6, {}],
  };

  function styled(char, alphabet) {
    const [upper, lower, digit, holes] = alphabet;
    if (holes[char]) return holes[char];
    if (char >= "A" && char <= "Z") return String.fromCodePoint(upper + char.charCodeAt(0) - 65);
    if (char >= "a" && char <= "z") return String.fromCodePoint(lower + char.charCodeAt(0) - 97);
    if (digit && char >= "0" && char <= "9") return String.fromCodePoint(digit + char.charCodeAt(0) - 48);
    return char;
  }

  // Delimiters of the environments that wrap a table.
  const MATRICES = { matrix: ["", ""], smallmatrix: ["", ""], pmatrix: ["(", ")"],
                     bmatrix: ["[", "]"], Bmatrix: ["{", "}"], vmatrix: ["|", "|"],
                     Vmatrix: ["‖", "‖"], cases: ["{", ""], dcases: ["{", ""], rcases: ["", "}"] };

  // --- the parser ------------------------------------------------------------------------------

  const KNOWN_TABLES = /^(p|b|B|v|V|small)?matrix$|^d?cases$|^rcases$|^(aligned|array|gathered|split)$/;
  const ROW_GAP = /\[\s*-?[\d.]+\s*[a-z]{2}\s*\]/y;     // \\[2pt]: a gap we do not draw
  const TOKEN = /\\([a-zA-Z]+|[^a-zA-Z])|[\s\S]/uy;

  class TexParser {
    constructor(source, depth = 0) { this.src = source; this.pos = 0; this.depth = depth; }

    sub(source) { return new TexParser(source, this.depth + 1).math(); }

    skipSpace() { while (this.pos < this.src.length && /\s/.test(this.src[this.pos])) this.pos++; }

    peek() {
      this.skipSpace();
      if (this.pos >= this.src.length) return null;
      TOKEN.lastIndex = this.pos;
      const match = TOKEN.exec(this.src);
      this.peeked = match[0].length;
      return match[0];
    }

    next() { const token = this.peek(); if (token !== null) this.pos += this.peeked; return token; }

    // {raw text} for \text and environment names; a missing brace takes one token.
    raw() {
      this.skipSpace();
      if (this.src[this.pos] !== "{") return this.next() || "";
      let depth = 0;
      const start = this.pos + 1;
      for (let i = this.pos; i < this.src.length; i++) {
        if (this.src[i] === "\\") { i++; continue; }
        if (this.src[i] === "{") depth++;
        if (this.src[i] === "}" && --depth === 0) { this.pos = i + 1; return this.src.slice(start, i); }
      }
      this.pos = this.src.length;
      return this.src.slice(start);
    }

    optional(pattern = /\[/y) {           // [optional argument], raw
      this.skipSpace();
      pattern.lastIndex = this.pos;
      if (!pattern.test(this.src)) return null;
      const end = this.src.indexOf("]", this.pos);
      if (end < 0) return null;
      const text = this.src.slice(this.pos + 1, end);
      this.pos = end + 1;
      return text;
    }

    enter() { if (++this.depth > MAX_DEPTH) throw new Error("math nested too deeply"); }

    // A list of atoms up to a closer; "rows" lists (the top, environments) stop at & and \\.
    list(kind) {
      this.enter();
      let nodes = [];
      for (;;) {
        const token = this.peek();
        if (token === null || (token === "}" && kind === "group") ||
            (kind === "rows" && (token === "&" || token === "\\\\" || token === "\\cr" ||
                                 token === "\\end")) ||
            (kind === "left" && (token === "\\right" || token === "\\middle"))) break;
        if (token === "\\over" || token === "\\choose") {      // {a \over b}: all before / all after
          this.next();
          const frac = mml("mfrac", [row(nodes.length ? nodes : [mml("mrow")]), row(this.list(kind))]);
          if (token === "\\over") { nodes = [frac]; break; }
          frac.setAttribute("linethickness", "0");
          nodes = [mo("("), frac, mo(")")];
          break;
        }
        if (/^\\(display|text|script|scriptscript)style$/.test(token)) {
          this.next();
          nodes.push(mml("mrow", this.list(kind), { displaystyle: String(token === "\\displaystyle") }));
          break;
        }
        const atom = this.atom();
        if (atom) nodes.push(...atom);
      }
      this.depth--;
      return nodes;
    }

    // One atom with its scripts, as a list: a function (\sin x) keeps a thin space after it,
    // unless its argument comes in brackets (\sin(x)).
    atom() {
      const base = this.base();
      if (!base) return null;
      const node = this.scripts(base);
      const next = base.fn && this.peek();
      const spaced = next && !/^(\(|\[|\\left|\\[bB]ig.*)$/.test(next);
      return spaced ? [node, space("0.1667em")] : [node];
    }

    scripts(base) {
      let sub = null, sup = null, limits = base.limits;
      for (;;) {
        const token = this.peek();
        if (token === "\\limits" || token === "\\nolimits") {
          this.next();
          limits = token === "\\limits";
          continue;
        }
        if (token === "^" && !sup) { this.next(); sup = this.argument(); continue; }
        if (token === "_" && !sub) { this.next(); sub = this.argument(); continue; }
        if (token === "'" && !sup) {
          let primes = "";
          while (this.peek() === "'") { this.next(); primes += "′"; }
          sup = mo(primes);
          continue;
        }
        break;
      }
      const node = base.node;
      if (sub && sup) return mml(limits ? "munderover" : "msubsup", [node, sub, sup]);
      if (sub) return mml(limits ? "munder" : "msub", [node, sub]);
      if (sup) return mml(limits ? "mover" : "msup", [node, sup]);
      return node;
    }

    // A required argument: a {group}, or a single token (\frac12 is 1/2).
    argument() {
      const token = this.peek();
      if (token === null) return mml("mrow");
      if (token === "{") return this.group();
      if (/^[0-9]$/.test(token)) { this.next(); return mml("mn", token); }
      this.enter();
      const base = this.base();
      this.depth--;
      return base ? base.node : mml("mrow");
    }

    group() {
      this.next();                                   // {
      const nodes = this.list("group");
      if (this.peek() === "}") this.next();
      return mml("mrow", nodes);
    }

    // The atom before its scripts: {node, limits, fn}, or null for what renders as nothing.
    base() {
      const token = this.peek();
      if (token === null) return null;
      if (token === "{") return { node: this.group() };
      if (token === "^" || token === "_") return { node: mml("mrow") };   // a script on nothing
      this.next();
      if (token.length > 1 && token[0] === "\\") return this.command(token.slice(1));
      if (/[0-9]/.test(token)) {
        const number = /[0-9]*(?:\.[0-9]+)?/y;
        number.lastIndex = this.pos;
        const more = number.exec(this.src)[0];
        this.pos += more.length;
        return { node: mml("mn", token + more) };
      }
      if (/\p{L}/u.test(token)) return { node: mml("mi", token) };
      if (token === "~") return { node: space("0.25em") };
      if (token === "-") return { node: mo("−") };
      if (token === "*") return { node: mo("∗") };
      if (token === "&") return { node: mo("&") };     // a stray & outside a table
      if (token === "}") return { node: mo("}") };     // a stray closer
      if (token === "|") return { node: bar("|") };
      return { node: mo(token) };
    }

    command(name) {
      let char;
      if ((char = GREEK.get(name))) return { node: mml("mi", char) };
      if (BARS.has(name)) return { node: bar(OPERATORS.get(name)) };
      if (OPERATORS.has(name)) return { node: mo(OPERATORS.get(name) || name) };
      if ((char = BIG.get(name))) {
        return { node: mo(char, { movablelimits: "true", largeop: "true" }), limits: true };
      }
      if ((char = INTEGRALS.get(name))) return { node: mo(char, { largeop: "true" }) };
      if (FUNCTIONS.has(name)) return { node: mml("mi", name), fn: true };
      if (LIMIT_FUNCTIONS.has(name)) {
        return { node: mo(name, { movablelimits: "true", form: "prefix" }), limits: true, fn: true };
      }
      if (SPACES.has(name)) return { node: space(SPACES.get(name)) };
      if (name === "\\" || name === "cr") return { node: space("1em") };  // a line break inside a group
      if (FRACTIONS.has(name)) return { node: mml("mfrac", [this.argument(), this.argument()]) };
      if (ACCENTS.has(name)) {
        return { node: mml("mover", [this.argument(), mo(ACCENTS.get(name), { stretchy: "true" })],
                           { accent: "true" }), limits: name === "overbrace" };
      }
      if (UNDER.has(name)) {
        return { node: mml("munder", [this.argument(), mo(UNDER.get(name), { stretchy: "true" })],
                           { accentunder: "true" }), limits: name === "underbrace" };
      }
      if (ALPHABETS[name]) return { node: this.alphabet(ALPHABETS[name]) };
      if (TEXT.has(name)) return { node: this.text(this.raw()) };
      return this.structure(name);
    }

    structure(name) {
      switch (name) {
        case "sqrt": {
          const index = this.optional();
          const radicand = this.argument();
          return { node: index === null ? mml("msqrt", [radicand])
                                        : mml("mroot", [radicand, this.sub(index)]) };
        }
        case "binom": case "dbinom": case "tbinom":
          return { node: mml("mrow", [mo("("), mml("mfrac", [this.argument(), this.argument()],
                                                     { linethickness: "0" }), mo(")")]) };
        case "left": return { node: this.leftRight() };
        case "right": case "middle": return { node: this.delimiter() };   // stray, shown as is
        case "mathrm": case "mathit": case "mathnormal": case "rm": {
          const node = this.argument();
          if (name === "mathit") return { node };
          for (const leaf of [node, ...node.querySelectorAll("mi")]) {
            if (leaf.localName === "mi") leaf.setAttribute("mathvariant", "normal");
          }
          return { node };
        }
        case "operatorname": {
          const limits = this.src[this.pos] === "*";
          if (limits) this.pos++;
          const node = mo(this.raw(), { form: "prefix" });
          if (limits) node.setAttribute("movablelimits", "true");
          return { node, limits, fn: true };
        }
        case "overset": case "stackrel": {
          const over = this.argument();
          return { node: mml("mover", [this.argument(), over]) };
        }
        case "underset": {
          const under = this.argument();
          return { node: mml("munder", [this.argument(), under]) };
        }
        case "boxed": case "fbox": return { node: mml("mrow", [this.argument()], { class: "tex-boxed" }) };
        case "cancel": return { node: mml("mrow", [this.argument()], { class: "tex-cancel" }) };
        case "phantom": return { node: mml("mphantom", [this.argument()]) };
        case "color": this.raw(); return null;                   // colour is dropped, text kept
        case "textcolor": case "colorbox": this.raw(); return { node: this.argument() };
        case "label": case "vspace": this.raw(); return null;
        case "hspace": case "kern": case "mspace": case "hskip": this.raw(); return { node: space("0.5em") };
        case "mathop": case "mathbin": case "mathrel": case "mathord": case "mathpunct":
          return { node: this.argument() };
        case "xrightarrow": case "xleftarrow": case "xRightarrow": {
          const under = this.optional();
          // not stretchy: without a math font a stretched arrow may draw nothing at all
          const arrow = mo({ xrightarrow: "⟶", xleftarrow: "⟵", xRightarrow: "⟹" }[name]);
          const over = this.argument();
          return { node: under === null ? mml("mover", [arrow, over])
                                        : mml("munderover", [arrow, this.sub(under), over]) };
        }
        case "tag": return { node: mml("mrow", [space("2em"), mml("mtext", `(${this.raw()})`)]) };
        case "pmod":
          return { node: mml("mrow", [space("0.5em"), mo("("), mml("mi", "mod"), space("0.3333em"),
                                      this.argument(), mo(")")]) };
        case "not": {
          const base = this.base();
          if (base && base.node.localName === "mo") base.node.textContent += "\u0338";
          return base;
        }
        case "begin": return { node: this.environment(this.raw()) };
        case "end": this.raw(); return null;                     // a stray \end
        case "substack": return { node: new TexParser(this.raw(), this.depth + 1).rows("matrix") };
      }
      if (BIG_DELIMITERS.has(name)) {
        const node = this.delimiter();
        node.setAttribute("minsize", BIG_DELIMITERS.get(name));
        node.setAttribute("maxsize", BIG_DELIMITERS.get(name));
        return { node };
      }
      if (IGNORED.has(name)) return null;
      return { node: mml("mtext", "\\" + name, { class: "tex-unknown" }) };
    }

    // \text{…}: words, with any $…$ inside it typeset again as math. Spaces at either end
    // are kept (as no-break spaces): "\text{if } x" is not "ifx".
    text(raw) {
      const words = (part) => mml("mtext", part.replace(/\\([{}$%&#_ ])/g, "$1")
                                             .replace(/^ +| +$/g, (s) => "\u00a0".repeat(s.length)));
      const nodes = raw.split(/\$([^$]*)\$/).map((part, n) => n % 2 ? this.sub(part) : part && words(part))
                       .filter(Boolean);
      return row(nodes.length ? nodes : [mml("mtext")]);
    }

    alphabet(letters) {
      const node = this.argument();
      const all = [node, ...node.querySelectorAll("mi, mn")];
      for (const leaf of all) {
        if (leaf.localName !== "mi" && leaf.localName !== "mn") continue;
        leaf.textContent = [...leaf.textContent].map((c) => styled(c, letters)).join("");
      }
      return node;
    }

    delimiter() {
      const token = this.next();
      if (token === null || token === ".") return mml("mrow");
      const name = token.length > 1 && token[0] === "\\" ? token.slice(1) : null;
      const char = name ? OPERATORS.get(name) || GREEK.get(name) || name : token;
      return fence(char);
    }

    leftRight() {
      const parts = [this.delimiter()];
      for (;;) {
        parts.push(...this.list("left"));
        const token = this.next();
        if (token === "\\middle") { parts.push(this.delimiter()); continue; }
        if (token === "\\right") parts.push(this.delimiter());
        return mml("mrow", parts);
      }
    }

    environment(name) {
      const bare = name.replace(/\*$/, "");
      if (bare === "array" || bare === "alignedat") this.raw();      // column spec
      const table = this.rows(bare);
      const [open, close] = MATRICES[bare] || ["", ""];
      if (!open && !close) return table;
      return mml("mrow", [open && fence(open), table, close && fence(close)]);
    }

    // Rows split by \\ and cells by &, up to \end{…} or the end: an <mtable>.
    rows(kind, top = false) {
      this.enter();
      const rows = [];
      let cells = [];
      for (;;) {
        cells.push(this.list("rows"));
        const token = this.next();
        if (token === "&") continue;
        rows.push(cells);
        cells = [];
        if (token === "\\\\" || token === "\\cr") { this.optional(ROW_GAP); continue; }
        if (token !== "\\end") break;
        this.raw();
        if (!top) break;                    // a stray \end at the top ends a row, loses nothing
      }
      this.depth--;
      if (rows.length > 1 && rows[rows.length - 1].every((cell) => !cell.length)) rows.pop();
      const align = /^(cases|dcases|rcases)$/.test(kind) ? ["left", "left"]
        : /^(aligned|align|split|alignat|alignedat|eqnarray)$/.test(kind) ? ["right", "left"] : null;
      return mml("mtable", rows.map((cells) => mml("mtr", cells.map((cell, n) =>
        mml("mtd", [row(cell.length ? cell : [mml("mrow")])],
            align ? { class: "tex-" + align[n % 2] } : null)))),
        { class: "tex-" + (KNOWN_TABLES.test(kind) ? kind : "table") });
    }

    // The whole source: one row of atoms, or a table when it holds \\ or & at the top.
    math() {
      const start = this.pos;
      const nodes = this.list("rows");
      if (this.peek() === null) return row(nodes.length ? nodes : [mml("mrow")]);
      this.pos = start;
      return this.rows("aligned", true);
    }
  }

  // A <math> element for `tex`, or null when the source is not something to typeset.
  function renderMath(tex, display) {
    if (!tex.trim() || tex.length > MAX_TEX) return null;
    let body;
    try {
      body = new TexParser(tex).math();
    } catch (error) {
      return null;
    }
    const math = mml("math", [body]);
    if (display) math.setAttribute("display", "block");
    return math;
  }

  return renderMath;
})();
