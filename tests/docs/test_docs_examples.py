"""Every script under docs/examples runs to completion (exit 0) in a fresh process, offline."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.py"))
TIMEOUT_S = 180   # each script takes well under 30 s of CPU; the margin is for a loaded 2-core machine


def test_there_are_example_scripts():
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_script_runs(script, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert result.stdout.strip(), "an example must print what it did"


@pytest.mark.slow
def test_accelerate_quick_start_runs_as_two_ddp_processes(tmp_path):
    """The command on the Accelerate quick-start page: two CPU processes over gloo."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = Path(sys.executable).with_name("accelerate")
    script = ROOT / "docs" / "examples" / "quickstart_accelerate.py"
    result = subprocess.run([str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                             "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_ip", "127.0.0.1",
                             "--main_process_port", str(port), str(script)],
                            cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                            timeout=2 * TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "on 2 process(es)" in result.stdout
