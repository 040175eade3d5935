"""The recipes use the library as any user would: only names the library exports, never its internals."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import gaqat_recipes

PACKAGE = Path(gaqat_recipes.__file__).resolve().parent
CHOICE_CONSTANTS = {("gaqat_wrap.optim.config", name) for name in ("VARIANTS", "METRICS", "FREEZE_MODES")}
"""The allowed values of GAQATConfig's choice fields: the CLI offers exactly the core's own."""


def _imports_of_the_library() -> list[tuple[str, str, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gaqat_wrap"):
                found += [(str(path.relative_to(PACKAGE)), node.module, alias.name) for alias in node.names]
            elif isinstance(node, ast.Import):
                found += [(str(path.relative_to(PACKAGE)), alias.name, "") for alias in node.names
                          if alias.name.startswith("gaqat_wrap")]
    return found


def test_recipes_import_only_exported_names_of_the_library():
    imports = _imports_of_the_library()
    assert len(imports) > 5
    for path, module, name in imports:
        if (module, name) in CHOICE_CONSTANTS:
            continue
        exported = getattr(importlib.import_module(module), "__all__", None)
        assert exported is not None and name in exported, f"{path} imports {module}.{name}, which is not public API"
