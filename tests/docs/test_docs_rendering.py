"""The built site renders what the Markdown means: maths typeset offline, lists as lists, docstring cross-references
as links. (Checked in a real browser by ``make docs-screenshots``; these tests read the built HTML.)"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^ *(```|~~~).*?^ *\1", flags=re.MULTILINE | re.DOTALL)


def _pages(site: Path) -> dict[str, str]:
    return {page.relative_to(site).as_posix(): page.read_text() for page in site.rglob("*.html")}


def _article(page_html: str) -> str:
    """The page's own content (no navigation), without code blocks."""
    article = page_html[page_html.find("<article"):page_html.find("</article>")]
    return re.sub(r"<pre.*?</pre>", "", article, flags=re.DOTALL)


@pytest.fixture(scope="module")
def pages(built_site) -> dict[str, str]:
    assert built_site.returncode == 0, built_site.problems
    return _pages(built_site.path)


def test_site_builds_from_a_directory_outside_the_repository(built_site):
    assert ROOT not in built_site.cwd.parents and built_site.cwd != ROOT
    assert built_site.returncode == 0, built_site.problems


def test_no_list_item_is_swallowed_by_a_paragraph(pages):
    """A list marker at the start of a line inside a paragraph means Python-Markdown did not see a list there
    (typically a missing blank line after an indented block inside the previous item)."""
    swallowed = []
    for name, text in pages.items():
        for paragraph in re.findall(r"<p>(.*?)</p>", _article(text), flags=re.DOTALL):
            lines = html.unescape(re.sub(r"<[^>]+>", "", paragraph)).split("\n")[1:]
            swallowed += [f"{name}: {line.strip()[:60]}" for line in lines
                          if re.match(r"\s*(\d+\.|[*+-])\s", line) or line.lstrip().startswith(("|", "```"))]
    assert swallowed == []


def test_nested_list_items_are_indented_by_four_spaces():
    """Python-Markdown nests a list only when it is indented by 4 spaces; 2 spaces flatten it into its parent."""
    misindented = []
    for page in sorted(DOCS.rglob("*.md")):
        for number, line in enumerate(FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), page.read_text())
                                      .split("\n"), start=1):
            indent = len(line) - len(line.lstrip(" "))
            if indent % 4 and re.match(r" *(\d+\.|[*+-]) ", line):
                misindented.append(f"{page.relative_to(ROOT)}:{number}: {line.strip()[:60]}")
    assert misindented == []


def test_gaqat_step_list_renders_as_seven_items(pages):
    text = _article(pages["concepts/gaqat/index.html"])
    steps = text[text.index('id="the-step-exactly-as-implemented"'):]
    steps = steps[steps.index("<ol>"):]
    depth, items = 0, 0
    for tag in re.finditer(r"<(/?)(ol|ul|li)\b", steps):
        if tag.group(2) != "li":
            depth += -1 if tag.group(1) else 1
            if depth == 0:
                break
        elif not tag.group(1) and depth == 1:
            items += 1
    assert items == 7
