"""Every test a documentation page names (``tests/...py::test_name``) exists: the docs never cite a test that is gone."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = re.compile(r"(tests/[\w/]+\.py)(?:::(\w+))?")


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_test_named_in_the_docs_exists():
    pages = [*ROOT.joinpath("docs").rglob("*.md"), ROOT / "README.md"]
    missing = []
    for page in pages:
        for file, name in REFERENCE.findall(page.read_text()):
            path = ROOT / file
            if not path.is_file():
                missing.append(f"{page.relative_to(ROOT)}: {file}")
            elif name and name not in _test_names(path):
                missing.append(f"{page.relative_to(ROOT)}: {file}::{name}")
    assert not missing, "docs name tests that do not exist:\n" + "\n".join(missing)
