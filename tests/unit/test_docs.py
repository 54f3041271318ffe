"""The README is a map whose first lines are the two commands a new user runs (`.ci/run` runs the second), and
every link in it and in docs/ reaches a file and, where it names one, a heading there."""

from __future__ import annotations

import re
from pathlib import Path

from services.settings import REPO_ROOT

README = REPO_ROOT / "README.md"
PAGES = [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def test_the_readme_starts_with_make_demo_then_make_test() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    commands = lines[lines.index("```") + 1 : lines.index("```", lines.index("```") + 1)]
    assert [line.split()[:2] for line in commands] == [["make", "demo"], ["make", "test"]]
    assert lines.index("```") < 5


def test_every_relative_link_reaches_a_file_and_its_heading() -> None:
    for page in PAGES:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page.relative_to(REPO_ROOT)} links to {target}, which does not exist"
            if anchor and linked.suffix == ".md":
                assert anchor in anchors(linked), f"{page.relative_to(REPO_ROOT)} links to {target}: no such heading"


def test_the_readme_links_every_page_of_docs() -> None:
    readme = README.read_text(encoding="utf-8")
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"
