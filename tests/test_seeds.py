"""The seed documents' examples the suite runs verbatim live in tests/seeds/, so a clone
without ../shared runs them too; where ../shared/seeds is there, they are checked against
it, so a copy cannot drift from its document."""

import re

from conftest import ROOT

SEEDS = ROOT / "tests" / "seeds"
DOCUMENTS = ROOT.parent / "shared" / "seeds"
COPIES = {"langbase_curl.md": ("001_1bff7470e5a682c0.txt", 6),   # copy: (document, blocks)
          "studio_curl.md": ("003_0dfe5ff70316431f.txt", 5)}
CURL = re.compile(r"```bash\n(curl .*?)\n```", re.S)     # as the tests that run them read


def test_the_seed_examples_are_here_and_name_their_document():
    for copy, (document, count) in COPIES.items():
        text = (SEEDS / copy).read_text(encoding="utf-8")   # absent: this fails, never skips
        assert f"../shared/seeds/{document}" in text.split("\n## ", 1)[0], copy
        assert len(CURL.findall(text)) == count, copy


def test_the_copies_are_the_documents_own_blocks():
    for copy, (document, _) in COPIES.items():
        source = DOCUMENTS / document
        if not source.exists():
            continue                     # a clone without ../shared: the copies stand alone
        original = CURL.findall(source.read_text(encoding="utf-8"))
        assert CURL.findall((SEEDS / copy).read_text(encoding="utf-8")) == original, copy
