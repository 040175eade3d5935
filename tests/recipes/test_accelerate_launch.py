"""The recipe runs under `accelerate launch` with 2 processes (gloo on CPU) and gathers metrics over both shards."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "train_dg.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_launch_writes_one_set_of_outputs_with_whole_split_accuracies(toy_folder, tmp_path):
    out = tmp_path / "ddp"
    launcher = Path(sys.executable).with_name("accelerate")
    command = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
               "no", "--dynamo_backend", "no", "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
               str(RECIPE), "--dataset", toy_folder, "--test-domain", "c", "--model", "mnist_cnn_tiny", "--image-size", "16",
               "--method", "gaqat", "--window", "2", "--steps", "4", "--eval-every", "2", "--batch-size", "4",
               "--calib-batches", "1", "--output-dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_processes"] == 2
    # 16 test images split over 2 ranks and gathered once: accuracy is a multiple of 1/16
    assert (metrics["selected"]["test_acc"] * 16) == pytest.approx(round(metrics["selected"]["test_acc"] * 16))
    assert (out / "checkpoint" / "model.safetensors").is_file() and (out / "freeze_heatmap.png").is_file()
    assert result.stdout.count("selected step") == 1  # only the main process reports
