"""README.md's endpoint index, made from the route table so that it cannot drift.

    python tests/docs_index.py          # rewrite the index between README's markers

tests/test_docs_index.py fails when the README's index is not what this makes.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BEGIN, END = "<!-- endpoints: begin -->", "<!-- endpoints: end -->"

# Each dialect module's API, with the reference that documents it, in the index's order.
APIS = {
    "openai": ("OpenAI", "docs/api/openai.md"),
    "embeddings": ("OpenAI", "docs/api/openai.md"),
    "completions": ("OpenAI", "docs/api/openai.md"),
    "batches": ("OpenAI Files and Batch", "docs/api/batches.md"),
    "relays": ("OpenAI relays", "docs/api/openai.md#relays"),
    "openai_responses": ("OpenAI Responses", "docs/api/responses.md"),
    "conversations": ("OpenAI Conversations", "docs/api/responses.md"),
    "anthropic": ("Anthropic", "docs/api/anthropic.md"),
    "ollama": ("Ollama", "docs/api/ollama.md"),
    "langbase": ("Langbase", "docs/api/langbase.md"),
    "responses": ("Responses hub", "docs/api/responses-hub.md"),
    "studio": ("LM Studio hub", "docs/api/lmstudio-hub.md"),
    "edison": ("EDISON", "docs/api/edison.md"),
    "sessions": ("Sessions", "docs/api/sessions.md"),
    "usage": ("Hub", "docs/api/hub.md"),
    "service": ("Hub", "docs/api/hub.md"),
}


def index() -> str:
    sys.path.insert(0, str(ROOT))
    from llmhub.http.routes import ROUTES
    order = list(APIS)
    rows = ["| method | path | API | what it does |", "|---|---|---|---|"]
    for route in sorted(ROUTES, key=lambda r: order.index(_module(r))):
        name, doc = APIS[_module(route)]
        path = route.path + (f" (`Accept: {route.accept}`)" if route.accept else "")
        rows.append(f"| {route.method} | `{path}` | [{name}]({doc}) | "
                    f"{route.summary.replace('|', '/')} |")
    return "\n".join(rows)


def _module(route) -> str:
    name = route.dialect.__name__.rsplit(".", 1)[-1]
    if name not in APIS:
        raise SystemExit(f"tests/docs_index.py: add the dialect {name!r} to APIS")
    return name


def written() -> str:
    text = README.read_text(encoding="utf-8")
    found = re.search(re.escape(BEGIN) + r"\n(.*?)\n" + re.escape(END), text, re.S)
    return found[1] if found else ""


def write() -> None:
    text = README.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    README.write_text(text[:start] + "\n" + index() + "\n" + text[end:], encoding="utf-8")


if __name__ == "__main__":
    write()
