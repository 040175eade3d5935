"""bench/gpu_step.py is ready to run: it refuses a machine without CUDA clearly, and its code runs end to end.

No GPU is available to the test suite, so the end-to-end check runs the script with ``--device cpu``
on timm's tiny ``test_vit`` (about 10 s of CPU time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_step.py"
METHODS = ["fp", "lsq", "lsq_int8", "lsq_sam", "gaqat"]


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_without_cuda_the_script_says_so_exits_3_and_writes_nothing(tmp_path):
    result = run_script("--json", str(tmp_path / "out.json"), "--markdown", str(tmp_path / "out.md"))
    assert result.returncode == 3
    assert "no CUDA device" in result.stderr and "--device cpu" in result.stderr
    assert not any(tmp_path.iterdir())


def test_every_method_runs_and_lands_in_the_json_and_the_table(tmp_path):
    pytest.importorskip("timm")
    out_json, out_md = tmp_path / "gpu.json", tmp_path / "gpu.md"
    result = run_script("--device", "cpu", "--models", "test_vit", "--batch", "2", "--image-size", "32",
                        "--steps", "1", "--warmup", "1", "--json", str(out_json), "--markdown", str(out_md))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out_json.read_text())["models"]["test_vit"]
    assert list(rows) == METHODS
    for method, row in rows.items():
        assert row["median_ms"] > 0 and row["images_per_s"] > 0 and row["steps_timed"] == 1, method
        assert row["peak_memory_mib"] is None and row["host_syncs_per_step"] is None  # CUDA-only figures
    table = [line for line in out_md.read_text().splitlines() if line.startswith("| test_vit |")]
    assert len(table) == len(METHODS)
