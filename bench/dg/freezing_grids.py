"""The freezing study's benchmark grids (``bench/dg/freezing/<benchmark>_<model>_w<bits>``): their runs and their names in tables.

Examples:
    >>> title("rotated_mnist_cnn_w3"), title("mnist_c_cnn_w4"), title("rotated_mnist_vit_w3", bits=False)
    ('Rotated-MNIST CNN W3A3', 'MNIST-C CNN W4A4', 'Rotated-MNIST ViT')
    >>> parse("mnist_c_cnn_w3"), title("mnist_c_lite0_w3")
    (('mnist_c', 'cnn', 3), 'MNIST-C Lite0 W3A3')
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from gaqat_recipes.reporting.sweep_report import load_sweep_runs

BENCHMARKS = {"rotated_mnist": "Rotated-MNIST", "mnist_c": "MNIST-C"}
MODELS = {"cnn": "CNN", "vit": "ViT", "lite0": "Lite0"}


def parse(grid: str) -> tuple[str, str, int]:
    """``rotated_mnist_cnn_w3`` -> ``("rotated_mnist", "cnn", 3)``."""
    benchmark, _, bits = grid.rpartition("_w")
    data, _, model = benchmark.rpartition("_")
    return data, model, int(bits)


def title(grid: str, *, bits: bool = True) -> str:
    """``rotated_mnist_cnn_w3`` -> ``Rotated-MNIST CNN W3A3`` (unknown names keep their folder spelling)."""
    data, model, width = parse(grid)
    name = f"{BENCHMARKS.get(data, data)} {MODELS.get(model, model.upper())}"
    return f"{name} W{width}A{width}" if bits else name


def grid_runs(root: Path) -> Iterator[tuple[str, list[dict]]]:
    """``(grid name, runs)`` for every benchmark grid under ``root`` that has runs (on disk or in its reports)."""
    for grid in sorted(path for path in root.glob("*_w?") if path.is_dir()):
        sweeps = sorted(path for path in grid.glob("heldout_*") if path.is_dir())
        runs = load_sweep_runs(sweeps) if sweeps else []
        if runs:
            yield grid.name, runs
