"""bench/dg/freezing_study.sh's report part runs while a part is still training its first runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("gaqat_recipes")

ROOT = Path(__file__).resolve().parents[2]


def test_report_skips_a_grid_without_a_finished_run(tmp_path):
    # a sweep creates its held-out folder before its first run finishes (e.g. the Lite0 part in progress)
    (tmp_path / "mnist_c_lite0_w3" / "heldout_fog" / "runs").mkdir(parents=True)
    env = {**os.environ, "OUT": str(tmp_path), "PY": sys.executable,
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "recipes")])}
    done = subprocess.run(["bash", str(ROOT / "bench" / "dg" / "freezing_study.sh"), "report"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "mnist_c_lite0_w3 has no finished run yet, skipped" in done.stderr
    assert (tmp_path / "pairs.md").is_file() and not (tmp_path / "mnist_c_lite0_w3" / "results.md").exists()
