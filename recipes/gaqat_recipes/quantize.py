"""The quantization step of a run: LSQ fake quantization at the run's bits, input step sizes calibrated on training data."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from gaqat_wrap import calibrate, quantize_model

if TYPE_CHECKING:
    from gaqat_recipes.config import TrainConfig


def quantize_and_calibrate(model: torch.nn.Module, train_data: torch.utils.data.Dataset, config: TrainConfig) -> None:
    """Quantize ``model`` in place at ``config.bits`` and calibrate its input step sizes.

    Calibration reads ``config.calib_batches`` batches of ``config.batch_size`` training images in an order
    drawn from ``config.seed``, so the same config always starts from the same step sizes. The batches go to
    the model's device (delayed quantization calibrates a model that already trains on the GPU).

    Examples:
        >>> from gaqat_wrap import quant_report
        >>> from gaqat_recipes import TrainConfig
        >>> layers = [torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)]
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), *layers)
        >>> images = torch.utils.data.TensorDataset(torch.rand(8, 1, 4, 4), torch.zeros(8, dtype=torch.long))
        >>> quantize_and_calibrate(model, images, TrainConfig(test_domain="75", bits=3, batch_size=4, calib_batches=2))
        >>> [layer.weight_bits for layer in quant_report(model)]  # first and last layers stay full precision
        [None, 3, None]
    """
    quantize_model(model, bits=config.bits)
    order = torch.Generator().manual_seed(config.seed)
    loader = torch.utils.data.DataLoader(train_data, batch_size=config.batch_size, shuffle=True, generator=order)
    device = next(model.parameters()).device
    calibrate(model, (batch[0].to(device) for batch in loader), num_batches=config.calib_batches)
