"""Shared builders for the optimizer tests (a plain module, not conftest: the repository root has its own conftest)."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable

import pytest
import torch
from torch import nn

from gaqat_wrap import calibrate, quantize_model, second_pass
from gaqat_wrap.quant import step_sizes


def mlp() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                        nn.Linear(16, 4))
    return quantize_model(net, bits=4)


def convnet() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                        nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 4))
    return quantize_model(net, bits=4)


def timm_vit() -> nn.Module:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return quantize_model(timm.create_model("test_vit", pretrained=False, num_classes=4, img_size=32), bits=4)


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mlp": (mlp, (8,)),
    "convnet": (convnet, (3, 8, 8)),
    "timm_test_vit": (timm_vit, (3, 32, 32)),
}


def batches(input_shape: tuple[int, ...], n: int, batch: int = 8, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, *input_shape, generator=gen), torch.randint(0, 4, (batch,), generator=gen))
            for _ in range(n)]


@functools.cache
def _pristine(name: str) -> tuple[nn.Module, list]:
    factory, shape = MODELS[name]
    model = factory()
    data = batches(shape, 4)
    calibrate(model, [x for x, _ in data[:2]])
    model.train()
    return model, data


def build(name: str) -> tuple[nn.Module, list]:
    """A fresh copy of a quantized, calibrated model (built once per session) and four batches for it."""
    model, data = _pristine(name)
    return copy.deepcopy(model), data


def make_base(kind: str, params) -> torch.optim.Optimizer:
    if kind == "sgd":
        return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-4)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    raise ValueError(kind)


def loss_closure(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    def closure():
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss
    return closure


def twin(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


def _norm(tensors) -> torch.Tensor:
    """||(t_1, ..., t_n)||_2 as the norm of the per-tensor norms."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


@torch.no_grad()
def _perturb_from_equations(params, g0, rho, adaptive, eta, alpha):
    """ε from the papers' equations, written independently of gaqat_wrap.optim.

    Adam-family bases turn gradient entries at rounding-noise level into full
    ``lr`` updates, so the reference groups its floating-point operations the
    way the implementation does (scale factor rho / (||.|| + 1e-12) first).
    """
    if adaptive:   # ASAM: T = |w| + eta, eps = rho T^2 g / ||T g||
        t = {p: p.abs() + eta for p in params}
        factor = rho / (_norm([t[p] * g0[p] for p in params]) + 1e-12)
        eps = {p: t[p] * (t[p] * g0[p]) * factor for p in params}
    else:          # SAM: eps = rho g / ||g||
        factor = rho / (_norm([g0[p] for p in params]) + 1e-12)
        eps = {p: g0[p] * factor for p in params}
    # SAGM: the second pass is at theta + eps - alpha g0
    return {p: eps[p] - alpha * g0[p] for p in params}


def reference_step(model: nn.Module, base: torch.optim.Optimizer, x, y, rho: float, *, variant: str = "sam",
                   adaptive: bool = False, eta: float = 0.01, alpha: float = 0.0) -> None:
    """One SAM / ASAM / SAGM step (weights perturbed, scales not), from the equations."""
    params = [p for g in base.param_groups for p in g["params"]]
    base.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    g0 = {p: p.grad.detach().clone() for p in params if p.grad is not None}
    scales = set(step_sizes(model).values())
    perturbed = [p for p in g0 if p not in scales]
    eps = _perturb_from_equations(perturbed, g0, rho, adaptive, eta, alpha if variant == "sagm" else 0.0)
    theta = {p: p.detach().clone() for p in perturbed}
    with torch.no_grad():
        for p in perturbed:
            p.add_(eps[p])
    base.zero_grad()
    with second_pass():
        nn.functional.cross_entropy(model(x), y).backward()   # g1 = grad L(theta + eps)
    with torch.no_grad():
        for p in perturbed:
            p.copy_(theta[p])
        if variant == "sagm":                                 # SAGM direction: (g0 + g1) / 2
            for p, g in g0.items():
                p.grad = (p.grad + g) / 2
    base.step()
    base.zero_grad()


def max_param_diff(a: nn.Module, b: nn.Module) -> float:
    return max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters(), strict=True))
