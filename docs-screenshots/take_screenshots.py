"""Build the docs site, open pages in headless Chromium, check what the browser rendered, save screenshots.

Run with ``make docs-screenshots`` (not part of the test suite). Needs Chromium (Debian:
``apt-get install -y chromium``) and the ``screenshots`` extra (Playwright, which drives that Chromium; it
downloads no browser). Works offline: the site is served from a temporary folder on 127.0.0.1, and any
request to another host is blocked and reported.

Checked on every page, in the DOM after the page's scripts ran: every formula was typeset by KaTeX and
none is a KaTeX error, no Sphinx role (``:class:`...```) is left as text, nothing was fetched from another
host. Per page: the GAQAT step list has its seven items, the API page has docstring cross-reference links.
The screenshots are saved as small palette PNGs next to this script; the exit status is 1 when a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from playwright.sync_api import Page as BrowserPage
from playwright.sync_api import Route, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
WIDTH = 1280
COLOURS = 96   # palette size of the saved PNGs: text and KaTeX glyphs stay crisp at a fraction of the size
HEADER_PX = 60  # the theme's fixed header: a section scrolled to the top starts just below it

COMMON_STATE = """() => ({
    formulas: document.querySelectorAll(".arithmatex").length,
    typeset: document.querySelectorAll(".arithmatex .katex").length,
    errors: document.querySelectorAll(".katex-error").length,
    roles: (document.querySelector("article").innerText.match(/:(class|func|meth|data|attr|mod|exc|obj):`/g) || []),
})"""


def common_problems(state: dict, external_requests: list[str]) -> list[str]:
    """Problems any page can have, from the ``COMMON_STATE`` of its DOM and the requests it tried to send off-host."""
    problems = []
    if state["typeset"] < state["formulas"]:
        problems.append(f"{state['formulas'] - state['typeset']} of {state['formulas']} formulas not typeset by KaTeX")
    if state["errors"]:
        problems.append(f"{state['errors']} KaTeX errors (red text)")
    if state["roles"]:
        problems.append(f"Sphinx roles shown as text: {', '.join(state['roles'])}")
    if external_requests:
        problems.append(f"requests to other hosts: {', '.join(external_requests)}")
    return problems


def _maths_typeset(page: BrowserPage) -> list[str]:
    count = page.evaluate("() => document.querySelectorAll('.arithmatex .katex').length")
    return [] if count >= 10 else [f"expected the LSQ formulas typeset by KaTeX, found {count}"]


def _seven_steps(page: BrowserPage) -> list[str]:
    items = page.evaluate("() => document.querySelector('#the-step-exactly-as-implemented ~ ol').children.length")
    return [] if items == 7 else [f"the step list has {items} items instead of 7"]


def _cross_references(page: BrowserPage) -> list[str]:
    links = page.evaluate("() => document.querySelectorAll('.doc-contents a.autorefs-internal > code').length")
    return [] if links >= 3 else [f"expected cross-reference links in the docstrings, found {links}"]


@dataclass(frozen=True)
class Page:
    """One page to check and photograph: its path, the element to scroll to the top, the viewport height."""

    name: str
    path: str
    scroll_to: str | None = None
    height: int = 1100
    check: Callable[[BrowserPage], list[str]] = lambda page: []


PAGES = [
    Page("home", ""),
    Page("concepts-quantization-maths", "concepts/quantization/", "#the-quantizer-exactly-as-implemented",
         check=_maths_typeset),
    Page("concepts-gaqat-steps", "concepts/gaqat/", "#the-step-exactly-as-implemented", height=1700,
         check=_seven_steps),
    Page("results-dg", "results/dg/", "#set-up", height=1300),
    Page("api-quant", "api/quant/", '[id="gaqat_wrap.quant.quantize.quantize_model"]', height=1300,
         check=_cross_references),
]


def build_site(site: Path) -> None:
    """``mkdocs build --strict`` of this repository into ``site``, run from outside the repository."""
    mkdocs = Path(sys.executable).with_name("mkdocs")
    subprocess.run([str(mkdocs) if mkdocs.exists() else "mkdocs", "build", "--strict", "--quiet",
                    "-f", str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
                   cwd=site.parent, check=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(site: Path) -> http.server.ThreadingHTTPServer:
    """Serve ``site`` on a free port of 127.0.0.1 in a background thread."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def shoot(page: BrowserPage, base_url: str, spec: Page, out: Path) -> list[str]:
    """Open ``spec``, check it, save ``out/<name>.png``; returns the problems found."""
    external: list[str] = []

    def local_only(route: Route) -> None:
        if route.request.url.startswith(base_url):
            route.continue_()
        else:
            external.append(route.request.url)
            route.abort()

    page.unroute("**/*")
    page.route("**/*", local_only)
    page.set_viewport_size({"width": WIDTH, "height": spec.height})
    page.goto(base_url + spec.path, wait_until="load")
    with contextlib.suppress(PlaywrightTimeoutError):   # the check below reports formulas KaTeX did not typeset
        page.wait_for_function("() => document.querySelectorAll('.arithmatex').length"
                               " === document.querySelectorAll('.arithmatex .katex').length", timeout=10_000)
    page.evaluate("() => document.fonts.ready")
    problems = common_problems(page.evaluate(COMMON_STATE), external) + spec.check(page)
    if spec.scroll_to:
        page.evaluate("([el, header]) => window.scrollTo({top: el.getBoundingClientRect().top + window.scrollY - header,"
                      " behavior: 'instant'})", [page.query_selector(spec.scroll_to), HEADER_PX])
        page.wait_for_timeout(1000)   # the header swaps the site name for the page title with a transition
    raw = out / f"{spec.name}.raw.png"
    page.screenshot(path=str(raw))
    with Image.open(raw) as image:
        image.convert("RGB").quantize(COLOURS).save(out / f"{spec.name}.png", optimize=True)
    raw.unlink()
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the PNGs (default: %(default)s)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"),
                        help="Chromium executable (default: chromium on PATH)")
    args = parser.parse_args(argv)
    if not args.chromium:
        parser.error("Chromium not found: install it (Debian: apt-get install -y chromium) or pass --chromium PATH")
    args.out.mkdir(parents=True, exist_ok=True)
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        build_site(site)
        server = serve(site)
        base_url = f"http://127.0.0.1:{server.server_address[1]}/"
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_FLAGS)
                page = browser.new_page()
                for spec in PAGES:
                    problems = shoot(page, base_url, spec, args.out)
                    failed |= bool(problems)
                    print(f"{spec.name:28s} {args.out / (spec.name + '.png')}  "
                          + ("ok" if not problems else "FAILED: " + "; ".join(problems)))
                browser.close()
        finally:
            server.shutdown()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
