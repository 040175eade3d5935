"""GAQAT inside ``transformers.Trainer``: a callback, and a subclass as the fallback.

The Trainer runs the first pass itself (forward + backward of every
micro-batch, gradient clipping) and then calls ``optimizer.step()`` without a
closure. :class:`GAQATCallback` therefore

1. wraps the Trainer's optimizer in a :class:`~gaqat_wrap.optim.GAQATOptimizer`
   as soon as the Trainer creates it (before Accelerate prepares it and before
   ``resume_from_checkpoint`` loads its state, so the GAQAT state is saved in and
   restored from ``optimizer.pt``), sharing its param groups, so the LR scheduler
   keeps working;
2. records the micro-batches of the current optimizer step as the Trainer's own
   ``training_step`` receives them;
3. installs a *replay* as the optimizer's second pass: each recorded
   micro-batch goes through the Trainer's ``training_step`` again (same
   ``compute_loss``, loss scaling, ``accelerator.backward`` and DDP ``no_sync``
   pattern), then the gradients are clipped with ``max_grad_norm`` exactly as the
   first pass's were;
4. adds freeze statistics to the Trainer's logs (``trainer.state.log_history``).

Because the replay is the Trainer's own ``training_step``, a custom
``compute_loss`` or ``compute_loss_func`` is reproduced too. Unsupported set-ups
(DeepSpeed, FSDP, an fp16 GradScaler) raise a clear error at the start of
training.

Examples:
    >>> cb = GAQATCallback(sam_rho=0.05, freeze_threshold=0.5, window=4)
    >>> cb.config.window
    4
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from pathlib import Path
from typing import Any

import torch

from gaqat_wrap.extras import require

require("transformers", "trainer")  # a clear message before the imports below fail
from transformers import Trainer, TrainerCallback  # noqa: E402
from transformers.trainer_callback import TrainerControl, TrainerState  # noqa: E402
from transformers.training_args import TrainingArguments  # noqa: E402

from gaqat_wrap.caller_warnings import warn_at_caller  # noqa: E402
from gaqat_wrap.integrations.freeze_log import freeze_log_entries  # noqa: E402
from gaqat_wrap.optim import GAQATConfig, GAQATOptimizer  # noqa: E402
from gaqat_wrap.second_pass import in_second_pass  # noqa: E402

logger = logging.getLogger(__name__)


def _calling_trainer() -> Trainer | None:
    """The Trainer whose training loop is calling this callback (found on the call stack)."""
    frame = inspect.currentframe()
    try:
        while frame is not None:
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, Trainer):
                return candidate
            frame = frame.f_back
    finally:
        del frame
    return None


class GAQATCallback(TrainerCallback):
    """Train with GAQAT steps under ``transformers.Trainer``: ``callbacks=[GAQATCallback(...)]``.

    Arguments are those of :class:`~gaqat_wrap.optim.GAQATConfig`. The model
    should be quantized with :func:`gaqat_wrap.quantize_model` first (without
    quantization this is plain SAM). The wrapped optimizer is available as
    :attr:`optimizer` once training starts.

    Gradient accumulation: g0 is the Trainer's accumulated gradient over all
    micro-batches of the step; the second pass replays all of them, so g1 is
    accumulated the same way. ``max_grad_norm`` clips g0 (by the Trainer) and g1
    (by the replay).

    Examples:
        >>> GAQATCallback(sam_rho=0.1).config.sam_rho
        0.1
    """

    def __init__(self, sam_rho: float = 0.05, freeze_threshold: float | None = 0.5, **options: Any) -> None:
        self.config = GAQATConfig.from_options(sam_rho=sam_rho, freeze_threshold=freeze_threshold, **options)
        self.optimizer: GAQATOptimizer | None = None
        self._trainer: Trainer | None = None
        self._training_step = None
        self._micro_batches: list[tuple[torch.nn.Module, Any, Any]] = []

    # -- wiring ------------------------------------------------------------------------
    def wrap_optimizer_creation(self, trainer: Trainer) -> None:
        """Make ``trainer.create_optimizer`` return a GAQATOptimizer (done automatically at ``on_init_end``).

        Wrapping at creation means the Trainer's own checkpointing saves the GAQAT state
        in ``optimizer.pt`` and ``resume_from_checkpoint`` loads it into the wrapper.
        """
        _check_supported(trainer, check_scaler=False)
        self._trainer = trainer
        if getattr(trainer, "_gaqat_wraps_creation", False):
            return
        create = trainer.create_optimizer

        @functools.wraps(create)
        def create_gaqat_optimizer(*args: Any, **kwargs: Any) -> torch.optim.Optimizer:
            create(*args, **kwargs)
            trainer.optimizer = self._wrap(trainer.optimizer, trainer)
            return trainer.optimizer

        trainer.create_optimizer = create_gaqat_optimizer
        trainer._gaqat_wraps_creation = True

    def _wrap(self, optimizer: torch.optim.Optimizer, trainer: Trainer) -> GAQATOptimizer:
        if isinstance(optimizer, GAQATOptimizer):
            self.optimizer = optimizer
        else:
            self.optimizer = GAQATOptimizer(optimizer, config=self.config, model=trainer.model)
        return self.optimizer

    def attach(self, trainer: Trainer) -> GAQATOptimizer:
        """Wrap ``trainer``'s optimizer (if not yet) and install the replay (done automatically at train begin)."""
        _check_supported(trainer)
        holder = trainer.optimizer
        if holder is None:
            raise RuntimeError("the Trainer has no optimizer yet; GAQATCallback attaches at on_train_begin")
        inner = getattr(holder, "optimizer", holder)
        late = not isinstance(inner, GAQATOptimizer)
        wrapped = self._wrap(inner, trainer)
        if late:
            if hasattr(holder, "optimizer"):
                holder.optimizer = wrapped
            else:
                trainer.optimizer = wrapped
            self._load_late_resume_state(trainer)
        self._trainer = trainer
        if self._training_step is None:
            self._training_step = trainer.training_step
            trainer.training_step = self._recording_training_step
        wrapped.set_replay(self._replay)
        return wrapped

    def _load_late_resume_state(self, trainer: Trainer) -> None:
        """A callback added after the Trainer was built wraps late: load the GAQAT state of a resumed run by hand."""
        step = trainer.state.global_step
        if step == 0 or self.optimizer is None:
            return
        checkpoint = Path(trainer.args.output_dir) / f"checkpoint-{step}" / "optimizer.pt"
        if checkpoint.is_file():
            saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
            if "gaqat" in saved:
                self.optimizer.load_state_dict(saved)
                return
        warn_at_caller(f"GAQATCallback was added after the Trainer was built and the run resumes at step {step}, but "
                       f"no GAQAT state was found at {checkpoint}: conflict windows and freeze flags start afresh. "
                       "Pass the callback in Trainer(callbacks=[...]) so it is restored with the optimizer.")

    def _recording_training_step(self, model: torch.nn.Module, inputs: Any, num_items_in_batch: Any = None) -> Any:
        if not in_second_pass():
            self._micro_batches.append((model, inputs, num_items_in_batch))
        return self._training_step(model, inputs, num_items_in_batch)

    def _replay(self) -> torch.Tensor:
        """Second pass: the step's micro-batches through the Trainer's own training_step."""
        trainer = self._trainer
        assert trainer is not None and self._training_step is not None
        if not self._micro_batches:
            raise RuntimeError("GAQATCallback has no recorded micro-batches to replay for this step; was "
                               "optimizer.step() called outside the Trainer's training loop?")
        total = None
        last = len(self._micro_batches) - 1
        for i, (model, inputs, num_items_in_batch) in enumerate(self._micro_batches):
            sync = contextlib.nullcontext() if i == last else trainer.accelerator.no_sync(model)
            with sync:
                loss = self._training_step(model, inputs, num_items_in_batch)
            total = loss if total is None else total + loss
        if trainer.args.max_grad_norm is not None and trainer.args.max_grad_norm > 0:
            trainer._clip_grad_norm(self._micro_batches[-1][0])
        return total

    # -- events --------------------------------------------------------------------------
    def on_init_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        trainer = self._trainer or _calling_trainer()
        if trainer is not None:
            self.wrap_optimizer_creation(trainer)

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        trainer = self._trainer or _calling_trainer()
        if trainer is None:
            raise RuntimeError("GAQATCallback could not find the Trainer that runs it; call callback.attach(trainer) "
                               "before trainer.train(), or use gaqat_wrap.integrations.GAQATTrainer")
        self.attach(trainer)

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._micro_batches.clear()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._micro_batches.clear()

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if self.optimizer is None or logs is None or "loss" not in logs:
            return
        entries = freeze_log_entries(self.optimizer)
        logs.update(entries)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(entries)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._micro_batches.clear()
        if self._trainer is not None and self._training_step is not None:
            self._trainer.training_step = self._training_step
            self._training_step = None


def _check_supported(trainer: Trainer, check_scaler: bool = True) -> None:
    accelerator = trainer.accelerator
    kind = str(accelerator.distributed_type)
    if "DEEPSPEED" in kind or "FSDP" in kind or getattr(accelerator.state, "fsdp_plugin", None) is not None:
        raise NotImplementedError(f"GAQATCallback supports single-process and DDP training; {kind} is not supported "
                                  "(its engine owns the optimizer step). Use DDP (accelerate launch --multi_gpu) instead.")
    if check_scaler and getattr(accelerator, "scaler", None) is not None:
        raise NotImplementedError("GAQATCallback cannot run with fp16 mixed precision (GradScaler): the second backward "
                                  "would stay scaled. Use bf16=True in TrainingArguments, or fp32.")


class GAQATTrainer(Trainer):
    """A ``Trainer`` with GAQAT steps built in: the fallback where a callback is not wanted.

    ``gaqat`` takes the :class:`~gaqat_wrap.optim.GAQATConfig` fields as a dict;
    everything else is the ``Trainer``'s own arguments.

    Examples:
        >>> import tempfile
        >>> args = TrainingArguments(output_dir=tempfile.mkdtemp(), use_cpu=True, report_to=[])
        >>> trainer = GAQATTrainer(model=torch.nn.Linear(2, 2), args=args, gaqat={"sam_rho": 0.1})
        >>> optimizer = trainer.create_optimizer()       # the Trainer's own optimizer, wrapped at creation
        >>> type(optimizer).__name__, optimizer.config.sam_rho
        ('GAQATOptimizer', 0.1)
    """

    def __init__(self, *args: Any, gaqat: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.gaqat_callback = GAQATCallback(**(gaqat or {}))
        callbacks = list(kwargs.pop("callbacks", None) or [])
        callbacks.append(self.gaqat_callback)
        super().__init__(*args, callbacks=callbacks, **kwargs)
        self.gaqat_callback.wrap_optimizer_creation(self)
