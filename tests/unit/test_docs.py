"""The README stands on its own: its performance table is docs/performance.md's, word for word, and it
points at no file outside the repository.

The README's performance section is a copy of the page's table so that a reader sees the figures
without leaving it; this test is what keeps the copy from drifting when a benchmark is re-run.
"""

from __future__ import annotations

import re

from tests.support import ROOT

HEADER = "| figure | measured |"


def table(text: str) -> str:
    start = text.index(HEADER)
    end = text.find("\n\n", start)
    return text[start : end if end >= 0 else len(text)].strip()


def test_the_readme_performance_table_is_the_performance_pages() -> None:
    readme = (ROOT / "README.md").read_text()
    page = (ROOT / "docs" / "performance.md").read_text()
    assert table(readme) == table(page), "copy docs/performance.md's table into the README's Performance"


def test_the_readme_links_only_to_files_in_the_repository() -> None:
    readme = (ROOT / "README.md").read_text()
    assert not re.search(r"(?<!\.)\.\./\w", readme), "the README points above the repository"
    for target in re.findall(r"\]\(([^)#]+)\)", readme):
        if "://" not in target:
            assert (ROOT / target).exists(), target
    for path in re.findall(
        r"`((?:docs|benchmarks|tests|ledger|workers|scripts|clients)/[\w./-]+\.\w+)`", readme
    ):
        assert (ROOT / path).exists(), path
