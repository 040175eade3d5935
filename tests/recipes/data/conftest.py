"""Shared fixtures for the data tests: one Rotated-MNIST build and a tiny image-folder factory."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
from PIL import Image

from gaqat_recipes.data import build_rotated_mnist


@pytest.fixture(scope="session")
def rotated_mnist():
    """Rotated-MNIST with seed 0 (built once per session; tests must not mutate it)."""
    return build_rotated_mnist(seed=0)


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
