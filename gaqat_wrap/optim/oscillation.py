"""OscillationFreezer: track oscillating weight integers and freeze them (Nagel et al., ICML 2022).

After every optimizer update, for each tracked weight with integer state
``q_t = clamp(round(w / s), Qn, Qp)`` (see :mod:`gaqat_wrap.optim.weight_integers`):

1. Δ_t = q_t − q_{t−1}. The weight *oscillates* at t when Δ_t ≠ 0 and its sign is opposite to the
   sign of the weight's previous non-zero Δ.
2. The frequency f is an EMA of that indicator, and the integer EMA an EMA of q_t (momentum m;
   the integer EMA starts at q_0).
3. Once the warm start is over, a weight with f > τ(t) is frozen for good at
   ``round(EMA of q)``: its Parameter is pinned to ``s * q_frozen`` after every update (so it
   follows its step size), and its gradient is zeroed as soon as it is accumulated, so SAM's ε,
   every update direction and the optimizer state skip it.

Nothing is changed in the layers' forward: the freezer registers a step pre-hook and post-hook
on the optimizer that really updates the weights (a :class:`~gaqat_wrap.optim.GAQATOptimizer`'s
base, an Accelerate wrapper's inner optimizer, or a plain torch optimizer itself), so skipped
GAQAT steps (non-finite loss or gradient) and GradScaler's skipped steps are not counted, and a
post-accumulate-grad hook on every pinnable weight.

Most weights keep their integer in a step, so the work is sparse: both EMAs are stored scaled by
``(1 − m)^−k`` (k steps since the last renormalisation), which makes their decay implicit;
only weights whose integer changed are touched. See ``docs/concepts/oscillations.md``.

Examples:
    >>> import torch
    >>> from gaqat_wrap import quantize_model
    >>> model = quantize_model(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 2)))
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> freezer = OscillationFreezer(model, optimizer, total_steps=100)
    >>> x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    >>> for _ in range(3):
    ...     loss = torch.nn.functional.cross_entropy(model(x), y) + freezer.dampening_loss()
    ...     loss.backward(); optimizer.step(); optimizer.zero_grad()
    >>> freezer.steps, [(s.role, s.weights, s.frozen) for s in freezer.report()]
    (3, [('1.weight', 64, 0)])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from gaqat_wrap.optim.config import check_positive_int
from gaqat_wrap.optim.dampening import layers_dampening_loss
from gaqat_wrap.optim.gaqat import GAQATOptimizer
from gaqat_wrap.optim.oscillation_config import OscillationConfig
from gaqat_wrap.optim.weight_integers import BLOCK_ELEMENTS, TrackedLayer, tracked_layers

RENORMALIZE_AT = 2.0 ** 20
"""The scaled EMAs are brought back to scale 1 when the implicit decay factor ``(1 − m)^−k`` exceeds this."""

TRACKED_ONLY = ("tracked only: the layer computes its effective weight from the Parameter (e.g. weight "
                "standardisation), so writing the Parameter cannot pin an integer")
"""The report's note for layers that are tracked but never frozen."""


@dataclass(frozen=True)
class OscillationStatus:
    """One layer in :meth:`OscillationFreezer.report`.

    Attributes:
        role: the layer's weight role (``"<layer path>.weight"``, as in :func:`gaqat_wrap.step_sizes`).
        bits: weight bits.
        weights: number of weights.
        frozen: weights frozen so far.
        oscillating: weights whose frequency exceeds ``freeze_threshold_final``.
        mean_frequency: mean oscillation frequency (frozen weights count as 0).
        max_frequency: largest oscillation frequency.
        note: empty for tracked, freezable layers; else why the layer is tracked only or not tracked.

    Examples:
        >>> OscillationStatus("fc.weight", 4, 10, 0, 0, 0.0, 0.0, "").frozen_share
        0.0
    """

    role: str
    bits: int
    weights: int
    frozen: int
    oscillating: int
    mean_frequency: float
    max_frequency: float
    note: str

    @property
    def frozen_share(self) -> float:
        """Frozen weights over all weights of the layer."""
        return self.frozen / self.weights if self.weights else 0.0


@dataclass
class _Pinned:
    """The frozen weights of one layer: flat positions, their index tuple, output channels, integers."""

    index: Tensor
    where: tuple[Tensor, ...]
    channel: Tensor
    integer: Tensor

    @classmethod
    def build(cls, layer: TrackedLayer, index: Tensor, integer: Tensor) -> _Pinned:
        shape = layer.weight.shape
        where = torch.unravel_index(index, shape)
        return cls(index, tuple(where), where[0], integer.to(torch.float32))


@dataclass
class _State:
    """Flat tracking state over all tracked weights (pinnable layers first)."""

    integer: Tensor      # q_{t}, int8 (int16 above 7 bits)
    direction: Tensor    # sign of the last non-zero Δ, int8
    frequency: Tensor    # scaled EMA of the oscillation indicator, float32
    ema_offset: Tensor   # scaled (EMA of q) − q, float32
    delta: Tensor        # scratch: Δ, same dtype as integer
    scratch: Tensor      # float32 scratch of one block of output channels (TrackedLayer.write_integers)
    decay_steps: int = 0

    def decay(self, momentum: float) -> float:
        """(1 − m)^k: multiply a scaled value by it to read the EMA."""
        return (1.0 - momentum) ** self.decay_steps


@contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run the enclosed CPU tensor ops on one intra-op thread (no-op on other devices or with one thread).

    The freezer's work is a few hundred small, memory-bound ops per update. On a CPU shared with
    other processes, every multi-threaded op waits for all its threads to be scheduled: measured on a
    loaded 2-core machine (resnet18, 11M tracked weights, interleaved), one update took 0.47 s of CPU
    time on two threads and 0.14 s on one.

    Examples:
        >>> with one_cpu_thread(torch.device("cpu")):
        ...     torch.get_num_threads()
        1
    """
    before = torch.get_num_threads()
    if device.type != "cpu" or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _update_optimizer(optimizer: Optimizer) -> Optimizer:
    """The optimizer whose ``step`` writes the weights: unwraps GAQATOptimizer (``.base``) and Accelerate (``.optimizer``)."""
    inner = optimizer
    while True:
        nested = inner.base if isinstance(inner, GAQATOptimizer) else getattr(inner, "optimizer", None)
        if not isinstance(nested, Optimizer) or nested is inner:
            return inner
        inner = nested


class OscillationFreezer:
    """Oscillation tracking, iterative freezing and annealed dampening for the quantized weights of ``model``.

    Build it once the model is quantized and the optimizer exists; the training loop stays as it
    is (add :meth:`dampening_loss` to the loss to use dampening). ``total_steps`` is the number of
    optimizer updates the run will make: the threshold and the dampening weight are annealed over
    it. Options are the :class:`~gaqat_wrap.optim.OscillationConfig` fields (or pass ``config=``).

    Works with plain torch optimizers, with :class:`~gaqat_wrap.optim.GAQATOptimizer` (every
    variant), under DDP (no collective: every rank sees the same weights and step sizes, so it
    makes the same decisions) and with Accelerate's optimizer wrapper. Costs two host reads per
    step while freezing is possible (one before), and about 11 bytes per tracked weight.

    Examples:
        >>> from gaqat_wrap import GAQATOptimizer, quantize_model
        >>> model = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)))
        >>> optimizer = GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model=model)
        >>> freezer = OscillationFreezer(model, optimizer, total_steps=1000, momentum=0.01, freeze_threshold_final=0.05)
        >>> freezer.threshold, round(freezer.dampening_weight, 3)   # warm start: nothing frozen yet
        (None, 0.0)
        >>> freezer.remove()
    """

    def __init__(self, model: nn.Module, optimizer: Optimizer, total_steps: int,
                 config: OscillationConfig | None = None, **options: Any) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer (or a GAQATOptimizer), got "
                            f"{type(optimizer).__name__}")
        check_positive_int("total_steps", total_steps)
        if config is not None and options:
            raise TypeError("pass either config=OscillationConfig(...) or options, not both")
        if config is None:
            config = OscillationConfig(**options)
        elif not isinstance(config, OscillationConfig):
            raise TypeError(f"config must be an OscillationConfig, got {type(config).__name__}")
        self.config = config
        self.total_steps = total_steps
        self.layers, self.skipped = tracked_layers(model, config.max_bits)
        if not self.layers:
            raise ValueError(f"no quantized layer of {type(model).__name__} has at most max_bits={config.max_bits} weight "
                             "bits: quantize the model first (gaqat_wrap.quantize_model), or raise max_bits")
        devices = {layer.weight.device for layer in self.layers}
        if len(devices) > 1:
            raise NotImplementedError(f"the tracked weights are on several devices ({sorted(map(str, devices))}); "
                                      "OscillationFreezer supports one device per process")
        self._by_role = {layer.role: layer for layer in self.layers}
        self._pinnable_numel = sum(layer.numel for layer in self.layers if layer.pinnable)
        self._state: _State | None = None
        self._pinned: dict[str, _Pinned] = {}
        self._steps = 0
        updater = _update_optimizer(optimizer)
        self._handles: list[RemovableHandle] = [updater.register_step_pre_hook(self._before_update),
                                                updater.register_step_post_hook(self._after_update)]
        for layer in self.layers:
            if layer.pinnable and layer.weight.requires_grad:
                self._handles.append(layer.weight.register_post_accumulate_grad_hook(self._grad_hook(layer.role)))

    # -- schedule ------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        """Optimizer updates seen (skipped GAQAT / GradScaler steps are not updates)."""
        return self._steps

    @property
    def threshold(self) -> float | None:
        """The current freezing threshold τ(steps); ``None`` during the warm start or without freezing."""
        return self.config.threshold_at(self._steps, self.total_steps)

    @property
    def dampening_weight(self) -> float:
        """The current dampening weight λ(steps)."""
        return self.config.dampening_at(self._steps, self.total_steps)

    def dampening_loss(self) -> Tensor:
        """λ(steps) times the dampening loss of the tracked layers; a 0-d zero (no graph) while λ = 0.

        Examples:
            >>> from gaqat_wrap import quantize_model
            >>> model = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)))
            >>> freezer = OscillationFreezer(model, torch.optim.SGD(model.parameters(), lr=0.1), total_steps=10,
            ...                              dampening=0.1, warm_start=0.0)
            >>> float(freezer.dampening_loss())   # λ(0) = 0
            0.0
        """
        weight = self.dampening_weight
        if weight == 0:
            return torch.zeros((), device=self.layers[0].weight.device)
        return weight * layers_dampening_loss(self.layers, self.config.dampening_reduction)

    # -- hooks ---------------------------------------------------------------------------
    def _grad_hook(self, role: str) -> Callable[[Tensor], None]:
        def zero_frozen(param: Tensor) -> None:
            pinned = self._pinned.get(role)
            if pinned is not None and param.grad is not None:
                param.grad.index_put_(pinned.where, torch.zeros((), dtype=param.grad.dtype, device=param.grad.device))
        return zero_frozen

    def _before_update(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        with one_cpu_thread(self.layers[0].weight.device):
            if self._state is None:
                self._state = self._fresh_state()
            for role, pinned in self._pinned.items():   # also gradients written without autograd (p.grad = ...)
                grad = self._by_role[role].weight.grad
                if grad is not None:
                    grad.index_put_(pinned.where, torch.zeros((), dtype=grad.dtype, device=grad.device))

    @torch.no_grad()
    def _after_update(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        self._steps += 1
        with one_cpu_thread(self._state.integer.device):
            self._pin(self._pinned)
            self._track()
            threshold = self.threshold
            if threshold is not None:
                self._freeze(threshold)

    # -- the algorithm -------------------------------------------------------------------
    @torch.no_grad()
    def _fresh_state(self) -> _State:
        total = sum(layer.numel for layer in self.layers)
        device = self.layers[0].weight.device
        dtype = torch.int8 if max(layer.bits for layer in self.layers) <= 7 else torch.int16
        state = _State(integer=torch.zeros(total, dtype=dtype, device=device),
                       direction=torch.zeros(total, dtype=torch.int8, device=device),
                       frequency=torch.zeros(total, device=device), ema_offset=torch.zeros(total, device=device),
                       delta=torch.zeros(total, dtype=dtype, device=device),
                       scratch=torch.zeros(max(BLOCK_ELEMENTS, *(layer.numel // layer.weight.shape[0]
                                                                  for layer in self.layers)), device=device))
        for layer in self.layers:
            layer.write_integers(state.integer[layer.offset:layer.offset + layer.numel], state.scratch)
        return state

    def _pin(self, pinned: dict[str, _Pinned]) -> None:
        """Write s * q_frozen into the frozen weights (the update, weight decay or momentum moved them)."""
        for role, frozen in pinned.items():
            layer = self._by_role[role]
            weight = layer.weight
            scale = layer.channel_scales().reshape(-1)
            weight.index_put_(frozen.where, (scale[frozen.channel].float() * frozen.integer).to(weight.dtype))

    def _track(self) -> None:
        state, momentum = self._state, self.config.momentum
        delta = state.delta
        for layer in self.layers:   # layer by layer, while its integers are in cache
            part = slice(layer.offset, layer.offset + layer.numel)
            layer.write_integers(delta[part], state.scratch)
            delta[part].sub_(state.integer[part])     # Δ_t = q_t − q_{t−1}
            state.integer[part].add_(delta[part])     # q_t
        state.decay_steps += 1
        growth = 1.0 / state.decay(momentum)          # (1 − m)^−k
        changed = delta.nonzero().squeeze(1)
        if changed.numel():
            moved = delta[changed]
            sign = moved.sign().to(torch.int8)
            oscillated = (sign * state.direction[changed]) < 0
            state.frequency.index_add_(0, changed, oscillated.to(torch.float32) * (momentum * growth))
            state.direction[changed] = sign
            # EMA(q)_t − q_t = (1 − m) (EMA(q)_{t−1} − q_{t−1} − Δ_t): scaled, only the −Δ term is written
            state.ema_offset.index_add_(0, changed, moved.to(torch.float32) * (-(1.0 - momentum) * growth))
        if growth > RENORMALIZE_AT:
            factor = state.decay(momentum)
            state.frequency.mul_(factor)
            state.ema_offset.mul_(factor)
            state.decay_steps = 0

    def _freeze(self, threshold: float) -> None:
        state = self._state
        if self._pinnable_numel == 0:
            return
        frequency = state.frequency[:self._pinnable_numel]
        scaled = threshold / state.decay(self.config.momentum)
        if not bool(frequency.amax() > scaled):
            return
        new = (frequency > scaled).nonzero().squeeze(1)
        ema = state.integer[new].to(torch.float32) + state.ema_offset[new] * state.decay(self.config.momentum)
        integer = ema.round()
        state.frequency[new] = 0.0       # a pinned weight never oscillates again; 0 keeps it out of later checks
        state.ema_offset[new] = 0.0
        state.direction[new] = 0
        state.integer[new] = integer.to(state.integer.dtype)
        starts = torch.tensor([layer.offset for layer in self.layers], device=new.device)
        owner = torch.searchsorted(starts, new, right=True) - 1
        touched = {}
        for position in torch.unique(owner).tolist():
            layer = self.layers[position]
            mine = owner == position
            index, values = new[mine] - layer.offset, integer[mine]
            previous = self._pinned.get(layer.role)
            if previous is not None:
                index, values = torch.cat([previous.index, index]), torch.cat([previous.integer, values])
            touched[layer.role] = self._pinned[layer.role] = _Pinned.build(layer, index, values)
        self._pin(touched)

    # -- reporting -----------------------------------------------------------------------
    def frequencies(self) -> dict[str, Tensor]:
        """Per tracked layer (by role), the oscillation frequency of every weight, in the weight's shape.

        Examples:
            >>> from gaqat_wrap import quantize_model
            >>> model = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)))
            >>> freezer = OscillationFreezer(model, torch.optim.SGD(model.parameters(), lr=0.1), total_steps=10)
            >>> {role: f.shape for role, f in freezer.frequencies().items()}
            {'1.weight': torch.Size([8, 8])}
        """
        if self._state is None:
            return {layer.role: torch.zeros(layer.weight.shape, device=layer.weight.device) for layer in self.layers}
        decay = self._state.decay(self.config.momentum)
        return {layer.role: (self._state.frequency[layer.offset:layer.offset + layer.numel] * decay)
                .reshape(layer.weight.shape) for layer in self.layers}

    def frozen_integers(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Per layer with frozen weights: their flat positions in the weight and their pinned integers.

        Examples:
            >>> from gaqat_wrap import quantize_model
            >>> model = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)))
            >>> OscillationFreezer(model, torch.optim.SGD(model.parameters(), lr=0.1), total_steps=10).frozen_integers()
            {}
        """
        return {role: (pinned.index.clone(), pinned.integer.clone()) for role, pinned in self._pinned.items()}

    def frozen_share(self) -> float:
        """Frozen weights over the weights of every quantized layer the freezer sees (tracked or not).

        The share :meth:`report` adds up, without reading the frequencies back: cheap enough to log at
        every evaluation.

        Examples:
            >>> from gaqat_wrap import quantize_model
            >>> model = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)))
            >>> OscillationFreezer(model, torch.optim.SGD(model.parameters(), lr=0.1), total_steps=10).frozen_share()
            0.0
        """
        weights = sum(layer.numel for layer in self.layers) + sum(layer.numel for layer, _ in self.skipped)
        frozen = sum(int(pinned.index.numel()) for pinned in self._pinned.values())
        return frozen / weights if weights else 0.0

    def report(self) -> list[OscillationStatus]:
        """One :class:`OscillationStatus` per quantized layer: tracked ones first, then those left out.

        Reads the state back to the host: call it for logging, not every step.

        Examples:
            >>> from gaqat_wrap import quantize_model
            >>> model = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)))
            >>> [(s.role, s.weights, s.frozen) for s in
            ...  OscillationFreezer(model, torch.optim.SGD(model.parameters(), lr=0.1), total_steps=10).report()]
            [('1.weight', 64, 0)]
        """
        rows = []
        limit = self.config.freeze_threshold_final
        frequencies = self.frequencies()
        for layer in self.layers:
            frequency = frequencies[layer.role]
            pinned = self._pinned.get(layer.role)
            rows.append(OscillationStatus(
                role=layer.role, bits=layer.bits, weights=layer.numel,
                frozen=0 if pinned is None else int(pinned.index.numel()),
                oscillating=int((frequency > limit).sum()), mean_frequency=float(frequency.mean()),
                max_frequency=float(frequency.max()), note="" if layer.pinnable else TRACKED_ONLY))
        for layer, reason in self.skipped:
            rows.append(OscillationStatus(layer.role, layer.bits, layer.numel, 0, 0, 0.0, 0.0, f"not tracked: {reason}"))
        return rows

    def remove(self) -> None:
        """Remove every hook: the weights train as without the freezer (frozen ones are no longer pinned)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # -- checkpointing -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Config, step counters and, per layer role, the tracking state and the frozen weights.

        Examples:
            >>> from gaqat_wrap import quantize_model
            >>> model = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)))
            >>> sorted(OscillationFreezer(model, torch.optim.SGD(model.parameters(), lr=0.1), total_steps=10).state_dict())
            ['config', 'decay_steps', 'layers', 'steps', 'total_steps']
        """
        layers: dict[str, dict[str, Tensor]] = {}
        state = self._state
        if state is not None:
            for layer in self.layers:
                part = slice(layer.offset, layer.offset + layer.numel)
                pinned = self._pinned.get(layer.role)
                layers[layer.role] = {
                    "integer": state.integer[part].clone(), "direction": state.direction[part].clone(),
                    "scaled_frequency": state.frequency[part].clone(), "scaled_ema_offset": state.ema_offset[part].clone(),
                    "frozen_index": pinned.index.clone() if pinned else torch.zeros(0, dtype=torch.long),
                    "frozen_integer": pinned.integer.clone() if pinned else torch.zeros(0),
                }
        return {"config": self.config.to_dict(), "steps": self._steps, "total_steps": self.total_steps,
                "decay_steps": 0 if state is None else state.decay_steps, "layers": layers}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load what :meth:`state_dict` saved; refused (``ValueError``, nothing changed) when it does not fit.

        Examples:
            >>> from gaqat_wrap import quantize_model
            >>> model = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)))
            >>> freezer = OscillationFreezer(model, torch.optim.SGD(model.parameters(), lr=0.1), total_steps=10)
            >>> freezer.load_state_dict(freezer.state_dict()); freezer.steps
            0
        """
        differences = self.config.differences(state_dict.get("config", {}))
        if differences:
            listed = ", ".join(f"{name}: saved {saved!r}, here {mine!r}" for name, (saved, mine) in differences.items())
            raise ValueError(f"the checkpoint was saved by an OscillationFreezer with other options ({listed}); build "
                             "the freezer with the saved options (OscillationConfig(**state['config'])) to resume")
        if state_dict.get("total_steps") != self.total_steps:
            raise ValueError(f"the checkpoint anneals over total_steps={state_dict.get('total_steps')}, this freezer over "
                             f"{self.total_steps}: build it with the saved total_steps to resume the same schedule")
        saved = state_dict.get("layers", {})
        if saved:
            self._check_roles(saved)
        state, pinned = (self._state_from(saved, int(state_dict.get("decay_steps", 0))) if saved else (None, {}))
        self._state, self._pinned, self._steps = state, pinned, int(state_dict.get("steps", 0))

    def _check_roles(self, saved: dict[str, Any]) -> None:
        mine = {layer.role: layer for layer in self.layers}
        if set(saved) != set(mine):
            missing, extra = sorted(set(mine) - set(saved)), sorted(set(saved) - set(mine))
            raise ValueError(f"the checkpoint tracks other layers: missing here {extra[:5]}, not saved {missing[:5]}; "
                             "resume with the same model, quantization and max_bits")
        for role, part in saved.items():
            if part["integer"].numel() != mine[role].numel:
                raise ValueError(f"layer {role!r} has {mine[role].numel} weights, the checkpoint {part['integer'].numel()}")

    def _state_from(self, saved: dict[str, Any], decay_steps: int) -> tuple[_State, dict[str, _Pinned]]:
        state = self._fresh_state()
        state.decay_steps = decay_steps
        pinned = {}
        for layer in self.layers:
            part, device = saved[layer.role], state.integer.device
            window = slice(layer.offset, layer.offset + layer.numel)
            for name, target in (("integer", state.integer), ("direction", state.direction),
                                 ("scaled_frequency", state.frequency), ("scaled_ema_offset", state.ema_offset)):
                target[window].copy_(part[name].to(device))
            if part["frozen_index"].numel():
                pinned[layer.role] = _Pinned.build(layer, part["frozen_index"].to(device),
                                                   part["frozen_integer"].to(device))
        return state, pinned

