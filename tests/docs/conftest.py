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
    """The outcome of ``mkdocs build --strict``: exit status, its warnings and errors, and the site folder."""

    returncode: int
    problems: str
    path: Path


@pytest.fixture(scope="session")
def built_site(tmp_path_factory) -> BuiltSite:
    """``mkdocs build --strict`` of the repository's site into a temporary folder."""
    site = tmp_path_factory.mktemp("site")
    mkdocs = Path(sys.executable).with_name("mkdocs")
    cmd = [str(mkdocs)] if mkdocs.exists() else [shutil.which("mkdocs") or "mkdocs"]
    result = subprocess.run([*cmd, "build", "--strict", "--site-dir", str(site)], cwd=ROOT, capture_output=True,
                            text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=300)
    lines = (result.stdout + result.stderr).splitlines()
    problems = "\n".join(line for line in lines if not line.startswith("INFO"))[-3000:]
    return BuiltSite(result.returncode, problems, site)
