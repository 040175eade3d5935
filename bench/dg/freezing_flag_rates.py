"""The conflict test's flag rate during the freezing study's runs, beside its null at the starting point.

For every benchmark grid of ``bench/dg/freezing`` and every method that runs the conflict test
(``freeze_trace`` in the runs' ``metrics.json``): the share of the paper's per-step flags
(cos(g_task, g_smooth) < 0) over all step sizes, windows and decisions of all runs (the
"disorder" GAQAT compares with its threshold), and the share of step sizes frozen per decision.
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
from freezing_grids import title  # bench/dg, beside this script

RHO = 0.05


def null_rates(path: Path) -> dict[tuple[str, str, int], dict]:
    """``{(model, dataset, bits): row}`` of the null table at ρ = :data:`RHO`."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return {(row["model"], row["dataset"], row["bits"]): row for row in rows if row["rho"] == RHO}


def trace_rates(root: Path) -> dict[tuple[str, str], dict]:
    """``{(grid, method): {"flagged", "frozen", "runs", "decisions", "config"}}`` over the runs with a freeze trace."""
    found: dict[tuple[str, str], dict] = {}
    for path in sorted(root.glob("*_w?/heldout_*/runs/**/metrics.json")):
        run = json.loads(path.read_text())
        trace = run.get("freeze_trace") or {}
        if not trace.get("disorder"):
            continue
        grid = path.relative_to(root).parts[0]
        entry = found.setdefault((grid, run["config"]["method"]), {"disorder": [], "frozen": [], "runs": 0,
                                                                    "config": run["config"]})
        entry["disorder"].append(np.asarray(trace["disorder"], dtype=float))
        entry["frozen"].append(np.asarray(trace["frozen"], dtype=float))
        entry["runs"] += 1
    return {key: {"flagged": float(np.concatenate(e["disorder"]).mean()), "frozen": float(np.concatenate(e["frozen"]).mean()),
                  "runs": e["runs"], "decisions": sum(len(d) for d in e["disorder"]), "config": e["config"]}
            for key, e in found.items()}


def table(root: Path, null_path: Path) -> str:
    null = null_rates(null_path)
    lines = ["| benchmark | method | runs | decisions | flagged in training (cos < 0) | frozen per decision "
             f"| null at the start, ρ = {RHO}: ε / random |", "|---|---|---|---|---|---|---|"]
    for (grid, method), entry in sorted(trace_rates(root).items()):
        config = entry["config"]
        row = null.get((config["model"], config["dataset"], config["bits"]))
        reference = f"{row['sam']:.0%} / {row['random']:.0%}" if row else "not measured"
        lines.append(f"| {title(grid)} | `{method}` | {entry['runs']} | {entry['decisions']} | {entry['flagged']:.0%} "
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
