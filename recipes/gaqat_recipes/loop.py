"""The training loop of a run: steps, evaluations on validation and test, and training-domain model selection.

Every ``eval_every`` steps and at the last step, :func:`fit` measures the accuracy on the validation split
(the held-out part of every training domain) and on the test domain; the checkpoint with the best mean
validation accuracy over training domains is kept (ties: the earliest). The test domain never influences it.
With ``patience``, training stops once the validation accuracy has not improved for that many evaluations.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from gaqat_recipes.data.tensors import domain_names, flip_crop
from gaqat_recipes.evaluation import accuracy_by_domain
from gaqat_recipes.metrics import load_accuracy
from gaqat_recipes.models import BUILTIN_MODELS
from gaqat_wrap import reestimate_batchnorm
from gaqat_wrap.integrations import freeze_log_entries

if TYPE_CHECKING:
    from accelerate import Accelerator

    from gaqat_recipes.config import TrainConfig
    from gaqat_recipes.data.run_data import RunData
    from gaqat_recipes.optimizer import RunOptimizer


@dataclass
class FitResult:
    """What the loop produced.

    Attributes:
        history: one entry per evaluation (step, train loss, validation / test accuracy, freeze statistics, elapsed).
        selected: step, validation and test accuracy (per domain) of the selected checkpoint.
        best_state: its state_dict on the CPU (main process, when checkpoints are saved), else ``None``.
        augment: the augmentation that was applied.
        train_time_s: wall time of the loop.
        stopped_step: the last step trained (``steps``, or earlier when ``patience`` stopped the run).

    Examples:
        >>> result = FitResult([{"step": 5, "val_acc": 0.9}], {"step": 5, "val_acc": 0.9}, None, "none", 1.5, 5)
        >>> result.selected["step"] == result.history[-1]["step"] == result.stopped_step
        True
    """

    history: list[dict[str, Any]]
    selected: dict[str, Any]
    best_state: dict[str, torch.Tensor] | None
    augment: str
    train_time_s: float
    stopped_step: int


def augmentation(config: TrainConfig) -> str:
    """The augmentation ``config.augment`` resolves to: ``auto`` is none for digits, flip-crop otherwise.

    Examples:
        >>> from gaqat_recipes import TrainConfig
        >>> augmentation(TrainConfig(test_domain="0", model="resnet18"))  # Rotated-MNIST: digits are never flipped
        'none'
        >>> augmentation(TrainConfig(test_domain="0", augment="flip-crop"))
        'flip-crop'
    """
    if config.augment != "auto":
        return config.augment
    digits = config.model in BUILTIN_MODELS or config.dataset == "rotated_mnist"
    return "none" if digits else "flip-crop"  # flipping or shifting digits changes what they are


def _infinite(loader: torch.utils.data.DataLoader) -> Iterator[Any]:
    while True:
        yield from loader


def _freeze_stats(run: RunOptimizer) -> tuple[float, float]:
    if run.gaqat is None:
        return 0.0, 0.0
    entries = freeze_log_entries(run.gaqat)
    return entries["gaqat/frozen_fraction"], entries["gaqat/mean_disorder"]


def fit(config: TrainConfig, model: torch.nn.Module, run: RunOptimizer, data: RunData,
        accelerator: Accelerator, before_step: Callable[[int, torch.nn.Module], None] | None = None,
        select_after: int = 0) -> FitResult:
    """Train ``model`` for ``config.steps`` steps with ``run``'s optimizer; evaluate and select as described above.

    ``model``, the optimizer and the loaders are prepared with ``accelerator`` here (DDP under
    ``accelerate launch``). Without a progress bar (``config.progress=False``) a line with the step, the
    mean training loss, the validation and test accuracy and the elapsed time is printed at every evaluation.
    ``before_step(step, model)`` runs before every step (the delayed methods quantize there); the closure
    adds ``run.extra_loss()`` (oscillation dampening) to the task loss; with ``config.reestimate_bn`` the
    BatchNorm statistics are re-estimated on training batches before every evaluation. Evaluations at steps
    up to ``select_after`` are logged but neither selected nor counted by ``patience`` (the full-precision
    steps of a delayed method: the selected model is always the quantized one).

    Examples:
        >>> import tempfile
        >>> from gaqat_recipes import TrainConfig, build_optimizer, load_run_data, write_toy_domains
        >>> from gaqat_recipes.models import build_model, input_spec
        >>> from accelerate import Accelerator
        >>> config = TrainConfig(test_domain="c", dataset=str(write_toy_domains(tempfile.mkdtemp(), per_class=4)),
        ...                      model="mnist_cnn_tiny", method="fp", steps=3, eval_every=2, batch_size=8)
        >>> data = load_run_data(config, input_spec(config.model))
        >>> model = build_model(config.model, num_classes=len(data.classes))
        >>> result = fit(config, model, build_optimizer(config, model), data, Accelerator(cpu=True))
        >>> [entry["step"] for entry in result.history], result.selected["step"] in (2, 3), result.stopped_step
        ([2, 3], True, 3)
    """
    shuffle = torch.Generator().manual_seed(config.seed)
    train_set = data.tensors["train"]
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=config.batch_size, shuffle=True,
                                               generator=shuffle, drop_last=len(train_set) > config.batch_size)
    eval_loaders = {name: torch.utils.data.DataLoader(data.tensors[name], batch_size=config.eval_batch_size)
                    for name in ("validation", "test")}
    model, optimizer, train_loader, eval_loaders["validation"], eval_loaders["test"] = accelerator.prepare(
        model, run.optimizer, train_loader, eval_loaders["validation"], eval_loaders["test"])
    # The scheduler is not passed to accelerator.prepare: Accelerate would step it once per process,
    # while `steps` already counts optimizer steps (each process takes every one of them).
    metric = load_accuracy(keep_in_memory=True)
    augment = augmentation(config)
    augment_rng = torch.Generator().manual_seed(config.seed * 1000 + accelerator.process_index)
    names_of_domains = domain_names(data.splits["train"])  # index -> name of the domain column
    name = f"{config.method} test={config.test_domain} seed={config.seed}"
    show_bar = config.progress and accelerator.is_local_main_process
    log_lines = not config.progress and accelerator.is_main_process

    history: list[dict[str, Any]] = []
    evaluations_since_best = 0
    stopped_step = config.steps
    best: dict[str, Any] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    loss_sum = torch.zeros((), device=accelerator.device)
    loss_count = 0
    batches = _infinite(train_loader)
    model.train()
    started = time.perf_counter()
    bar = tqdm(range(1, config.steps + 1), desc=name, disable=not show_bar, dynamic_ncols=True)
    for step in bar:
        if before_step is not None:
            before_step(step, accelerator.unwrap_model(model))
        pixels, labels, _ = next(batches)
        if augment == "flip-crop":
            pixels = flip_crop(pixels, augment_rng)

        first_pass_loss: list[torch.Tensor] = []

        def closure(pixels: torch.Tensor = pixels, labels: torch.Tensor = labels,
                    losses: list[torch.Tensor] = first_pass_loss) -> torch.Tensor:
            loss = torch.nn.functional.cross_entropy(model(pixels), labels) + run.extra_loss()
            accelerator.backward(loss)
            if not losses:  # the first call is the loss at θ; a second one (GAQAT) is at θ + ε
                losses.append(loss.detach())
            return loss.detach()

        if run.gaqat is None:
            optimizer.zero_grad(set_to_none=True)
            closure()
            optimizer.step()
        else:
            optimizer.step(closure)  # Accelerate's optimizer wrapper does not return the closure's loss
        if run.scheduler is not None:
            run.scheduler.step()
        if first_pass_loss:
            loss_sum += first_pass_loss[0].float()
            loss_count += 1

        if step % config.eval_every == 0 or step == config.steps:
            mean_loss = float(accelerator.reduce(loss_sum / max(loss_count, 1), reduction="mean"))
            loss_sum.zero_()
            loss_count = 0
            if config.reestimate_bn:
                reestimate_batchnorm(model, (batch[0] for batch in train_loader), num_batches=config.reestimate_bn)
            val = accuracy_by_domain(model, eval_loaders["validation"], names_of_domains, accelerator=accelerator, metric=metric)
            test = accuracy_by_domain(model, eval_loaders["test"], names_of_domains, accelerator=accelerator, metric=metric)
            frozen_fraction, mean_disorder = _freeze_stats(run)
            entry = {
                "step": step,
                "train_loss": mean_loss,
                "val_acc": val["average"],
                "val_per_domain": val["per_domain"],
                "test_acc": test["average"],
                "frozen_fraction": frozen_fraction,
                "mean_disorder": mean_disorder,
                "frozen_weights_fraction": run.freezer.frozen_share() if run.freezer is not None else 0.0,
                "elapsed_s": time.perf_counter() - started,
            }
            history.append(entry)
            selectable = step > select_after  # before: not yet the model the method delivers (delayed methods)
            evaluations_since_best += selectable
            if selectable and (best is None or entry["val_acc"] > best["val_acc"]):
                evaluations_since_best = 0
                best = {"step": step, "val_acc": val["average"], "val_per_domain": val["per_domain"],
                        "test_acc": test["average"], "test_per_domain": test["per_domain"]}
                if config.save_checkpoint and accelerator.is_main_process:
                    best_state = {k: v.detach().to("cpu", copy=True)
                                  for k, v in accelerator.unwrap_model(model).state_dict().items()}
            if accelerator.trackers:
                accelerator.log({k: v for k, v in entry.items() if isinstance(v, int | float)}, step=step)
            bar.set_postfix(loss=f"{mean_loss:.3f}", val=f"{val['average']:.3f}", test=f"{test['average']:.3f}")
            if log_lines:
                weights = f" weights frozen {entry['frozen_weights_fraction']:.1%}" if run.freezer is not None else ""
                print(f"[{name}] step {step}/{config.steps} loss {mean_loss:.3f} val {val['average']:.3f} "
                      f"test {test['average']:.3f} frozen {frozen_fraction:.0%}{weights} ({entry['elapsed_s']:.0f}s)",
                      flush=True)
            if config.patience is not None and evaluations_since_best >= config.patience:
                stopped_step = step  # validation stopped rising: every rank evaluated the same, so all stop here
                break
    bar.close()
    assert best is not None  # the last step is always evaluated
    return FitResult(history=history, selected=best, best_state=best_state, augment=augment,
                     train_time_s=time.perf_counter() - started, stopped_step=stopped_step)
