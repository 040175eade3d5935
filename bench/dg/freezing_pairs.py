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
re-test's). A grid's cells trained again with a longer step cap (``<root>/long/<grid>``) get the same
comparison against LSQ + SAGM at that cap, each method's longer run minus its run in the grid (what the
longer training changed), and the steps selected and trained under both caps. Every comparison table
comes twice: over (domain, seed) pairs, and clustered by seed (the runs of one seed share its random draws
across held-out domains, so a seed's pairs are averaged before the standard error).

Usage:
    python bench/dg/freezing_pairs.py [--root bench/dg/freezing] [--output bench/dg/freezing/pairs.md]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path

from freezing_grids import MODELS, grid_runs, parse, title  # bench/dg, beside this script

from gaqat_recipes.methods import METHODS
from gaqat_recipes.reporting.paired import difference_cell, pair_key, paired_difference, seed_clustered_difference, verdict

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


def long_table(grids: dict[str, list[dict]], longs: dict[str, list[dict]]) -> str:
    """Per precision: the longer-capped runs against LSQ + SAGM, each method's longer run minus its grid run, and steps.

    The longer minus shorter differences carry no verdict: a method whose training does not depend on the cap
    repeats its shorter run step for step (on a host that computes alike) and then goes on, so its longer run
    selects the best of a superset of the same evaluations and its validation difference is never negative.
    Held-out accuracy has no such floor.
    """
    blocks = []
    for bits in sorted({parse(grid)[2] for grid in longs}, reverse=True):
        mine = {grid: longs[grid] for grid in sorted(longs) if parse(grid)[2] == bits}
        pooled = pooled_by_model(mine)
        columns = {title(grid, bits=False): runs for grid, runs in mine.items()} | pooled
        shorter = {grid: grids.get(grid, []) for grid in mine}
        pooled_shorter = pooled_by_model(shorter)   # the same columns as the longer runs' pools
        pairs = {title(grid, bits=False): (mine[grid], shorter[grid]) for grid in mine}
        pairs |= {name: (runs, pooled_shorter[name]) for name, runs in pooled.items()}
        cap = _caps([run for runs in mine.values() for run in runs])
        blocks.append(f"**W{bits}A{bits}, trained with a {cap}-step cap**\n\n" + _table(columns)
                      + CLUSTERED + _table(columns, seed_clustered_difference, "seeds")
                      + f"\n\nEach method's run with the {cap}-step cap minus its run in the grid (same benchmark, held-out"
                      " domain and seed), without a verdict: where training does not depend on the cap and both runs"
                      " ran on hosts that compute alike, the longer run repeats the shorter one and goes on, so it selects"
                      " from more evaluations of the same validation set and its validation difference cannot be"
                      " negative (Lite0's longer runs ran on another host than its grid's, so theirs can):\n\n"
                      + _longer_minus_shorter(pairs)
                      + CLUSTERED + _longer_minus_shorter(pairs, seed_clustered_difference, "seeds")
                      + "\n\nSteps: the step selected by training-domain validation, mean (min–max), and the runs the"
                      " cap ended (their last evaluation at the cap), for the same cells under both caps:\n\n"
                      + _steps_table(mine, shorter))
    return "\n\n".join(blocks)


def _longer_minus_shorter(pairs: dict[str, tuple[list[dict], list[dict]]], difference: Difference = paired_difference,
                          unit: str = "pairs") -> str:
    methods = [m for m in METHODS if any(run["config"]["method"] == m for longer, _ in pairs.values() for run in longer)]
    lines = _header("method", pairs, unit, decide=False)
    for method in methods:
        cells = []
        for longer, shorter in pairs.values():   # no verdict: see long_table
            cells += _cells([r for r in longer if r["config"]["method"] == method],
                            [r for r in shorter if r["config"]["method"] == method], difference, decide=False)
        lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _header(first: str, columns: Iterable[str], unit: str, decide: bool = True) -> list[str]:
    """A table's header and separator lines: ``first``, then a validation and a held-out column per column name."""
    names = list(columns)
    val = "Δ val, verdict" if decide else "Δ val"
    return [f"| {first} | " + " | ".join(f"{c}: {val} ({unit}) | {c}: Δ held-out" for c in names) + " |",
            "|---|" + "---|---|" * len(names)]


def _cells(runs: list[dict], reference: list[dict], difference: Difference, decide: bool = True) -> list[str]:
    """``["Δ val ± SE, verdict (n)", "Δ held-out ± SE"]`` (without the verdict unless ``decide``) of ``runs`` minus
    ``reference``, or two dashes without a pair."""
    val, test = difference(runs, reference, "val_acc"), difference(runs, reference, "test_acc")
    if val[2] == 0:
        return ["–", "–"]
    decision = f", {verdict(*val)}" if decide else ""
    return [f"{difference_cell(val)}{decision} ({val[2]})", difference_cell(test)]


def _steps_table(longer_by_grid: dict[str, list[dict]], shorter_by_grid: dict[str, list[dict]]) -> str:
    """Per model and method: the selected steps and the runs the cap ended, under the grid's cap and the longer one."""
    lines = ["| model | method | cap | selected step | ended by the cap | runs |", "|---|---|---|---|---|---|"]
    for model in sorted({parse(grid)[1] for grid in longer_by_grid}):
        grids = [grid for grid in longer_by_grid if parse(grid)[1] == model]
        longer = [run for grid in grids for run in longer_by_grid[grid]]
        cells = {(grid, *pair_key(run), run["config"]["method"]) for grid in grids for run in longer_by_grid[grid]}
        shorter = [run for grid in grids for run in shorter_by_grid.get(grid, [])
                   if (grid, *pair_key(run), run["config"]["method"]) in cells]
        for method in [m for m in METHODS if any(run["config"]["method"] == m for run in longer)]:
            for runs in (shorter, longer):
                mine = [run for run in runs if run["config"]["method"] == method]
                if not mine:
                    continue
                steps = [run["selected"]["step"] for run in mine]
                capped = sum(run["history"][-1]["step"] >= run["config"]["steps"] for run in mine)
                lines.append(f"| {MODELS.get(model, model)} | `{method}` | {_caps(mine)} | "
                             f"{sum(steps) / len(steps):.0f} ({min(steps)}–{max(steps)}) | {capped} | {len(mine)} |")
    return "\n".join(lines)


def _caps(runs: list[dict]) -> str:
    """The step caps (``--steps``) of ``runs``, ``/``-joined: ``"4000"``, or ``"2000/4000"`` for a mixture."""
    return "/".join(str(steps) for steps in sorted({run["config"]["steps"] for run in runs}))


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
    lines = _header("comparison", columns, unit)
    for method, reference in comparisons:
        cells = []
        for runs in columns.values():
            mine = [r for r in runs if r["config"]["method"] == method]
            theirs = [r for r in runs if r["config"]["method"] == reference]
            cells += _cells(mine, theirs, difference)
        lines.append(f"| `{method}` − `{reference}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("bench/dg/freezing"))
    parser.add_argument("--output", type=Path, default=None, help="default: <root>/pairs.md")
    args = parser.parse_args(argv)
    grids, retests, longs = load(args.root), load(args.root / "retest"), load(args.root / "long")
    text = table(grids) + "\n"
    if retests:
        text += "\n" + retest_table(grids, retests) + "\n"
    if longs:
        text += "\n" + long_table(grids, longs) + "\n"
    output = args.output or args.root / "pairs.md"
    output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
