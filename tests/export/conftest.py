"""Fixtures for the export tests."""

from __future__ import annotations

import pytest
from export_models import quantized
from torch import nn


@pytest.fixture(scope="session")
def quantized_models() -> dict[tuple[str, int, int | None], nn.Module]:
    """Calibrated fake-quant models keyed by ``(name, bits, act_bits)``, built on first use; treat as read-only."""

    class _Cache(dict):
        def __missing__(self, key):
            self[key] = quantized(*key)
            return self[key]
    return _Cache()
