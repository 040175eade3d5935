"""GPU training-step benchmark: ms / step, peak memory and images / s of FP32, LSQ, LSQ + SAM and GAQAT.

For timm ``vit_small_patch16_224`` and ``resnet50`` (random init) at batch 64, 224x224, under
``torch.autocast("cuda", dtype=torch.bfloat16)`` (float32 master weights, AdamW lr 1e-4):

- ``fp``: the model as it is;
- ``lsq``: ``quantize_model(model, bits=4)`` + ``calibrate`` on one batch, plain AdamW step;
- ``lsq_int8``: ``lsq`` with ``set_saved_inputs(model, "int8")`` (int8 codes kept for backward);
- ``lsq_sam``: ``lsq`` with ``GAQATOptimizer(AdamW, sam_rho=0.05, freeze_threshold=None)`` (two passes, no freezing);
- ``gaqat``: ``lsq`` with ``GAQATOptimizer(AdamW, sam_rho=0.05)`` (default freezing options).

Each (model, method) runs ``--warmup`` untimed steps, then ``--steps`` steps timed one by one with
CUDA events; the figures are the median ms / step, ``batch / median`` images / s, the peak of
``torch.cuda.max_memory_allocated`` over the timed steps (weights, optimizer state, activations,
workspace), the activation memory of one forward (``gaqat_wrap.quant.saved_tensor_bytes``) and the
synchronising CUDA calls of one more step (``torch.cuda.set_sync_debug_mode("warn")``).
Writes ``bench/results/gpu_step.json`` and the page ``docs/results/gpu.md``.

Without a CUDA device the script prints why and exits with status 3 (:data:`NO_CUDA_EXIT`), writing
nothing. ``--device cpu`` runs the same code on the CPU (no CUDA timing or peak memory) to check the
script itself, with small settings, e.g. ``--device cpu --models resnet18 --batch 2 --image-size 32``.

Run: ``.venv/bin/python bench/gpu_step.py`` (a few minutes on one GPU).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import gaqat_wrap
from gaqat_wrap import GAQATOptimizer, calibrate, quantize_model, set_saved_inputs
from gaqat_wrap.quant import saved_tensor_bytes

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("vit_small_patch16_224", "resnet50")
METHODS = ("fp", "lsq", "lsq_int8", "lsq_sam", "gaqat")
LABELS = {"fp": "FP32 weights, bf16 autocast", "lsq": "LSQ W4A4", "lsq_int8": "LSQ W4A4, int8 codes",
          "lsq_sam": "LSQ W4A4 + SAM", "gaqat": "GAQAT W4A4"}
NO_CUDA_EXIT = 3
"""Exit status when no CUDA device is present (and ``--device cpu`` was not asked for)."""
SAM_RHO = 0.05


def build(name: str, method: str, image_size: int, batch: torch.Tensor, device: torch.device) -> nn.Module:
    """The timm model ``name`` (seed 0, random init) on ``device``, quantized and calibrated unless ``method == "fp"``."""
    import timm

    torch.manual_seed(0)
    options = {"img_size": image_size} if "vit" in name else {}
    model = timm.create_model(name, pretrained=False, **options).to(device).train()
    if method != "fp":
        quantize_model(model, bits=4)
        calibrate(model, [batch])
        model.train()
        set_saved_inputs(model, "int8" if method == "lsq_int8" else "float")
    return model


def make_step(model: nn.Module, method: str, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One training step of ``method``: forward + backward (twice for the SAM family) + AdamW."""
    base = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16)

    def closure() -> torch.Tensor:
        with autocast:
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    if method in ("lsq_sam", "gaqat"):
        no_freezing = {"freeze_threshold": None} if method == "lsq_sam" else {}
        optimizer = GAQATOptimizer(base, model=model, sam_rho=SAM_RHO, **no_freezing)
        return lambda: optimizer.step(closure)

    def step() -> None:
        base.zero_grad(set_to_none=True)
        closure()
        base.step()

    return step


def measure(name: str, method: str, args: argparse.Namespace, device: torch.device) -> dict:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=gen).to(device)
    y = torch.randint(0, 1000, (args.batch,), generator=gen).to(device)
    cuda = device.type == "cuda"
    if cuda:  # free what the previous row left (objects in reference cycles wait for the collector) before this build
        gc.collect()
        torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated() / 2**20 if cuda else 0.0
    model = build(name, method, args.image_size, x, device)
    step = make_step(model, method, x, y)
    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            started = time.perf_counter()
            step()
            times.append((time.perf_counter() - started) * 1e3)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    syncs = count_host_syncs(step) if cuda else None
    with torch.autocast(device.type, dtype=torch.bfloat16):
        saved = saved_tensor_bytes(lambda: F.cross_entropy(model(x), y), exclude=model.parameters())
    ms = statistics.median(times)
    row = {"median_ms": round(ms, 2), "images_per_s": round(args.batch / ms * 1e3, 1),
           "peak_memory_mib": None if peak is None else round(peak, 1),
           "saved_for_backward_mib": round(saved / 2**20, 1), "host_syncs_per_step": syncs, "steps_timed": len(times)}
    print(f"{name:<24} {method:<9} {row['median_ms']:9.2f} ms  {row['images_per_s']:9.1f} img/s  "
          f"peak {row['peak_memory_mib']} MiB  saved {row['saved_for_backward_mib']} MiB  syncs {syncs}  "
          f"(allocated before the build: {before:.0f} MiB)", flush=True)
    return row


def count_host_syncs(step: Callable[[], None]) -> int:
    """Synchronising CUDA calls in one step: the warnings of ``torch.cuda.set_sync_debug_mode("warn")``."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def markdown(results: dict) -> str:
    s, m = results["settings"], results["machine"]
    lines = [
        "# GPU step time and memory",
        "",
        f"One training step at batch {s['batch']}, {s['image_size']}x{s['image_size']}, bf16 autocast (float32 weights), "
        "AdamW, timm models with random weights; W4A4 on every Linear/Conv but the first and last layer. "
        "Written by `bench/gpu_step.py`.",
        "",
        "| model | method | ms / step (median) | × FP | images / s | peak memory (MiB) | saved for backward (MiB) "
        "| host syncs / step |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows in results["models"].items():
        fp = rows.get("fp")
        for method, row in rows.items():
            ratio = f"{row['median_ms'] / fp['median_ms']:.2f}" if fp else "–"
            peak = "–" if row["peak_memory_mib"] is None else f"{row['peak_memory_mib']:.0f}"
            syncs = "–" if row["host_syncs_per_step"] is None else row["host_syncs_per_step"]
            lines.append(f"| {name} | {LABELS[method]} | {row['median_ms']:.1f} | {ratio} | {row['images_per_s']:.0f} "
                         f"| {peak} | {row['saved_for_backward_mib']:.1f} | {syncs} |")
    lines += [
        "",
        "*Peak memory*: `torch.cuda.max_memory_allocated` over the timed steps (weights, optimizer state,",
        "activations, workspace). *Saved for backward*: bytes autograd keeps between forward and backward in",
        "one forward (`gaqat_wrap.quant.saved_tensor_bytes`). LSQ + SAM and GAQAT run two forward/backward",
        "passes per step. *Host syncs / step*: synchronising CUDA calls in one step after the timed ones, counted",
        "with `torch.cuda.set_sync_debug_mode(\"warn\")` (the GAQAT step reads one value back per step, the skip",
        "decision; see docs/concepts/gaqat.md).",
        "",
        f"Measured {results['date']} on {m['device_name']} ({m['device']}), torch {m['torch']}, CUDA {m['cuda']}, "
        f"timm {m['timm']}, gaqat_wrap {m['gaqat_wrap']}, python {m['python']}; {s['warmup']} warm-up steps, then "
        f"{s['steps']} timed steps per row.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cuda", help="'cuda' (default) or 'cpu' to check the script itself")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "gpu_step.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "docs" / "results" / "gpu.md")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"no CUDA device: torch.cuda.is_available() is False (torch {torch.__version__}). This benchmark "
              "measures GPU step time and memory; nothing was measured or written. Run it on a machine with a "
              "GPU, or pass --device cpu to check the script on the CPU.", file=sys.stderr)
        return NO_CUDA_EXIT
    import importlib.metadata as md

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    results = {
        "benchmark": "gpu_step",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"device": device.type, "python": platform.python_version(), "torch": torch.__version__,
                    "cuda": torch.version.cuda, "timm": md.version("timm"), "gaqat_wrap": gaqat_wrap.__version__,
                    "device_name": device_name},
        "settings": {"batch": args.batch, "image_size": args.image_size, "steps": args.steps, "warmup": args.warmup,
                     "autocast": "bfloat16", "optimizer": "AdamW", "sam_rho": SAM_RHO, "bits": 4},
        "models": {name: {method: measure(name, method, args, device) for method in args.methods}
                   for name in args.models},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(markdown(results))
    print(f"wrote {args.json} and {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
