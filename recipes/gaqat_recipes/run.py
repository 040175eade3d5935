"""train_dg: one leave-one-domain-out run with training-domain validation (DomainBed's model selection).

A run goes through each step once, in this order; everything that can be wrong with the inputs fails in
steps 1-3, before training starts and before ``output_dir`` is created:

1. config: :class:`~gaqat_recipes.TrainConfig` validated itself when it was built;
2. data: :func:`~gaqat_recipes.data.run_data.load_run_data` (splits, unknown domain -> error, image tensors);
3. model: :func:`~gaqat_recipes.models.build_model` (pretrained weights when asked);
4. quantize and calibrate (quantized methods): :func:`~gaqat_recipes.quantize.quantize_and_calibrate`;
   the delayed methods do it inside the loop, after their full-precision steps;
5. optimizer: :func:`~gaqat_recipes.optimizer.build_optimizer` (GAQAT for the sharpness-aware methods, the
   oscillation freezer for the methods that have one);
6. loop: :func:`~gaqat_recipes.loop.fit` (evaluations, selection, early stopping);
7. report: :mod:`gaqat_recipes.reporting.run_report` (``metrics.json``, checkpoint, plots).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from gaqat_recipes.config import TrainConfig
from gaqat_recipes.data.run_data import load_run_data
from gaqat_recipes.loop import fit
from gaqat_recipes.methods import method_spec
from gaqat_recipes.models import build_model, input_spec
from gaqat_recipes.optimizer import add_step_sizes, build_optimizer
from gaqat_recipes.quantize import quantize_and_calibrate
from gaqat_recipes.reporting.run_report import run_environment, run_metrics, write_run_report


def train_dg(config: TrainConfig, accelerator: Accelerator | None = None) -> dict[str, Any]:
    """Train one leave-one-domain-out run and return (and write) its metrics.

    Returns the dict written to ``metrics.json``: ``config``, ``history`` (one entry per evaluation:
    step, train loss, validation / test accuracy, frozen step sizes, mean disorder, frozen weights), ``selected`` (step,
    validation and test accuracy per domain of the selected checkpoint), ``final`` (the same at the
    last step), ``method``, ``data``, ``freeze_trace``, ``wall_time_s``. ``config.threads`` (when set)
    is the torch thread count during the run only.

    Examples:
        >>> import tempfile
        >>> from gaqat_recipes import write_toy_domains
        >>> folder = str(write_toy_domains(tempfile.mkdtemp(), per_class=4))
        >>> cfg = TrainConfig(test_domain="c", dataset=folder, model="mnist_cnn_tiny", method="qat", steps=2, batch_size=8,
        ...                   eval_every=1, threads=1, output_dir=tempfile.mkdtemp(), plots=False, progress=False)
        >>> metrics = train_dg(cfg)  # doctest: +ELLIPSIS
        [qat test=c seed=0] step 1/2 loss ...
        >>> [h["step"] for h in metrics["history"]], metrics["selected"]["step"] in (1, 2)
        ([1, 2], True)
    """
    with _torch_threads(config.threads):
        started = time.perf_counter()
        tracking = _tracker_options(config)
        accelerator = accelerator or Accelerator(**tracking)
        set_seed(config.seed)

        data = load_run_data(config, input_spec(config.model, pretrained=config.pretrained,
                                                image_size=config.image_size))
        model = build_model(config.model, num_classes=len(data.classes), pretrained=config.pretrained,
                            image_size=config.image_size, in_chans=data.input_spec.channels)
        if config.channels_last:   # 4-d weights only; convolutions then pick the NHWC kernels for any input
            model = model.to(memory_format=torch.channels_last)
        spec = method_spec(config.method)
        if spec.quantized and not spec.delay_fraction:
            quantize_and_calibrate(model, data.tensors["train"], config)
        optimizer = build_optimizer(config, model)
        before_step, quantized_after = None, None
        if spec.delay_fraction:
            if accelerator.num_processes > 1:
                raise NotImplementedError("delayed quantization adds step sizes in the middle of training, which DDP "
                                          "cannot take: run the delayed methods in one process")
            quantized_after = max(1, int(spec.delay_fraction * config.steps))

            def before_step(step: int, unwrapped: torch.nn.Module) -> None:
                if step == quantized_after + 1:  # full precision for the first `quantized_after` steps, then LSQ
                    quantize_and_calibrate(unwrapped, data.tensors["train"], config)
                    add_step_sizes(config, unwrapped, optimizer.optimizer)
        if accelerator.is_main_process:
            Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        if tracking:
            accelerator.init_trackers("gaqat_dg", config={k: v for k, v in config.to_dict().items()
                                                          if isinstance(v, int | float | str | bool)})
        result = fit(config, model, optimizer, data, accelerator, before_step=before_step,
                     select_after=quantized_after or 0)

        metrics = run_metrics(config, data, result, optimizer, accelerator.num_processes, quantized_after)
        metrics["environment"] = run_environment(accelerator.device)
        metrics["wall_time_s"] = time.perf_counter() - started
        if accelerator.is_main_process:
            write_run_report(metrics, config, result, data.classes, started)
        if accelerator.trackers:
            accelerator.end_training()
        accelerator.wait_for_everyone()
        return metrics


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _tracker_options(config: TrainConfig) -> dict[str, Any]:
    """Accelerator options that log to ``config.tracker``; empty (with a message) when it is not installed."""
    if config.tracker is None:
        return {}
    from accelerate.tracking import _available_trackers

    available = {str(getattr(t, "value", t)) for t in _available_trackers}
    if config.tracker not in available:
        print(f"[train_dg] tracker {config.tracker!r} is not installed (available: {sorted(available) or 'none'}); "
              f"training without it. Install it (e.g. `pip install {config.tracker}`) to log there.")
        return {}
    return {"log_with": config.tracker, "project_dir": config.output_dir}
