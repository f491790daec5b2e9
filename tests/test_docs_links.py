"""Every relative link in README.md and docs/*.md points at a file that exists, and every
``#anchor`` at a heading of that file (GitHub's heading slugs).

Results sections get renamed as runs progress (a date, "in progress" → final), which silently
breaks links to them; this catches it.
"""
from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def without_code_blocks(text: str) -> str:
    """The text with fenced code blocks blanked; their line breaks kept, so line numbers stay."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def github_slug(heading: str) -> str:
    """GitHub's anchor for a markdown heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> set[str]:
    """The anchors of a markdown file's headings (outside code fences); repeats get -1, -2, ..."""
    seen: dict[str, int] = {}
    out = set()
    for line in without_code_blocks(path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if not m:
            continue
        slug = github_slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_slug_matches_github_on_known_headings():
    assert github_slug("Generalisation: CK+48, outside every training set (2026-12-02)") == (
        "generalisation-ck48-outside-every-training-set-2026-12-02")
    assert github_slug("FER+, 8 classes: the bundled model (`configs/x.yaml` since 2026-12-02)") == (
        "fer-8-classes-the-bundled-model-configsxyaml-since-2026-12-02")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_and_anchors_resolve(doc: Path):
    text = without_code_blocks(doc.read_text(encoding="utf-8"))
    broken = []
    for m in LINK.finditer(text):
        link = m.group(1)
        if re.match(r"[a-z]+:", link):  # http(s):, mailto: ...
            continue
        target, _, anchor = link.partition("#")
        path = (doc.parent / target).resolve() if target else doc
        line = text.count("\n", 0, m.start()) + 1
        if not path.exists():
            broken.append(f"{doc.name}:{line}: {link} (no such file)")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{doc.name}:{line}: {link} (no heading with anchor #{anchor})")
    assert not broken, "broken links:\n" + "\n".join(broken)
