"""The data, model and quantization steps of a run: the starting point train_dg and the bench/ diagnostics share."""

from __future__ import annotations

import torch
from accelerate.utils import set_seed

from gaqat_recipes import load_run_data, quantize_and_calibrate
from gaqat_recipes.models import build_model, input_spec
from gaqat_wrap import quant_report, step_sizes


def _scales(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in step_sizes(model).values()]


def _start(config) -> tuple:
    data = load_run_data(config, input_spec(config.model, image_size=config.image_size))
    return data, build_model(config.model, num_classes=len(data.classes), image_size=config.image_size)


def test_run_data_matches_the_splits_and_the_model(tiny_config) -> None:
    data, model = _start(tiny_config())
    assert data.domains == ["a", "b", "c"] and data.train_domains == ["a", "b"]
    assert {name: len(data.tensors[name]) for name in data.tensors} == {name: data.splits[name].num_rows for name in data.splits}
    assert set(data.splits["test"]["domain"]) == {data.domains.index("c")}
    pixels, label, _ = data.tensors["train"][0]
    assert pixels.shape == (data.input_spec.channels, data.input_spec.size, data.input_spec.size)
    assert model(pixels[None]).shape == (1, len(data.classes))
    assert 0 <= int(label) < len(data.classes)


def test_same_config_gives_the_same_starting_point(tiny_config) -> None:
    starts = []
    for _ in range(2):
        set_seed(0)
        data, model = _start(tiny_config(bits=3))
        quantize_and_calibrate(model, data.tensors["train"], tiny_config(bits=3))
        starts.append((model.state_dict(), _scales(model)))
    (state_a, scales_a), (state_b, scales_b) = starts
    assert scales_a and all(torch.equal(a, b) for a, b in zip(scales_a, scales_b, strict=True))
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert {layer.weight_bits for layer in quant_report(model) if layer.quantized} == {3}


def test_calibration_order_follows_the_seed(tiny_config) -> None:
    inputs = []
    for seed in (0, 1):
        set_seed(0)  # same initial weights; only the calibration batches differ
        data, model = _start(tiny_config(seed=0))
        quantize_and_calibrate(model, data.tensors["train"], tiny_config(seed=seed))
        inputs.append([p for p in _scales(model) if p.numel() == 1])  # per-tensor input step sizes
    assert any(not torch.equal(a, b) for a, b in zip(*inputs, strict=True))
