"""The conflict test's flag rate during the freezing study's runs, beside its null at the starting point.

For every benchmark grid of ``bench/dg/freezing`` and every method that runs the conflict test
(``freeze_trace`` in the runs' ``metrics.json``): the share of the paper's per-step flags
(cos(g_task, g_smooth) < 0) over all step sizes, windows and decisions of all runs (the
"disorder" GAQAT compares with its threshold), and the share of step sizes frozen per decision.
Runs restored from a report written before reports kept whole runs have no ``freeze_trace``; for
them the same shares are read from the run's evaluations (``history``: the optimizer's freeze report
at each evaluation, every 100 steps, so a sample of its decisions), and the row says so.
Beside them, from ``bench/dg/null_flag_rates.jsonl`` (same model, data and bits, ρ = 0.05, at
the starting point of a run): the share flagged for SAM's ε and for random directions of the
same size. Nothing is trained.

Usage:
    python bench/dg/freezing_flag_rates.py [--root bench/dg/freezing] [--null bench/dg/null_flag_rates.jsonl]
        [--output bench/dg/freezing/flag_rates.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from freezing_grids import grid_runs, title  # bench/dg, beside this script

RHO = 0.05


def null_rates(path: Path) -> dict[tuple[str, str, int], dict]:
    """``{(model, dataset, bits): row}`` of the null table at ρ = :data:`RHO`."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return {(row["model"], row["dataset"], row["bits"]): row for row in rows if row["rho"] == RHO}


def trace_rates(root: Path) -> dict[tuple[str, str], dict]:
    """``{(grid, method): {"flagged", "frozen", "runs", "decisions", "evaluations", "config"}}`` over the runs with the test."""
    found: dict[tuple[str, str], dict] = {}
    for grid, runs in grid_runs(root):
        for run in runs:
            trace = run.get("freeze_trace")
            if trace is not None:
                if not trace.get("disorder"):
                    continue  # a method without the conflict test
                # one value per decision (its mean over step sizes), as an evaluation's freeze report reads
                disorder, frozen = (np.asarray(trace[key], dtype=float).mean(axis=1) for key in ("disorder", "frozen"))
                decisions, evaluations = len(disorder), 0
            else:  # restored from an older report: the freeze report at each evaluation
                history = [h for h in run["history"] if h.get("mean_disorder")]
                if not history:
                    continue
                disorder = np.asarray([h["mean_disorder"] for h in history])
                frozen = np.asarray([h["frozen_fraction"] for h in history])
                decisions, evaluations = 0, len(history)
            entry = found.setdefault((grid, run["config"]["method"]), {
                "disorder": [], "frozen": [], "runs": 0, "decisions": 0, "evaluations": 0, "config": run["config"]})
            entry["disorder"].append(disorder)
            entry["frozen"].append(frozen)
            entry["runs"] += 1
            entry["decisions"] += decisions
            entry["evaluations"] += evaluations
    return {key: {"flagged": float(np.concatenate(e["disorder"]).mean()), "frozen": float(np.concatenate(e["frozen"]).mean()),
                  "runs": e["runs"], "decisions": e["decisions"], "evaluations": e["evaluations"],
                  "config": e["config"]} for key, e in found.items()}


def table(root: Path, null_path: Path) -> str:
    null = null_rates(null_path)
    lines = ["| benchmark | method | runs | decisions | flagged in training (cos < 0) | frozen per decision "
             f"| null at the start, ρ = {RHO}: ε / random |", "|---|---|---|---|---|---|---|"]
    for (grid, method), entry in sorted(trace_rates(root).items()):
        config = entry["config"]
        row = null.get((config["model"], config["dataset"], config["bits"]))
        reference = f"{row['sam']:.0%} / {row['random']:.0%}" if row else "not measured"
        counts = [f"{entry['decisions']}" if entry["decisions"] else "",
                  f"{entry['evaluations']} read at evaluations" if entry["evaluations"] else ""]
        decisions = " + ".join(count for count in counts if count)
        lines.append(f"| {title(grid)} | `{method}` | {entry['runs']} | {decisions} | {entry['flagged']:.0%} "
                     f"| {entry['frozen']:.1%} | {reference} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("bench/dg/freezing"))
    parser.add_argument("--null", type=Path, default=Path("bench/dg/null_flag_rates.jsonl"))
    parser.add_argument("--output", type=Path, default=None, help="default: <root>/flag_rates.md")
    args = parser.parse_args(argv)
    text = table(args.root, args.null) + "\n"
    (args.output or args.root / "flag_rates.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
