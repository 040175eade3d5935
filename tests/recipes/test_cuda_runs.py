"""Every method trains on a CUDA device (runs where one is present; CI has none, the GPU machine runs it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gaqat_recipes import METHODS, train_dg

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_on_cuda(method, tiny_method_config):
    config = tiny_method_config(method, steps=6)
    train_dg(config)  # delayed methods quantize and calibrate at step 4, on the device the model trains on
    saved = json.loads((Path(config.output_dir) / "metrics.json").read_text())
    assert saved["environment"]["device"] == "cuda"
    assert [h["step"] for h in saved["history"]] == [2, 4, 6]
    assert all(0.0 <= h["val_acc"] <= 1.0 for h in saved["history"])
