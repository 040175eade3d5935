"""Shared settings for the quantization tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread per test process.

    The suite runs as ``pytest -n 2`` on 2 cores; a second torch thread per worker
    oversubscribes the CPU, and the many small tensor ops of quantize_model then
    run up to 40x slower (measured: 0.19 s vs 8 s for tf_efficientnet_lite0 under load).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
