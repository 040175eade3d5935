"""Shared fixture of the documentation tests: the site built once per test session (per xdist worker)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class BuiltSite:
    """The outcome of ``mkdocs build --strict``: exit status, its warnings and errors, the site folder, and the
    directory the build ran in."""

    returncode: int
    problems: str
    path: Path
    cwd: Path


@pytest.fixture(scope="session")
def built_site(tmp_path_factory) -> BuiltSite:
    """``mkdocs build --strict -f <repository>/mkdocs.yml`` into a temporary folder, run from another directory.

    Building from outside the repository proves that no path in mkdocs.yml depends on the working directory.
    """
    site = tmp_path_factory.mktemp("site")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    mkdocs = Path(sys.executable).with_name("mkdocs")
    cmd = [str(mkdocs)] if mkdocs.exists() else [shutil.which("mkdocs") or "mkdocs"]
    result = subprocess.run([*cmd, "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
                            cwd=elsewhere, capture_output=True, text=True,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=300)
    lines = (result.stdout + result.stderr).splitlines()
    problems = "\n".join(line for line in lines if not line.startswith("INFO"))[-3000:]
    return BuiltSite(result.returncode, problems, site, elsewhere)
