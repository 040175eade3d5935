"""The SAM-family weight perturbation ε and update direction (SAM, ASAM, SAGM).

With g0 = ∇L(θ) over the perturbed parameters:

* SAM (Foret et al. 2021): ε = ρ g0 / (‖g0‖ + eps); update with g1 = ∇L(θ + ε).
* ASAM (Kwon et al. 2021, ``adaptive=True``): T = |θ| + η element-wise,
  ε = ρ T² g0 / (‖T g0‖ + eps); update with g1.
* SAGM (Wang et al. CVPR 2023): the objective L(θ) + L_p(θ − α∇L(θ)), with
  L_p(θ') = L(θ' + ε̂) and ε̂ taken from g0 as above, gives (first-order, Hessian
  terms dropped as SAM does) the second pass at θ + ε̂ − α g0 and the update
  direction g0 + g1.

ρ may differ per param group (key ``"sam_rho"``); the norm is global over
every perturbed parameter, as in SAM.

Examples:
    >>> w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    >>> w.grad = torch.tensor([3.0, 4.0])
    >>> [e.tolist() for e in perturbation([w], [0.5], GAQATConfig())]
    [[0.30000001192092896, 0.4000000059604645]]
"""

from __future__ import annotations

from collections.abc import Sequence

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
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


@torch.no_grad()
def perturbation(params: Sequence[Tensor], rhos: Sequence[float], config: GAQATConfig,
                 norm: Tensor | None = None) -> list[Tensor]:
    """ε for each parameter of ``params`` (all with ``.grad``) from its gradient g0.

    ``rhos[i]`` is the radius of ``params[i]``'s group. ``norm`` may pass a
    precomputed ‖g0‖ (plain SAM only). A zero gradient gives ε = 0 (the
    denominator is ‖g0‖ + eps), never NaN.

    Examples:
        >>> w = torch.nn.Parameter(torch.zeros(2)); w.grad = torch.zeros(2)
        >>> perturbation([w], [0.05], GAQATConfig())[0].tolist()
        [0.0, 0.0]
    """
    grads = [p.grad for p in params]
    if config.adaptive:
        weights = [p.detach().abs().add_(config.eta) for p in params]
        grads_t = [t * g for t, g in zip(weights, grads, strict=True)]
        denominator = global_norm(grads_t) + config.eps
        eps = [t * tg * (rho / denominator) for t, tg, rho in zip(weights, grads_t, rhos, strict=True)]
    else:
        denominator = (global_norm(grads) if norm is None else norm) + config.eps
        eps = [g * (rho / denominator) for g, rho in zip(grads, rhos, strict=True)]
    if config.variant == "sagm" and config.sagm_alpha > 0:
        for e, g in zip(eps, grads, strict=True):
            e.sub_(g, alpha=config.sagm_alpha)
    return eps
