"""Math and code highlighting on the chat page, in a real browser (headless Chromium).

A reply from the fake LM Studio is rendered by the page itself; the finer cases go through
the page's own renderMarkdown into a message box, which is the function a reply takes.
What is proven: each math delimiter becomes a <math> element of the right shape, prices and
code stay text, each listed language gets token spans whose colours keep 4.5:1 in both
themes, hostile replies stay inert text, and a 2,000-line block renders.
"""

import json
from pathlib import Path

import pytest

from chromium import NEEDS_CHROMIUM
from fake_lmstudio import Script

pytestmark = NEEDS_CHROMIUM
SHOTS = Path(__file__).resolve().parent / "screenshots"
LAST = "document.querySelector('#messages .msg.assistant:last-of-type')"
IDLE = "!document.querySelector('#send').disabled && !document.querySelector('.msg.live')"
INJECTED = "img, script, svg, iframe, object, embed, style, link, a, video, audio, form"
HANDLERS = ("[...document.querySelectorAll('*')].filter(e => [...e.attributes]"
            ".some(a => a.name.startsWith('on'))).length")


@pytest.fixture
def page(browser, hub):
    page = browser.open(hub.url + "/")
    page.evaluate("localStorage.clear()")
    page.goto(hub.url + "/")
    page.wait_for("typeof renderMarkdown === 'function' && typeof renderMath === 'function'")
    return page


def render(page, text: str) -> str:
    """Render `text` as a reply's body does; returns a JS expression for that body."""
    page.evaluate(f"""(() => {{
      document.querySelector('#probe')?.closest('.msg').remove();
      const box = document.createElement('div');
      box.className = 'msg assistant';
      box.innerHTML = '<div class="body" id="probe"></div>';
      document.querySelector('#messages').append(box);
      renderMarkdown(box.firstChild, {json.dumps(text)});
    }})()""")
    return "document.querySelector('#probe')"


def shape(page, selector: str) -> list:
    """Each element of `selector` in the probe as a nested [tag, text-or-children] tree."""
    return page.evaluate(f"""(() => {{
      const tree = (n) => n.children.length ? [n.localName, [...n.children].map(tree)]
                                             : [n.localName, n.textContent];
      return [...document.querySelectorAll('#probe {selector}')].map(tree);
    }})()""")


def send_reply(page, fake, reply: str) -> str:
    fake.enqueue(Script(chunks=[reply[:25], reply[25:]]))
    page.wait_for(IDLE)
    page.type("#input", "Show me")
    page.press("Enter")
    page.wait_for(f"{IDLE} && document.querySelectorAll('.msg').length === 2")
    return f"{LAST}.querySelector('.body')"


# --- math --------------------------------------------------------------------------------

def test_a_reply_with_math_is_typeset_and_prices_stay_text(page, fake):
    body = send_reply(page, fake, "Pythagoras: \\(a^2+b^2=c^2\\), so\n\n"
                                  "$$\\frac{1}{2}$$\n\nIt costs $5 and $10.")
    MATH = f"{body}.querySelectorAll('math')"
    assert page.evaluate(f"{MATH}.length") == 2
    assert page.evaluate(f"{body}.querySelectorAll('math msup').length") == 3
    assert page.evaluate(f"{MATH}[0].getAttribute('display')") is None
    assert page.evaluate(f"{MATH}[1].getAttribute('display')") == "block"
    assert page.evaluate(f"!!{MATH}[1].querySelector('mfrac')")
    text = page.evaluate(f"{body}.textContent")
    assert "It costs $5 and $10." in text and "(a^2" not in text
    assert page.evaluate(f"{MATH}[0].namespaceURI") == "http://www.w3.org/1998/Math/MathML"


DELIMITERS = [("$a^2$", None), ("\\(a^2\\)", None), ("$$a^2$$", "block"), ("\\[a^2\\]", "block"),
              ("Before\n$$\na^2\n$$\nafter", "block"), ("\\[\na^2\n\\]", "block"),
              ("- an item with $a^2$ in it", None), ("# A heading with \\(a^2\\)", None)]


def test_each_delimiter_typesets(page):
    for source, display in DELIMITERS:
        render(page, source)
        assert shape(page, "math > *") == [["msup", [["mi", "a"], ["mn", "2"]]]], source
        assert page.evaluate("document.querySelector('#probe math').getAttribute('display')") \
            == display, source
        assert "$" not in page.evaluate("document.querySelector('#probe').textContent"), source


STRUCTURES = [
    ("x_1", "msub", [["mi", "x"], ["mn", "1"]]),
    ("x_i^2", "msubsup", [["mi", "x"], ["mi", "i"], ["mn", "2"]]),
    ("\\frac{a}{b}", "mfrac", [["mrow", [["mi", "a"]]], ["mrow", [["mi", "b"]]]]),
    ("\\frac12", "mfrac", [["mn", "1"], ["mn", "2"]]),
    ("\\sqrt{x}", "msqrt", [["mrow", [["mi", "x"]]]]),
    ("\\sqrt[3]{x}", "mroot", [["mrow", [["mi", "x"]]], ["mn", "3"]]),
    ("\\hat{x}", "mover", [["mrow", [["mi", "x"]]], ["mo", "^"]]),
    ("\\bar x", "mover", [["mi", "x"], ["mo", "¯"]]),
    ("\\vec{v}", "mover", [["mrow", [["mi", "v"]]], ["mo", "→"]]),
    ("\\sum_{i=1}^{n}", "munderover",
     [["mo", "∑"], ["mrow", [["mi", "i"], ["mo", "="], ["mn", "1"]]], ["mrow", [["mi", "n"]]]]),
    ("\\prod_k", "munder", [["mo", "∏"], ["mi", "k"]]),
    ("\\int_0^1", "msubsup", [["mo", "∫"], ["mn", "0"], ["mn", "1"]]),
    ("\\lim_{x\\to 0}", "munder", [["mo", "lim"], ["mrow", [["mi", "x"], ["mo", "→"], ["mn", "0"]]]]),
    ("\\text{if <b>x</b>}", "mtext", "if <b>x</b>"),
    ("\\mathbf{v}", "mrow", [["mi", "𝐯"]]),
    ("\\mathbb{R}", "mrow", [["mi", "ℝ"]]),
    ("\\alpha", "mi", "α"),
    ("\\foo", "mtext", "\\foo"),
    ("\\begin{pmatrix}a&b\\\\c&d\\end{pmatrix}", "mrow",
     [["mo", "("], ["mtable", [["mtr", [["mtd", [["mi", "a"]]], ["mtd", [["mi", "b"]]]]],
                               ["mtr", [["mtd", [["mi", "c"]]], ["mtd", [["mi", "d"]]]]]]],
      ["mo", ")"]]),
    ("\\begin{bmatrix}1\\\\2\\end{bmatrix}", "mrow",
     [["mo", "["], ["mtable", [["mtr", [["mtd", [["mn", "1"]]]]], ["mtr", [["mtd", [["mn", "2"]]]]]]],
      ["mo", "]"]]),
    ("\\begin{cases}1 & x>0\\\\0 & \\text{else}\\end{cases}", "mrow",
     [["mo", "{"], ["mtable", [
         ["mtr", [["mtd", [["mn", "1"]]], ["mtd", [["mrow", [["mi", "x"], ["mo", ">"], ["mn", "0"]]]]]]],
         ["mtr", [["mtd", [["mn", "0"]]], ["mtd", [["mtext", "else"]]]]]]]]),
]


def test_tex_becomes_mathml_of_the_right_shape(page):
    for tex, tag, children in STRUCTURES:
        render(page, f"\\({tex}\\)")
        assert shape(page, "math > *") == [[tag, children]], tex


# What models write, taken from the kinds of answers they give (calculus, algebra, stats,
# physics, CS): every command here is known, so none shows as "\\name" text.
MODEL_MATH = [
    r"\frac{d}{dx}\left[ x^n \right] = n x^{n-1}",
    r"\int_{-\infty}^{\infty} e^{-x^2} \, dx = \sqrt{\pi}",
    r"\lim_{x \to 0} \frac{\sin x}{x} = 1",
    r"\sum_{k=0}^{\infty} \frac{x^k}{k!} = e^x",
    r"\prod_{i=1}^{n} a_i \geq \left( \prod a_i \right)^{1/n}",
    r"x = \frac{-b \pm \sqrt{b^2 - 4ac}}{2a}",
    r"\nabla \cdot \vec{E} = \frac{\rho}{\varepsilon_0}",
    r"\frac{\partial^2 u}{\partial t^2} = c^2 \nabla^2 u",
    r"P(A \mid B) = \frac{P(B \mid A) \, P(A)}{P(B)}",
    r"\mathbb{E}[X] = \mu, \quad \operatorname{Var}(X) = \sigma^2",
    r"\binom{n}{k} = \frac{n!}{k!(n-k)!}",
    r"\forall \epsilon > 0 \, \exists \delta > 0 : |x - a| < \delta \implies |f(x) - f(a)| < \epsilon",
    r"A = \begin{bmatrix} a_{11} & a_{12} \\ a_{21} & a_{22} \end{bmatrix}, \det(A) \neq 0",
    r"\begin{aligned} f(x) &= (x+1)^2 \\[2pt] &= x^2 + 2x + 1 \end{aligned}",
    r"O(n \log n) \subseteq O(n^2), \quad T(n) = 2T\left(\frac{n}{2}\right) + O(n)",
    r"\hat{\theta} = \arg\max_{\theta} \mathcal{L}(\theta)",
    r"\bar{x} = \frac{1}{n}\sum_{i=1}^n x_i, \quad \tilde{y} \approx \dot{y}",
    r"\mathbf{v} \times \mathbf{w} \perp \mathbf{v}, \quad \|\mathbf{v}\| \ge 0",
    r"a \equiv b \pmod{n}, \quad \gcd(a, b) = 1",
    r"f: \mathbb{R}^n \rightarrow \mathbb{R}, \quad x \mapsto \langle x, x \rangle",
    r"\underbrace{1 + 1 + \cdots + 1}_{n} = n, \quad \overline{z} = a - bi",
    r"\text{if } x > 0 \text{ then } \boxed{y = \ln x}",
    r"F = G \frac{m_1 m_2}{r^2}, \quad E = mc^2, \quad 90^\circ",
    r"\lfloor x \rfloor \leq x < \lceil x \rceil + 1, \quad \emptyset \subset A \cup B",
    r"{n \choose k} = {a \over b}, \quad \xrightarrow{f} \quad \Rightarrow \Leftrightarrow",
    r"\text{where $x$ is real}, \quad \displaystyle\sum_{n\geq1} \frac{1}{n^2} = \frac{\pi^2}{6}",
]


def test_math_models_write_has_no_unknown_command(page):
    for tex in MODEL_MATH:
        body = render(page, f"$${tex}$$")
        assert page.evaluate(f"{body}.querySelectorAll('math').length") == 1, tex
        assert page.evaluate(f"[...{body}.querySelectorAll('.tex-unknown')]"
                             ".map(e => e.textContent)") == [], tex
        assert "\\" not in page.evaluate(f"{body}.textContent"), tex


def test_over_and_text_with_math_inside(page):
    render(page, "$\\text{for $n$ terms}$")
    assert shape(page, "math > *") == [["mrow", [["mtext", "for\u00a0"], ["mi", "n"], ["mtext", "\u00a0terms"]]]]
    render(page, "${a + 1 \\over b}$")
    assert shape(page, "mfrac") == [["mfrac", [["mrow", [["mi", "a"], ["mo", "+"], ["mn", "1"]]], ["mi", "b"]]]]
    render(page, "$$\\begin{matrix} a \\\\ [0, 1] \\end{matrix}$$")
    assert page.evaluate("document.querySelectorAll('#probe mtr').length") == 2
    assert "[" in page.evaluate("document.querySelector('#probe mtr:last-child').textContent")


def test_operators_relations_and_fences(page):
    render(page, "$$\\left( a \\cdot b \\times c \\pm d \\right) \\leq e \\geq f \\neq g "
                 "\\approx h \\infty$$")
    assert page.evaluate("[...document.querySelectorAll('#probe mo')].map(m => m.textContent)"
                         ".join(' ')") == "( ⋅ × ± ) ≤ ≥ ≠ ≈"
    assert page.evaluate("document.querySelector('#probe mo').getAttribute('stretchy')") == "true"
    assert page.evaluate("[...document.querySelectorAll('#probe mi')].pop().textContent") == "∞"


def test_prices_code_and_escapes_stay_text(page):
    cases = {
        "It costs $5 and $10 today.": "It costs $5 and $10 today.",
        "Between $ 5 and 6 $ here": "Between $ 5 and 6 $ here",
        "Pay \\$x\\$ now": "Pay $x$ now",
        "Code `$x^2$` and `\\(y\\)`": "Code $x^2$ and \\(y\\)",
        "```\n$x^2$ and \\(y\\)\n```": "$x^2$ and \\(y\\)",
        "```python\nprint('$a$', r'\\[b\\]')\n```": "print('$a$', r'\\[b\\]')",
        "A $x$5 is no formula": "A $x$5 is no formula",
    }
    for source, text in cases.items():
        body = render(page, source)
        assert page.evaluate(f"{body}.querySelectorAll('math').length") == 0, source
        shown = page.evaluate(f"{body}.textContent")
        assert text in shown, (source, shown)


def test_bad_math_shows_its_source(page):
    source = "$$" + "{" * 200 + "x" + "}" * 200 + "$$"
    body = render(page, source)
    assert page.evaluate(f"{body}.querySelectorAll('math').length") == 0
    assert page.evaluate(f"{body}.textContent") == source


# --- code --------------------------------------------------------------------------------

SAMPLES = {
    "python": ("@cached\ndef area(r: float) -> float:\n    \"\"\"Area.\"\"\"\n"
               "    return 3.14 * r ** 2  # pi r squared\n",
               {"meta": "@cached", "kw": "def", "fn": "area", "type": "float",
                "str": '"""Area."""', "num": "3.14", "com": "# pi r squared"}),
    "js": ("// greet\nconst greet = (name) => `hi ${name}`;\nconsole.log(greet('x'), 42, null);",
           {"com": "// greet", "kw": "const", "str": "`hi ${name}`", "fn": "log", "num": "42"}),
    "ts": ("interface P { x: number }\nfunction f(p: P): string { return 'a'; }",
           {"kw": "interface", "type": "number", "fn": "f", "str": "'a'"}),
    "json": ('{"name": "hub", "port": 8000, "tls": false, "tags": null}',
             {"key": '"name"', "str": '"hub"', "num": "8000"}),
    "bash": ("#!/bin/bash\n# comment\nfor f in *.txt; do echo \"$f\" ${HOME}; done\n",
             {"com": "# comment", "kw": "for", "str": '"$f"', "var": "${HOME}"}),
    "console": ("$ ls -la\n", {"meta": "$ "}),
    "c": ("#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 1); return 0; }",
          {"meta": "#include", "type": "int", "fn": "printf", "str": '"%d\\n"', "kw": "return"}),
    "cpp": ("template <typename T> class Box { std::vector<T> v; };\n// note",
            {"kw": "template", "type": "vector", "com": "// note"}),
    "java": ("@Override\npublic String toString() { return \"x\"; }",
             {"meta": "@Override", "kw": "public", "type": "String", "fn": "toString"}),
    "csharp": ("using System;\nvar x = new List<int>(); /* c */",
               {"kw": "using", "type": "List", "com": "/* c */"}),
    "sql": ("SELECT name, count(*) FROM users WHERE age > 21 -- adults\n",
            {"kw": "SELECT", "fn": "count", "num": "21", "com": "-- adults"}),
    "html": ('<!-- c --><a href="/x" class=\'y\'>&amp;</a><script>let s = "v";</script>',
             {"com": "<!-- c -->", "tag": "<a", "attr": "href", "str": '"/x"', "num": "&amp;",
              "kw": "let"}),
    "css": ("/* c */\n.box > a:hover { color: #fff; margin: 1.5em; }\n@media print {}",
            {"com": "/* c */", "type": ".box", "key": "color", "num": "#fff", "kw": "@media"}),
    "rust": ("#[derive(Debug)]\nfn main() { let v: Vec<u8> = vec![1]; println!(\"{}\", v); }",
             {"meta": "#[derive(Debug)]", "kw": "fn", "type": "Vec", "fn": "println!",
              "str": '"{}"'}),
    "go": ("package main\nfunc main() { s := `raw`; fmt.Println(s, 0x1F, nil) }",
           {"kw": "package", "str": "`raw`", "fn": "Println", "num": "0x1F"}),
}


def test_each_language_gets_token_spans(page):
    for language, (code, expected) in SAMPLES.items():
        body = render(page, f"```{language}\n{code}\n```")
        tokens = page.evaluate(f"[...{body}.querySelectorAll('pre code span')]"
                               ".map(s => [s.className.slice(4), s.textContent])")
        for kind, text in expected.items():
            assert [kind, text] in tokens, (language, kind, text, tokens)
        assert page.evaluate(f"{body}.querySelector('pre code').textContent") == code
        assert page.evaluate(f"{body}.querySelector('.copy-code').dataset.copy") == code
        assert page.text("#probe .code .lang") == language


def test_unknown_languages_stay_plain_and_the_copy_button_still_copies(page):
    body = render(page, "```brainfuck\n+[-->+<]\n```\n\n```\nplain\n```")
    assert page.evaluate(f"{body}.querySelectorAll('pre code span').length") == 0
    page.evaluate("window.copied = []; navigator.clipboard.writeText = async (t) => "
                  "{ window.copied.push(t); }")
    page.click("#probe .copy-code")
    page.wait_for("window.copied.length === 1")
    assert page.evaluate("window.copied") == ["+[-->+<]"]


def contrast(page) -> list:
    """[class, ratio] of each token kind against its code block's background."""
    return page.evaluate("""(() => {
      const rgb = (c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
      const lum = (c) => rgb(c).map(v => v / 255).map(v => v <= 0.03928 ? v / 12.92
                        : ((v + 0.055) / 1.055) ** 2.4).reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
      const bg = getComputedStyle(document.querySelector('#probe .code')).backgroundColor;
      const kinds = new Map([...document.querySelectorAll('#probe pre span')].map(s => [s.className, s]));
      return [...kinds].map(([kind, s]) => {
        const [a, b] = [lum(getComputedStyle(s).color), lum(bg)].sort((x, y) => y - x);
        return [kind, (a + 0.05) / (b + 0.05)];
      });
    })()""")


def test_token_colours_are_readable_in_light_dark_and_the_system_theme(page):
    code = "\n".join(f"```{language}\n{SAMPLES[language][0]}\n```" for language in SAMPLES)
    render(page, code)
    kinds = set()
    for theme, scheme in (("light", "light"), ("dark", "light"), (None, "dark"), (None, "light")):
        page.send("Emulation.setEmulatedMedia", {"features": [
            {"name": "prefers-color-scheme", "value": scheme}]})
        page.evaluate(f"document.documentElement.dataset.theme = {json.dumps(theme or '')}")
        ratios = contrast(page)
        kinds |= {kind for kind, _ in ratios}
        assert all(ratio >= 4.5 for _, ratio in ratios), (theme, scheme, ratios)
    assert len(kinds) == 11                      # every token kind was measured


def test_a_2000_line_block_renders(page):
    lines = [f"def f{n}(x):  # line {n}\n    return x * {n} + 'a'" for n in range(1000)]
    code = "\n".join(lines)
    body = render(page, f"```python\n{code}\n```")
    assert page.evaluate(f"{body}.querySelector('pre code').textContent") == code
    assert page.evaluate(f"{body}.querySelectorAll('.tok-fn').length") == 1000
    for language, (sample, _) in SAMPLES.items():     # no language's patterns go quadratic
        long = "\n".join([sample.replace("\n", " ")] * 2000)
        body = render(page, f"```{language}\n{long}\n```")
        assert page.evaluate(f"{body}.querySelector('pre code').textContent") == long


# --- hostile replies ---------------------------------------------------------------------

HOSTILE = [
    "```html\n<img src=x onerror=window.pwned=1>\n```",
    "```js\n</code></pre><img src=x onerror=window.pwned=1>\n```",
    "```\"><img src=x onerror=window.pwned=1>\nx = 1\n```",
    "```python' onmouseover='window.pwned=1\nx = 1\n```",
    "$<img src=x onerror=window.pwned=1>$",
    "$$\\text{<script>window.pwned=1</script>}$$",
    "\\(\\text{<img src=x onerror=window.pwned=1>}\\)",
    "\\[\\href{javascript:window.pwned=1}{x} \\mathrm{<svg onload=window.pwned=1>}\\]",
    "$\\begin{<img src=x onerror=window.pwned=1>} a \\end{x}$",
    "$\\operatorname{<iframe src=javascript:window.pwned=1>}$",
]


def test_hostile_code_and_math_stay_inert_text(page, fake):
    body = send_reply(page, fake, "\n\n".join(HOSTILE))
    assert page.evaluate(f"{body}.querySelectorAll('{INJECTED}').length") == 0
    assert page.evaluate(HANDLERS) == 0
    assert page.evaluate(f"{body}.querySelectorAll('math').length") == 6
    assert page.evaluate(f"[...{body}.querySelectorAll('math, math *')].flatMap(e => "
                         "[...e.attributes].map(a => a.value)).filter(v => /[<>=]/.test(v))") == []
    text = page.evaluate(f"{body}.textContent")
    assert "<img src=x onerror=window.pwned=1>" in text
    assert "<script>window.pwned=1</script>" in text
    assert page.evaluate(f"{body}.querySelectorAll('.code .lang')[2].textContent") == \
        '"><img'
    page.evaluate(f"[...{body}.querySelectorAll('*')].forEach(e => "
                  "e.dispatchEvent(new MouseEvent('mouseover')))")
    assert page.evaluate("window.pwned === undefined")


SHOWCASE = r"""Inline \(a^2+b^2=c^2\), $\alpha \leq \beta_1$, $\mathbb{R}^n$, $\hat{x} + \vec{v}$ and a price of $5 and $10.

$$\sum_{i=1}^{n} i = \frac{n(n+1)}{2}, \quad \int_0^\infty e^{-x^2}\,dx = \frac{\sqrt{\pi}}{2}$$

\[ A = \begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}, \quad |x| = \begin{cases} x & x \geq 0 \\ -x & \text{otherwise} \end{cases}, \quad \lim_{n\to\infty} \left(1 + \frac{1}{n}\right)^n = e \]

```python
@cached
def area(r: float) -> float:
    # the area of a circle
    return 3.14159 * r ** 2  # pi r squared
```
"""


def test_screenshots_of_math_and_code_in_both_themes(page):
    SHOTS.mkdir(exist_ok=True)
    render(page, SHOWCASE)
    for theme in ("light", "dark"):
        page.evaluate(f"document.documentElement.dataset.theme = '{theme}'")
        page.screenshot(SHOTS / f"render-{theme}.png")
    assert (SHOTS / "render-dark.png").stat().st_size > 0
