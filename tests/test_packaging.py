"""Packaging promises: the core wheel declares only what the core imports, ships py.typed, and leaves the recipes out."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


def _project(path: Path) -> dict:
    return tomllib.loads(path.read_text())


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_core_dependencies_are_only_what_the_core_imports():
    project = _project(ROOT / "pyproject.toml")["project"]
    assert _names(project["dependencies"]) == {"torch", "numpy", "safetensors"}
    extras = project["optional-dependencies"]
    assert {"trainer", "accelerate", "peft", "timm", "onnx", "docs", "dev", "bench"} <= set(extras)
    assert "transformers" in _names(extras["trainer"]) and "onnxruntime" in _names(extras["onnx"])
    for heavy in ("datasets", "evaluate", "mlxtend", "matplotlib"):
        assert all(heavy not in _names(extras[name]) for name in extras if name != "dev"), heavy


def test_py_typed_is_in_both_packages_and_declared_as_package_data():
    setuptools = _project(ROOT / "pyproject.toml")["tool"]["setuptools"]
    assert (ROOT / "gaqat_wrap" / "py.typed").is_file() and "py.typed" in setuptools["package-data"]["gaqat_wrap"]
    assert setuptools["packages"]["find"]["include"] == ["gaqat_wrap*"]  # the recipes are not in the core wheel
    recipes = _project(ROOT / "recipes" / "pyproject.toml")
    assert (ROOT / "recipes" / "gaqat_recipes" / "py.typed").is_file()
    assert "py.typed" in recipes["tool"]["setuptools"]["package-data"]["gaqat_recipes"]


def test_recipes_package_depends_on_the_library_and_the_study_dependencies():
    recipes = _project(ROOT / "recipes" / "pyproject.toml")["project"]
    assert recipes["name"] == "gaqat-recipes"
    assert {"gaqat-wrap", "datasets", "evaluate", "mlxtend", "matplotlib"} <= _names(recipes["dependencies"])
