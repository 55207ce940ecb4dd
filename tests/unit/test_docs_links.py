"""The README and the pages under docs/ stay connected: every relative link and #anchor resolves.

The README is short and sends the reader to docs/*.md; a section renamed or moved there must
not leave a link pointing at nothing. Anchors are computed as GitHub renders headings
(lower case, punctuation dropped, spaces to hyphens, `-1`, `-2` for repeats). Links that leave
the repository may only point at the contract folder beside it (`../shared/` from the root),
which a clone does not contain, so only their place is checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
OUTSIDE = "shared"
"""The only folder beside the repository that its pages may link to (the contract)."""

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_CODE_SPAN = re.compile(r"`[^`]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def _prose(text: str) -> Iterator[tuple[int, str]]:
    """The lines outside fenced code blocks, with their 1-based numbers."""
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text (without the repeat suffix)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a page's headings make."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _, line in _prose(text):
        match = _HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(text: str) -> Iterator[tuple[int, str]]:
    """The targets of a page's inline links and images, outside code."""
    for number, line in _prose(text):
        for match in _LINK.finditer(_CODE_SPAN.sub("", line)):
            yield number, match.group(1)


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """Each relative link or #anchor on `page` that resolves to nothing, as `file:line: target`."""
    text = page.read_text(encoding="utf-8")
    problems: list[str] = []
    for number, target in links(text):
        if _SCHEME.match(target):
            continue  # http:, https:, mailto: are not checked here
        where = f"{page.relative_to(root)}:{number}: {target}"
        path_part, _, anchor = target.partition("#")
        path = (page.parent / unquote(path_part)).resolve() if path_part else page
        if not path.is_relative_to(root):
            beside = path.relative_to(root.parent) if path.is_relative_to(root.parent) else None
            if beside is None or beside.parts[:1] != (OUTSIDE,):
                problems.append(f"{where} (outside the repository, not in ../{OUTSIDE}/)")
            continue
        if not path.exists():
            problems.append(f"{where} (no such file)")
            continue
        headings = anchors(path.read_text(encoding="utf-8")) if path.suffix == ".md" else None
        if anchor and headings is not None and unquote(anchor) not in headings:
            problems.append(f"{where} (no such heading in {path.relative_to(root)})")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_every_docs_page_is_linked_from_the_readme() -> None:
    targets = {target.partition("#")[0] for _, target in links(README.read_text("utf-8"))}
    pages = {f"docs/{page.name}" for page in DOCS.glob("*.md")}
    assert pages - targets == set()


def test_the_readme_is_short_and_shows_the_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    for command in ("make run", "make test", "make http"):
        assert command in text


def test_the_settings_table_lists_every_setting() -> None:
    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(ORDERS_[A-Z0-9_]+)` \|", text, re.MULTILINE))
    fields = {f"ORDERS_{name.upper()}" for name in Settings.model_fields}
    assert documented == fields


def test_slugs_follow_github() -> None:
    assert slug("Message catalogue page (AsyncAPI)") == "message-catalogue-page-asyncapi"
    assert slug("`orders.place` (command) — PlaceOrder") == "ordersplace-command--placeorder"
    assert slug("Stats without filters: exact rollups") == "stats-without-filters-exact-rollups"
    assert anchors("# A\n## B\n```\n# not a heading\n```\n## B\n") == {"a", "b", "b-1"}


def test_a_broken_link_is_reported(tmp_path: Path) -> None:
    tmp_path = tmp_path.resolve()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## Here\n", encoding="utf-8")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md#here) [ok](#page) [ok](../../shared/CONTRACT.md)\n"
        "[gone](missing.md) [bad anchor](other.md#there) [self](#nowhere)\n"
        "[too far](../../elsewhere/x.md) `[in code](nothing.md)`\n"
        "```\n[in a block](nothing.md)\n```\n",
        encoding="utf-8",
    )
    assert broken_links(page, root=tmp_path) == [
        "docs/page.md:4: missing.md (no such file)",
        "docs/page.md:4: other.md#there (no such heading in docs/other.md)",
        "docs/page.md:4: #nowhere (no such heading in docs/page.md)",
        "docs/page.md:5: ../../elsewhere/x.md (outside the repository, not in ../shared/)",
    ]
