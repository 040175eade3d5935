"""The shipped accuracy metric loads offline through evaluate and computes accuracy; per-domain evaluation uses it."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from gaqat_recipes import evaluate_per_domain
from gaqat_recipes.data import PixelTransform, load_image_folder
from gaqat_recipes.metrics import ACCURACY_PATH, load_accuracy

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

RECIPES = Path(__file__).resolve().parents[3] / "recipes"


def test_metric_loads_by_path_without_network(monkeypatch):
    import datasets
    import evaluate

    def refuse(*args, **kwargs):
        raise OSError("network access attempted while loading the shipped metric")

    # Offline mode as HF_EVALUATE_OFFLINE / HF_DATASETS_OFFLINE / HF_HUB_OFFLINE=1 would set it at import time,
    # and no socket may connect: the load must not even try the network.
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    metric = evaluate.load(str(ACCURACY_PATH))
    assert metric.compute(predictions=[0, 1, 2, 3], references=[0, 1, 2, 0]) == {"accuracy": 0.75}
    assert load_accuracy().compute(predictions=[2], references=[2]) == {"accuracy": 1.0}


def test_metric_file_is_package_data():
    package = RECIPES / "gaqat_recipes"
    patterns = tomllib.loads((RECIPES / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["gaqat_recipes"]
    shipped = {p.relative_to(package) for pattern in patterns for p in package.glob(pattern)}
    assert Path("metrics/accuracy/accuracy.py") in shipped
    assert package / "metrics" / "accuracy" == ACCURACY_PATH


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accuracy_equals_fraction_of_matches(seed):
    rng = np.random.default_rng(seed)
    references = rng.integers(0, 5, 200)
    predictions = np.where(rng.random(200) < 0.6, references, rng.integers(0, 5, 200))
    metric = load_accuracy(keep_in_memory=True)
    for start in range(0, 200, 64):  # streamed batches give the same answer as one call
        metric.add_batch(predictions=predictions[start:start + 64], references=references[start:start + 64])
    assert metric.compute()["accuracy"] == pytest.approx(float(np.mean(predictions == references)))


def test_accuracy_weights_and_counts():
    metric = load_accuracy(keep_in_memory=True)
    assert metric.compute(predictions=[1, 0, 1], references=[1, 1, 1], sample_weight=[1, 2, 1]) == {"accuracy": 0.5}
    assert metric.compute(predictions=[1, 0, 1], references=[1, 1, 1], normalize=False) == {"accuracy": 2.0}
    with pytest.raises(ValueError, match="zero total weight"):
        metric.compute(predictions=[1], references=[1], sample_weight=[0.0])


class GreyLevelClassifier(torch.nn.Module):
    """Predicts class k for images of grey level 40*k (how the test folders are painted), in [-1, 1] pixel space."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.levels = torch.nn.Parameter(torch.tensor([40 * k / 255 * 2 - 1 for k in range(num_classes)]), requires_grad=False)

    def forward(self, pixel_values: torch.Tensor):
        mean = pixel_values.mean(dim=(1, 2, 3))
        logits = -(mean[:, None] - self.levels[None, :]).abs()
        return type("Output", (), {"logits": logits})()  # HF-style output object


def test_per_domain_accuracy_and_average(make_folder):
    dd = load_image_folder(make_folder({"a": {"c0": 3, "c1": 1}, "b": {"c0": 2, "c1": 2}}))
    model = GreyLevelClassifier(2).train()
    perfect = evaluate_per_domain(model, dd, PixelTransform(size=8), batch_size=3)
    assert perfect == {"per_domain": {"a": 1.0, "b": 1.0}, "average": 1.0}
    assert model.training  # mode restored
    always_zero = evaluate_per_domain(lambda x: torch.zeros(len(x), 2).index_fill_(1, torch.tensor([0]), 1.0), dd,
                                      PixelTransform(size=8))
    assert always_zero == {"per_domain": {"a": 0.75, "b": 0.5}, "average": 0.625}


def test_per_domain_rejects_unknown_domains(make_folder):
    dd = load_image_folder(make_folder({"a": {"c0": 1}, "b": {"c0": 1}}))
    with pytest.raises(ValueError, match=r"unknown domain\(s\) \['z'\]"):
        evaluate_per_domain(lambda x: torch.zeros(len(x), dtype=torch.long), dd, PixelTransform(size=4), domains=["z"])
