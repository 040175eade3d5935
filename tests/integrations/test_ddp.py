"""Two-process DDP (accelerate launch, gloo on CPU) agrees across ranks and with one process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

WORKER = Path(__file__).with_name("ddp_worker.py")
TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], out_dir: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    result = subprocess.run([*cmd, str(WORKER), str(out_dir)], capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


def test_ddp_ranks_identical_and_equal_to_single_process(tmp_path):
    launcher = Path(sys.executable).with_name("accelerate")
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    ddp_dir.mkdir()
    single_dir.mkdir()
    # --multi_gpu without GPUs gives a 2-process MULTI_CPU world over gloo ("--cpu --num_processes 2" runs ONE
    # process); a free port per launch avoids collisions with concurrent tests.
    _run([str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_ip", "127.0.0.1",
          "--main_process_port", str(_free_port())], ddp_dir)
    _run([sys.executable], single_dir)

    rank0, rank1 = (torch.load(ddp_dir / f"rank{r}.pt") for r in (0, 1))
    single = torch.load(single_dir / "rank0.pt")
    assert rank0["world"] == rank1["world"] == 2 and single["world"] == 1

    # calibration on different shards ends with the same step sizes on every rank, equal to the global batch's
    for name, value in rank0["calibrated"].items():
        assert torch.equal(value, rank1["calibrated"][name]), name
        torch.testing.assert_close(value, single["calibrated"][name], rtol=1e-5, atol=1e-7)
    # identical freeze decisions and bit-identical parameters across ranks
    assert rank0["frozen"] == rank1["frozen"]
    for name, value in rank0["params"].items():
        assert torch.equal(value, rank1["params"][name]), name
    # the same as one process on the global batch (mean loss over the batch), up to float summation order
    assert rank0["frozen"] == single["frozen"]
    for name, value in rank0["params"].items():
        torch.testing.assert_close(value, single["params"][name], rtol=1e-4, atol=1e-5, msg=name)
