"""GAQAT step time and peak memory over a plain reference SAM step (not a test).

Same model, base optimizer (AdamW), rho and data for both; W4A4 timm models
(``quantize_model(bits=4)`` with LSQ step-size init + ``calibrate``), batch 8 at 224x224 by default.

* Time: both optimizers live in one process on two copies of the model and
  their steps are interleaved (SAM, GAQAT, SAM, GAQAT, ...), so machine load
  hits both alike; the figures are the median wall-clock step time and the
  median process CPU time (``time.process_time``, all threads; less sensitive
  to other processes on a shared machine) after one warm-up step. Because
  both are dominated by the two forward/backward passes, which a loaded
  machine makes noisy, the script also times the optimizer's own work with a
  closure that only writes stored gradients (no forward/backward): GAQAT's
  overhead is the difference, reported over the full SAM step.
* Memory: each optimizer runs alone in a fresh subprocess; the peak resident
  set size of the whole process (Python, torch, model, data, activations,
  optimizer state) during the steps: the kernel's peak mark is reset after
  the model is built (``/proc/self/clear_refs``) and read from ``VmHWM``, so
  building and calibrating (which peak higher than a step on some models)
  do not mask the steps. Also reported: that peak minus the RSS just before
  the first step (the steps' own growth).

Usage:
    python bench/bench_gaqat_step.py [--models vit_tiny_patch16_224 resnet18] [--steps 5] [--batch 8] [--img 224]

Writes bench/results/gaqat_step.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from gaqat_wrap import GAQATOptimizer, calibrate, quantize_model, second_pass
from gaqat_wrap.quant import step_sizes

RHO = 0.05
RESULTS = Path(__file__).resolve().parent / "results" / "gaqat_step.json"


class ReferenceSAM:
    """Plain SAM (Foret et al.) written out: ε = ρ g/‖g‖ on the weights, g1 at θ+ε, restore by copy, base step."""

    def __init__(self, base: torch.optim.Optimizer, rho: float, model: nn.Module) -> None:
        self.base, self.rho = base, rho
        self.scales = set(step_sizes(model).values())

    def step(self, closure) -> None:
        closure()
        params = [p for g in self.base.param_groups for p in g["params"] if p.grad is not None]
        weights = [p for p in params if p not in self.scales]
        with torch.no_grad():
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in weights]))
            factor = self.rho / (norm + 1e-12)
            saved = [p.detach().clone() for p in weights]
            for p in weights:
                p.add_(p.grad * factor)
        self.base.zero_grad(set_to_none=True)
        with second_pass():
            closure()
        with torch.no_grad():
            for p, s in zip(weights, saved, strict=True):
                p.copy_(s)
        self.base.step()
        self.base.zero_grad(set_to_none=True)


def build(model_name: str, batch: int, img: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    import timm

    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False, num_classes=10)
    # "lsq" step-size init builds in seconds ("mse" searches for minutes on 2 cores); the step cost is the same
    quantize_model(model, bits=4, weight_init="lsq", act_init="lsq")
    x = torch.randn(batch, 3, img, img)
    y = torch.randint(0, 10, (batch,))
    calibrate(model, [x])
    model.train()
    return model, x, y


def make_optimizer(method: str, model: nn.Module):
    base = torch.optim.AdamW(model.parameters(), lr=1e-4)
    if method == "sam":
        return ReferenceSAM(base, RHO, model)
    return GAQATOptimizer(base, model=model, sam_rho=RHO, freeze_threshold=0.5, window=2)


def closure_for(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    def closure():
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss
    return closure


def optimizer_only_times(runs: dict, steps: int) -> dict[str, float]:
    """Median step time with a closure that writes stored gradients (no forward/backward): the optimizer's own work."""
    times: dict[str, list[float]] = {method: [] for method in runs}
    stored = {}
    for method, (m, _) in runs.items():
        stored[method] = [torch.randn_like(p) * 1e-3 for p in m.parameters()]
    for i in range(steps + 1):
        for method, (m, opt) in runs.items():
            params = list(m.parameters())

            def closure(params=params, grads=stored[method]):
                for p, g in zip(params, grads, strict=True):
                    p.grad = g.clone()
                return torch.zeros(())
            start = time.perf_counter()
            opt.step(closure)
            if i > 0:
                times[method].append(time.perf_counter() - start)
    return {method: statistics.median(t) for method, t in times.items()}


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so building the model does not count (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


def memory_child(method: str, model_name: str, steps: int, batch: int, img: int) -> None:
    model, x, y = build(model_name, batch, img)
    opt = make_optimizer(method, model)
    build_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    before = current_rss_mb()
    reset = reset_peak_rss()
    for _ in range(steps):
        opt.step(closure_for(model, x, y))
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "rss_before_first_step_mb": before,
                      "build_peak_rss_mb": build_peak, "peak_reset_before_steps": reset}))


def measure_memory(method: str, model_name: str, steps: int, batch: int, img: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--memory-child", method, "--models", model_name,
                          "--steps", str(steps), "--batch", str(batch), "--img", str(img)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_time(model_name: str, steps: int, batch: int, img: int) -> dict:
    model, x, y = build(model_name, batch, img)
    twin = build(model_name, batch, img)[0]
    runs = {"sam": (model, make_optimizer("sam", model)), "gaqat": (twin, make_optimizer("gaqat", twin))}
    wall: dict[str, list[float]] = {"sam": [], "gaqat": []}
    cpu: dict[str, list[float]] = {"sam": [], "gaqat": []}
    for i in range(steps + 1):
        for method, (m, opt) in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            opt.step(closure_for(m, x, y))
            if i > 0:   # the first step of each is a warm-up
                wall[method].append(time.perf_counter() - start)
                cpu[method].append(time.process_time() - start_cpu)
    optimizer_only = optimizer_only_times(runs, 4 * steps)
    return ({f"{method}_step_s": statistics.median(t) for method, t in wall.items()}
            | {f"{method}_optimizer_only_s": t for method, t in optimizer_only.items()}
            | {f"{method}_step_cpu_s": statistics.median(t) for method, t in cpu.items()}
            | {"step_times_s": wall, "step_cpu_times_s": cpu})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vit_tiny_patch16_224", "resnet18"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--img", type=int, default=224)
    parser.add_argument("--memory-child", choices=["sam", "gaqat"])
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.models[0], args.steps, args.batch, args.img)
        return
    results = {"setup": {"rho": RHO, "base": "AdamW", "bits": "W4A4", "batch": args.batch, "img": args.img,
                         "steps": args.steps, "load_average_at_start": list(os.getloadavg()),
                         "torch": torch.__version__, "threads": torch.get_num_threads(),
                         "machine": platform.processor() or platform.machine(),
                         "time": "median wall and process-CPU time of interleaved steps after one warm-up, same process",
                         "memory": "peak RSS during the steps (VmHWM after clear_refs) of a fresh subprocess per optimizer"},
               "models": {}}
    for name in args.models:
        timing = measure_time(name, args.steps, args.batch, args.img)
        memory = {m: measure_memory(m, name, args.steps, args.batch, args.img) for m in ("sam", "gaqat")}
        row = {
            "sam_step_s": timing["sam_step_s"], "gaqat_step_s": timing["gaqat_step_s"],
            "time_ratio": timing["gaqat_step_s"] / timing["sam_step_s"],
            "sam_step_cpu_s": timing["sam_step_cpu_s"], "gaqat_step_cpu_s": timing["gaqat_step_cpu_s"],
            "cpu_time_ratio": timing["gaqat_step_cpu_s"] / timing["sam_step_cpu_s"],
            "sam_optimizer_only_s": timing["sam_optimizer_only_s"],
            "gaqat_optimizer_only_s": timing["gaqat_optimizer_only_s"],
            "optimizer_only_overhead_s": timing["gaqat_optimizer_only_s"] - timing["sam_optimizer_only_s"],
            "overhead_over_sam_step": (timing["gaqat_optimizer_only_s"] - timing["sam_optimizer_only_s"])
            / timing["sam_step_s"],
            "sam_peak_rss_mb": memory["sam"]["peak_rss_mb"], "gaqat_peak_rss_mb": memory["gaqat"]["peak_rss_mb"],
            "memory_ratio": memory["gaqat"]["peak_rss_mb"] / memory["sam"]["peak_rss_mb"],
            "sam_step_growth_mb": memory["sam"]["peak_rss_mb"] - memory["sam"]["rss_before_first_step_mb"],
            "gaqat_step_growth_mb": memory["gaqat"]["peak_rss_mb"] - memory["gaqat"]["rss_before_first_step_mb"],
            "step_times_s": timing["step_times_s"], "step_cpu_times_s": timing["step_cpu_times_s"],
        }
        results["models"][name] = row
        print(f"{name}: SAM {row['sam_step_s']:.3f}s  GAQAT {row['gaqat_step_s']:.3f}s  time x{row['time_ratio']:.3f}  "
              f"CPU time x{row['cpu_time_ratio']:.3f}  optimizer-only SAM {row['sam_optimizer_only_s']:.3f}s "
              f"GAQAT {row['gaqat_optimizer_only_s']:.3f}s  "
              f"peak RSS SAM {row['sam_peak_rss_mb']:.0f} MB  GAQAT {row['gaqat_peak_rss_mb']:.0f} MB  "
              f"memory x{row['memory_ratio']:.3f}", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
