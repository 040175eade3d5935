"""Every public name (``__all__`` of the package and its subpackages) is documented and in the API reference.

Classes and functions need a docstring with an ``Examples:`` section (run by ``--doctest-modules``).
Constants need a docstring (the string literal under the assignment); an example is not required of
them, since doctest cannot run examples in attribute docstrings. Every name must be rendered on a page
of the API reference (docs/api/*.md).
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import griffe
import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {"gaqat_wrap": ROOT, "gaqat_recipes": ROOT / "recipes"}  # the library and the recipes package


def _packages(top: str) -> list[str]:
    folder = SOURCES[top] / top
    return [top, *sorted(f"{top}.{p.name}" for p in folder.iterdir() if (p / "__init__.py").is_file())]


PACKAGES = [*_packages("gaqat_wrap"), *_packages("gaqat_recipes")]


def _public_names() -> list[tuple[str, str]]:
    names = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        assert hasattr(module, "__all__"), f"{package} has no __all__"
        names += [(package, name) for name in module.__all__ if not (name.startswith("__") and name.endswith("__"))]
    return names


PUBLIC = _public_names()


@pytest.fixture(scope="module")
def static_packages():
    """The packages as griffe reads them from source: attribute docstrings are only visible this way."""
    return {top: griffe.load(top, search_paths=[str(path)], resolve_aliases=True, resolve_external=False)
            for top, path in SOURCES.items()}


def _is_constant(package: str, name: str) -> bool:
    obj = getattr(importlib.import_module(package), name)
    return not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj))


def _path_and_docstring(package: str, name: str, static_packages) -> tuple[str, str]:
    """Where the object is defined (``module.qualname``) and its docstring."""
    obj = getattr(importlib.import_module(package), name)
    if inspect.ismodule(obj):
        return obj.__name__, obj.__doc__ or ""
    if inspect.isclass(obj) or inspect.isfunction(obj):
        return f"{obj.__module__}.{obj.__qualname__}", obj.__doc__ or ""
    # a constant: its docstring is the string literal under the assignment, which only the source has
    static = static_packages[package.split(".")[0]]
    for part in package.split(".")[1:]:
        static = static[part]
    target = static[name]
    target = target.final_target if target.is_alias else target
    return target.path, target.docstring.value if target.docstring else ""


def test_packages_export_public_names():
    assert len(PACKAGES) >= 5 and len(PUBLIC) > 20


@pytest.mark.parametrize(("package", "name"), PUBLIC, ids=[f"{p}.{n}" for p, n in PUBLIC])
def test_public_name_has_a_docstring_with_examples(package, name, static_packages):
    path, doc = _path_and_docstring(package, name, static_packages)
    assert doc.strip(), f"{package}.{name} ({path}) has no docstring"
    if _is_constant(package, name):
        return
    assert re.search(r"^\s*Examples:\s*$", doc, re.MULTILINE), f"{package}.{name} ({path}): docstring has no 'Examples:' section"


@pytest.fixture(scope="module")
def api_anchors(built_site) -> set[str]:
    assert built_site.returncode == 0, built_site.problems
    site = built_site.path
    anchors = set()
    for page in (site / "api").rglob("*.html"):
        anchors |= set(re.findall(r'\bid="((?:gaqat_wrap|gaqat_recipes)[\w.]*)"', page.read_text()))
    return anchors


@pytest.mark.parametrize(("package", "name"), PUBLIC, ids=[f"{p}.{n}" for p, n in PUBLIC])
def test_public_name_is_rendered_in_the_api_reference(package, name, static_packages, api_anchors):
    path, _ = _path_and_docstring(package, name, static_packages)
    assert path in api_anchors, (f"{package}.{name} is not rendered on any docs/api/*.md page: add "
                                 f"'::: {path}' (or its module) to the fitting page")
