"""README's endpoint index is the route table's (issue 29): a new route shows up or fails."""

import re

from docs_index import ROOT, index, written


def test_the_readme_index_is_the_route_table():
    assert written() == index(), "README's endpoint index drifted: run python tests/docs_index.py"


def test_every_reference_the_index_links_to_exists():
    for link in set(re.findall(r"\]\((docs/[^)#]+)", index())):
        assert (ROOT / link).is_file(), f"the index links to {link}, which does not exist"
