"""Settings for the whole test suite (tests/ and the doctests in gaqat_wrap/)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread per test process.

    ``make test`` runs ``pytest -n 2`` on 2 cores; a second torch thread per worker
    oversubscribes the CPU, and many small tensor ops then run up to 40x slower
    (measured: quantize_model on tf_efficientnet_lite0 0.19 s vs 8 s under load).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Never collect a ``conftest.py`` as a doctest module: they hold fixtures, not examples.

    Under ``--doctest-modules`` pytest would import each one as a module named ``conftest``,
    and two of them from different test folders in one run then collide.
    """
    if collection_path.name == "conftest.py":
        return True
    return None
