"""The SAM-family weight perturbation ε and update direction (SAM, ASAM, SAGM).

With g0 = ∇L(θ) over the perturbed parameters:

* SAM (Foret et al. 2021): ε = ρ g0 / (‖g0‖ + eps); update with g1 = ∇L(θ + ε).
* ASAM (Kwon et al. 2021, ``adaptive=True``): T = |θ| + η element-wise,
  ε = ρ T² g0 / (‖T g0‖ + eps); update with g1.
* SAGM (Wang et al. CVPR 2023): the objective L(θ) + L_p(θ − α∇L(θ)), with
  L_p(θ') = L(θ' + ε̂) and ε̂ taken from g0 as above, gives (first-order, Hessian
  terms dropped as SAM does) the second pass at θ + ε̂ − α g0; the update
  direction is (g0 + g1) / 2, as in the authors' released code.

ρ may differ per param group (key ``"sam_rho"``); the norm is global over
every perturbed parameter, as in SAM.

Examples:
    >>> w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    >>> w.grad = torch.tensor([3.0, 4.0])
    >>> [e.tolist() for e in perturbation([w], [0.5], GAQATConfig())]
    [[0.30000001192092896, 0.4000000059604645]]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from gaqat_wrap.optim.config import GAQATConfig


def global_norm(tensors: Sequence[Tensor]) -> Tensor:
    """‖(t_1, …, t_n)‖₂ as a 0-d float tensor (0 for no tensors).

    Examples:
        >>> float(global_norm([torch.tensor([3.0]), torch.tensor([4.0])]))
        5.0
    """
    if not tensors:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(tensors))))


def iter_perturbation(params: Sequence[Tensor], rhos: Sequence[float], config: GAQATConfig,
                      norm: Tensor | None = None) -> Iterator[Tensor]:
    """Yield ε for each parameter of ``params`` (all with ``.grad``) from its gradient g0, one at a time.

    ``rhos[i]`` is the radius of ``params[i]``'s group. ``norm`` may pass a
    precomputed ‖g0‖ (plain SAM only). A zero gradient gives ε = 0 (the
    denominator is ‖g0‖ + eps), never NaN. Lazy, so a caller that applies
    each ε at once never holds a second full copy of the parameters.

    Examples:
        >>> w = torch.nn.Parameter(torch.zeros(2)); w.grad = torch.zeros(2)
        >>> [e.tolist() for e in iter_perturbation([w], [0.05], GAQATConfig())]
        [[0.0, 0.0]]
    """
    with torch.no_grad():
        grads = [p.grad for p in params]
        alpha = config.sagm_alpha if config.variant == "sagm" else 0.0
        if config.adaptive:
            # T g is computed twice (for the norm, then per parameter) rather than held for all parameters at once
            denominator = global_norm([(p.detach().abs() + config.eta) * g for p, g in zip(params, grads, strict=True)])
            denominator = denominator + config.eps
            for p, g, rho in zip(params, grads, rhos, strict=True):
                t = p.detach().abs() + config.eta
                e = t * (t * g) * (rho / denominator)
                yield e.sub_(g, alpha=alpha) if alpha else e
        else:
            denominator = (global_norm(grads) if norm is None else norm) + config.eps
            for g, rho in zip(grads, rhos, strict=True):
                e = g * (rho / denominator)
                yield e.sub_(g, alpha=alpha) if alpha else e


def perturbation(params: Sequence[Tensor], rhos: Sequence[float], config: GAQATConfig,
                 norm: Tensor | None = None) -> list[Tensor]:
    """ε for every parameter at once (see :func:`iter_perturbation`).

    Examples:
        >>> w = torch.nn.Parameter(torch.tensor([3.0, 4.0])); w.grad = torch.tensor([3.0, 4.0])
        >>> [round(v, 4) for v in perturbation([w], [0.5], GAQATConfig())[0].tolist()]
        [0.3, 0.4]
    """
    return list(iter_perturbation(params, rhos, config, norm))
