"""Oscillation tracking written out densely from the paper's equations, independently of gaqat_wrap.optim.oscillation.

Per weight and step: q_t = clamp(round(w / s), Qn, Qp); Δ = q_t − q_{t−1}; an oscillation is a
non-zero Δ whose sign is opposite to the previous non-zero Δ; f ← (1 − m) f + m·[oscillation];
ema ← (1 − m) ema + m q_t (starting at q_0); a weight not yet frozen with f > τ is frozen at
round(ema). Every quantity is a full tensor updated every step (no scaling, no sparsity).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gaqat_wrap.quant.layers import QuantizedLayer


def integer_state(layer: nn.Module) -> Tensor:
    weight = layer.weight.detach()
    scale = layer.weight_quantizer.scale.detach().clamp(min=1e-8).view((-1,) + (1,) * (weight.dim() - 1))
    qn, qp = layer.weight_quantizer.qrange
    return torch.clamp(torch.round(weight / scale), qn, qp)


class DenseReference:
    """Tracks every quantized layer of ``model`` with at most ``max_bits`` weight bits."""

    def __init__(self, model: nn.Module, momentum: float, max_bits: int = 4) -> None:
        self.momentum = momentum
        self.layers = {m.weight_quantizer.role: m for m in model.modules()
                       if isinstance(m, QuantizedLayer) and m.weight_quantizer.bits <= max_bits}
        self.previous = {role: integer_state(m) for role, m in self.layers.items()}
        self.direction = {role: torch.zeros_like(q) for role, q in self.previous.items()}
        self.frequency = {role: torch.zeros_like(q) for role, q in self.previous.items()}
        self.ema = {role: q.clone() for role, q in self.previous.items()}
        self.frozen = {role: torch.zeros_like(q, dtype=torch.bool) for role, q in self.previous.items()}
        self.frozen_value = {role: torch.zeros_like(q) for role, q in self.previous.items()}
        self.steps = 0

    def observe(self, threshold: float | None) -> None:
        """One step: read the integers, update the averages, freeze above ``threshold`` (None: no freezing)."""
        m = self.momentum
        self.steps += 1
        for role, layer in self.layers.items():
            q = integer_state(layer)
            delta = q - self.previous[role]
            step = torch.sign(delta)
            oscillated = (step != 0) & (self.direction[role] != 0) & (step != self.direction[role])
            self.frequency[role] = (1 - m) * self.frequency[role] + m * oscillated.float()
            self.ema[role] = (1 - m) * self.ema[role] + m * q
            self.direction[role] = torch.where(step != 0, step, self.direction[role])
            self.previous[role] = q
            if threshold is not None:
                new = (self.frequency[role] > threshold) & ~self.frozen[role]
                self.frozen_value[role] = torch.where(new, torch.round(self.ema[role]), self.frozen_value[role])
                self.frozen[role] |= new
