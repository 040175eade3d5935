"""The griffe extension docs/hooks/sphinx_roles.py: Sphinx roles in docstrings become autorefs links or code."""

from __future__ import annotations

import doctest
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import griffe
import pytest

ROOT = Path(__file__).resolve().parents[2]
HOOK = ROOT / "docs" / "hooks" / "sphinx_roles.py"


def _load_hook():
    spec = importlib.util.spec_from_file_location("sphinx_roles", HOOK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


sphinx_roles = _load_hook()

PACKAGE = {
    "__init__.py": "from demo.core import Engine, run\nfrom demo.calibrate import calibrate\n",
    "calibrate.py": 'def calibrate():\n    "Calibrate."\n',
    "util.py": 'def helper():\n    "Help."\n\ndef report():\n    "Report."\n',
    "report.py": 'def other():\n    "Other."\n',
    "core.py": textwrap.dedent('''
        import torch

        class Engine:
            """An engine: :meth:`start` it; its :attr:`speed` is a plain attribute."""

            def __init__(self):
                self.speed = 1

            def start(self):
                """Start; see :class:`Engine` and :func:`run`."""

        def run():
            """Run."""
    '''),
}


def _run_docstring_after_loading(docstring: str, files: dict[str, str] = PACKAGE) -> str:
    """``docstring`` put on ``demo.core.run``, as the extension rewrites it when the package loads."""
    files = {**files, "core.py": files["core.py"].replace('"""Run."""', repr(docstring))}
    extensions = griffe.load_extensions(sphinx_roles.SphinxRolesToAutorefs)
    with griffe.temporary_visited_package("demo", files, extensions=extensions) as package:
        return package["core.run"].docstring.value


def test_examples_in_the_extension_hold():
    result = doctest.testmod(sphinx_roles)
    assert result.attempted >= 5 and result.failed == 0


@pytest.mark.parametrize(("role", "expected"), [
    (":class:`Engine`", "[`Engine`][demo.core.Engine]"),                                 # name in the module
    (":class:`~demo.core.Engine`", "[`Engine`][demo.core.Engine]"),                      # ~ shows the last part
    (":class:`demo.Engine`", "[`demo.Engine`][demo.core.Engine]"),                       # re-export: defining path
    (":meth:`Engine.start`", "[`Engine.start()`][demo.core.Engine.start]"),              # attribute of a name
    (":func:`helper`", "[`helper()`][demo.util.helper]"),                                # unique name elsewhere
    (":func:`report`", "[`report()`][demo.util.report]"),                                # ... the function, not the module
    (":mod:`report`", "[`report`][demo.report]"),                                         # ... the module, not the function
    (":func:`demo.calibrate`", "[`demo.calibrate()`][demo.calibrate.calibrate]"),        # shadowed submodule
    (":mod:`demo.calibrate`", "[`demo.calibrate`][demo.calibrate]"),                     # ... asked as a module
    (":attr:`Engine.speed`", "[`Engine.speed`][demo.core.Engine]"),                      # no docstring: its class
    (":class:`the engine <Engine>`", "[`the engine`][demo.core.Engine]"),                # explicit title
    (":class:`torch.nn.Module`", "`torch.nn.Module`"),                                   # another library: code
    (":func:`!run`", "`run()`"),                                                         # ! means no link
])
def test_role_becomes_a_link_to_the_object_it_names(role, expected):
    assert _run_docstring_after_loading(f"See {role}.") == f"See {expected}."


def test_names_resolve_in_the_scope_of_the_docstring():
    """``:meth:`start``` inside the class docstring is the class's own method."""
    extensions = griffe.load_extensions(sphinx_roles.SphinxRolesToAutorefs)
    with griffe.temporary_visited_package("demo", PACKAGE, extensions=extensions) as package:
        assert package["core.Engine"].docstring.value == (
            "An engine: [`start()`][demo.core.Engine.start] it; its [`speed`][demo.core.Engine] is a plain attribute.")
        assert package["core.Engine.start"].docstring.value == (
            "Start; see [`Engine`][demo.core.Engine] and [`run()`][demo.core.run].")


@pytest.mark.parametrize(("role", "why"), [
    (":func:`nowhere`", "no object of that name"),
    (":meth:`Engine.stop`", "does not exist"),
])
def test_unresolvable_role_is_shown_as_code_and_logged_as_a_warning(role, why, caplog):
    with caplog.at_level(logging.WARNING, logger=sphinx_roles.LOGGER.name):
        rewritten = _run_docstring_after_loading(f"See {role}.")
    assert rewritten.startswith("See `") and rewritten.endswith("`.") and ":" not in rewritten
    assert why in caplog.text and caplog.records[0].name.startswith("mkdocs.")


def test_ambiguous_short_name_is_a_warning(caplog):
    files = {**PACKAGE, "other.py": 'def helper():\n    "Another helper."\n'}
    with caplog.at_level(logging.WARNING, logger=sphinx_roles.LOGGER.name):
        assert _run_docstring_after_loading("Run after :func:`helper`.", files) == "Run after `helper()`."
    assert "ambiguous: demo.other.helper, demo.util.helper" in caplog.text


def test_strict_build_fails_on_an_unresolvable_role(tmp_path):
    """The warning reaches mkdocs: a docs site whose docstring names a missing object does not build with --strict."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Demo\n\n::: broken\n")
    (tmp_path / "broken.py").write_text('def run():\n    """Run after :func:`calibrat`."""\n')
    (tmp_path / "mkdocs.yml").write_text(textwrap.dedent(f"""
        site_name: demo
        plugins:
          - mkdocstrings:
              handlers:
                python:
                  paths: [.]
                  options:
                    extensions: ["{HOOK}:SphinxRolesToAutorefs"]
    """))
    mkdocs = Path(sys.executable).with_name("mkdocs")
    result = subprocess.run([str(mkdocs) if mkdocs.exists() else shutil.which("mkdocs") or "mkdocs", "build",
                             "--strict", "-f", str(tmp_path / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode != 0
    assert "cannot resolve the Sphinx role target 'calibrat'" in result.stdout + result.stderr
