"""The null of the conflict test: random perturbations with the same per-parameter norm as SAM's ε.

Write g1 = g0 + Δ. When Δ holds a part unrelated to the task direction (rounding flips of a
quantized network, dropout masks that differ between passes, batch noise), the paper's
cos(g_task, g_smooth) < 0 test fires often even without any sharpness/task conflict. A
perturbation of the same size in a *random* direction shows how often it fires from roughness
alone. :func:`random_perturbations` draws those directions (the calibrated metric's online null);
:func:`conflict_null_test` measures, on your model and batches, the flag rate of SAM's ε next to
that of random directions, for a few radii ρ (``docs/concepts/gaqat.md``, "Does the conflict test
read sharpness on my model?").

Examples:
    >>> w = torch.nn.Parameter(torch.ones(3))
    >>> e = next(random_perturbations([w], [torch.tensor(0.5)], torch.Generator().manual_seed(1)))
    >>> round(float(e.norm()), 4)
    0.5
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from gaqat_wrap.optim.config import GAQATConfig
from gaqat_wrap.optim.conflict import conflict_flags, scale_grad_conflict
from gaqat_wrap.optim.snapshot import BufferSnapshot
from gaqat_wrap.optim.strategies import strategy_for
from gaqat_wrap.quant.quantizer import step_sizes
from gaqat_wrap.second_pass import second_pass


def random_perturbations(params: Sequence[Tensor], norms: Sequence[Tensor],
                         generator: torch.Generator) -> Iterator[Tensor]:
    """Yield, per parameter, a direction drawn from ``generator`` (Gaussian) scaled to the given norm.

    The same generator state gives the same directions (on every DDP rank).
    """
    for p, norm in zip(params, norms, strict=True):
        direction = torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype)
        yield direction.mul_(norm.to(p.dtype) / torch.linalg.vector_norm(direction).clamp(min=1e-30))


def null_generator(device: torch.device, seed: int, step: int) -> torch.Generator:
    """The generator of the random directions at ``step`` (seeded from ``seed`` and ``step`` only)."""
    generator = torch.Generator(device=device)
    generator.manual_seed((seed * 1_000_003 + step) % (2**63 - 1))
    return generator


@dataclass
class NullReport:
    """Conflict flag rates of SAM's ε next to random directions of the same per-parameter norm.

    Attributes:
        rhos: the radii measured.
        roles: the step sizes, in model order.
        sam: ``sam[i][j]``: share of batches where step size ``roles[j]`` was flagged at ``rhos[i]``.
        random: the same for random directions (share over batches × draws).
        metric: the per-step conflict test used (``"cosine"`` or ``"sign"``).

    Examples:
        >>> report = NullReport([0.05], ["fc.weight"], [[1.0]], [[0.75]], "cosine")
        >>> report.overall()
        [(0.05, 1.0, 0.75)]
    """

    rhos: list[float]
    roles: list[str]
    sam: list[list[float]]
    random: list[list[float]]
    metric: str = "cosine"
    batches: int = field(default=0)
    draws: int = field(default=0)

    def overall(self) -> list[tuple[float, float, float]]:
        """``(rho, SAM flag rate, random flag rate)`` over all step sizes, per radius."""
        return [(rho, sum(s) / max(len(s), 1), sum(r) / max(len(r), 1))
                for rho, s, r in zip(self.rhos, self.sam, self.random, strict=True)]

    def format(self, per_scale: int = 0) -> str:
        """A markdown table: overall rates per ρ, then (``per_scale`` > 0) that many step sizes' rates."""
        lines = ["| ρ | SAM flag rate | random-direction flag rate |", "|---|---|---|"]
        lines += [f"| {rho:g} | {sam:.2f} | {rand:.2f} |" for rho, sam, rand in self.overall()]
        if per_scale:
            lines += ["", "| step size | " + " | ".join(f"SAM / random at ρ={rho:g}" for rho in self.rhos) + " |",
                      "|---|" + "---|" * len(self.rhos)]
            for j, role in enumerate(self.roles[:per_scale]):
                cells = " | ".join(f"{self.sam[i][j]:.2f} / {self.random[i][j]:.2f}" for i in range(len(self.rhos)))
                lines.append(f"| {role} | {cells} |")
        return "\n".join(lines)


def conflict_null_test(model: nn.Module, closures: Sequence[Callable[[], Any]], rhos: Sequence[float] = (1e-3, 1e-2, 0.05),
                       draws: int = 8, seed: int = 0, config: GAQATConfig | None = None) -> NullReport:
    """How often the conflict test fires for SAM's ε and for random directions of the same size, per step size.

    ``closures``: one per batch, each running forward + backward of ``model`` and returning the
    loss (as for ``GAQATOptimizer.step``). ``config`` picks the variant and per-step metric
    (default: SAM, cosine). If the random rate is as high as SAM's, or either stays flat as ρ
    grows, the test reads roughness, not sharpness, on this model. The model's parameters,
    gradients and BatchNorm / quantizer buffers are left exactly as they were.

    Examples:
        >>> from gaqat_wrap import quantize_model
        >>> _ = torch.manual_seed(0)
        >>> net = quantize_model(nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
        ...                                    nn.Linear(16, 2)), bits=4)
        >>> x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
        >>> closure = lambda: nn.functional.cross_entropy(net(x), y).backward()
        >>> report = conflict_null_test(net, [closure], rhos=[0.01, 0.1], draws=4)
        >>> report.roles, [len(row) for row in report.random]
        (['2.weight', '2.input'], [2, 2])
    """
    config = config or GAQATConfig(freeze_threshold=None)
    if config.metric not in ("cosine", "sign"):
        raise ValueError(f"the null test compares per-step flags: use metric 'cosine' or 'sign', got {config.metric!r}")
    if draws < 1 or not closures:
        raise ValueError("conflict_null_test needs at least one closure (batch) and draws >= 1")
    roles_by_param = {p: role for role, p in step_sizes(model).items()}
    if not roles_by_param:
        raise ValueError("the model has no quantizer step sizes: quantize it with gaqat_wrap.quantize_model first")
    params = [p for p in model.parameters() if p.requires_grad]
    scales = [p for p in params if p in roles_by_param]
    weights = [p for p in params if p not in roles_by_param]
    segments = torch.repeat_interleave(torch.arange(len(scales)), torch.tensor([p.numel() for p in scales])).to(
        scales[0].device)
    strategy = strategy_for(config)
    snapshot = BufferSnapshot(model)
    saved = [p.detach().clone() for p in params]
    sam_counts = [[0.0] * len(scales) for _ in rhos]
    random_counts = [[0.0] * len(scales) for _ in rhos]

    def gradients(closure: Callable[[], Any], perturbed: bool) -> Tensor:
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            if perturbed:
                with second_pass():
                    closure()
            else:
                closure()
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1).float()
                          for p in scales])

    def flags(g0: Tensor, g1: Tensor) -> list[float]:
        stats = scale_grad_conflict(g0, g1 - g0, segments, len(scales))
        return conflict_flags(stats, config.metric).float().tolist()

    try:
        for b, closure in enumerate(closures):
            g0_scales = gradients(closure, perturbed=False)
            active = [p for p in weights if p.grad is not None]
            g0_weights = [p.grad.detach().clone() for p in active]
            origin = [p.detach().clone() for p in active]
            for i, rho in enumerate(rhos):
                with torch.no_grad():
                    for p, g in zip(active, g0_weights, strict=True):
                        p.grad = g.clone()
                    epsilons = list(strategy.perturbations(active, [rho] * len(active)))
                    norms = [torch.linalg.vector_norm(e) for e in epsilons]
                    for p, e in zip(active, epsilons, strict=True):
                        p.add_(e)
                sam_counts[i] = [c + f for c, f in zip(sam_counts[i], flags(g0_scales, gradients(closure, True)),
                                                        strict=True)]
                for d in range(draws):
                    generator = null_generator(active[0].device, seed, b * 1_000 + i * 100 + d)
                    with torch.no_grad():
                        for p, start, e in zip(active, origin, random_perturbations(active, norms, generator),
                                               strict=True):
                            p.copy_(start).add_(e)
                    random_counts[i] = [c + f for c, f in zip(random_counts[i],
                                                              flags(g0_scales, gradients(closure, True)), strict=True)]
                with torch.no_grad():
                    torch._foreach_copy_(active, origin)
    finally:
        with torch.no_grad():
            torch._foreach_copy_(params, saved)
        model.zero_grad(set_to_none=True)
        snapshot.restore()
    n = len(closures)
    return NullReport(list(rhos), [roles_by_param[p] for p in scales],
                      [[c / n for c in row] for row in sam_counts],
                      [[c / (n * draws) for c in row] for row in random_counts], config.metric, n, draws)
