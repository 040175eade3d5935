"""The report of one run: ``metrics.json``, the selected checkpoint and the plots, written by the main process."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gaqat_recipes.checkpoint import save_checkpoint
from gaqat_recipes.methods import method_spec
from gaqat_recipes.reporting.files import write_text_atomic
from gaqat_recipes.reporting.plots import plot_run

if TYPE_CHECKING:
    from gaqat_recipes.config import TrainConfig
    from gaqat_recipes.data.run_data import RunData
    from gaqat_recipes.loop import FitResult
    from gaqat_recipes.optimizer import RunOptimizer


def run_metrics(config: TrainConfig, data: RunData, result: FitResult, run: RunOptimizer,
                num_processes: int, quantized_after_step: int | None = None) -> dict[str, Any]:
    """The dict written to ``metrics.json`` (see the training recipe page for every key).

    ``quantized_after_step``: the delayed methods' full-precision steps before quantization (else ``None``).

    Examples:
        >>> from gaqat_recipes import TrainConfig
        >>> from gaqat_recipes.loop import FitResult
        >>> from gaqat_recipes.optimizer import FreezeTrace, RunOptimizer
        >>> from gaqat_recipes.models import InputSpec
        >>> from gaqat_recipes.data.run_data import RunData
        >>> entry = {"step": 1, "val_acc": 0.5, "val_per_domain": {"a": 0.5}, "test_acc": 0.4}
        >>> result = FitResult([entry], {**entry, "test_per_domain": {"b": 0.4}}, None, "none", 1.0, 1)
        >>> data = RunData({}, ["a", "b"], ["x"], InputSpec(28, 1, (0.5,), (0.5,)), {}, test_domain="b")
        >>> metrics = run_metrics(TrainConfig(test_domain="b", method="qat"), data, result,
        ...                       RunOptimizer(None, None, None, FreezeTrace()), num_processes=1)
        >>> metrics["final"]["test_acc"], metrics["data"]["train_domains"], metrics["method"]["gaqat"]
        (0.4, ['a'], None)
    """
    spec = method_spec(config.method)
    last = result.history[-1]
    size = data.input_spec
    return {
        "config": config.to_dict(),
        "method": {"name": spec.name, "label": spec.label, "quantized": spec.quantized,
                   "sharpness_aware": spec.sharpness_aware,
                   "gaqat": config.gaqat_config().to_dict() if spec.sharpness_aware else None},
        "data": {"domains": data.domains, "train_domains": data.train_domains, "classes": data.classes,
                 "sizes": {name: len(ds) for name, ds in data.tensors.items()}, "augment": result.augment,
                 "input": {"size": size.size, "channels": size.channels, "mean": list(size.mean), "std": list(size.std)}},
        "selection": "training-domain validation: mean accuracy over the held-out "
                     f"{config.val_fraction:.0%} of every training domain; the test domain is never used",
        "history": result.history,
        "selected": result.selected,
        "final": {"step": last["step"], "val_acc": last["val_acc"], "val_per_domain": last["val_per_domain"],
                  "test_acc": last["test_acc"]},
        "freeze_trace": run.trace.to_dict() if run.gaqat is not None else None,
        "skipped_steps": run.gaqat.skipped_steps if run.gaqat is not None else 0,
        "num_processes": num_processes,
        "train_time_s": result.train_time_s,
        "stopped_step": result.stopped_step,
        "quantized_after_step": quantized_after_step,
        "oscillation": _oscillation_summary(run),
    }


def run_environment(device: torch.device | str) -> dict[str, str]:
    """Where a run trained: device type and name, processor, torch and Python versions (``metrics.json``'s ``environment``).

    Runs of the same seed agree to the last digit on one host but not across processors or devices, so a paired
    cell should train on one host; this record says which.

    Examples:
        >>> env = run_environment("cpu")
        >>> env["device"], env["torch"] == torch.__version__
        ('cpu', True)
    """
    device = torch.device(device)
    processor = _processor_name()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else processor
    return {"device": device.type, "device_name": name, "processor": processor, "torch": torch.__version__,
            "python": platform.python_version()}


def _processor_name() -> str:
    """The CPU's model name (from ``/proc/cpuinfo`` on Linux), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _oscillation_summary(run: RunOptimizer) -> dict[str, Any] | None:
    """Frozen weights at the end of training, in all and per layer (methods with an oscillation freezer)."""
    if run.freezer is None:
        return None
    report = run.freezer.report()
    return {"frozen_share": run.freezer.frozen_share(), "steps": run.freezer.steps,
            "layers": {s.role: {"frozen": s.frozen, "weights": s.weights, "mean_frequency": round(s.mean_frequency, 6)}
                       for s in report}}


def write_run_report(metrics: dict[str, Any], config: TrainConfig, result: FitResult, classes: list[str],
                     started: float) -> None:
    """Write the checkpoint (``config.save_checkpoint``), the plots (``config.plots``) and ``metrics.json``.

    ``metrics.json`` is written last and atomically: a sweep treats a run as finished once it exists.
    ``metrics`` gets the relative paths of the plots under ``"plots"`` and ``wall_time_s`` (since ``started``,
    a ``time.perf_counter()`` value).
    """
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if config.save_checkpoint and result.best_state is not None:
        save_checkpoint(output_dir / "checkpoint", result.best_state, config, classes)
    if config.plots:
        metrics["plots"] = [str(p.relative_to(output_dir)) for p in plot_run(metrics, output_dir)]
    metrics["wall_time_s"] = time.perf_counter() - started
    write_text_atomic(output_dir / "metrics.json", json.dumps(metrics, indent=2))
