"""Cost of OscillationFreezer (tracking + freezing, and with the dampening loss) over a plain QAT training step (not a test).

W4A4 timm models (``quantize_model(bits=4)``, LSQ step-size init + ``calibrate``), AdamW, batch 8 at
224x224 by default. Three copies of the model, built alike, train side by side:

* ``qat``: forward + backward + AdamW step;
* ``qat+freezer``: the same with an :class:`~gaqat_wrap.optim.OscillationFreezer` attached (its hooks
  run after every update);
* ``qat+freezer+dampening``: also adds ``freezer.dampening_loss()`` to the loss (one more fake-quant
  of every tracked weight in the forward, and its backward).

Their steps are interleaved (a few steps of each in turn, several rounds), so machine load hits
all alike; the figures are medians after warm-up steps. Step-time differences of a few percent
are within the noise of a shared machine, so the freezer's own work is also timed directly: the
wall and process-CPU time spent inside its optimizer hooks per step, reported over the plain
step's median. The freezer runs in its freezing phase (``warm_start=0``) with a fast schedule, so
the freeze checks, the pinning of frozen weights and the gradient masking are all exercised; the
share of frozen weights at the end is reported.

Usage:
    python bench/bench_oscillation.py [--models resnet18 vit_tiny_patch16_224 mobilenetv3_large_100]
                                      [--rounds 4] [--steps 3] [--batch 8] [--img 224]

Writes bench/results/oscillation.json and the table bench/results/oscillation.md (included by
docs/concepts/oscillations.md, section "Cost").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from bench_gaqat_step import build  # the same W4A4 timm model, input and labels as the GAQAT step benchmark
from torch import nn

from gaqat_wrap.optim import OscillationFreezer

RESULTS = Path(__file__).resolve().parent / "results" / "oscillation.json"
TABLE = RESULTS.with_suffix(".md")
CONFIGS = ("qat", "qat+freezer", "qat+freezer+dampening")
FREEZER_OPTIONS = {"momentum": 0.2, "freeze_threshold": 0.3, "freeze_threshold_final": 0.3, "warm_start": 0.0}
"""A schedule that is in its freezing phase from the first step and freezes within the warm-up."""


class HookTimer:
    """Wall and CPU time spent inside the freezer's optimizer hooks, per step.

    Optimizer hooks run in registration order: timestamps taken by hooks registered just before
    and just after the freezer's bracket its pre-step and post-step work (not the optimizer's).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, attach) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._marks: list[tuple[float, float]] = []
        optimizer.register_step_pre_hook(self._mark)
        optimizer.register_step_post_hook(self._mark)
        self.freezer = attach()
        optimizer.register_step_pre_hook(self._mark)
        optimizer.register_step_post_hook(self._close)

    def _mark(self, *args) -> None:
        self._marks.append((time.perf_counter(), time.process_time()))

    def _close(self, *args) -> None:
        self._mark()
        (w0, c0), (w1, c1), (w2, c2), (w3, c3) = self._marks   # pre before, pre after, post before, post after
        self.wall.append((w1 - w0) + (w3 - w2))
        self.cpu.append((c1 - c0) + (c3 - c2))
        self._marks = []


def make_run(config: str, model_name: str, batch: int, img: int, total_steps: int) -> dict:
    model, x, y = build(model_name, batch, img)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    freezer = timer = None
    if config != "qat":
        dampening = 0.1 if config.endswith("dampening") else 0.0
        timer = HookTimer(optimizer, lambda: OscillationFreezer(model, optimizer, total_steps=total_steps,
                                                                dampening=dampening, **FREEZER_OPTIONS))
        freezer = timer.freezer
    return {"model": model, "x": x, "y": y, "optimizer": optimizer, "freezer": freezer, "timer": timer,
            "wall": [], "cpu": []}


def train_step(run: dict) -> None:
    model, freezer = run["model"], run["freezer"]
    loss = nn.functional.cross_entropy(model(run["x"]), run["y"])
    if freezer is not None and freezer.config.dampening > 0:
        loss = loss + freezer.dampening_loss()
    loss.backward()
    run["optimizer"].step()
    run["optimizer"].zero_grad(set_to_none=True)


def state_bytes(freezer: OscillationFreezer) -> int:
    state = freezer._state
    return sum(t.numel() * t.element_size() for t in (state.integer, state.direction, state.frequency,
                                                       state.ema_offset, state.delta, state.scratch))


def measure(model_name: str, rounds: int, steps: int, batch: int, img: int, warmup: int) -> dict:
    total_steps = warmup + rounds * steps
    runs = {config: make_run(config, model_name, batch, img, total_steps) for config in CONFIGS}
    for _ in range(warmup):
        for run in runs.values():
            train_step(run)
    for run in runs.values():
        if run["timer"] is not None:
            run["timer"].wall.clear()
            run["timer"].cpu.clear()
    for _ in range(rounds):
        for run in runs.values():
            for _ in range(steps):
                start, start_cpu = time.perf_counter(), time.process_time()
                train_step(run)
                run["wall"].append(time.perf_counter() - start)
                run["cpu"].append(time.process_time() - start_cpu)
    plain_wall = statistics.median(runs["qat"]["wall"])
    plain_cpu = statistics.median(runs["qat"]["cpu"])
    row: dict = {"qat_step_s": plain_wall, "qat_step_cpu_s": plain_cpu}
    for config in CONFIGS[1:]:
        run = runs[config]
        freezer, timer = run["freezer"], run["timer"]
        report = freezer.report()
        tracked = sum(s.weights for s in report if not s.note.startswith("not tracked"))
        row[config] = {
            "step_s": statistics.median(run["wall"]), "step_cpu_s": statistics.median(run["cpu"]),
            "step_ratio": statistics.median(run["wall"]) / plain_wall,
            "step_cpu_ratio": statistics.median(run["cpu"]) / plain_cpu,
            "hook_s": statistics.median(timer.wall), "hook_cpu_s": statistics.median(timer.cpu),
            "hook_share_of_qat_step": statistics.median(timer.wall) / plain_wall,
            "hook_cpu_share_of_qat_step": statistics.median(timer.cpu) / plain_cpu,
            "tracked_weights": tracked, "frozen_share": sum(s.frozen for s in report) / tracked,
            "state_mib": state_bytes(freezer) / 2**20,
            "weights_mib": sum(p.numel() * p.element_size() for p in run["model"].parameters()) / 2**20,
            "step_times_s": run["wall"], "step_cpu_times_s": run["cpu"], "hook_times_s": timer.wall,
        }
    row["qat_step_times_s"] = runs["qat"]["wall"]
    return row


def markdown(results: dict) -> str:
    """The cost table with the set-up it was measured in."""
    setup = results["setup"]
    lines = [
        "| model | tracked weights | QAT step (median) | freezer hooks per update | hooks / QAT step (wall, CPU) "
        "| step with freezer / QAT step (wall, CPU) | with freezer + dampening (wall, CPU) | frozen at the end "
        "| freezer state |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in results["models"].items():
        freezer, damped = row["qat+freezer"], row["qat+freezer+dampening"]
        lines.append(
            f"| {name} | {freezer['tracked_weights'] / 1e6:.2f} M | {row['qat_step_s']:.2f} s "
            f"| {1000 * freezer['hook_s']:.0f} ms | {100 * freezer['hook_share_of_qat_step']:.1f}%, "
            f"{100 * freezer['hook_cpu_share_of_qat_step']:.1f}% | {freezer['step_ratio']:.3f}, "
            f"{freezer['step_cpu_ratio']:.3f} | {damped['step_ratio']:.3f}, {damped['step_cpu_ratio']:.3f} "
            f"| {100 * freezer['frozen_share']:.2f}% | {freezer['state_mib']:.0f} MiB |")
    load = ", ".join(f"{v:.1f}" for v in setup["load_average_at_start"][:1] + setup["load_average_at_end"][:1])
    lines += [
        "",
        f"W4A4, AdamW, batch {setup['batch']} at {setup['img']}x{setup['img']}, {setup['threads']} torch threads "
        f"({setup['machine']}, torch {setup['torch']}); {setup['warmup_steps']} warm-up steps, then "
        f"{setup['rounds']} interleaved rounds of {setup['steps_per_round']} steps per configuration; medians. "
        f"Load average (1 min) at start and end: {load} on a 2-core machine shared with other processes.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "vit_tiny_patch16_224", "mobilenetv3_large_100"])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--img", type=int, default=224)
    parser.add_argument("--table-only", action="store_true", help="rewrite the markdown table from the JSON")
    args = parser.parse_args()
    if args.table_only:
        TABLE.write_text(markdown(json.loads(RESULTS.read_text())))
        return
    results = {"setup": {"base": "AdamW lr 1e-3", "bits": "W4A4", "batch": args.batch, "img": args.img,
                         "rounds": args.rounds, "steps_per_round": args.steps, "warmup_steps": args.warmup,
                         "freezer": FREEZER_OPTIONS, "dampening": 0.1,
                         "load_average_at_start": list(os.getloadavg()), "torch": torch.__version__,
                         "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
                         "time": "median wall and process-CPU time of interleaved steps after warm-up, same process"},
               "models": {}}
    for name in args.models:
        row = measure(name, args.rounds, args.steps, args.batch, args.img, args.warmup)
        results["models"][name] = row
        for config in CONFIGS[1:]:
            r = row[config]
            print(f"{name} {config}: step x{r['step_ratio']:.3f} (CPU x{r['step_cpu_ratio']:.3f}); hooks "
                  f"{1000 * r['hook_s']:.1f} ms = {100 * r['hook_share_of_qat_step']:.1f}% of a QAT step "
                  f"({1000 * row['qat_step_s']:.0f} ms; CPU {100 * r['hook_cpu_share_of_qat_step']:.1f}%); "
                  f"{r['tracked_weights']} tracked, {100 * r['frozen_share']:.2f}% frozen", flush=True)
    results["setup"]["load_average_at_end"] = list(os.getloadavg())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    TABLE.write_text(markdown(results))
    print(f"wrote {RESULTS} and {TABLE}")


if __name__ == "__main__":
    main()
