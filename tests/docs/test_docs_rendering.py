"""The built site renders what the Markdown means: maths typeset offline, lists as lists, docstring cross-references
as links. (Checked in a real browser by ``make docs-screenshots``; these tests read the built HTML.)"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
KATEX = DOCS / "assets" / "katex"
SPHINX_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|data|attr|mod|exc|obj|const):`")
FORMULA = re.compile(r'<(span|div) class="arithmatex">(.*?)</\1>', flags=re.DOTALL)
FENCE = re.compile(r"^ *(```|~~~).*?^ *\1", flags=re.MULTILINE | re.DOTALL)


def _pages(site: Path) -> dict[str, str]:
    return {page.relative_to(site).as_posix(): page.read_text() for page in site.rglob("*.html")}


def _article(page_html: str) -> str:
    """The page's own content (no navigation), without code blocks."""
    article = page_html[page_html.find("<article"):page_html.find("</article>")]
    return re.sub(r"<pre.*?</pre>", "", article, flags=re.DOTALL)


def _formulas(page_html: str) -> list[tuple[bool, str]]:
    """``(display, TeX)`` of every formula arithmatex wrapped for KaTeX on the page."""
    formulas = []
    for _, wrapped in FORMULA.findall(page_html):
        tex = html.unescape(wrapped).strip()
        formulas.append((tex.startswith("\\["), tex[2:-2]))
    return formulas


def _source_formula_count(markdown: str) -> int:
    """``$...$`` and ``$$...$$`` formulas of a page's Markdown, outside code."""
    text = re.sub(r"`[^`\n]*`", "", FENCE.sub("", markdown))
    display = re.findall(r"\$\$.+?\$\$", text, flags=re.DOTALL)
    text = re.sub(r"\$\$.+?\$\$", "", text, flags=re.DOTALL)
    return len(display) + len(re.findall(r"(?<![\\$])\$(?=\S)[^$\n]+?(?<=\S)\$", text))


@pytest.fixture(scope="module")
def pages(built_site) -> dict[str, str]:
    assert built_site.returncode == 0, built_site.problems
    return _pages(built_site.path)


def test_site_builds_from_a_directory_outside_the_repository(built_site):
    assert ROOT not in built_site.cwd.parents and built_site.cwd != ROOT
    assert built_site.returncode == 0, built_site.problems


def test_pages_load_nothing_from_other_hosts(pages):
    """The site works offline: every script, stylesheet, font and image comes from the site itself."""
    external = {name: found for name, text in pages.items()
                if (found := re.findall(r'<(?:script|link|img)\b[^>]*\b(?:src|href)="((?:https?:)?//[^"]+)"', text))}
    assert external == {}


def test_every_formula_of_the_markdown_is_handed_to_katex(pages):
    with_maths = {p.relative_to(DOCS).with_suffix("").as_posix(): n for p in DOCS.rglob("*.md")
                  if (n := _source_formula_count(p.read_text()))}
    assert with_maths, "no page has maths: this test no longer checks anything"
    for page, count in with_maths.items():
        rendered = _formulas(pages[f"{page}/index.html"])
        assert len(rendered) == count, f"{page}: {count} formulas in the Markdown, {len(rendered)} wrapped for KaTeX"


def test_pages_with_maths_load_the_vendored_katex_and_its_fonts(built_site, pages):
    site = built_site.path
    for name, text in pages.items():
        if not _formulas(text):
            continue
        page_dir = (site / name).parent
        assets = re.findall(r'<(?:script|link)\b[^>]*\b(?:src|href)="([^"]*(?:katex)[^"]*)"', text)
        wanted = {"katex.min.js", "auto-render.min.js", "katex.js", "katex.min.css"}
        assert {Path(a).name for a in assets} >= wanted, f"{name} does not load KaTeX: {assets}"
        assert all((page_dir / a).resolve().is_file() for a in assets), f"{name}: missing asset among {assets}"
    css = (site / "assets" / "katex" / "katex.min.css").read_text()
    fonts = set(re.findall(r"url\((fonts/[^)]+\.woff2)\)", css))
    assert len(fonts) >= 15 and all((site / "assets" / "katex" / f).is_file() for f in fonts)
    assert (site / "assets" / "katex" / "LICENSE").is_file()


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the vendored KaTeX outside a browser")
def test_katex_parses_every_formula_of_the_site(pages):
    formulas = sorted({formula for text in pages.values() for formula in _formulas(text)})
    assert formulas
    script = """
        const katex = require(process.argv[1]);
        const failed = [];
        for (const [display, tex] of JSON.parse(require("fs").readFileSync(0, "utf8"))) {
            try { katex.renderToString(tex, {displayMode: display, throwOnError: true}); }
            catch (error) { failed.push(tex + ": " + error.message); }
        }
        console.log(JSON.stringify(failed));"""
    result = subprocess.run(["node", "-e", script, str(KATEX / "katex.min.js")], input=json.dumps(formulas),
                            capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(result.stdout) == []


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


def test_no_page_shows_a_sphinx_role(pages):
    shown = {name: SPHINX_ROLE.findall(_article(text)) for name, text in pages.items()}
    assert {name: roles for name, roles in shown.items() if roles} == {}


def test_docstring_cross_references_are_links(pages):
    """Roles such as ``:func:`quantize_model``` become links to the object's entry in the API reference."""
    api = "".join(text for name, text in pages.items() if name.startswith("api/"))
    links = re.findall(r'<a class="autorefs autorefs-internal" href="[^"]*#([\w.]+)"><code>', api)
    assert len(links) >= 30, f"only {len(links)} docstring cross-reference links on the API pages"
    anchors = {anchor for text in pages.values() for anchor in re.findall(r'\bid="([\w.]+)"', text)}
    assert set(links) <= anchors
