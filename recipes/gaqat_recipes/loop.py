"""train_dg: one leave-one-domain-out run with training-domain validation (DomainBed's model selection).

Order of events (everything that can be wrong with the inputs fails before step 1 and before
``output_dir`` is created):

1. validate the config (``TrainConfig``), load the dataset, split it (unknown domain -> error), build the model
   (``training.setup.build_run_inputs``);
2. quantize + calibrate (quantized methods), build the base optimizer on ``param_groups`` (scales never
   decay) and wrap it in ``GAQATOptimizer`` for the sharpness-aware methods;
3. train ``steps`` steps; every ``eval_every`` steps and at the last step evaluate the validation split
   (20% of every training domain) and the test domain; the checkpoint with the best mean validation
   accuracy over training domains is kept (ties: the earliest). The test domain never influences it;
4. write ``metrics.json``, the selected checkpoint (``checkpoint/model.safetensors`` + ``config.json``)
   and the plots.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from gaqat_recipes.checkpoint import save_checkpoint
from gaqat_recipes.config import TrainConfig
from gaqat_recipes.evaluation import accuracy_by_domain
from gaqat_recipes.methods import method_spec
from gaqat_recipes.metrics.loading import load_accuracy
from gaqat_recipes.models.build import BUILTIN_MODELS
from gaqat_recipes.setup import build_run_inputs, quantize_and_calibrate
from gaqat_recipes.tensors import domain_names, flip_crop
from gaqat_wrap import GAQATOptimizer, param_groups
from gaqat_wrap.second_pass import in_second_pass


def _augmentation(config: TrainConfig) -> str:
    if config.augment != "auto":
        return config.augment
    digits = config.model in BUILTIN_MODELS or config.dataset == "rotated_mnist"
    return "none" if digits else "flip-crop"  # flipping or shifting digits changes what they are


def _base_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay=config.weight_decay, scale_lr=config.scale_lr, lr=config.lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=config.lr)


def _infinite(loader: torch.utils.data.DataLoader) -> Iterator[Any]:
    while True:
        yield from loader


class _FreezeTrace:
    """Per-scale disorder and frozen flags at every freeze decision (the GAQAT optimizer's hook)."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.roles: list[str] = []
        self.disorder: list[list[float]] = []
        self.frozen: list[list[bool]] = []

    def __call__(self, optimizer: GAQATOptimizer, report: list) -> None:
        self.roles = [s.role for s in report]
        self.steps.append(optimizer.steps)
        self.disorder.append([round(s.disorder, 4) for s in report])
        self.frozen.append([bool(s.frozen) for s in report])

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "roles": self.roles, "disorder": self.disorder, "frozen": self.frozen}


def _start_tracker(accelerator_kwargs: dict[str, Any], config: TrainConfig) -> str | None:
    if config.tracker is None:
        return None
    from accelerate.tracking import _available_trackers

    available = {str(getattr(t, "value", t)) for t in _available_trackers}
    if config.tracker not in available:
        print(f"[train_dg] tracker {config.tracker!r} is not installed (available: {sorted(available) or 'none'}); "
              f"training without it. Install it (e.g. `pip install {config.tracker}`) to log there.")
        return None
    accelerator_kwargs.update(log_with=config.tracker, project_dir=config.output_dir)
    return config.tracker


def train_dg(config: TrainConfig, accelerator: Accelerator | None = None) -> dict[str, Any]:
    """Train one leave-one-domain-out run and return (and write) its metrics.

    ``config.threads`` (when set) is the torch thread count during the run only.

    Returns the dict written to ``metrics.json``: ``config``, ``history`` (one entry per evaluation:
    step, train loss, validation / test accuracy, frozen fraction, mean disorder), ``selected`` (step,
    validation and test accuracy per domain of the selected checkpoint), ``final`` (the same at the
    last step), ``method``, ``data``, ``freeze_trace``, ``wall_time_s``.

    Examples:
        >>> import tempfile
        >>> from gaqat_recipes.toy import write_toy_domains
        >>> folder = str(write_toy_domains(tempfile.mkdtemp(), per_class=4))
        >>> cfg = TrainConfig(test_domain="c", dataset=folder, model="mnist_cnn_tiny", method="qat", steps=2, batch_size=8,
        ...                   eval_every=1, threads=1, output_dir=tempfile.mkdtemp(), plots=False, progress=False)
        >>> metrics = train_dg(cfg)
        >>> [h["step"] for h in metrics["history"]], metrics["selected"]["step"] in (1, 2)
        ([1, 2], True)
    """
    if config.threads is None:
        return _train_dg(config, accelerator)
    previous = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _train_dg(config, accelerator)
    finally:
        torch.set_num_threads(previous)


def _train_dg(config: TrainConfig, accelerator: Accelerator | None = None) -> dict[str, Any]:
    """The run itself; ``train_dg`` sets the thread count around it."""
    started = time.perf_counter()
    spec = method_spec(config.method)
    accelerator_kwargs: dict[str, Any] = {}
    tracker = _start_tracker(accelerator_kwargs, config)
    accelerator = accelerator or Accelerator(**accelerator_kwargs)
    set_seed(config.seed)

    # 1. data and model: every input error surfaces here, before output_dir exists.
    run = build_run_inputs(config)
    splits, all_domains, classes, data, model = run.splits, run.domains, run.classes, run.data, run.model
    input_ = run.input_spec
    names_of_domains = domain_names(splits["train"])

    # 2. method: quantize + calibrate, optimizer.
    if spec.quantized:
        quantize_and_calibrate(model, data["train"], config)
    optimizer: torch.optim.Optimizer = _base_optimizer(config, model)
    gaqat: GAQATOptimizer | None = None
    trace = _FreezeTrace()
    if spec.sharpness_aware:
        gaqat = GAQATOptimizer(optimizer, config=config.gaqat_config(), model=model)
        gaqat.register_freeze_hook(trace)
        optimizer = gaqat
    scheduler = None
    if config.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, config.steps) / config.steps)))

    shuffle = torch.Generator().manual_seed(config.seed)
    train_loader = torch.utils.data.DataLoader(data["train"], batch_size=config.batch_size, shuffle=True,
                                               generator=shuffle, drop_last=len(data["train"]) > config.batch_size)
    eval_loaders = {name: torch.utils.data.DataLoader(data[name], batch_size=config.eval_batch_size)
                    for name in ("validation", "test")}
    model, optimizer, train_loader, eval_loaders["validation"], eval_loaders["test"] = accelerator.prepare(
        model, optimizer, train_loader, eval_loaders["validation"], eval_loaders["test"])
    # The scheduler is not passed to accelerator.prepare: Accelerate would step it once per process,
    # while `steps` already counts optimizer steps (each process takes every one of them).
    metric = load_accuracy(keep_in_memory=True)
    augment = _augmentation(config)
    augment_rng = torch.Generator().manual_seed(config.seed * 1000 + accelerator.process_index)

    output_dir = Path(config.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    if tracker is not None:
        accelerator.init_trackers("gaqat_dg", config={k: v for k, v in config.to_dict().items() if v is not None})

    # 3. train with training-domain validation.
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    loss_sum = torch.zeros((), device=accelerator.device)
    loss_count = 0
    batches = _infinite(train_loader)
    model.train()
    train_started = time.perf_counter()
    bar = tqdm(range(1, config.steps + 1), desc=f"{config.method} test={config.test_domain}",
               disable=not (config.progress and accelerator.is_local_main_process), dynamic_ncols=True)
    for step in bar:
        pixels, labels, _ = next(batches)
        if augment == "flip-crop":
            pixels = flip_crop(pixels, augment_rng)

        first_pass_loss: list[torch.Tensor] = []

        def closure(pixels: torch.Tensor = pixels, labels: torch.Tensor = labels,
                    losses: list[torch.Tensor] = first_pass_loss) -> torch.Tensor:
            loss = torch.nn.functional.cross_entropy(model(pixels), labels)
            accelerator.backward(loss)
            if not in_second_pass():  # the loss at θ, not at θ + ε
                losses.append(loss.detach())
            return loss.detach()

        if gaqat is None:
            optimizer.zero_grad(set_to_none=True)
            closure()
            optimizer.step()
        else:
            optimizer.step(closure)  # Accelerate's optimizer wrapper does not return the closure's loss
        if scheduler is not None:
            scheduler.step()
        if first_pass_loss:
            loss_sum += first_pass_loss[0].float()
            loss_count += 1

        if step % config.eval_every == 0 or step == config.steps:
            mean_loss = float(accelerator.reduce(loss_sum / max(loss_count, 1), reduction="mean"))
            loss_sum.zero_()
            loss_count = 0
            val = accuracy_by_domain(model, eval_loaders["validation"], accelerator, names_of_domains, metric)
            test = accuracy_by_domain(model, eval_loaders["test"], accelerator, names_of_domains, metric)
            report = gaqat.freeze_report() if gaqat is not None else []
            entry = {
                "step": step,
                "train_loss": mean_loss,
                "val_acc": val["average"],
                "val_per_domain": val["per_domain"],
                "test_acc": test["average"],
                "frozen_fraction": sum(s.frozen for s in report) / len(report) if report else 0.0,
                "mean_disorder": sum(s.disorder for s in report) / len(report) if report else 0.0,
                "elapsed_s": time.perf_counter() - train_started,
            }
            history.append(entry)
            if best is None or entry["val_acc"] > best["val_acc"]:
                best = {"step": step, "val_acc": val["average"], "val_per_domain": val["per_domain"],
                        "test_acc": test["average"], "test_per_domain": test["per_domain"]}
                if config.save_checkpoint and accelerator.is_main_process:
                    best_state = {k: v.detach().to("cpu", copy=True)
                                  for k, v in accelerator.unwrap_model(model).state_dict().items()}
            if tracker is not None:
                accelerator.log({k: v for k, v in entry.items() if isinstance(v, int | float)}, step=step)
            bar.set_postfix(loss=f"{mean_loss:.3f}", val=f"{val['average']:.3f}", test=f"{test['average']:.3f}")
    bar.close()
    train_time = time.perf_counter() - train_started
    assert best is not None  # the last step is always evaluated

    # 4. outputs.
    last = history[-1]
    metrics: dict[str, Any] = {
        "config": config.to_dict(),
        "method": {"name": spec.name, "label": spec.label, "quantized": spec.quantized,
                   "sharpness_aware": spec.sharpness_aware, "gaqat": config.gaqat_config().to_dict()
                   if spec.sharpness_aware else None},
        "data": {"domains": all_domains, "train_domains": [d for d in all_domains if d != config.test_domain],
                 "classes": classes, "sizes": {name: len(ds) for name, ds in data.items()},
                 "augment": augment, "input": {"size": input_.size, "channels": input_.channels,
                                               "mean": list(input_.mean), "std": list(input_.std)}},
        "selection": "training-domain validation: mean accuracy over the held-out "
                     f"{config.val_fraction:.0%} of every training domain; the test domain is never used",
        "history": history,
        "selected": best,
        "final": {"step": last["step"], "val_acc": last["val_acc"], "val_per_domain": last["val_per_domain"],
                  "test_acc": last["test_acc"]},
        "freeze_trace": trace.to_dict() if gaqat is not None else None,
        "skipped_steps": gaqat.skipped_steps if gaqat is not None else 0,
        "num_processes": accelerator.num_processes,
        "train_time_s": train_time,
        "wall_time_s": time.perf_counter() - started,
    }
    if accelerator.is_main_process:
        if config.save_checkpoint and best_state is not None:
            save_checkpoint(output_dir / "checkpoint", best_state, config, classes)
        if config.plots:
            from gaqat_recipes.reporting.plots import plot_run

            metrics["plots"] = [str(p.relative_to(output_dir)) for p in plot_run(metrics, output_dir)]
        metrics["wall_time_s"] = time.perf_counter() - started
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if tracker is not None:
        accelerator.end_training()
    accelerator.wait_for_everyone()
    return metrics
