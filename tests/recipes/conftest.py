"""A tiny synthetic three-domain image folder, an image-folder factory and a fast TrainConfig factory for the recipe tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
from PIL import Image

from gaqat_recipes import TrainConfig, write_toy_domains


@pytest.fixture(scope="session")
def toy_folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_toy_domains(tmp_path_factory.mktemp("toy"), domains=("a", "b", "c"), num_classes=2, per_class=8, size=16))


@pytest.fixture
def tiny_config(toy_folder: str, tmp_path: Path):
    """``tiny_config(**overrides)``: a few steps of the small digit CNN on the toy folder, held-out domain ``c``."""

    def make(**overrides) -> TrainConfig:
        values = dict(test_domain="c", dataset=toy_folder, model="mnist_cnn_tiny", image_size=16, steps=4, batch_size=8,
                      eval_every=2, gaqat={"window": 2}, calib_batches=1, lr=3e-3, output_dir=str(tmp_path / "run"),
                      progress=False)
        values.update(overrides)
        return TrainConfig(**values)

    return make


@pytest.fixture
def tiny_method_config(tiny_config):
    """``tiny_method_config(method, **overrides)``: ``tiny_config`` for ``method`` with GAQAT decisions every 2 steps
    (every 4 for the calibrated metric, whose t-test needs them) and the null pass every step."""
    from gaqat_recipes import METHODS

    def make(method: str, **overrides) -> TrainConfig:
        calibrated = METHODS[method].gaqat.get("metric") == "calibrated"
        return tiny_config(method=method, gaqat={"window": 4 if calibrated else 2, "null_every": 1}, **overrides)

    return make


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The tiny models here run many small ops; one intra-op thread avoids thread wake-up costs on a busy 2-core box."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_folder(root: Path, layout: Mapping[str, Mapping[str, int]], size: tuple[int, int] = (12, 10)) -> Path:
    """Write ``root/<domain>/<class>/<i>.png`` with ``layout[domain][class]`` images; pixel value encodes the class index."""
    classes = sorted({c for per_domain in layout.values() for c in per_domain})
    for domain, per_class in layout.items():
        for class_name, count in per_class.items():
            folder = root / domain / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                value = 40 * classes.index(class_name)
                Image.new("RGB", size, (value, value, value)).save(folder / f"{i}.png")
    return root


@pytest.fixture
def make_folder(tmp_path) -> Callable[..., Path]:
    def factory(layout: Mapping[str, Mapping[str, int]], name: str = "dg", size: Sequence[int] = (12, 10)) -> Path:
        return write_folder(tmp_path / name, layout, tuple(size))

    return factory
