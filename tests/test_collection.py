"""The suite's folders can be run in any combination, not only all together."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_two_folders_with_their_own_conftest_collect_together():
    # Under --doctest-modules, each conftest.py used to be imported as a module named `conftest`,
    # so a run naming two such folders stopped at collection with "import file mismatch".
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:xdist", "tests/bench", "tests/export"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "import file mismatch" not in run.stdout
    assert " tests collected" in run.stdout
