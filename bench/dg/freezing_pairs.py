"""Paired comparisons of the freezing study, per benchmark and pooled over a model's benchmarks (nothing is trained).

Each benchmark grid of ``bench/dg/freezing`` (``<benchmark>_<model>_w<bits>/heldout_*``) is
loaded, and every comparison below is the mean paired difference (same benchmark, held-out
domain and seed) ± its standard error, of training-domain validation accuracy (which decides the
verdict, see :func:`gaqat_recipes.reporting.paired.verdict`) and of held-out accuracy:

* every method minus LSQ + SAGM (the reference the study must beat);
* oscillation freezing added to calibrated GAQAT on SAGM (``gaqat-osc`` − ``gaqat-cal-sagm``:
  the same optimizer with and without the freezer, so the difference is the freezer's).

A grid re-tested on its other held-out domains (``<root>/retest/<grid>``, the methods that were best
on the full grid) gets a second table: the re-test's domains alone (runs that did not shape the
hypothesis) and every held-out domain of the benchmark (the grid's runs of those methods plus the
re-test's). Every table comes twice: over (domain, seed) pairs, and clustered by seed (the runs of
one seed share its random draws across held-out domains, so a seed's pairs are averaged before the standard error).

Usage:
    python bench/dg/freezing_pairs.py [--root bench/dg/freezing] [--output bench/dg/freezing/pairs.md]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from freezing_grids import MODELS, grid_runs, parse, title  # bench/dg, beside this script

from gaqat_recipes.methods import METHODS
from gaqat_recipes.reporting.paired import paired_difference, seed_clustered_difference, verdict

Difference = Callable[[list[dict], list[dict], str], tuple[float, float, int]]
REFERENCE = "sagm-qat"
EXTRA_PAIRS = (("gaqat-osc", "gaqat-cal-sagm"),)
CLUSTERED = ("\n\nThe same, clustered by seed: a seed's pairs (one per held-out domain and benchmark, all drawn with"
             " the same seed) averaged first, then mean ± SE over seeds; the verdict's degrees of freedom are"
             " seeds − 1.\n\n")


def load(root: Path) -> dict[str, list[dict]]:
    """``{benchmark grid name: runs}``, each run's held-out domain prefixed with its benchmark (pairs stay within one)."""
    grids = {}
    for grid, runs in grid_runs(root) if root.is_dir() else ():
        for run in runs:
            run["config"] = {**run["config"], "test_domain": f"{grid}/{run['config']['test_domain']}"}
        grids[grid] = runs
    return grids


def table(grids: dict[str, list[dict]]) -> str:
    """One table per precision: a column per benchmark grid, and per model a pooled column when it has two or more."""
    blocks = []
    for bits in sorted({parse(grid)[2] for grid in grids}, reverse=True):
        mine = {grid: runs for grid, runs in grids.items() if parse(grid)[2] == bits}
        columns = {title(grid, bits=False): runs for grid, runs in mine.items()} | pooled_by_model(mine)
        blocks.append(f"**W{bits}A{bits}**\n\n" + _table(columns)
                      + CLUSTERED + _table(columns, seed_clustered_difference, "seeds"))
    return "\n\n".join(blocks)


def retest_table(grids: dict[str, list[dict]], retests: dict[str, list[dict]]) -> str:
    """Per re-tested grid: the re-test's domains alone and every held-out domain; pooled per model and precision."""
    blocks = []
    for bits in sorted({parse(grid)[2] for grid in retests}, reverse=True):
        fresh = {grid: retests[grid] for grid in sorted(retests) if parse(grid)[2] == bits}
        every = {}
        columns: dict[str, list[dict]] = {}
        for grid, runs in fresh.items():
            methods = {run["config"]["method"] for run in runs}
            every[grid] = runs + [run for run in grids.get(grid, []) if run["config"]["method"] in methods]
            name = title(grid, bits=False)
            columns[f"{name}, re-test domains"], columns[f"{name}, every domain"] = runs, every[grid]
        columns |= pooled_by_model(fresh, ", re-test domains") | pooled_by_model(every, ", every domain")
        blocks.append(f"**W{bits}A{bits}, re-tested on every other held-out domain**\n\n" + _table(columns)
                      + CLUSTERED + _table(columns, seed_clustered_difference, "seeds"))
    return "\n\n".join(blocks)


def pooled_by_model(runs_by_grid: dict[str, list[dict]], suffix: str = "") -> dict[str, list[dict]]:
    """``{"<model> pooled<suffix>": runs of all its grids}`` for each model with two or more grids in ``runs_by_grid``."""
    pooled = {}
    for model in sorted({parse(grid)[1] for grid in runs_by_grid}):
        grids_of_model = [grid for grid in runs_by_grid if parse(grid)[1] == model]
        if len(grids_of_model) > 1:
            pooled[f"{MODELS.get(model, model)} pooled{suffix}"] = [run for g in grids_of_model for run in runs_by_grid[g]]
    return pooled


def _table(columns: dict[str, list[dict]], difference: Difference = paired_difference, unit: str = "pairs") -> str:
    every = [run for runs in columns.values() for run in runs]
    present = {run["config"]["method"] for run in every}
    methods = [m for m in METHODS if m in present and m != REFERENCE]
    comparisons = [(m, REFERENCE) for m in methods] + [pair for pair in EXTRA_PAIRS if set(pair) <= present]
    lines = ["| comparison | " + " | ".join(f"{c}: Δ val, verdict ({unit}) | {c}: Δ held-out" for c in columns) + " |",
             "|---|" + "---|---|" * len(columns)]
    for method, reference in comparisons:
        cells = []
        for runs in columns.values():
            mine = [r for r in runs if r["config"]["method"] == method]
            theirs = [r for r in runs if r["config"]["method"] == reference]
            val, test = difference(mine, theirs, "val_acc"), difference(mine, theirs, "test_acc")
            if val[2] == 0:
                cells += ["–", "–"]
                continue
            cells.append(f"{100 * val[0]:+.1f} ± {100 * val[1]:.1f}, {verdict(*val)} ({val[2]})")
            cells.append(f"{100 * test[0]:+.1f} ± {100 * test[1]:.1f}")
        lines.append(f"| `{method}` − `{reference}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("bench/dg/freezing"))
    parser.add_argument("--output", type=Path, default=None, help="default: <root>/pairs.md")
    args = parser.parse_args(argv)
    grids, retests = load(args.root), load(args.root / "retest")
    text = table(grids) + "\n"
    if retests:
        text += "\n" + retest_table(grids, retests) + "\n"
    output = args.output or args.root / "pairs.md"
    output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
