"""Does the paper's conflict test read sharpness or roughness? SAM's flag rate next to its null, per model.

For a model at the starting point ``train_dg`` would use (data, model, LSQ calibration), this runs
:func:`gaqat_wrap.optim.null.conflict_null_test` on a few training batches: per radius ρ, the share of
step sizes whose cos(g_task, g_smooth) < 0 (the paper's per-step test) for SAM's ε and for random
directions with the same per-parameter norm. If the random rate is as high as SAM's, or SAM's rate is
flat in ρ, the test reads roughness (rounding flips, batch noise), not sharpness, on that model.

    .venv/bin/python bench/dg/null_flag_rates.py --model mnist_cnn_small --bits 4 --output bench/dg/null_flag_rates.jsonl
    .venv/bin/python bench/dg/null_flag_rates.py --table bench/dg/null_flag_rates.jsonl   # -> null_flag_rates.md

``bench/dg/freezing_study.sh null`` runs the rows of the results page (CNN and ViT on Rotated-MNIST,
the CNN on MNIST-C, pretrained EfficientNet-Lite0 on VLCS-mini at 96², W4A4 and W3A3).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from starting_point import add_starting_point_arguments, append_row, render_table, starting_point

from gaqat_wrap.optim.null import conflict_null_test


def measure(args: argparse.Namespace) -> list[dict]:
    """One row per ρ: overall SAM and random flag rates, and the weight / input step sizes apart."""
    model, loader = starting_point(args, args.bits)
    model.train()
    batches = []
    for pixels, labels, *_ in loader:
        batches.append((pixels, labels))
        if len(batches) == args.batches:
            break

    def closure_for(x: torch.Tensor, y: torch.Tensor):
        def closure() -> torch.Tensor:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss
        return closure

    started = time.perf_counter()
    report = conflict_null_test(model, [closure_for(x, y) for x, y in batches], rhos=args.rhos, draws=args.draws)
    weight_cols = [j for j, role in enumerate(report.roles) if role.endswith(".weight")]
    input_cols = [j for j, role in enumerate(report.roles) if not role.endswith(".weight")]

    def share(row: list[float], cols: list[int]) -> float | None:
        return sum(row[j] for j in cols) / len(cols) if cols else None

    rows = []
    for i, rho in enumerate(report.rhos):
        rows.append({
            "model": args.model, "dataset": args.dataset, "bits": args.bits, "rho": rho, "step_sizes": len(report.roles),
            "batches": report.batches, "draws": report.draws,
            "sam": share(report.sam[i], weight_cols + input_cols), "random": share(report.random[i], weight_cols + input_cols),
            "sam_weights": share(report.sam[i], weight_cols), "random_weights": share(report.random[i], weight_cols),
            "sam_inputs": share(report.sam[i], input_cols), "random_inputs": share(report.random[i], input_cols),
            "seconds": round(time.perf_counter() - started, 1),
        })
    return rows


def markdown(rows: list[dict]) -> str:
    """The results page's table: one line per (model, dataset, bits, ρ)."""
    def pct(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.0f}%"

    lines = ["| model | data | bits | ρ | SAM ε: flagged | random: flagged | weights SAM / random | inputs SAM / random |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {Path(r['model']).stem} | {r['dataset']} | W{r['bits']}A{r['bits']} | {r['rho']:g} | "
                     f"{pct(r['sam'])} | {pct(r['random'])} | {pct(r['sam_weights'])} / {pct(r['random_weights'])} | "
                     f"{pct(r['sam_inputs'])} / {pct(r['random_inputs'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_starting_point_arguments(parser)
    parser.add_argument("--bits", type=int, default=4, help="W = A bits")
    parser.add_argument("--rhos", type=float, nargs="+", default=[0.001, 0.01, 0.05])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--draws", type=int, default=4, help="random directions per batch and ρ")
    args = parser.parse_args()
    if args.table:
        print(render_table(args.table, markdown), end="")
        return
    if not args.model:
        parser.error("--model is required (or --table to render measured rows)")
    torch.set_num_threads(1)
    for row in measure(args):
        print(f"{row['model']} {row['dataset']} W{row['bits']} rho={row['rho']:<6g} SAM {row['sam']:.2f} "
              f"random {row['random']:.2f} ({row['seconds']}s)", flush=True)
        append_row(args.output, row)


if __name__ == "__main__":
    main()
