"""Every pointer into a doc's section (`docs/method.md#jumprelu` in a comment, `(method.md#e2e)` in
a markdown link) names a heading that exists, so code comments never point at a renamed section."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("sae_sweeps", "tests", "benchmarks", "analysis", "conf", "docs", "scripts")
# docs/<doc>.md#<anchor> anywhere (comments, docstrings, prose); (<doc>.md#<anchor>) or (#<anchor>) as a markdown link
ABSOLUTE = re.compile(r"docs/([\w-]+\.md)#([\w-]+)")
RELATIVE = re.compile(r"\]\(([\w-]+\.md)?#([\w-]+)\)")


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings: lowercase, punctuation dropped, spaces to hyphens,
    a -1, -2 ... suffix on repeats. Headings inside fenced code blocks are not headings."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not re.match(r"#{1,6} ", line):
            continue
        text = line.lstrip("#").strip().replace("`", "").lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def pointers() -> list[tuple[Path, Path, str]]:
    """(file pointing, doc pointed to, anchor) for every section pointer in the repository."""
    files = [ROOT / "README.md"] + [
        f for d in SOURCES for f in (ROOT / d).rglob("*") if f.suffix in (".py", ".md", ".yaml")
    ]
    found = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        found += [(f, ROOT / "docs" / doc, anchor) for doc, anchor in ABSOLUTE.findall(text)]
        if f.suffix == ".md":
            found += [(f, f.parent / doc if doc else f, anchor) for doc, anchor in RELATIVE.findall(text)]
    return found


def test_every_section_pointer_names_an_existing_heading():
    found = pointers()
    assert any(doc.name == "method.md" for _, doc, _ in found)  # the scan does see the comments' pointers
    broken = [
        f"{source.relative_to(ROOT)}: {doc.relative_to(ROOT)}#{anchor}"
        for source, doc, anchor in found
        if not doc.is_file() or anchor not in github_anchors(doc.read_text(encoding="utf-8"))
    ]
    assert not broken, "pointers to missing sections:\n" + "\n".join(broken)
