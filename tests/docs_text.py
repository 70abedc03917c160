"""The documentation's text for the tests: README.md and every page under docs/.

Sections are delimited by ``<!-- section:NAME -->`` markers; each name occurs in
exactly one file, whichever page it lives on, so tests find an example by its
section and not by its file.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def doc_files() -> list[Path]:
    """README.md, then every Markdown page of the documentation site, sorted."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def section(name: str) -> str:
    """The text between a section's markers, from whichever file holds it."""
    pattern = re.compile(rf"<!-- section:{name} -->(.*?)<!-- /section:{name} -->", re.S)
    found = [m.group(1) for path in doc_files() for m in pattern.finditer(path.read_text())]
    assert len(found) == 1, f"section {name!r} occurs {len(found)} times in README.md and docs/"
    return found[0]


def blocks(language: str, text: str) -> list[str]:
    """The fenced code blocks of one language in ``text``, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)
