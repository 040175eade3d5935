"""A few-step run of the recipe for every method writes metrics.json, the selected checkpoint and the plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gaqat_recipes import METHODS, load_checkpoint, load_splits, train_dg
from gaqat_recipes.cli import main


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_writes_metrics_checkpoint_and_plots(method, tiny_method_config):
    calibrated = METHODS[method].gaqat.get("metric") == "calibrated"   # its decisions come every 4 steps
    config = tiny_method_config(method)
    metrics = train_dg(config)
    out = Path(config.output_dir)

    saved = json.loads((out / "metrics.json").read_text())
    assert saved["config"]["method"] == method
    assert [h["step"] for h in saved["history"]] == [2, 4]
    for entry in saved["history"]:
        assert set(entry["val_per_domain"]) == {"a", "b"}  # validation comes from the training domains only
        assert 0.0 <= entry["val_acc"] <= 1.0 and 0.0 <= entry["test_acc"] <= 1.0
        assert 0.1 < entry["train_loss"] < 10  # the first-pass cross-entropy of 2 classes, whatever the optimizer
    assert saved["selected"]["step"] in (2, 4)
    assert set(saved["selected"]["test_per_domain"]) == {"c"}
    assert saved["wall_time_s"] > 0 and saved["data"]["sizes"]["test"] == 16
    environment = saved["environment"]  # where it trained: runs repeat to the last digit on one host only
    assert environment["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert environment["torch"] == torch.__version__ and environment["processor"]
    assert (out / "learning_curves.png").stat().st_size > 0

    weights = load_file(str(out / "checkpoint" / "model.safetensors"))
    has_scales = any(key.endswith("quantizer.scale") for key in weights)
    assert has_scales == METHODS[method].quantized
    assert json.loads((out / "checkpoint" / "config.json").read_text())["classes"] == ["class0", "class1"]

    tracked = METHODS[method].quantized and METHODS[method].sharpness_aware
    assert (out / "freeze_heatmap.png").exists() == tracked
    if tracked:
        trace = metrics["freeze_trace"]
        assert trace["steps"] == ([4] if calibrated else [2, 4]) and len(trace["roles"]) == len(trace["disorder"][0]) > 0
        assert any(h["mean_disorder"] > 0 for h in metrics["history"]) or all(d == 0 for row in trace["disorder"] for d in row)
    if method == "gaqat":
        assert metrics["method"]["gaqat"]["freeze_threshold"] == 0.5 and metrics["method"]["gaqat"]["window"] == 2
    if method in ("sam-qat", "sagm-qat"):
        assert metrics["method"]["gaqat"]["freeze_threshold"] is None
        assert all(h["frozen_fraction"] == 0.0 for h in metrics["history"])


def test_checkpoint_reloads_to_the_selected_test_accuracy(tiny_config):
    config = tiny_config(method="gaqat", steps=6, eval_every=2)
    metrics = train_dg(config)
    model, loaded_config, classes = load_checkpoint(Path(config.output_dir) / "checkpoint")
    assert loaded_config == config and classes == ["class0", "class1"]
    splits, _ = load_splits(config)
    from gaqat_recipes.data import PixelTransform

    transform = PixelTransform(size=16, mean=(0.5,), std=(0.5,), channels=1)
    with torch.no_grad():
        logits = model(transform.pixel_values(splits["test"]["image"]))
    accuracy = (logits.argmax(1) == torch.tensor(splits["test"]["label"])).float().mean().item()
    assert accuracy == pytest.approx(metrics["selected"]["test_acc"])


def test_command_line_runs_the_recipe_and_reports_the_tracker_it_cannot_use(tiny_config, capsys):
    config = tiny_config(method="qat", steps=2)
    argv = ["--dataset", config.dataset, "--test-domain", "c", "--model", "mnist_cnn_tiny", "--image-size", "16",
            "--method", "qat", "--bits", "3", "--steps", "2", "--eval-every", "1", "--batch-size", "8",
            "--output-dir", config.output_dir, "--no-progress", "--no-plots", "--tracker", "tensorboard"]
    metrics = main(argv)
    printed = capsys.readouterr().out
    assert metrics["config"]["bits"] == 3 and metrics["selected"]["step"] in (1, 2)
    assert "test accuracy" in printed
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        assert "tracker 'tensorboard' is not installed" in printed
    assert not (Path(config.output_dir) / "learning_curves.png").exists()


def test_without_a_progress_bar_every_evaluation_prints_a_log_line(tiny_config, capsys):
    train_dg(tiny_config(method="qat", steps=4, eval_every=2, progress=False, plots=False, save_checkpoint=False))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[qat test=c seed=0]")]
    assert [line.split()[4] for line in lines] == ["2/4", "4/4"]
    assert all(" loss " in line and " val " in line and " test " in line and line.endswith("s)") for line in lines)


def test_oscillation_methods_report_their_freezer_and_delayed_quantization_starts_late(tiny_config, capsys):
    metrics = train_dg(tiny_config(method="osc-damp-qat"))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[osc-damp-qat test=c seed=0] step")]
    assert len(lines) == 2 and all(" weights frozen 0.0% " in line for line in lines)
    assert metrics["oscillation"]["steps"] == 4 and 0.0 <= metrics["oscillation"]["frozen_share"] <= 1.0
    assert metrics["history"][-1]["frozen_weights_fraction"] == metrics["oscillation"]["frozen_share"]  # last step
    assert metrics["quantized_after_step"] is None
    delayed = train_dg(tiny_config(method="qat-delayed", steps=10, eval_every=5))
    assert delayed["quantized_after_step"] == 3 and delayed["oscillation"] is None   # 30% of 10 steps in FP
    early = train_dg(tiny_config(method="qat-delayed", steps=10, eval_every=1, patience=1, lr=1e-9))
    assert early["quantized_after_step"] == 3 and early["selected"]["step"] > 3  # the FP model is never selected
    assert early["stopped_step"] >= 5  # patience counts quantized evaluations only


def test_the_oscillation_schedule_spans_oscillation_steps_when_given(tiny_config):
    from gaqat_recipes.optimizer import build_optimizer
    from gaqat_wrap import quantize_model

    layers = [torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)]
    model = quantize_model(torch.nn.Sequential(*layers), bits=3)   # the middle layer is quantized
    capped = build_optimizer(tiny_config(method="osc-qat", steps=4000), model).freezer
    sized = build_optimizer(tiny_config(method="osc-qat", steps=4000, oscillation_steps=2000), model).freezer
    assert (capped.total_steps, sized.total_steps) == (4000, 2000)
    # after 700 steps the warm start (a quarter of the schedule) is over for one of them only
    assert capped.config.threshold_at(700, capped.total_steps) is None
    assert sized.config.threshold_at(700, sized.total_steps) is not None
    for bad in (0, True, 2.5):
        with pytest.raises(ValueError, match="oscillation_steps must be an integer >= 1"):
            tiny_config(oscillation_steps=bad)
    metrics = train_dg(tiny_config(method="osc-qat", steps=6, eval_every=3, oscillation_steps=2))
    assert metrics["config"]["oscillation_steps"] == 2 and metrics["oscillation"]["steps"] == 6


def test_patience_stops_once_validation_stops_rising(tiny_config):
    metrics = train_dg(tiny_config(method="qat", steps=40, eval_every=1, patience=2, lr=1e-9))   # nothing to learn
    steps = [h["step"] for h in metrics["history"]]
    best = metrics["selected"]["step"]
    assert metrics["stopped_step"] == steps[-1] < 40
    assert steps[-1] - best == 2 and all(h["val_acc"] <= metrics["selected"]["val_acc"] for h in metrics["history"])


def test_channels_last_trains_the_same_model_and_its_checkpoint_reloads(tiny_config, tmp_path):
    options = {"method": "gaqat-osc", "eval_every": 1, "gaqat": {"window": 4}}   # SAGM pass + oscillation freezer
    plain = train_dg(tiny_config(steps=1, output_dir=str(tmp_path / "plain"), **options))
    config = tiny_config(steps=3, channels_last=True, output_dir=str(tmp_path / "nhwc"), **options)
    nhwc = train_dg(config)
    assert nhwc["config"]["channels_last"] is True and plain["config"]["channels_last"] is False
    # the first step's loss is the initial model's: the same up to float rounding in either layout
    assert nhwc["history"][0]["train_loss"] == pytest.approx(plain["history"][0]["train_loss"], rel=1e-5)
    model, loaded, _ = load_checkpoint(Path(config.output_dir) / "checkpoint")
    assert loaded.channels_last and all(p.is_contiguous() for p in model.parameters())  # stored plain


def test_batchnorm_is_reestimated_before_every_evaluation(tiny_config, monkeypatch):
    import gaqat_recipes.loop as loop

    calls = []

    def spy(model, batches, num_batches):
        used = real(model, batches, num_batches=num_batches)
        calls.append((used, model.training))
        return used

    real = loop.reestimate_batchnorm
    monkeypatch.setattr(loop, "reestimate_batchnorm", spy)
    metrics = train_dg(tiny_config(model="resnet10t", method="qat", steps=4, eval_every=2, reestimate_bn=2,
                                   channels_last=True))
    assert [h["step"] for h in metrics["history"]] == [2, 4]
    assert calls == [(2, True), (2, True)]   # two batches each time, and training resumes in train mode
