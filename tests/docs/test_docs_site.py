"""The documentation site builds with --strict, every page is in the nav, quick starts show the tested scripts."""

from __future__ import annotations

import html
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def test_mkdocs_build_strict(built_site):
    assert built_site.returncode == 0, built_site.problems
    site = built_site.path
    assert (site / "index.html").exists()


class _IgnoreTags(yaml.SafeLoader):
    """mkdocs.yml may use tags such as !!python/name:...; the nav does not need them."""


_IgnoreTags.add_multi_constructor("", lambda loader, suffix, node: None)


def _nav_pages(entries) -> list[str]:
    pages = []
    for entry in entries:
        if isinstance(entry, str):
            pages.append(entry)
        elif isinstance(entry, dict):
            for value in entry.values():
                pages.extend(_nav_pages(value) if isinstance(value, list) else [value])
    return pages


def test_every_markdown_page_is_in_the_nav_and_every_nav_entry_exists():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_IgnoreTags)
    nav = _nav_pages(config["nav"])
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(set(pages) - set(nav)) == [], "pages missing from the nav in mkdocs.yml"
    assert sorted(set(nav) - set(pages)) == [], "nav entries without a page"
    assert len(nav) == len(set(nav)), "a page appears twice in the nav"


def test_every_example_script_is_included_by_a_page_and_every_include_exists():
    included = set()
    for page in DOCS.rglob("*.md"):
        included |= set(re.findall(r'--8<-- "([^"]+)"', page.read_text()))
    scripts = {p.relative_to(ROOT).as_posix() for p in (DOCS / "examples").glob("*.py")}
    assert scripts and scripts <= included, f"example scripts no page shows: {sorted(scripts - included)}"
    assert all((ROOT / path).is_file() for path in included)


def test_quick_start_pages_show_the_script_text(built_site):
    assert built_site.returncode == 0, built_site.problems
    for page in (DOCS / "quickstart").glob("*.md"):
        rendered = html.unescape(re.sub(r"<[^>]+>", "", (built_site.path / "quickstart" / page.stem / "index.html").read_text()))
        for path in re.findall(r'--8<-- "([^"]+)"', page.read_text()):
            missing = [line for line in (ROOT / path).read_text().splitlines() if line.strip() and line not in rendered]
            assert missing == [], f"{page.name} does not show these lines of {path}"
