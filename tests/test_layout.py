"""The package's layout is its architecture (docs/architecture.md): imports point one way.

Each group may import only the groups listed for it; a module that breaks the rule fails
here with its name and the import, before the cycle or the leak it starts can grow.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "llmhub"

# The shared vocabulary at the top of the package: every group may use it.
VOCABULARY = {"errors", "events", "transcript", "context", "wire", "ids", "redaction", "config",
              "messages", "logs", "waiting"}
# The application's assembly (and its entry points) may import anything.
ASSEMBLY = {"hub", "cli", "__main__", "__init__"}
# Protocol leaves of http/ that the upstream client shares: they import only vocabulary.
LEAVES = {"http.protocol", "http.sockets"}

MAY_IMPORT = {
    "vocabulary": {"vocabulary"},
    "formats": {"vocabulary", "formats"},
    "store": {"vocabulary", "store"},
    "upstream": {"vocabulary", "formats", "upstream", "leaves"},
    "engine": {"vocabulary", "formats", "store", "upstream", "engine"},
    "dialects": {"vocabulary", "formats", "engine", "dialects"},
    "http": {"vocabulary", "engine", "dialects", "http", "leaves"},
    "leaves": {"vocabulary"},
}


def group(module: str) -> str:
    """`errors` → vocabulary, `engine.routing` → engine, `http.sockets` → leaves."""
    if module in LEAVES:
        return "leaves"
    top = module.split(".")[0]
    if "." not in module and top in VOCABULARY:
        return "vocabulary"
    if "." not in module and top in ASSEMBLY:
        return "assembly"
    return top


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        yield name.removesuffix(".__init__"), path


def imported(path: Path) -> set[str]:
    """The llmhub modules a file imports, by their name inside the package."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] == "llmhub":
            inner = node.module.removeprefix("llmhub").lstrip(".")
            names = [alias.name for alias in node.names]
            if not inner or inner in MAY_IMPORT or inner == "upstream":
                # `from llmhub.engine import accounting`: the names are modules, unless the
                # package's own __init__ defines them (upstream.make_upstreams).
                found |= {f"{inner}.{n}".lstrip(".") if (PACKAGE / inner / f"{n}.py").exists()
                          or (PACKAGE / inner / n).is_dir() else inner or n for n in names}
            else:
                found.add(inner)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("llmhub.") for a in node.names
                      if a.name.startswith("llmhub.")}
    return {name for name in found if name and not name.startswith("__version__")}


def test_imports_point_one_way():
    broken = []
    for name, path in modules():
        mine = group(name)
        if mine == "assembly":
            continue
        for target in imported(path):
            theirs = group(target)
            if theirs not in MAY_IMPORT[mine] | {mine}:
                broken.append(f"{name} ({mine}) imports {target} ({theirs})")
    assert not broken, "\n".join(broken)


def test_the_top_level_holds_the_vocabulary_and_the_assembly_only():
    top = {path.stem for path in PACKAGE.glob("*.py")}
    assert top <= VOCABULARY | ASSEMBLY, top - VOCABULARY - ASSEMBLY
    groups = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").exists()}
    assert groups == {"http", "engine", "store", "formats", "dialects", "upstream"}
