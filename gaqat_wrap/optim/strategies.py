"""The SAM-family strategies: a perturbation ε(g0) and an update direction d(g0, g1).

With g0 = ∇L(θ) over the perturbed parameters P and δ = ``eps``:

==========  ===============================================  ==================
strategy    ε_p (radius ρ of the parameter's group)           d_p
==========  ===============================================  ==================
SAM         ρ g0_p / (‖g0_P‖ + δ)                            g1_p
ASAM        ρ T_p ⊙ (T_p ⊙ g0_p) / (‖T ⊙ g0‖_P + δ),          g1_p
            T = |θ| + η
SAGM        ε of SAM (or ASAM) − α g0_p                      (g0_p + g1_p) / 2
==========  ===============================================  ==================

The norm is global over P, as in SAM. A zero gradient gives ε = 0, never NaN.
SAGM (Wang et al., CVPR 2023) halves g0 + g1 as the authors' released code does.
See ``docs/concepts/gaqat.md`` for the derivations.

Examples:
    >>> w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    >>> w.grad = torch.tensor([3.0, 4.0])
    >>> [e.tolist() for e in strategy_for(GAQATConfig()).perturbations([w], [0.5])]
    [[0.30000001192092896, 0.4000000059604645]]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gaqat_wrap.optim.config import GAQATConfig


def global_norm(tensors: Sequence[Tensor]) -> Tensor:
    """‖(t_1, …, t_n)‖₂ as the norm of the per-tensor norms (0 for no tensors).

    Examples:
        >>> float(global_norm([torch.tensor([3.0]), torch.tensor([4.0])]))
        5.0
    """
    if not tensors:
        return torch.zeros(())
    norms = torch._foreach_norm(list(tensors))
    device = norms[0].device
    return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]))


@dataclass(frozen=True)
class SAM:
    """Foret et al. 2021: ε = ρ g0 / (‖g0‖ + δ); the update uses g1.

    Examples:
        >>> w = torch.nn.Parameter(torch.zeros(2)); w.grad = torch.zeros(2)
        >>> [e.tolist() for e in SAM().perturbations([w], [0.05])]
        [[0.0, 0.0]]
    """

    eps: float = 1e-12
    keeps_first_gradient = False

    def perturbations(self, params: Sequence[Tensor], rhos: Sequence[float]) -> Iterator[Tensor]:
        """Yield ε for each parameter (all with ``.grad``), one at a time, so no second copy of θ exists."""
        grads = [p.grad for p in params]
        denominator = global_norm(grads) + self.eps
        for g, rho in zip(grads, rhos, strict=True):
            yield g * (rho / denominator)

    def set_direction(self, param: Tensor, g0: Tensor | None) -> None:
        """Leave ``param.grad`` = g1: SAM updates with the gradient at θ + ε."""


@dataclass(frozen=True)
class ASAM(SAM):
    """Kwon et al. 2021: ε = ρ T ⊙ (T ⊙ g0) / (‖T ⊙ g0‖ + δ) with T = |θ| + η; the update uses g1.

    Examples:
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 0.0])); w.grad = torch.tensor([1.0, 1.0])
        >>> [round(v, 4) for v in next(ASAM(eta=0.0).perturbations([w], [1.0])).tolist()]
        [1.0, 0.0]
    """

    eta: float = 0.01

    def perturbations(self, params: Sequence[Tensor], rhos: Sequence[float]) -> Iterator[Tensor]:
        # T ⊙ g is computed twice (for the norm, then per parameter) rather than held for all parameters at once.
        denominator = global_norm([(p.detach().abs() + self.eta) * p.grad for p in params]) + self.eps
        for p, rho in zip(params, rhos, strict=True):
            t = p.detach().abs() + self.eta
            yield t * (t * p.grad) * (rho / denominator)


@dataclass(frozen=True)
class SAGM:
    """Wang et al. 2023: second pass at θ + ε − α g0 (ε of ``base``); the update uses (g0 + g1) / 2.

    Examples:
        >>> w = torch.nn.Parameter(torch.ones(1)); w.grad = torch.ones(1)
        >>> next(SAGM(SAM(), alpha=0.5).perturbations([w], [0.0])).tolist()
        [-0.5]
        >>> w.grad = torch.full((1,), 3.0); SAGM(SAM(), 0.5).set_direction(w, torch.ones(1)); w.grad.tolist()
        [2.0]
    """

    base: SAM
    alpha: float = 0.001
    keeps_first_gradient = True

    def perturbations(self, params: Sequence[Tensor], rhos: Sequence[float]) -> Iterator[Tensor]:
        for p, e in zip(params, self.base.perturbations(params, rhos), strict=True):
            yield e.sub_(p.grad, alpha=self.alpha) if self.alpha else e

    def set_direction(self, param: Tensor, g0: Tensor | None) -> None:
        """``param.grad`` ← (g0 + g1) / 2 (g1 missing counts as 0; g0 is consumed)."""
        if g0 is None:
            return
        if param.grad is None:
            param.grad = g0.mul_(0.5)
        else:
            param.grad.add_(g0).mul_(0.5)


Strategy = SAM | ASAM | SAGM


def strategy_for(config: GAQATConfig) -> Strategy:
    """The strategy of ``config`` (``variant`` and ``adaptive``).

    Examples:
        >>> type(strategy_for(GAQATConfig(variant="sagm", adaptive=True)).base).__name__
        'ASAM'
    """
    base = ASAM(eps=config.eps, eta=config.eta) if config.adaptive else SAM(eps=config.eps)
    if config.variant == "sagm":
        return SAGM(base, alpha=config.sagm_alpha)
    return base
