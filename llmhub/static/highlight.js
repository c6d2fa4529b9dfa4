// Syntax highlighting for code blocks: one small regex tokenizer per language family, its
// tokens emitted as <span class="tok-…"> with textContent, so code is never parsed as HTML.
// Classes: kw (keywords), str, com (comments), num (numbers and literals), fn (function
// names), type, meta (decorators, preprocessor, macros), tag, attr, key (JSON keys, CSS
// properties), var (shell variables). A language it does not know stays plain text.
"use strict";

// One global, highlight: the helpers stay inside, clear of the page's other scripts.
const highlight = (() => {
  const HIGHLIGHT_LIMIT = 200000;      // characters; past this a block stays plain

  const words = (text) => new Set(text.split(/\s+/).filter(Boolean));

  // Patterns shared by families (regex sources).
  // (m flag: ^ is a line start; the end of the code is END, as $ is a line end.)
  const END = String.raw`(?![\s\S])`;
  const P = {
    slashComment: String.raw`\/\/[^\n]*`,
    blockComment: String.raw`\/\*[\s\S]*?(?:\*\/|${END})`,
    hashComment: String.raw`#[^\n]*`,
    dquote: String.raw`"(?:[^"\\\n]|\\.)*"?`,
    squote: String.raw`'(?:[^'\\\n]|\\.)*'?`,
    number: String.raw`\b(?:0[xX][\da-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|` +
            String.raw`\d[\d_]*(?:\.[\d_]+)?(?:[eE][+-]?\d+)?)[a-zA-Z]*\b|\B\.\d+\b`,
    word: String.raw`[A-Za-z_$][\w$]*`,
  };

  const C_TYPES = "void int char short long float double signed unsigned bool size_t auto const " +
                  "static struct union enum typedef extern register volatile inline";
  const C_KEYWORDS = "if else for while do switch case default break continue return goto sizeof";
  const CPP = "class namespace template typename public private protected virtual override " +
              "new delete this throw try catch using operator friend explicit constexpr nullptr " +
              "noexcept static_cast dynamic_cast reinterpret_cast const_cast decltype final";
  const JAVA = "class interface extends implements package import public private protected " +
               "abstract final new this super throw throws try catch finally instanceof var " +
               "synchronized native transient enum record static void boolean byte char short " +
               "int long float double if else for while do switch case default break continue " +
               "return assert yield";
  const CSHARP = "class interface struct namespace using public private protected internal " +
                 "abstract sealed static readonly const new this base throw try catch finally " +
                 "is as var async await override virtual void bool byte char short int long " +
                 "float double decimal string object if else for foreach in while do switch " +
                 "case default break continue return get set init record yield out ref params " +
                 "where typeof nameof lock event delegate operator implicit explicit";
  const JS = "var let const function return if else for while do switch case default break " +
             "continue new delete typeof instanceof in of class extends super this import export " +
             "from as async await yield try catch finally throw void static get set debugger with";
  const TS = JS + " type interface enum implements namespace declare abstract readonly public " +
             "private protected keyof infer is satisfies";

  // A language: an ordered list of [class, pattern]; "word" tokens are classified by the sets.
  // Each pattern is one capturing group of the joined regex; patterns hold no groups of their own.
  function language(rules, sets = {}) {
    const source = rules.map(([, pattern]) => `(${pattern})`).join("|");
    return { regex: new RegExp(source, "gm"), classes: rules.map(([name]) => name),
             keywords: words(sets.keywords || ""), literals: words(sets.literals || ""),
             types: words(sets.types || ""), caseless: !!sets.caseless, after: sets.after };
  }

  const cFamily = (keywords, types, extra = []) => language([
    ["com", P.slashComment], ["com", P.blockComment], ["meta", String.raw`^[ \t]*#[ \t]*[a-z]+`],
    ...extra, ["str", P.dquote], ["str", P.squote], ["num", P.number], ["word", P.word],
  ], { keywords, types, literals: "true false null nullptr NULL" });

  const LANGUAGES = {};
  function define(names, lang) { for (const name of names.split(" ")) LANGUAGES[name] = lang; }

  define("python py python3 py3 gyp", language([
    ["com", P.hashComment], ["meta", String.raw`^[ \t]*@[\w.]+`],
    ["str", String.raw`(?:\b[rRbBuUfF]{1,2})?(?:"""[\s\S]*?(?:"""|${END})|'''[\s\S]*?(?:'''|${END}))`],
    ["str", String.raw`\b[rRbBuUfF]{1,2}(?:"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?)`],
    ["str", P.dquote], ["str", P.squote], ["num", P.number], ["word", String.raw`[A-Za-z_]\w*`],
  ], { keywords: "and as assert async await break class continue def del elif else except " +
                 "finally for from global if import in is lambda nonlocal not or pass raise " +
                 "return try while with yield match case",
       literals: "True False None self cls",
       types: "int float str bool list dict set tuple bytes object type Exception" }));

  const jsRules = (keywords) => language([
    ["com", P.slashComment], ["com", P.blockComment],
    ["str", "`(?:[^`\\\\]|\\\\[\\s\\S])*`?"], ["str", P.dquote], ["str", P.squote],
    ["num", P.number], ["word", P.word],
  ], { keywords, literals: "true false null undefined NaN Infinity",
       types: "string number boolean any unknown never object symbol bigint Promise Array Map " +
              "Set Record" });
  define("javascript js jsx mjs cjs node", jsRules(JS));
  define("typescript ts tsx mts", jsRules(TS));

  define("json jsonc json5 geojson", language([
    ["com", P.slashComment], ["com", P.blockComment],
    ["key", String.raw`"(?:[^"\\\n]|\\.)*"(?=\s*:)`], ["str", P.dquote],
    ["num", String.raw`-?\b\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\b`], ["word", P.word],
  ], { literals: "true false null" }));

  define("sh bash shell zsh console shellsession ksh", language([
    ["com", String.raw`(?:^|(?<=\s))#[^\n]*`], ["meta", String.raw`^[$>] (?=\S)`],
    ["var", String.raw`\$(?:\{[^}\n]*\}|[A-Za-z_]\w*|[0-9@#?*!$-])`],
    ["str", String.raw`"(?:[^"\\]|\\[\s\S])*"?`], ["str", String.raw`'[^']*'?`],
    ["num", String.raw`(?<![\w-])\d+(?:\.\d+)?\b`], ["word", String.raw`[A-Za-z_][\w-]*`],
  ], { keywords: "if then else elif fi for while until do done case esac in function return " +
                 "export local readonly declare unset shift exit break continue source alias " +
                 "set trap eval exec select time",
       literals: "true false" }));

  define("c h", cFamily(C_KEYWORDS, C_TYPES));
  define("cpp c++ cc cxx hpp hxx hh ino", cFamily(C_KEYWORDS + " " + CPP, C_TYPES + " string " +
         "vector map wchar_t char8_t char16_t char32_t int8_t int16_t int32_t int64_t uint8_t " +
         "uint16_t uint32_t uint64_t std"));
  define("java kotlin kt scala groovy", cFamily(JAVA, "String Object Integer Long Double Boolean " +
         "List Map Set ArrayList HashMap", [["meta", String.raw`@\w+`]]));
  define("csharp cs c# dotnet", cFamily(CSHARP, "String Object List Dictionary Task IEnumerable " +
         "Console Span"));

  define("sql mysql postgresql postgres psql sqlite plsql tsql", language([
    ["com", String.raw`--[^\n]*`], ["com", P.blockComment],
    ["str", String.raw`'(?:[^']|'')*'?`], ["str", String.raw`"[^"\n]*"?`],
    ["num", P.number], ["word", String.raw`[A-Za-z_][\w$]*`],
  ], { caseless: true, literals: "TRUE FALSE NULL",
       keywords: "SELECT FROM WHERE AND OR NOT INSERT INTO VALUES UPDATE SET DELETE CREATE TABLE " +
                 "DROP ALTER ADD COLUMN INDEX VIEW PRIMARY KEY FOREIGN REFERENCES UNIQUE DEFAULT " +
                 "CHECK CONSTRAINT JOIN INNER LEFT RIGHT FULL OUTER CROSS ON USING GROUP BY ORDER " +
                 "HAVING LIMIT OFFSET AS DISTINCT UNION ALL EXCEPT INTERSECT CASE WHEN THEN ELSE " +
                 "END IS IN EXISTS BETWEEN LIKE ILIKE ASC DESC WITH RECURSIVE RETURNING IF " +
                 "BEGIN COMMIT ROLLBACK TRANSACTION TRIGGER PROCEDURE FUNCTION RETURNS DECLARE " +
                 "GRANT REVOKE CASCADE OVER PARTITION WINDOW ROWS RANGE AUTOINCREMENT REPLACE " +
                 "CONFLICT DO NOTHING",
       types: "INT INTEGER BIGINT SMALLINT TINYINT SERIAL BIGSERIAL TEXT VARCHAR CHAR BOOLEAN " +
              "BOOL REAL FLOAT DOUBLE NUMERIC DECIMAL DATE TIME TIMESTAMP TIMESTAMPTZ INTERVAL " +
              "BLOB BYTEA JSON JSONB UUID" }));

  const CSS = language([
    ["com", P.blockComment], ["str", P.dquote], ["str", P.squote],
    ["kw", String.raw`@[\w-]+|!important`], ["num", String.raw`#[\da-fA-F]{3,8}\b`],
    ["num", String.raw`-?(?:\d+\.?\d*|\.\d+)(?:%|[a-zA-Z]+)?`],
    ["key", String.raw`--?[A-Za-z][\w-]*(?=\s*:[^{};]{0,200}[;}])|[A-Za-z][\w-]*(?=\s*:[^{};]{0,200}[;}])`],
    ["fn", String.raw`[A-Za-z][\w-]*(?=\()`], ["type", String.raw`[.#][A-Za-z_][\w-]*`],
    ["tag", String.raw`\b[a-z][\w-]*(?=[^{};]{0,200}\{)`],
  ]);
  define("css scss less", CSS);

  // HTML and XML: a tag is split again into its name, attributes and values; the text of a
  // <script> or <style> element is highlighted as JavaScript or CSS.
  const TAG_INSIDE = language([
    ["tag", String.raw`^<\/?[\w:.-]+|\/?>$`], ["str", String.raw`"[^"]*"|'[^']*'`],
    ["attr", String.raw`[^\s=<>"'\/]+`],
  ]);
  define("html htm xml xhtml svg vue xaml plist", language([
    ["com", String.raw`<!--[\s\S]*?(?:-->|${END})`],
    ["meta", String.raw`<![^>]*>?|<\?[\s\S]*?(?:\?>|${END})`],
    ["inside", String.raw`<\/?[A-Za-z][\w:.-]*` +                      // a whole tag: name,
               String.raw`(?:\s+(?:[^\s=>"'\/]+` +                            // attributes,
               String.raw`(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>"']+))?|\/))*\s*\/?>`],  // values
    ["num", String.raw`&#?\w+;`],
  ], { after: { script: "js", style: "css" } }));

  define("rust rs", language([
    ["com", P.slashComment], ["com", P.blockComment], ["meta", String.raw`#!?\[[^\]\n]*\]`],
    ["str", String.raw`\bb?r#*"[\s\S]*?(?:"#*|${END})`], ["str", String.raw`b?"(?:[^"\\]|\\[\s\S])*"?`],
    ["str", String.raw`b?'(?:[^'\\\n]|\\[^'\n]{1,10})'`], ["meta", String.raw`'[A-Za-z_]\w*`],
    ["fn", String.raw`[A-Za-z_]\w*!`], ["num", P.number], ["word", String.raw`[A-Za-z_]\w*`],
  ], { keywords: "as async await break const continue crate dyn else enum extern fn for if impl " +
                 "in let loop match mod move mut pub ref return static struct super trait type " +
                 "unsafe use where while yield Self self",
       literals: "true false None Some Ok Err",
       types: "i8 i16 i32 i64 i128 isize u8 u16 u32 u64 u128 usize f32 f64 bool char str " +
              "String Vec Option Result Box Rc Arc HashMap HashSet" }));

  define("go golang", language([
    ["com", P.slashComment], ["com", P.blockComment], ["str", "`[^`]*`?"], ["str", P.dquote],
    ["str", String.raw`'(?:[^'\\\n]|\\[^'\n]{1,10})'`], ["num", P.number],
    ["word", String.raw`[A-Za-z_]\w*`],
  ], { keywords: "break case chan const continue default defer else fallthrough for func go " +
                 "goto if import interface map package range return select struct switch type var",
       literals: "true false nil iota",
       types: "bool byte complex64 complex128 error float32 float64 int int8 int16 int32 int64 " +
              "rune string uint uint8 uint16 uint32 uint64 uintptr any" }));

  function wordClass(lang, word, following) {
    const key = lang.caseless ? word.toUpperCase() : word;
    if (lang.keywords.has(key)) return "kw";
    if (lang.literals.has(key)) return "num";
    if (lang.types.has(key)) return "type";
    if (following === "(") return "fn";
    return null;
  }

  // Appends `code` to `parent` as text and token spans; true when a language was applied.
  function highlight(parent, code, name) {
    const lang = LANGUAGES[String(name || "").toLowerCase()];
    if (!lang || code.length > HIGHLIGHT_LIMIT) { parent.append(code); return false; }
    tokens(parent, code, lang);
    return true;
  }

  function tokens(parent, code, lang) {
    let plain = "";
    const flush = () => { if (plain) { parent.append(plain); plain = ""; } };
    const emit = (cls, text) => {
      if (!cls) { plain += text; return; }
      flush();
      const span = document.createElement("span");
      span.className = "tok-" + cls;
      span.textContent = text;
      parent.append(span);
    };
    const regex = new RegExp(lang.regex);         // a private lastIndex per call
    let at = 0, match;
    while ((match = regex.exec(code))) {
      const text = match[0];
      if (!text) { regex.lastIndex++; continue; }  // an empty match: step past it
      plain += code.slice(at, match.index);
      at = match.index + text.length;
      const cls = lang.classes[match.slice(1).findIndex((group) => group !== undefined)];
      if (cls === "word") emit(wordClass(lang, text, code[at]), text);
      else if (cls !== "inside") emit(cls, text);
      else {
        flush();
        tokens(parent, text, TAG_INSIDE);
        at = regex.lastIndex = embedded(parent, code, text, at, lang);
      }
    }
    plain += code.slice(at);
    flush();
  }

  // After <script> or <style>: its text up to the closing tag, in that language.
  function embedded(parent, code, tag, at, lang) {
    const name = (tag.match(/^<([A-Za-z]+)/) || [])[1];
    const inner = lang.after && name && lang.after[name.toLowerCase()];
    if (!inner) return at;
    const closer = new RegExp("</" + name, "ig");     // name is letters only
    closer.lastIndex = at;
    const end = closer.exec(code) ? closer.lastIndex - name.length - 2 : code.length;
    tokens(parent, code.slice(at, end), LANGUAGES[inner]);
    return end;
  }

  return highlight;
})();
