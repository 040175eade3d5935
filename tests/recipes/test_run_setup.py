"""build_run_inputs / quantize_and_calibrate: the starting point of a run, shared by train_dg and bench/ diagnostics."""

from __future__ import annotations

import torch
from accelerate.utils import set_seed

from gaqat_recipes import build_run_inputs, quantize_and_calibrate
from gaqat_wrap.quant import is_scale_parameter, quant_report


def _scales(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters() if is_scale_parameter(p)]


def test_run_inputs_match_the_splits_and_the_model(tiny_config) -> None:
    run = build_run_inputs(tiny_config())
    assert run.domains == ["a", "b", "c"]
    assert {name: len(run.data[name]) for name in run.data} == {name: run.splits[name].num_rows for name in run.splits}
    assert set(run.splits["test"]["domain"]) == {run.domains.index("c")}
    pixels, label, _ = run.data["train"][0]
    assert pixels.shape == (run.input_spec.channels, run.input_spec.size, run.input_spec.size)
    assert run.model(pixels[None]).shape == (1, len(run.classes))
    assert 0 <= int(label) < len(run.classes)


def test_same_config_gives_the_same_starting_point(tiny_config) -> None:
    starts = []
    for _ in range(2):
        set_seed(0)
        run = build_run_inputs(tiny_config(bits=3))
        quantize_and_calibrate(run.model, run.data["train"], tiny_config(bits=3))
        starts.append((run.model.state_dict(), _scales(run.model)))
    (state_a, scales_a), (state_b, scales_b) = starts
    assert scales_a and all(torch.equal(a, b) for a, b in zip(scales_a, scales_b, strict=True))
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert {layer.weight_bits for layer in quant_report(run.model) if layer.quantized} == {3}


def test_calibration_order_follows_the_seed(tiny_config) -> None:
    inputs = []
    for seed in (0, 1):
        set_seed(0)  # same initial weights; only the calibration batches differ
        run = build_run_inputs(tiny_config(seed=0))
        quantize_and_calibrate(run.model, run.data["train"], tiny_config(seed=seed))
        inputs.append([p for p in _scales(run.model) if p.numel() == 1])  # per-tensor input step sizes
    assert any(not torch.equal(a, b) for a, b in zip(*inputs, strict=True))
