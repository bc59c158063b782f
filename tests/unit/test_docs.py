"""The README and docs/*.md stay linked: every relative link points at a file of the repository (and an anchor at one
of its headings), every repository path they name in backticks exists, and every docstring that cites a docs page
names one that is there. Fast: text only, no model."""

import re
from pathlib import Path

import pytest


def repo_root() -> Path:
    here = Path(__file__).resolve().parent
    while not (here / "README.md").is_file() or not (here / "src").is_dir():
        if here.parent == here:
            raise RuntimeError("no repository root above tests/")
        here = here.parent
    return here


ROOT = repo_root()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
CODE_PATH = re.compile(r"`((?:src|tests|benchmarks|scripts|corpus|docs)/[\w./-]+\.(?:py|md|png))`")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.MULTILINE)}


def relative_links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]  # not http:, mailto:, ...


def test_the_readme_links_every_docs_page():
    linked = {t.split("#")[0] for t in relative_links(ROOT / "README.md")}
    pages = {f"docs/{p.name}" for p in PAGES[1:]}
    assert pages, "docs/ has no pages"
    assert pages <= linked, f"docs pages the README does not link: {sorted(pages - linked)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page: Path):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_repository_path_named_exists(page: Path):
    """A test, benchmark or script the text cites by path (`tests/test_x.py`) must still be there."""
    missing = [p for p in CODE_PATH.findall(page.read_text(encoding="utf-8")) if not (ROOT / p).exists()]
    assert not missing, f"{page.relative_to(ROOT)} names paths that do not exist: {missing}"


def test_docstrings_cite_docs_pages_that_exist():
    cited = {
        (f.relative_to(ROOT).as_posix(), m)
        for f in [*(ROOT / "src").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
        for m in re.findall(r"(?<![\w/])((?:docs/)?[\w-]+\.md)\b", f.read_text(encoding="utf-8"))
    }
    missing = sorted((f, m) for f, m in cited if not (ROOT / m).exists() and m not in {"README.md"})
    assert not missing, f"docs cited by source files that are not in the repository: {missing}"
