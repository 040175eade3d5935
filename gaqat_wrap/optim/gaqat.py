"""GAQATOptimizer: a SAM-family step with conflict-aware freezing of quantizer step sizes.

The step, in the order and with the symbols of DESIGN §2 (see
``docs/concepts/gaqat.md`` for every option):

1. g0 = ∇L(θ) (first pass); g0 is kept for every scale parameter.
2. ε from g0 over the perturbed parameters (SAM / ASAM / SAGM), θ ← θ + ε.
3. g1 = ∇L(θ + ε) (second pass, inside :func:`gaqat_wrap.second_pass`).
4. θ restored by copy.
5. Per scale: g_task = g0, g_smooth = g1 − g0, conflict flag, window, disorder.
6. Scales with disorder >= τ are frozen for the update.
7. Base optimizer step.

Examples:
    >>> import torch
    >>> from gaqat_wrap import quantize_model
    >>> model = quantize_model(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 2)))
    >>> opt = GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), sam_rho=0.05, window=2)
    >>> x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    >>> def closure():
    ...     loss = torch.nn.functional.cross_entropy(model(x), y)
    ...     loss.backward()
    ...     return loss
    >>> loss = opt.step(closure)
    >>> [s.role for s in opt.freeze_report()]
    ['1.weight', '1.input']
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from gaqat_wrap.optim.config import RHO_GROUP_KEY, GAQATConfig
from gaqat_wrap.optim.conflict import ConflictTracker, ScaleStatus, conflict_flags, scale_grad_conflict
from gaqat_wrap.optim.engines import check_supported_parameters
from gaqat_wrap.optim.perturbation import iter_perturbation
from gaqat_wrap.quant.quantizer import is_scale_parameter, scale_role
from gaqat_wrap.second_pass import protect_running_stats, second_pass

Closure = Callable[[], Any]
FreezeHook = Callable[["GAQATOptimizer", list[ScaleStatus]], None]

_GRAD_SCALER_ERROR = (
    "GAQATOptimizer does not support an fp16 GradScaler: the second backward's gradients would stay scaled and "
    "unchecked for inf. Train in bf16 instead (torch.autocast(device_type, dtype=torch.bfloat16), or "
    "Accelerator(mixed_precision='bf16')), which needs no GradScaler, or in fp32."
)


@dataclass
class _Pending:
    """What :meth:`GAQATOptimizer.first_step` leaves for :meth:`~GAQATOptimizer.second_step`."""

    perturbed: list[Tensor]
    backup: list[Tensor]
    scales: list[Tensor]
    g0_scales: Tensor
    g0_all: dict[Tensor, Tensor]


class _Unset:
    """Marks an argument that was not passed (``freeze_threshold=None`` means "never freeze")."""

    def __repr__(self) -> str:
        return "0.5"


UNSET = _Unset()

MOSTLY_FROZEN = 0.9
"""Share of frozen scales at a freeze decision above which the optimizer warns (once)."""


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class GAQATOptimizer(Optimizer):
    """Wrap ``base`` (any ``torch.optim.Optimizer``) into a GAQAT step.

    ``param_groups``, ``state`` and ``defaults`` are the base optimizer's own
    objects, so LR schedulers, per-group keys (timm's ``lr_scale``, ``"sam_rho"``)
    and ``add_param_group`` keep working. Options are the fields of
    :class:`GAQATConfig` (pass ``config=`` or keywords, not both). ``model=``
    additionally protects that model's BatchNorm statistics from the second
    pass (models from :func:`gaqat_wrap.quantize_model` already are).

    Examples:
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = GAQATOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-3), sam_rho=0.1, freeze_threshold=None)
        >>> opt.param_groups is opt.base.param_groups, opt.config.sam_rho
        (True, 0.1)
    """

    # GradScaler then hands the step to us (with optimizer.grad_scale set) instead of unscaling once
    # and stepping; step() turns that into a clear error.
    _step_supports_amp_scaling = True

    def __init__(self, base: Optimizer, sam_rho: float | None = None, freeze_threshold: float | _Unset | None = UNSET,
                 *, config: GAQATConfig | None = None, model: nn.Module | None = None, **options: Any) -> None:
        if not isinstance(base, Optimizer):
            raise TypeError(f"GAQATOptimizer wraps a torch.optim.Optimizer instance, got {type(base).__name__}; build "
                            "the base first, e.g. GAQATOptimizer(torch.optim.AdamW(model.parameters()), sam_rho=0.05)")
        if isinstance(base, GAQATOptimizer):
            raise TypeError("base is already a GAQATOptimizer; wrap the plain base optimizer once")
        check_supported_parameters(p for group in base.param_groups for p in group["params"])
        if config is not None:
            if sam_rho is not None or freeze_threshold is not UNSET or options:
                raise TypeError("pass either config=GAQATConfig(...) or sam_rho/freeze_threshold/options, not both")
            if not isinstance(config, GAQATConfig):
                raise TypeError(f"config must be a GAQATConfig, got {type(config).__name__}")
        else:
            if sam_rho is not None:
                options["sam_rho"] = sam_rho
            if freeze_threshold is not UNSET:
                options["freeze_threshold"] = freeze_threshold
            unknown = sorted(set(options) - set(GAQATConfig.__dataclass_fields__))
            if unknown:
                raise TypeError(f"unknown GAQATOptimizer option(s) {', '.join(map(repr, unknown))}; the options are "
                                f"the GAQATConfig fields: {', '.join(GAQATConfig.__dataclass_fields__)}")
            config = GAQATConfig(**options)
        self.base = base
        self.config = config
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._patch_step_function()
        self._tracker: ConflictTracker | None = None
        self._pending: _Pending | None = None
        self._replay: Closure | None = None
        self._freeze_hooks: OrderedDict[int, FreezeHook] = OrderedDict()
        self._segments: tuple[tuple[int, ...], Tensor] | None = None
        self.skipped_steps = 0
        self._warned_mostly_frozen = False
        if model is not None:
            protect_running_stats(model)

    # -- shared with the base optimizer ------------------------------------------------
    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.base.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.base.param_groups = value

    @property
    def state(self) -> Any:  # type: ignore[override]
        return self.base.state

    @state.setter
    def state(self, value: Any) -> None:
        self.base.state = value

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        return self.base.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.base.defaults = value

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the base optimizer (new scales join the conflict tracking)."""
        self.base.add_param_group(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The base optimizer's ``zero_grad``."""
        self.base.zero_grad(set_to_none=set_to_none)

    # -- the step ----------------------------------------------------------------------
    def step(self, closure: Closure | None = None) -> Any:  # type: ignore[override]
        """One GAQAT step; ``closure`` runs forward + backward and returns the loss.

        The closure need not call ``zero_grad`` (the optimizer clears gradients
        between the passes and after the step); calling it is harmless. If no parameter
        holds a gradient, the closure runs the first pass too; if gradients
        are already there (you called ``backward`` yourself, or accumulated
        micro-batches), they are g0 and the closure runs only the second pass.
        Without a closure the replay installed by :meth:`set_replay` is used.
        Returns the first pass's loss when the closure ran it, else the
        second pass's. A non-finite loss or gradient skips the step (see
        :attr:`skipped_steps`).

        Examples:
            >>> w = torch.nn.Parameter(torch.ones(2))
            >>> opt = GAQATOptimizer(torch.optim.SGD([w], lr=0.1))
            >>> float(opt.step(lambda: (w ** 2).sum().backward() or (w ** 2).sum().detach()))
            2.0
        """
        if getattr(self, "grad_scale", None) is not None or getattr(self, "found_inf", None) is not None:
            raise RuntimeError(_GRAD_SCALER_ERROR)
        closure = closure if closure is not None else self._replay
        if closure is None:
            raise RuntimeError("GAQATOptimizer.step needs a closure that runs forward + backward and returns the loss "
                               "(step(closure)); it evaluates the loss twice. For hand-written loops use first_step() / "
                               "second_step(); a Trainer integration can install one with set_replay(fn)")
        loss = None
        if not self._has_gradients():
            with torch.enable_grad():
                loss = closure()
            # Keep the value only: the first pass's autograd graph must not live through the second pass.
            loss = loss.detach() if isinstance(loss, Tensor) else loss
        if not self.first_step(loss=loss):
            return loss
        with second_pass(), torch.enable_grad():
            second_loss = closure()
        self.second_step(loss=second_loss)
        return loss if loss is not None else second_loss

    @torch.no_grad()
    def first_step(self, loss: Tensor | float | None = None) -> bool:
        """Steps 1-2: keep g0 on the scales, move the perturbed parameters to θ + ε.

        Call after the first backward; it clears the gradients. Run the second
        forward + backward inside ``with gaqat_wrap.second_pass():`` and then
        call :meth:`second_step`.
        Returns False (and clears gradients) when the loss or g0 is not finite:
        nothing was changed, the step is skipped and ``second_step`` is a no-op.

        Examples:
            >>> w = torch.nn.Parameter(torch.ones(2))
            >>> opt = GAQATOptimizer(torch.optim.SGD([w], lr=0.1), sam_rho=0.5)
            >>> (w ** 2).sum().backward()
            >>> opt.first_step(), w.tolist()
            (True, [1.3535534143447876, 1.3535534143447876])
        """
        if self._pending is not None:
            raise RuntimeError("first_step() was called twice without second_step(); call second_step() after the "
                               "second backward")
        config = self.config
        params, rhos, perturbed_flags = [], [], []
        for group in self.param_groups:
            rho = group.get(RHO_GROUP_KEY, config.sam_rho)
            if not isinstance(rho, int | float) or isinstance(rho, bool) or rho < 0:
                raise ValueError(f"param group {RHO_GROUP_KEY!r} must be a number >= 0, got {rho!r}")
            for p in group["params"]:
                if p.grad is not None:
                    params.append(p)
                    rhos.append(rho)
                    perturbed_flags.append(config.perturb_scales or not is_scale_parameter(p))
        norms = torch._foreach_norm([p.grad for p in params]) if params else []
        finite = torch.isfinite(torch.stack(norms).sum()) if norms else torch.tensor(True)
        if not self._all_finite(finite, loss):
            self.zero_grad(set_to_none=True)
            self._skip("first")
            return False
        perturbed = [p for p, flag in zip(params, perturbed_flags, strict=True) if flag]
        perturbed_rhos = [r for r, flag in zip(rhos, perturbed_flags, strict=True) if flag]
        sam_norm = None
        if not config.adaptive and perturbed:
            sam_norm = torch.linalg.vector_norm(torch.stack([n for n, f in zip(norms, perturbed_flags, strict=True) if f]))
        scales = self._scales()
        g0_scales = self._flat_scale_grads(scales)
        g0_all = {p: p.grad.clone() for p in params} if config.variant == "sagm" else {}
        backup = [p.detach().clone() for p in perturbed]
        for p, e in zip(perturbed, iter_perturbation(perturbed, perturbed_rhos, config, norm=sam_norm), strict=True):
            p.add_(e)
        self._pending = _Pending(perturbed, backup, scales, g0_scales, g0_all)
        self.zero_grad(set_to_none=True)
        return True

    @torch.no_grad()
    def second_step(self, zero_grad: bool = True, loss: Tensor | float | None = None) -> bool:
        """Steps 3-7: restore θ by copy, measure conflicts, freeze, run the base step.

        Returns False when the step was skipped (non-finite second pass, or
        :meth:`first_step` skipped): parameters are then exactly as before
        ``first_step``. Gradients are cleared afterwards (``zero_grad=True``).

        Examples:
            >>> w = torch.nn.Parameter(torch.ones(2))
            >>> opt = GAQATOptimizer(torch.optim.SGD([w], lr=0.1), sam_rho=0.5)
            >>> (w ** 2).sum().backward(); _ = opt.first_step()
            >>> (w ** 2).sum().backward(); opt.second_step()
            True
            >>> [round(v, 4) for v in w.tolist()]
            [0.7293, 0.7293]
        """
        pending, self._pending = self._pending, None
        if pending is None:
            self.zero_grad(set_to_none=True)
            return False
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        finite = torch.isfinite(torch.stack(torch._foreach_norm(grads)).sum()) if grads else torch.tensor(True)
        for p, saved in zip(pending.perturbed, pending.backup, strict=True):
            p.copy_(saved)
        if not self._all_finite(finite, loss):
            self.zero_grad(set_to_none=True)
            self._skip("second")
            return False
        tracker = self._conflict_tracker(len(pending.scales))
        flags = torch.zeros(0, dtype=torch.bool)
        if pending.scales:
            g1_scales = self._flat_scale_grads(pending.scales)
            stats = scale_grad_conflict(pending.g0_scales, g1_scales - pending.g0_scales,
                                        self._segment_ids(pending.scales), len(pending.scales))
            if _distributed():
                dist.all_reduce(stats, op=dist.ReduceOp.SUM)
            flags = conflict_flags(stats, self.config.metric)
        decided = tracker.record(flags)
        if decided:
            self._warn_if_mostly_frozen(tracker.frozen)
        self._update_direction(pending, tracker.frozen)
        self.base.step()
        if zero_grad:
            self.zero_grad(set_to_none=True)
        if decided and self._freeze_hooks:
            report = self.freeze_report()
            for hook in list(self._freeze_hooks.values()):
                hook(self, report)
        return True

    def _warn_if_mostly_frozen(self, frozen: Tensor) -> None:
        """Warn once when a freeze decision leaves at least :data:`MOSTLY_FROZEN` of (4 or more) scales frozen."""
        if self._warned_mostly_frozen or frozen.numel() < 4:
            return
        share = float(frozen.float().mean())
        if share >= MOSTLY_FROZEN:
            self._warned_mostly_frozen = True
            warnings.warn(f"GAQATOptimizer froze {share:.0%} of the {frozen.numel()} quantizer scales at step "
                          f"{self.steps}: the conflict test fires for almost every scale, which happens when the "
                          "gradient at θ + ε is nearly unrelated to the gradient at θ (a rough quantized loss surface), "
                          "not only when sharpness and task loss disagree. Then freezing carries no sharpness "
                          "information for this model: compare with freeze_threshold=None (LSQ + SAM) on validation. "
                          "See 'When almost every scale freezes' in the GAQAT docs (warned once per optimizer).",
                          RuntimeWarning, stacklevel=3)

    def _update_direction(self, pending: _Pending, frozen: Tensor) -> None:
        """Set ``.grad`` to the SAM-family direction; frozen scales lose all or the smooth part of theirs."""
        # SAGM (as in the authors' released code): d = (g0 + g1) / 2
        for p, g0 in pending.g0_all.items():
            if p.grad is None:
                p.grad = g0.mul_(0.5)
            else:
                p.grad.add_(g0).mul_(0.5)
        if not bool(frozen.any()):
            return
        start = 0
        for p, is_frozen in zip(pending.scales, frozen.tolist(), strict=True):
            numel = p.numel()
            if is_frozen:
                if self.config.freeze_mode == "all":
                    p.grad = None
                else:
                    g_task = pending.g0_scales[start:start + numel].view_as(p).to(p.dtype)
                    p.grad = g_task.clone()
            start += numel

    # -- helpers -------------------------------------------------------------------------
    def _has_gradients(self) -> bool:
        return any(p.grad is not None for group in self.param_groups for p in group["params"])

    def _scales(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"] if is_scale_parameter(p)]

    def _flat_scale_grads(self, scales: list[Tensor]) -> Tensor:
        if not scales:
            return torch.zeros(0)
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1).float()
                          for p in scales])

    def _segment_ids(self, scales: list[Tensor]) -> Tensor:
        numels = tuple(p.numel() for p in scales)
        device = scales[0].device
        if self._segments is None or self._segments[0] != numels or self._segments[1].device != device:
            ids = torch.repeat_interleave(torch.arange(len(numels), device=device), torch.tensor(numels, device=device))
            self._segments = (numels, ids)
        return self._segments[1]

    def _conflict_tracker(self, num_scales: int) -> ConflictTracker:
        if self._tracker is None:
            self._tracker = ConflictTracker(num_scales, self.config)
        self._tracker.grow(num_scales)
        return self._tracker

    def _all_finite(self, finite: Tensor, loss: Tensor | float | None) -> bool:
        ok = finite.reshape(()).to(torch.float32)
        if loss is not None:
            loss_tensor = loss.detach() if isinstance(loss, Tensor) else torch.tensor(float(loss))
            ok = ok * torch.isfinite(loss_tensor.float()).all().to(ok.device, torch.float32)
        if _distributed():
            # every rank must skip together, or the next collective (DDP, conflict stats) hangs
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        return bool(ok > 0)

    def _skip(self, which: str) -> None:
        self.skipped_steps += 1
        warnings.warn(f"GAQATOptimizer skipped a step: non-finite loss or gradient in the {which} pass "
                      f"(parameters and optimizer state unchanged; {self.skipped_steps} skipped so far)",
                      RuntimeWarning, stacklevel=3)

    # -- replay, report, hooks -----------------------------------------------------------
    def set_replay(self, replay: Closure | None) -> None:
        """Install the closure used when ``step()`` is called without one (``None`` removes it).

        For integrations whose loop calls ``optimizer.step()`` with no
        arguments (e.g. a ``transformers.Trainer`` callback): ``replay`` must
        re-run forward + backward of the step's data and return the loss.

        Examples:
            >>> w = torch.nn.Parameter(torch.ones(1))
            >>> opt = GAQATOptimizer(torch.optim.SGD([w], lr=0.1))
            >>> opt.set_replay(lambda: (w ** 2).sum().backward())
            >>> opt.step(); round(w.item(), 4)
            0.79
        """
        if replay is not None and not callable(replay):
            raise TypeError(f"replay must be a callable that runs forward + backward, got {type(replay).__name__}")
        self._replay = replay

    @property
    def steps(self) -> int:
        """Completed (not skipped) GAQAT steps."""
        return self._tracker.steps if self._tracker is not None else 0

    def freeze_report(self) -> list[ScaleStatus]:
        """Per quantizer scale: role, disorder, frozen flag, frozen steps (see :class:`ScaleStatus`).

        Examples:
            >>> GAQATOptimizer(torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)).freeze_report()
            []
        """
        scales = self._scales()
        tracker = self._conflict_tracker(len(scales))
        return tracker.report([scale_role(p) or "" for p in scales])

    def register_freeze_hook(self, hook: FreezeHook) -> RemovableHandle:
        """Call ``hook(optimizer, freeze_report)`` after every step that made a freeze decision.

        Examples:
            >>> opt = GAQATOptimizer(torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1))
            >>> handle = opt.register_freeze_hook(lambda opt, report: print(len(report)))
            >>> handle.remove()
        """
        handle = RemovableHandle(self._freeze_hooks)
        self._freeze_hooks[handle.id] = hook
        return handle

    # -- checkpointing -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """The base optimizer's state_dict plus a ``"gaqat"`` entry (windows, freeze flags, counters).

        Examples:
            >>> opt = GAQATOptimizer(torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1))
            >>> sorted(opt.state_dict()["gaqat"])
            ['config', 'skipped_steps', 'tracker']
        """
        state = self.base.state_dict()
        state["gaqat"] = {
            "config": self.config.to_dict(),
            "skipped_steps": self.skipped_steps,
            "tracker": self._tracker.state_dict() if self._tracker is not None else None,
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        """Load what :meth:`state_dict` saved (a plain base state_dict also loads, with fresh GAQAT state).

        Examples:
            >>> opt = GAQATOptimizer(torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1))
            >>> opt.load_state_dict(opt.state_dict())
        """
        state_dict = dict(state_dict)
        gaqat = state_dict.pop("gaqat", None)
        self.base.load_state_dict(state_dict)
        self._pending = None
        self._tracker = None
        self.skipped_steps = 0
        if gaqat is None:
            return
        self.skipped_steps = int(gaqat.get("skipped_steps", 0))
        if gaqat.get("tracker") is not None:
            tracker = ConflictTracker(gaqat["tracker"]["window"].shape[0], self.config)
            tracker.load_state_dict(gaqat["tracker"])
            self._tracker = tracker
