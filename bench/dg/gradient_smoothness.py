"""How much does a SAM-sized weight perturbation change the gradient of a (quantized) model? A diagnostic, not a test.

GAQAT calls a step size "conflicting" when cos(g0, g1 - g0) < 0, with g0 its gradient at the weights θ
and g1 its gradient at θ + ε (ε = ρ ∇L / ‖∇L‖ over the non-scale parameters, as in SAM). If the
gradient changed smoothly with ε, g1 - g0 would be a small, ρ-dependent correction; if it is
essentially unrelated to g0 (a rough, piecewise-constant loss surface), g1 - g0 ≈ -g0 and nearly every
scale reads as conflicting at any ρ. This script measures which regime a model is in, at its starting
point (after LSQ calibration), on a few training batches, in train mode (batch-norm batch statistics)
and in eval mode:

    .venv/bin/python bench/dg/gradient_smoothness.py --model tf_efficientnet_lite0 --pretrained efficientnet_lite0_pypi \
        --dataset vlcs_mini --test-domain caltech --image-size 96 --batch-size 16

Columns: the share of step sizes with cos(g0, g1 - g0) < 0 (all, then weight and input step sizes
apart), the median cos(g0, g1) over step sizes, cos(g0, g1) over all weights at once, and how far the
weight step sizes are from batch-norm scale invariance (``w·∇w + s·∇s = 0`` when a batch-norm with batch
statistics follows the layer: the loss then depends on w / s only, and the step size's gradient is
fixed by the weight gradient; 0 = exactly invariant). ``--bits 0`` measures the full-precision model (weights only).
``--table bench/dg/gradient_smoothness.jsonl`` renders the measured rows as ``gradient_smoothness.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from starting_point import add_starting_point_arguments, append_row, render_table, starting_point

from gaqat_wrap.quant import step_sizes
from gaqat_wrap.quant.layers import QuantizedLayer
from gaqat_wrap.quant.lsq import lsq_grad_scale


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-30))


def _bn_invariance_residual(model: torch.nn.Module, grads: dict[int, torch.Tensor]) -> float:
    """Median over weight quantizers of |w·∇w + s·∇s| / (|w·∇w| + |s·∇s|), per output channel.

    With a batch-norm (batch statistics) after the layer, the loss depends on w / s only, so
    w·∇w + s·∇s = 0 exactly (Euler's theorem for a degree-0 function): 0 means the layer's step size
    gradient is fixed by its weight gradient. ∇s here is the true derivative (the LSQ gradient scale
    removed).
    """
    residuals = []
    for layer in model.modules():
        if not isinstance(layer, QuantizedLayer) or id(layer.weight) not in grads:
            continue
        weight, quantizer = layer.effective_weight(), layer.weight_quantizer
        if weight is not layer.weight:  # standardized / scaled weights: the identity is about another tensor
            continue
        scale = quantizer.scale
        w_dot = (weight.detach().flatten(1) * grads[id(weight)].flatten(1)).sum(1)
        gamma = lsq_grad_scale(weight[0].numel(), quantizer.qrange[1])
        s_dot = scale.detach().flatten() * grads[id(scale)].flatten() / gamma
        denominator = (w_dot.abs() + s_dot.abs()).sum()
        if denominator > 0:
            residuals.append(float((w_dot + s_dot).abs().sum() / denominator))
    return _median_of_numbers(residuals)


def _median_of_numbers(values: list[float]) -> float:
    numbers = [v for v in values if v == v]
    return float(np.median(numbers)) if numbers else float("nan")


def measure(model: torch.nn.Module, batches: list, rho: float) -> dict[str, float]:
    """Gradient change statistics of ``model`` for a SAM step of radius ``rho`` on each of ``batches``."""
    params = [p for p in model.parameters() if p.requires_grad]
    role_of = {p: role for role, p in step_sizes(model).items()}
    is_scale = [p in role_of for p in params]

    def grads(x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]

    conflict: dict[str, list[bool]] = {"weight": [], "input": []}
    cos_scale, cos_weights, residuals = [], [], []
    for x, y in batches:
        g0 = grads(x, y)
        residuals.append(_bn_invariance_residual(model, {id(p): g for p, g in zip(params, g0, strict=True)}))
        weight_grads = [g for g, s in zip(g0, is_scale, strict=True) if not s]
        norm = torch.sqrt(sum((g * g).sum() for g in weight_grads)).clamp_min(1e-12)
        eps = [rho * g / norm for g in weight_grads]
        weights = [p for p, s in zip(params, is_scale, strict=True) if not s]
        with torch.no_grad():
            for p, e in zip(weights, eps, strict=True):
                p.add_(e)
        g1 = grads(x, y)
        with torch.no_grad():
            for p, e in zip(weights, eps, strict=True):
                p.sub_(e)
        flat = [(a.flatten(), b.flatten()) for a, b, s in zip(g0, g1, is_scale, strict=True) if not s]
        cos_weights.append(_cos(torch.cat([a for a, _ in flat]), torch.cat([b for _, b in flat])))
        for p, a, b, s in zip(params, g0, g1, is_scale, strict=True):
            if s and a.abs().sum() > 0:
                a, b = a.flatten(), b.flatten()
                conflict["weight" if role_of[p].endswith(".weight") else "input"].append(_cos(a, b - a) < 0)
                cos_scale.append(_cos(a, b))

    def share(flags: list[bool]) -> float:
        return float(np.mean(flags)) if flags else float("nan")

    return {"rho": rho, "conflict_share": share(conflict["weight"] + conflict["input"]),
            "conflict_weight_scales": share(conflict["weight"]), "conflict_input_scales": share(conflict["input"]),
            "median_cos_scale": _median_of_numbers(cos_scale),
            "cos_weights": float(np.mean(cos_weights)), "scales": len(cos_scale) // max(len(batches), 1),
            "bn_invariance_residual": _median_of_numbers(residuals)}


def markdown(rows: list[dict]) -> str:
    """The rows of a ``--output`` file as one markdown table (one line per model, bits, mode and ρ)."""

    def cell(value: float | None, style: str) -> str:  # "–" for a missing or NaN value
        if value is None or value != value:
            return "–"
        return f"{100 * value:.0f}%" if style == "%" else format(value, style)

    lines = ["| model | bits | BN mode | ρ | conflicting step sizes | of weights | of inputs "
             "| median cos(g0, g1), step sizes | cos(g0, g1), weights | w·∇w + s·∇s residual |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        model = Path(r["model"]).stem if r["model"].endswith(".json") else r["model"]
        bits = f"W{r['bits']}A{r['bits']}" if r["bits"] else "FP"
        lines.append(f"| {model} | {bits} | {r['mode']} | {r['rho']:g} | {cell(r['conflict_share'], '%')} "
                     f"| {cell(r.get('conflict_weight_scales'), '%')} | {cell(r.get('conflict_input_scales'), '%')} "
                     f"| {cell(r['median_cos_scale'], '+.2f')} | {cell(r['cos_weights'], '+.2f')} "
                     f"| {cell(r.get('bn_invariance_residual'), '.3f')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_starting_point_arguments(parser)
    parser.add_argument("--bits", type=int, default=4, help="W = A bits; 0 for the full-precision model")
    parser.add_argument("--rhos", type=float, nargs="+", default=[0.0005, 0.005, 0.05])
    parser.add_argument("--modes", nargs="+", choices=("train", "eval"), default=["train", "eval"])
    parser.add_argument("--batches", type=int, default=4)
    args = parser.parse_args()
    if args.table:
        print(render_table(args.table, markdown))
        return
    if not args.model:
        parser.error("--model is required (or --table to render measured rows)")
    torch.set_num_threads(1)
    # the starting point train_dg would use for this config: its data, model and quantization steps
    model, loader = starting_point(args, args.bits)
    batches = [tuple(next(iter(loader))[:2]) for _ in range(args.batches)]
    for mode in args.modes:
        model.train(mode == "train")
        for rho in args.rhos:
            row = {"model": args.model, "bits": args.bits, "mode": mode, **measure(model, batches, rho)}
            print(f"{args.model} W{args.bits} {mode:5s} rho={rho:<7g} conflicting scales {row['conflict_share']:.2f} "
                  f"(weights {row['conflict_weight_scales']:.2f}, inputs {row['conflict_input_scales']:.2f})  "
                  f"median cos(g0, g1) per scale {row['median_cos_scale']:+.3f}  cos(g0, g1) weights "
                  f"{row['cos_weights']:+.3f}  BN invariance residual {row['bn_invariance_residual']:.3f}", flush=True)
            append_row(args.output, row)


if __name__ == "__main__":
    main()
