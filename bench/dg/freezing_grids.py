"""Names of the freezing study's benchmark grids (``bench/dg/freezing/<benchmark>_<model>_w<bits>``) for its tables.

Examples:
    >>> title("rotated_mnist_cnn_w3"), title("mnist_c_cnn_w4")
    ('Rotated-MNIST CNN W3A3', 'MNIST-C CNN W4A4')
"""

from __future__ import annotations

BENCHMARKS = {"rotated_mnist": "Rotated-MNIST", "mnist_c": "MNIST-C"}


def title(grid: str) -> str:
    """``rotated_mnist_cnn_w3`` -> ``Rotated-MNIST CNN W3A3`` (an unknown benchmark keeps its folder name)."""
    benchmark, _, bits = grid.rpartition("_w")
    data, _, model = benchmark.rpartition("_")
    return f"{BENCHMARKS.get(data, data)} {model.upper()} W{bits}A{bits}"
