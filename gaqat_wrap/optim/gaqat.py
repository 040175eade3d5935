"""GAQATOptimizer: a SAM-family step with conflict-aware freezing of quantizer step sizes.

The step, in the order and with the symbols of ``docs/concepts/gaqat.md``:

1. g0 = ∇L(θ) (first pass); g0 is kept for every step size.
2. ε from g0 over the perturbed parameters (SAM / ASAM / SAGM strategy), θ ← θ + ε.
3. g1 = ∇L(θ + ε) (second pass, inside :func:`gaqat_wrap.second_pass`).
4. θ restored by copy.
5. Per step size: g_task = g0, g_smooth = g1 − g0, statistics, conflict flag, window.
6. Step sizes with disorder >= τ are frozen for the update.
7. Update direction d(g0, g1) and base optimizer step.

Examples:
    >>> import torch
    >>> from gaqat_wrap import quantize_model
    >>> model = quantize_model(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 2)))
    >>> opt = GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model=model, sam_rho=0.05, window=2)
    >>> x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    >>> def closure():
    ...     loss = torch.nn.functional.cross_entropy(model(x), y)
    ...     loss.backward()
    ...     return loss
    >>> loss = opt.step(closure)
    >>> [s.role for s in opt.freeze_report()], opt.steps
    (['1.weight', '1.input'], 1)
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from gaqat_wrap.caller_warnings import warn_at_caller
from gaqat_wrap.optim.config import RHO_GROUP_KEY, GAQATConfig, is_finite_number
from gaqat_wrap.optim.conflict import ConflictTracker, ScaleStatus, conflict_flags, cosine, scale_grad_conflict
from gaqat_wrap.optim.null import null_generator, random_perturbations
from gaqat_wrap.optim.snapshot import BufferSnapshot
from gaqat_wrap.optim.strategies import strategy_for
from gaqat_wrap.quant.param_groups import STEP_SIZE_ROLES_KEY
from gaqat_wrap.quant.quantizer import step_sizes
from gaqat_wrap.second_pass import protect_running_stats, second_pass

Closure = Callable[[], Any]
FreezeHook = Callable[["GAQATOptimizer", list[ScaleStatus]], None]

MOSTLY_FROZEN = 0.9
"""Share of frozen scales at a freeze decision above which the optimizer warns (once)."""

FAST_SCALE_LR = 0.5
"""An Adam-family learning rate at least this fraction of the smallest step size it updates draws a warning."""

DEAD_CHANNEL_SCALE = 1e-4
"""A per-channel step size below this fraction of its tensor's median belongs to a dead channel (weights all about
zero, as in pretrained EfficientNets): the learning-rate warning leaves it out, since nothing it quantizes can clip."""

SUPPORTED_ENGINES = "a single process or DistributedDataParallel (accelerate launch --multi_gpu, torchrun + DDP)"

_GRAD_SCALER_ERROR = (
    "GAQATOptimizer does not support an fp16 GradScaler: the second backward's gradients would stay scaled and "
    "unchecked for inf. Train in bf16 instead (torch.autocast(device_type, dtype=torch.bfloat16), or "
    "Accelerator(mixed_precision='bf16')), which needs no GradScaler, or in fp32."
)


class FirstPassDone:
    """A closure that runs the *second* pass only: the first pass's gradients are already in ``.grad``.

    ``optimizer.step(closure)`` runs both passes itself and refuses to start when
    gradients are already present. After gradient accumulation (or any first pass you
    ran yourself), wrap the closure that replays the step's data:
    ``optimizer.step(FirstPassDone(replay))``. Accelerate's optimizer wrapper forwards it
    unchanged.

    Examples:
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> opt = GAQATOptimizer(torch.optim.SGD([w], lr=0.1), freeze_threshold=None)
        >>> (w ** 2).sum().backward()                      # the first pass, done by the caller
        >>> _ = opt.step(FirstPassDone(lambda: (w ** 2).sum().backward()))   # the second pass only
        >>> [round(v, 4) for v in w.tolist()]             # 1 - 0.1 * g1, g1 = 2 (1 + 0.05 / sqrt(2))
        [0.7929, 0.7929]
    """

    def __init__(self, closure: Closure) -> None:
        if not callable(closure):
            raise TypeError(f"FirstPassDone wraps a callable that runs forward + backward, got {type(closure).__name__}")
        self.closure = closure

    def __call__(self) -> Any:
        return self.closure()


@dataclass
class _Pending:
    """What :meth:`GAQATOptimizer.first_step` leaves for :meth:`~GAQATOptimizer.second_step`."""

    perturbed: list[Tensor]
    backup: list[Tensor]
    scales: list[Tensor]
    roles: list[str]
    g0_scales: Tensor
    measured: list[bool]
    g0_all: dict[Tensor, Tensor]
    finite: Tensor
    epsilon_norms: list[Tensor] | None = None
    null_scales: Tensor | None = None
    null_measured: list[bool] | None = None


class _Unset:
    """Marks an argument that was not passed (``freeze_threshold=None`` means "never freeze")."""

    def __repr__(self) -> str:
        return "0.5"


UNSET = _Unset()


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _sharded_engine(param: Tensor) -> str | None:
    """The name of the sharding engine that owns ``param`` (FSDP, FSDP2 / DTensor, DeepSpeed ZeRO), else None."""
    try:
        from torch.distributed.fsdp._flat_param import FlatParameter
    except ImportError:  # pragma: no cover - torch built without distributed
        FlatParameter = ()
    if FlatParameter and isinstance(param, FlatParameter):
        return "FSDP (FlatParameter)"
    if any(c.__name__ == "DTensor" for c in type(param).__mro__):
        return "FSDP2 / tensor parallel (DTensor)"
    if hasattr(param, "ds_id") or hasattr(param, "ds_numel"):
        return "DeepSpeed ZeRO"
    return None


def _check_engine(params: Iterable[Tensor], model: nn.Module | None) -> None:
    """Refuse sharded parameters, parameters on several devices, and ``nn.DataParallel``, each with its reason."""
    devices = set()
    for param in params:
        engine = _sharded_engine(param)
        if engine is not None:
            raise NotImplementedError(
                f"GAQATOptimizer does not support {engine}: the SAM perturbation needs the global gradient norm and the "
                f"scale-conflict statistics need whole step-size gradients. Supported: {SUPPORTED_ENGINES}.")
        devices.add(param.device)
    if len(devices) > 1:
        raise NotImplementedError(
            f"GAQATOptimizer got parameters on several devices ({', '.join(sorted(map(str, devices)))}); it supports "
            f"one device per process: {SUPPORTED_ENGINES}. Move the model to one device, or use one process per device.")
    if isinstance(model, nn.DataParallel):
        raise NotImplementedError(
            "GAQATOptimizer does not support nn.DataParallel: its replicas run the second pass in other threads, "
            f"where BatchNorm protection cannot see it. Use DistributedDataParallel ({SUPPORTED_ENGINES}).")


def _detached_loss(loss: Any, which: str) -> Tensor | float | None:
    """The closure's loss as a detached tensor or float; anything else is a clear error."""
    if loss is None or (isinstance(loss, float | int) and not isinstance(loss, bool)):
        return loss
    if isinstance(loss, Tensor):
        if loss.numel() != 1:
            raise TypeError(f"the closure must return the loss as a scalar, got a tensor of shape {tuple(loss.shape)} "
                            f"in the {which} pass")
        return loss.detach()
    raise TypeError(f"the closure must return the loss (a scalar tensor, a float or None), got {type(loss).__name__} "
                    f"in the {which} pass")


class GAQATOptimizer(Optimizer):
    """Wrap ``base`` (any ``torch.optim.Optimizer``) into a GAQAT step.

    ``param_groups``, ``state`` and ``defaults`` are the base optimizer's own
    objects, so LR schedulers, per-group keys (timm's ``lr_scale``, ``"sam_rho"``)
    and ``add_param_group`` keep working. Options are the fields of
    :class:`GAQATConfig` (pass ``config=`` or keywords, not both).

    The step sizes to watch are identified explicitly, by one of: ``model=`` (every
    step size of a model from :func:`gaqat_wrap.quantize_model`; it also protects
    the model's BatchNorm statistics from the second pass and lets a failed step
    restore them), ``scales=`` (a ``{role: Parameter}`` mapping such as
    :func:`gaqat_wrap.quant.step_sizes` returns), or base param groups built by
    :func:`gaqat_wrap.param_groups` (they carry the roles).

    Examples:
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = GAQATOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-3), model=model, sam_rho=0.1)
        >>> opt.param_groups is opt.base.param_groups, opt.config.sam_rho
        (True, 0.1)
    """

    # GradScaler then hands the step to us (with optimizer.grad_scale set) instead of unscaling once
    # and stepping; step() turns that into a clear error.
    _step_supports_amp_scaling = True

    def __init__(self, base: Optimizer, sam_rho: float | None = None, freeze_threshold: float | _Unset | None = UNSET,
                 *, config: GAQATConfig | None = None, model: nn.Module | None = None,
                 scales: Mapping[str, Tensor] | None = None, **options: Any) -> None:
        if not isinstance(base, Optimizer):
            raise TypeError(f"GAQATOptimizer wraps a torch.optim.Optimizer instance, got {type(base).__name__}; build "
                            "the base first, e.g. GAQATOptimizer(torch.optim.AdamW(model.parameters()), model=model)")
        if isinstance(base, GAQATOptimizer):
            raise TypeError("base is already a GAQATOptimizer; wrap the plain base optimizer once")
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if model is not None and scales is not None:
            raise TypeError("pass either model= or scales=, not both")
        _check_engine((p for group in base.param_groups for p in group["params"]), model)
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
            config = GAQATConfig.from_options(**options)
        self.base = base
        self.config = config
        self.strategy = strategy_for(config)
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._patch_step_function()
        self.model = model
        self._explicit_roles: dict[Tensor, str] = {}
        if model is not None:
            protect_running_stats(model)
            self._explicit_roles = {p: role for role, p in step_sizes(model).items()}
        elif scales is not None:
            self._explicit_roles = self._roles_from_mapping(scales)
        self._tracker: ConflictTracker | None = None
        self._pending: _Pending | None = None
        self._replay: Closure | None = None
        self._freeze_hooks: OrderedDict[int, FreezeHook] = OrderedDict()
        self._segments: tuple[tuple[int, ...], Tensor] | None = None
        self._completed_steps = 0
        self.skipped_steps = 0
        self._warned_mostly_frozen = False
        self._checked_scale_lr = False
        self._in_step = False
        if model is None and scales is None and not self._group_roles() and config.freeze_threshold is not None:
            warn_at_caller("GAQATOptimizer was not told which parameters are quantizer step sizes, so it measures no "
                           "conflicts and freezes nothing: pass model=model (or build the base optimizer on "
                           "gaqat_wrap.param_groups(model)), or freeze_threshold=None for plain SAM.", UserWarning)

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
        """Add a group to the base optimizer (its step sizes join the conflict tracking)."""
        _check_engine([*[p for g in self.param_groups for p in g["params"]], *param_group["params"]], None)
        self.base.add_param_group(param_group)
        if self.model is not None:
            self._explicit_roles = {p: role for role, p in step_sizes(self.model).items()}

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The base optimizer's ``zero_grad``."""
        self.base.zero_grad(set_to_none=set_to_none)

    # -- which parameters are step sizes -------------------------------------------------
    @staticmethod
    def _roles_from_mapping(scales: Mapping[str, Tensor]) -> dict[Tensor, str]:
        if not isinstance(scales, Mapping):
            raise TypeError("scales must map role names to step-size Parameters, e.g. gaqat_wrap.quant.step_sizes(model)")
        roles = {}
        for role, param in scales.items():
            if not isinstance(role, str) or not isinstance(param, Tensor):
                raise TypeError(f"scales must map str roles to Parameters, got {role!r}: {type(param).__name__}")
            roles[param] = role
        return roles

    def _group_roles(self) -> dict[Tensor, str]:
        roles = {}
        for group in self.param_groups:
            names = group.get(STEP_SIZE_ROLES_KEY)
            if names is None:
                continue
            if len(names) != len(group["params"]):
                raise ValueError(f"param group key {STEP_SIZE_ROLES_KEY!r} must name every parameter of its group "
                                 f"({len(group['params'])}), got {len(names)} names")
            roles.update(zip(group["params"], names, strict=True))
        return roles

    def _scale_roles(self) -> tuple[list[Tensor], list[str]]:
        """The step sizes among this optimizer's parameters, with their roles, in param-group order."""
        roles = {**self._group_roles(), **self._explicit_roles}
        scales, names = [], []
        for group in self.param_groups:
            for p in group["params"]:
                if p in roles:
                    scales.append(p)
                    names.append(roles[p])
        return scales, names

    def _scales(self) -> list[Tensor]:
        return self._scale_roles()[0]

    # -- the step ----------------------------------------------------------------------
    @torch.compiler.disable
    def step(self, closure: Closure | None = None) -> Any:  # type: ignore[override]
        """One GAQAT step; ``closure`` runs forward + backward and returns the loss.

        The contract (``docs/concepts/gaqat.md``, "The step contract"):

        * ``step(closure)`` runs **both** passes itself. It refuses to start when
          gradients are already present (zero-filled ones included): call
          ``zero_grad()`` first, or, when those gradients are your first pass
          (gradient accumulation), pass ``FirstPassDone(replay)``.
        * ``step(FirstPassDone(replay))`` and ``step()`` with a replay installed by
          :meth:`set_replay` run the second pass only, on the gradients present.

        A closure that computes no gradient is an error. An exception anywhere in the
        step (a failing closure, an OOM, Ctrl-C) restores the parameters and, with
        ``model=``, the BatchNorm and quantizer buffers bit-identically, then
        re-raises; the optimizer stays usable. A non-finite loss or gradient skips
        the step with the same restoration (see :attr:`skipped_steps`).
        Returns the first pass's loss when the closure ran it, else the second pass's.
        Under ``torch.compile`` the step runs eagerly (a graph break; see "Host reads" in
        ``docs/concepts/gaqat.md``); compile the model to compile the passes.

        Examples:
            >>> w = torch.nn.Parameter(torch.ones(2))
            >>> opt = GAQATOptimizer(torch.optim.SGD([w], lr=0.1), freeze_threshold=None)
            >>> float(opt.step(lambda: (w ** 2).sum().backward() or (w ** 2).sum().detach()))
            2.0
        """
        self._refuse_grad_scaler()
        self._refuse_unsynchronised_processes()
        first_pass_done = isinstance(closure, FirstPassDone)
        if closure is None:
            closure, first_pass_done = self._replay, True
            if closure is None:
                raise RuntimeError("GAQATOptimizer.step needs a closure that runs forward + backward and returns the "
                                   "loss (step(closure)); it evaluates the loss twice. For hand-written loops use "
                                   "first_step() / second_step(); a Trainer integration can install one with set_replay(fn)")
        elif not callable(closure):
            raise TypeError(f"closure must be callable, got {type(closure).__name__}")
        if self._pending is not None:
            raise RuntimeError("step() was called between first_step() and second_step(); finish that step with "
                               "second_step() or drop it with abandon_step()")
        present = self._has_gradients()
        if first_pass_done and not present:
            raise RuntimeError("step() was told the first pass is done (FirstPassDone or an installed replay) but no "
                               "parameter has a gradient: run the first forward + backward before the step, or call "
                               "step(closure) to run both passes")
        if not first_pass_done and present:
            raise RuntimeError("step(closure) runs both passes itself, but gradients are already present (zero-filled "
                               "ones count too: zero_grad(set_to_none=False) leaves them). Call optimizer.zero_grad() "
                               "before the step; or, when these gradients are your first pass (gradient accumulation), "
                               "call optimizer.step(FirstPassDone(replay)). Nothing was changed.")
        snapshot = BufferSnapshot(self.model) if self.model is not None else None
        loss = second_loss = None
        try:
            if not first_pass_done:
                with torch.enable_grad():
                    loss = _detached_loss(closure(), "first")
                if not self._has_gradients():
                    raise RuntimeError("the closure computed no gradient in the first pass: it must call "
                                       "loss.backward() (or accelerator.backward(loss)) and return the loss")
            if self._single_pass():
                done = self._base_step(loss)
            else:
                self._in_step = True
                self.first_step(loss=loss)
                with second_pass(), torch.enable_grad():
                    second_loss = _detached_loss(closure(), "second")
                if self._pending is not None and self._pending.epsilon_norms is not None:
                    self._null_pass(closure)
                done = self.second_step(loss=second_loss)
        except BaseException:
            self.abandon_step()
            if snapshot is not None:
                snapshot.restore()
            raise
        finally:
            self._in_step = False
        if not done and snapshot is not None:
            snapshot.restore()
        return loss if loss is not None else second_loss

    def _single_pass(self) -> bool:
        """ρ = 0 in every group: the step is the bare base optimizer's (no second pass)."""
        return all(self._group_rho(group) == 0 for group in self.param_groups)

    def _group_rho(self, group: dict[str, Any]) -> float:
        rho = group.get(RHO_GROUP_KEY, self.config.sam_rho)
        if not is_finite_number(rho) or rho < 0:
            raise ValueError(f"param group {RHO_GROUP_KEY!r} must be a finite number >= 0, got {rho!r}")
        return rho

    @torch.no_grad()
    def _base_step(self, loss: Tensor | float | None) -> bool:
        """ρ = 0: one pass; the base optimizer steps on g0 (still skipped when it is not finite)."""
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not bool(self._agreed(self._finite(grads, loss))):
            self.zero_grad(set_to_none=True)
            self._skip("first")
            return False
        self.base.step()
        self._completed_steps += 1
        self.zero_grad(set_to_none=True)
        return True

    @torch.compiler.disable
    @torch.no_grad()
    def first_step(self, loss: Tensor | float | None = None) -> None:
        """Steps 1-2: keep g0 on the step sizes, move the perturbed parameters to θ + ε.

        Call after the first backward; it clears the gradients. Run the second
        forward + backward inside ``with gaqat_wrap.second_pass():`` and then
        call :meth:`second_step`. Nothing is read back to the host: a non-finite
        g0 or loss is detected in :meth:`second_step`, which then skips the step.

        Examples:
            >>> w = torch.nn.Parameter(torch.ones(2))
            >>> opt = GAQATOptimizer(torch.optim.SGD([w], lr=0.1), sam_rho=0.5, freeze_threshold=None)
            >>> (w ** 2).sum().backward()
            >>> opt.first_step(); w.tolist()
            [1.3535534143447876, 1.3535534143447876]
        """
        if self._pending is not None:
            raise RuntimeError("first_step() was called twice without second_step(); call second_step() after the "
                               "second backward, or abandon_step() to drop the unfinished step")
        params, rhos = [], []
        for group in self.param_groups:
            rho = self._group_rho(group)
            for p in group["params"]:
                if p.grad is not None:
                    params.append(p)
                    rhos.append(rho)
        if not params:
            raise RuntimeError("first_step() found no gradient: run the first forward + backward before it")
        calibrated = self.config.metric == "calibrated"
        if calibrated and not self._in_step:
            raise RuntimeError("metric='calibrated' runs a third, random-direction pass that needs the closure: use "
                               "optimizer.step(closure) (or step(FirstPassDone(replay))) instead of first_step()/second_step()")
        null_step = calibrated and self._completed_steps % self.config.null_every == 0
        # 1. g0: its finiteness, and a copy of the step sizes' part.
        finite = self._finite([p.grad for p in params], loss)
        scales, roles = self._scale_roles()
        g0_scales, measured = self._flat_scale_grads(scales)
        g0_all = {p: p.grad.clone() for p in params} if self.strategy.keeps_first_gradient else {}
        # 2. ε over the perturbed parameters; a group with ρ = 0 is not perturbed. A non-finite g0 gives a
        # non-finite θ + ε for the second pass only: θ is restored by copy and second_step skips the step.
        is_scale = set(scales)
        eligible = [(p, rho) for p, rho in zip(params, rhos, strict=True)
                    if self.config.perturb_scales or p not in is_scale]
        perturbed, backup, norms = [], [], []
        epsilons = self.strategy.perturbations([p for p, _ in eligible], [rho for _, rho in eligible])
        for (p, rho), e in zip(eligible, epsilons, strict=True):
            if rho > 0:
                backup.append(p.detach().clone())
                perturbed.append(p)
                if null_step:
                    norms.append(torch.linalg.vector_norm(e))
                p.add_(e)
        self._pending = _Pending(perturbed, backup, scales, roles, g0_scales, measured, g0_all, finite,
                                 epsilon_norms=norms if null_step else None)
        self.zero_grad(set_to_none=True)

    @torch.compiler.disable
    @torch.no_grad()
    def second_step(self, zero_grad: bool = True, loss: Tensor | float | None = None) -> bool:
        """Steps 3-7: restore θ, measure conflicts, freeze, update direction, base step.

        Returns False when the step was skipped (a non-finite loss or gradient in
        either pass): parameters are then exactly as before ``first_step``. Gradients
        are cleared afterwards (``zero_grad=True``). Reads one value back to the host
        per step (the finiteness decision; at freeze decisions, the new frozen flags
        with it).

        Examples:
            >>> w = torch.nn.Parameter(torch.ones(2))
            >>> opt = GAQATOptimizer(torch.optim.SGD([w], lr=0.1), sam_rho=0.5, freeze_threshold=None)
            >>> (w ** 2).sum().backward(); opt.first_step()
            >>> (w ** 2).sum().backward(); opt.second_step()
            True
            >>> [round(v, 4) for v in w.tolist()]
            [0.7293, 0.7293]
        """
        pending = self._pending
        if pending is None:
            raise RuntimeError("second_step() was called without first_step(); call first_step() after the first "
                               "backward")
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            self.abandon_step()
            raise RuntimeError("no parameter has a gradient after the second pass: the closure must call "
                               "loss.backward() every time it runs (the step was abandoned, θ restored)")
        self._pending = None
        second_finite = self._finite(grads, loss)
        if pending.null_scales is not None:   # the null pass counts as part of the second pass
            second_finite = second_finite & torch.isfinite(pending.null_scales).all()
        finite = self._agreed(torch.stack([pending.finite, second_finite]))   # (first pass, second pass)
        # 4. restore θ by copy (exact in any dtype, drops NaN)
        if pending.perturbed:
            torch._foreach_copy_(pending.perturbed, pending.backup)
        # 5. g_task, g_smooth -> statistics -> flags -> proposed window update
        tracker = self._conflict_tracker(pending.roles, pending.g0_scales.device)
        g1_scales, measured1 = self._flat_scale_grads(pending.scales)
        measured = [a and b for a, b in zip(pending.measured, measured1, strict=True)]
        flags = cosines = null_cosines = None
        if pending.scales:
            segments = self._segment_ids(pending.scales)
            stats = scale_grad_conflict(pending.g0_scales, g1_scales - pending.g0_scales, segments, len(pending.scales))
            cosines = cosine(stats)
            if pending.null_scales is not None:
                null_stats = scale_grad_conflict(pending.g0_scales, pending.null_scales - pending.g0_scales, segments,
                                                 len(pending.scales))
                null_cosines = cosine(null_stats)
            null_mean = tracker.null_mean() if null_cosines is None else None
            flags = conflict_flags(stats, self.config.metric, null_mean)
        else:
            flags = torch.zeros(0, dtype=torch.bool, device=tracker.device)
        null_measured = None
        if pending.null_measured is not None:
            null_measured = [a and b for a, b in zip(pending.measured, pending.null_measured, strict=True)]
        proposal = tracker.propose(flags, measured, cosines=cosines, null_cosines=null_cosines,
                                   null_measured=null_measured)
        # The one host read of the step: skip or not, and (at a decision) the new frozen flags with it.
        read = finite if proposal.frozen is None else torch.cat([finite, proposal.frozen.to(finite.device)])
        values = read.tolist()
        passes, frozen = values[:2], values[2:] if proposal.frozen is not None else None
        if not all(passes):
            self.zero_grad(set_to_none=True)
            self._skip("first" if not passes[0] else "second")   # a bad g0 makes θ + ε, and so g1, bad too
            return False
        # 6. record and freeze
        tracker.commit(proposal, frozen)
        # 7. update direction, frozen step sizes lose their gradient (or its smooth part), base step
        for p, g0 in pending.g0_all.items():
            self.strategy.set_direction(p, g0)
        self._freeze(pending, tracker.frozen)
        self._check_scale_lr(pending.scales)
        self.base.step()
        self._completed_steps += 1
        if zero_grad:
            self.zero_grad(set_to_none=True)
        if proposal.decided:
            self._after_decision(tracker)
        return True

    @torch.no_grad()
    def abandon_step(self) -> None:
        """Drop a step begun with :meth:`first_step`: θ is restored by copy and gradients are cleared.

        ``step()`` calls it when anything inside the step raises; call it yourself in a
        hand-written loop when the second pass failed.

        Examples:
            >>> w = torch.nn.Parameter(torch.ones(1))
            >>> opt = GAQATOptimizer(torch.optim.SGD([w], lr=0.1), sam_rho=0.5, freeze_threshold=None)
            >>> (2 * w).sum().backward(); opt.first_step(); w.item() != 1.0
            True
            >>> opt.abandon_step(); w.item(), w.grad
            (1.0, None)
        """
        pending, self._pending = self._pending, None
        if pending is not None and pending.perturbed:
            torch._foreach_copy_(pending.perturbed, pending.backup)
        self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def _null_pass(self, closure: Closure) -> None:
        """The calibrated metric's null: the step sizes' gradient at θ + a random ε of the same per-parameter norm.

        Runs between the second pass and :meth:`second_step`; g1 is set aside and put back, θ is
        restored by ``second_step`` as usual.
        """
        pending = self._pending
        assert pending is not None and pending.epsilon_norms is not None
        params = [p for group in self.param_groups for p in group["params"]]
        g1 = [p.grad for p in params]
        for p in params:
            p.grad = None
        if pending.perturbed:
            generator = null_generator(pending.perturbed[0].device, self.config.null_seed, self._completed_steps)
            directions = random_perturbations(pending.perturbed, pending.epsilon_norms, generator)
            for p, start, e in zip(pending.perturbed, pending.backup, directions, strict=True):
                p.copy_(start).add_(e)
        with second_pass(), torch.enable_grad():
            closure()
        pending.null_scales, pending.null_measured = self._flat_scale_grads(pending.scales)
        for p, g in zip(params, g1, strict=True):
            p.grad = g

    def _freeze(self, pending: _Pending, frozen: list[bool]) -> None:
        """Frozen step sizes lose their whole gradient (``"all"``) or keep only g_task = g0 (``"smooth"``)."""
        if not any(frozen):
            return
        start = 0
        for p, is_frozen in zip(pending.scales, frozen, strict=True):
            numel = p.numel()
            if is_frozen:
                if self.config.freeze_mode == "all":
                    p.grad = None
                else:
                    p.grad = pending.g0_scales[start:start + numel].view_as(p).to(p.dtype).clone()
            start += numel

    def _after_decision(self, tracker: ConflictTracker) -> None:
        self._warn_if_mostly_frozen(tracker.frozen)
        if self._freeze_hooks:
            report = self.freeze_report()
            for hook in list(self._freeze_hooks.values()):
                hook(self, report)

    def _warn_if_mostly_frozen(self, frozen: list[bool]) -> None:
        """Warn once when a freeze decision leaves at least :data:`MOSTLY_FROZEN` of (4 or more) scales frozen."""
        if self._warned_mostly_frozen or len(frozen) < 4:
            return
        share = sum(frozen) / len(frozen)
        if share >= MOSTLY_FROZEN:
            self._warned_mostly_frozen = True
            remedy = ("compare with freeze_threshold=None (LSQ + SAM) on validation"
                      if self.config.metric == "calibrated" else
                      "try metric='calibrated', which tests each scale against a random-direction null, and compare "
                      "with freeze_threshold=None (LSQ + SAM) on validation")
            warn_at_caller(f"GAQATOptimizer froze {share:.0%} of the {len(frozen)} quantizer scales at step "
                           f"{self.steps}: the conflict test fires for almost every scale, which happens when the "
                           "gradient at θ + ε is nearly unrelated to the gradient at θ (a rough quantized loss surface), "
                           "not only when sharpness and task loss disagree. Then freezing carries no sharpness "
                           f"information for this model: {remedy}. See 'When almost every scale freezes' in the "
                           "GAQAT docs (warned once per optimizer).")

    def _check_scale_lr(self, scales: list[Tensor]) -> None:
        """Warn once when an Adam-family learning rate is close to the size of the step sizes it updates."""
        if self._checked_scale_lr or not scales:
            return
        self._checked_scale_lr = True
        ids = {id(p) for p in scales}
        for group in self.param_groups:
            group_scales = [p for p in group["params"] if id(p) in ids]
            if not group_scales or "betas" not in group:
                continue
            smallest_live, dead_channels = _smallest_live_step_size(group_scales)
            smallest = float(smallest_live)
            lr = float(group["lr"])
            if lr >= FAST_SCALE_LR * smallest:
                dead = int(dead_channels)  # read only when warning
                ignored = (f" (leaving out {dead} step size{'s' * (dead > 1)} of dead channels, whose weights are all "
                           "about zero)") if dead else ""
                warn_at_caller(
                    f"an Adam-family optimizer moves every parameter by about lr = {lr:g} per step, while the smallest "
                    f"quantizer step size it updates is {smallest:.3g}{ignored}: a step size can double or collapse in "
                    "one step and clip many weights. Give the step sizes their own, smaller learning rate, e.g. "
                    "gaqat_wrap.param_groups(model, scale_lr=1e-5) (see 'Learning rate of the step sizes' in the "
                    "troubleshooting docs; warned once per optimizer).")
                return

    # -- helpers -------------------------------------------------------------------------
    def _has_gradients(self) -> bool:
        return any(p.grad is not None for group in self.param_groups for p in group["params"])

    def _flat_scale_grads(self, scales: list[Tensor]) -> tuple[Tensor, list[bool]]:
        """All step sizes' gradients flattened into one float32 tensor, and which of them had one."""
        measured = [p.grad is not None for p in scales]
        if not scales:
            return torch.zeros(0), measured
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1).float()
                          for p in scales])
        return flat, measured

    def _segment_ids(self, scales: list[Tensor]) -> Tensor:
        numels = tuple(p.numel() for p in scales)
        device = scales[0].device
        if self._segments is None or self._segments[0] != numels or self._segments[1].device != device:
            ids = torch.repeat_interleave(torch.arange(len(numels), device=device), torch.tensor(numels, device=device),
                                          output_size=sum(numels))   # known size: no read-back
            self._segments = (numels, ids)
        return self._segments[1]

    def _conflict_tracker(self, roles: list[str], device: torch.device) -> ConflictTracker:
        if self._tracker is None:
            self._tracker = ConflictTracker(roles, self.config, device)
        if self._tracker.device != device:
            self._tracker.to(device)
        self._tracker.align(roles)
        return self._tracker

    @staticmethod
    def _finite(grads: list[Tensor], loss: Tensor | float | None) -> Tensor:
        """A 0-d bool tensor on the gradients' device: every gradient and the loss are finite (no host read)."""
        if grads:
            norms = torch._foreach_norm(grads)
            device = norms[0].device
            finite = torch.isfinite(torch.stack([n.to(device) for n in norms]).sum())
        else:
            finite = torch.tensor(True)
        if isinstance(loss, Tensor):
            finite = finite & torch.isfinite(loss.float()).all().to(finite.device)
        elif loss is not None and not is_finite_number(float(loss)):
            finite = torch.zeros_like(finite)
        return finite

    @staticmethod
    def _agreed(finite: Tensor) -> Tensor:
        """Under DDP, finite on every rank (a MIN all-reduce on the device): all ranks skip a step together,
        or the next collective would hang."""
        if not _distributed():
            return finite
        flags = finite.to(torch.float32)
        dist.all_reduce(flags, op=dist.ReduceOp.MIN)
        return flags > 0

    def _skip(self, which: str) -> None:
        self.skipped_steps += 1
        warn_at_caller(f"GAQATOptimizer skipped a step: non-finite loss or gradient in the {which} pass (parameters, "
                       "optimizer state"
                       f"{' and BatchNorm / quantizer buffers' if self.model is not None else ''} unchanged; "
                       f"{self.skipped_steps} skipped so far)")

    def _refuse_grad_scaler(self) -> None:
        if getattr(self, "grad_scale", None) is not None or getattr(self, "found_inf", None) is not None:
            # GradScaler deletes these after a successful step only: leave the optimizer usable for plain steps.
            for name in ("grad_scale", "found_inf"):
                self.__dict__.pop(name, None)
            raise RuntimeError(_GRAD_SCALER_ERROR)

    @staticmethod
    def _refuse_unsynchronised_processes() -> None:
        world = os.environ.get("WORLD_SIZE", "1")
        if world.isdigit() and int(world) > 1 and not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                f"this process was launched as one of {world} (WORLD_SIZE={world}) but no torch.distributed process "
                "group exists, so every process would train its own, unsynchronised model. With Accelerate on a "
                "machine without GPUs, create the Accelerator with cpu=True (`accelerate launch --multi_gpu` then runs "
                "DDP over gloo); with torchrun, call torch.distributed.init_process_group and wrap the model in DDP.")

    # -- replay, report, hooks -----------------------------------------------------------
    def set_replay(self, replay: Closure | None) -> None:
        """Install the second-pass closure used when ``step()`` is called without one (``None`` removes it).

        For integrations whose loop runs the first pass itself and then calls
        ``optimizer.step()`` with no arguments (a ``transformers.Trainer``
        callback): ``replay`` must re-run forward + backward of the step's data and
        return the loss. ``step()`` then expects the first pass's gradients to be present.

        Examples:
            >>> w = torch.nn.Parameter(torch.ones(1))
            >>> opt = GAQATOptimizer(torch.optim.SGD([w], lr=0.1), freeze_threshold=None)
            >>> opt.set_replay(lambda: (w ** 2).sum().backward())
            >>> (w ** 2).sum().backward(); opt.step(); round(w.item(), 4)
            0.79
        """
        if replay is not None and not callable(replay):
            raise TypeError(f"replay must be a callable that runs forward + backward, got {type(replay).__name__}")
        self._replay = replay

    @property
    def steps(self) -> int:
        """Completed (not skipped) steps."""
        return self._completed_steps

    def freeze_report(self) -> list[ScaleStatus]:
        """Per quantizer scale: role, disorder, frozen flag, frozen steps (see :class:`ScaleStatus`).

        Reads the tracker's device state back to the host: call it for logging, not every step.

        Examples:
            >>> model = torch.nn.Linear(2, 2)
            >>> GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model=model).freeze_report()
            []
        """
        scales, roles = self._scale_roles()
        device = scales[0].device if scales else torch.device("cpu")
        return self._conflict_tracker(roles, device).report()

    def register_freeze_hook(self, hook: FreezeHook) -> RemovableHandle:
        """Call ``hook(optimizer, freeze_report)`` after every step that made a freeze decision.

        Examples:
            >>> model = torch.nn.Linear(2, 2)
            >>> opt = GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model=model)
            >>> seen = []
            >>> handle = opt.register_freeze_hook(lambda opt, report: seen.append(len(report)))
            >>> handle.remove(); len(opt._freeze_hooks)
            0
        """
        handle = RemovableHandle(self._freeze_hooks)
        self._freeze_hooks[handle.id] = hook
        return handle

    # -- checkpointing -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """The base optimizer's state_dict plus a ``"gaqat"`` entry (config, windows by role, freeze flags, counters).

        Examples:
            >>> model = torch.nn.Linear(2, 2)
            >>> opt = GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model=model)
            >>> sorted(opt.state_dict()["gaqat"])
            ['config', 'skipped_steps', 'steps', 'tracker']
        """
        state = self.base.state_dict()
        state["gaqat"] = {
            "config": self.config.to_dict(),
            "steps": self._completed_steps,
            "skipped_steps": self.skipped_steps,
            "tracker": self._tracker.state_dict() if self._tracker is not None else None,
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        """Load what :meth:`state_dict` saved; a plain base state_dict also loads, with fresh GAQAT state.

        Refused (``ValueError``, nothing changed) when the saved GAQAT options differ from
        this optimizer's, or the saved step-size roles are not among this optimizer's.

        Examples:
            >>> model = torch.nn.Linear(2, 2)
            >>> opt = GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model=model)
            >>> opt.load_state_dict(opt.state_dict()); opt.steps
            0
        """
        state_dict = dict(state_dict)
        gaqat = state_dict.pop("gaqat", None)
        tracker = None
        if gaqat is not None:
            differences = self.config.differences(gaqat.get("config", {}))
            if differences:
                listed = ", ".join(f"{name}: saved {saved!r}, here {mine!r}" for name, (saved, mine) in differences.items())
                raise ValueError(f"the checkpoint was saved by a GAQATOptimizer with other options ({listed}); build "
                                 "the optimizer with the saved options (GAQATConfig(**state['gaqat']['config'])) to "
                                 "resume, or delete state['gaqat'] to start the GAQAT state afresh")
            if gaqat.get("tracker") is not None:
                tracker = self._tracker_from_state(gaqat["tracker"])
        self.base.load_state_dict(state_dict)
        self._pending = None
        self._tracker = tracker
        self.skipped_steps = int(gaqat.get("skipped_steps", 0)) if gaqat else 0
        self._completed_steps = int(gaqat.get("steps", tracker.steps if tracker else 0)) if gaqat else 0

    def _tracker_from_state(self, saved: dict[str, Any]) -> ConflictTracker:
        scales, roles = self._scale_roles()
        if "roles" not in saved:
            raise ValueError("this checkpoint's conflict state has no step-size roles (saved by gaqat-wrap 0.1); it "
                             "cannot be matched to step sizes safely: delete state['gaqat']['tracker'] to resume "
                             "with fresh conflict windows")
        unknown = [role for role in saved["roles"] if role not in roles]
        if unknown:
            raise ValueError(f"the checkpoint tracks step sizes this optimizer does not have: {unknown[:5]}"
                             f"{' ...' if len(unknown) > 5 else ''} (this optimizer's: {roles[:5]}"
                             f"{' ...' if len(roles) > 5 else ''}); resume with the same model and param groups")
        device = scales[0].device if scales else torch.device("cpu")
        tracker = ConflictTracker.from_state_dict(saved, self.config, device)
        tracker.align(roles)
        return tracker


def _smallest_live_step_size(scales: list[Tensor]) -> tuple[Tensor, Tensor]:
    """The smallest step size in ``scales`` outside dead channels (see :data:`DEAD_CHANNEL_SCALE`) and how many
    dead ones were left out, as 0-d tensors (no read-back to the host). A scalar step size is its own median, so it
    is never dead.

    Examples:
        >>> smallest, dead = _smallest_live_step_size([torch.tensor([0.02, 1e-8, 0.03]), torch.tensor([1e-9])])
        >>> f"{float(smallest):.0e}", int(dead)   # the scalar 1e-9 is live (and the smallest), the 1e-8 channel dead
        ('1e-09', 1)
    """
    mins, dead = [], []
    for scale in scales:
        flat = scale.detach().abs().float().reshape(-1)
        is_dead = flat < DEAD_CHANNEL_SCALE * flat.median()
        mins.append(torch.where(is_dead, torch.inf, flat).min())
        dead.append(is_dead.sum())
    return torch.stack(mins).min(), torch.stack(dead).sum()
