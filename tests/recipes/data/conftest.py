"""Shared fixture of the data tests: one Rotated-MNIST build (the image-folder factory is in ../conftest.py)."""

from __future__ import annotations

import pytest

from gaqat_recipes.data import build_rotated_mnist


@pytest.fixture(scope="session")
def rotated_mnist():
    """Rotated-MNIST with seed 0 (built once per session; tests must not mutate it)."""
    return build_rotated_mnist(seed=0)
