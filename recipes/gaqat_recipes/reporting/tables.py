"""Summaries of many runs (``metrics.json`` dicts): mean ± std of the selected test-domain accuracy per method and bits."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gaqat_recipes.methods import METHODS

VAL_NOTE = ("val (train domains): the selected checkpoints' training-domain validation accuracy, averaged over the "
            "held-out domains per seed like the average column (each held-out domain has its own training domains), "
            "then mean ± std over seeds.")
"""Note under a table with several held-out domains: how its validation column is defined."""


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0.0 for a single value) of ``values``.

    Examples:
        >>> [round(v, 4) for v in mean_std([0.6, 0.8])], mean_std([0.7])
        ([0.7, 0.1414], (0.7, 0.0))
    """
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def spread_cell(mean: float, spread: float, samples: int | None, digits: int = 1, signed: bool = False) -> str:
    """``"m ± spread"`` in points of a fraction's mean and spread (std or standard error) over ``samples``.

    Fewer than two samples (one run, or one pair) have no spread: it is shown as ``–``, not as a measured
    ``0.0``. ``samples=None`` (unknown) shows the spread given.

    Examples:
        >>> spread_cell(0.9, 0.012, 3), spread_cell(0.9, 0.0, 1), spread_cell(-0.012, 0.0, 1, signed=True)
        ('90.0 ± 1.2', '90.0 ± –', '-1.2 ± –')
    """
    shown = "–" if samples is not None and samples < 2 else f"{100 * spread:.{digits}f}"
    return f"{100 * mean:{'+' if signed else ''}.{digits}f} ± {shown}"


def run_label(metrics: Mapping[str, Any]) -> str:
    """Row label of a run: the method's label, with ``W<b>A<b>`` for quantized methods.

    Examples:
        >>> run_label({"config": {"method": "gaqat", "bits": 4}}), run_label({"config": {"method": "fp", "bits": 4}})
        ('GAQAT W4A4', 'FP (ERM)')
    """
    config = metrics["config"]
    spec = METHODS[config["method"]]
    return f"{spec.label} W{config['bits']}A{config['bits']}" if spec.quantized else spec.label


def method_bits(metrics: Mapping[str, Any]) -> tuple[str, int | None]:
    """The (method, bits) a run is grouped under: bits is ``None`` for full-precision methods.

    Examples:
        >>> method_bits({"config": {"method": "gaqat", "bits": 3}}), method_bits({"config": {"method": "fp", "bits": 3}})
        (('gaqat', 3), ('fp', None))
    """
    config = metrics["config"]
    return config["method"], config["bits"] if METHODS[config["method"]].quantized else None


def group_by_method_bits(runs: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int | None], list[Mapping[str, Any]]]:
    """Runs by :func:`method_bits`, groups in order of first appearance; sort with :func:`method_bits_order`.

    Examples:
        >>> runs = [{"config": {"method": m, "bits": b}} for m, b in (("qat", 3), ("gaqat", 4), ("qat", 3))]
        >>> {key: len(members) for key, members in group_by_method_bits(runs).items()}
        {('qat', 3): 2, ('gaqat', 4): 1}
    """
    groups: dict[tuple[str, int | None], list[Mapping[str, Any]]] = {}
    for run in runs:
        groups.setdefault(method_bits(run), []).append(run)
    return groups


def method_bits_order(key: tuple[str, int | None]) -> tuple[int, int]:
    """Sort key of a (method, bits) group: the widest bits first, full precision last, then the methods' order.

    Examples:
        >>> sorted([("fp", None), ("gaqat", 3), ("qat", 4), ("gaqat", 4)], key=method_bits_order)
        [('qat', 4), ('gaqat', 4), ('gaqat', 3), ('fp', None)]
    """
    return -(key[1] or 0), list(METHODS).index(key[0])


def summarize_runs(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Group runs by method (and bits for quantized methods); mean ± std over seeds per held-out domain.

    Each row: ``label``, ``method``, ``bits`` (``None`` for full precision), ``domains`` ({test domain:
    (mean, std)} of the selected test accuracy), ``average`` ((mean, std) over seeds of the per-seed mean
    over held-out domains), ``average_seeds`` (how many seeds that is), ``val`` (the same for the
    selected training-domain validation accuracy), ``runs`` and ``domain_runs`` ({test domain: runs}).

    The averages use only the seeds that have a run on **every** held-out domain present in ``runs``
    (so rows stay comparable when some domains have more seeds than others); they are ``None`` when no
    seed covers them all. Validation is never pooled over held-out domains as if they were one set:
    each held-out domain validates on different training domains.

    Examples:
        >>> runs = [{"config": {"method": "qat", "bits": 4, "test_domain": "75", "seed": s},
        ...          "selected": {"test_acc": a, "val_acc": 0.9}} for s, a in ((0, 0.6), (1, 0.8))]
        >>> row = summarize_runs(runs)[0]
        >>> row["label"], row["domains"]["75"][0], row["runs"]
        ('LSQ W4A4', 0.7, 2)
        >>> runs.append({"config": {"method": "qat", "bits": 4, "test_domain": "0", "seed": 0},
        ...              "selected": {"test_acc": 0.9, "val_acc": 0.9}})
        >>> row = summarize_runs(runs)[0]
        >>> [round(v, 6) for v in row["average"]], row["average_seeds"]  # seed 1 has no 0° run
        ([0.75, 0.0], 1)
    """
    all_domains = {str(run["config"]["test_domain"]) for run in runs}
    groups: dict[tuple[str, int | None], list[Mapping[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[method_bits(run)].append(run)
    method_order = list(METHODS)
    rows = []
    for (method, bits), members in sorted(groups.items(), key=lambda item: (method_order.index(item[0][0]), item[0][1] or 99)):
        by_domain: dict[str, list[float]] = defaultdict(list)
        by_seed: dict[int, dict[str, dict[str, float]]] = defaultdict(dict)
        for run in members:
            by_domain[str(run["config"]["test_domain"])].append(run["selected"]["test_acc"])
            by_seed[run["config"]["seed"]][str(run["config"]["test_domain"])] = run["selected"]
        complete = [list(selected.values()) for selected in by_seed.values() if set(selected) == all_domains]

        def seed_average(key: str, complete: list = complete) -> tuple[float, float] | None:
            return mean_std([float(np.mean([s[key] for s in seed])) for seed in complete]) if complete else None

        rows.append({
            "label": run_label(members[0]),
            "method": method,
            "bits": bits,
            "domains": {domain: mean_std(values) for domain, values in by_domain.items()},
            "domain_runs": {domain: len(values) for domain, values in by_domain.items()},
            "average": seed_average("test_acc"),
            "average_seeds": len(complete),
            "val": seed_average("val_acc"),
            "runs": len(members),
        })
    return rows


def markdown_table(rows: Sequence[Mapping[str, Any]], digits: int = 1) -> str:
    """A markdown table of :func:`summarize_runs` rows, accuracies in percent (mean ± std over seeds).

    Columns: one per held-out domain, ``average`` (when there are several), ``val`` (training-domain
    validation accuracy of the selected checkpoints, when present) and ``runs``. An average over a
    single seed is shown without a spread, as ``mean (1 seed)``; a held-out column or ``val`` that rests
    on one run shows its spread as ``–`` (rows without ``domain_runs`` / ``average_seeds`` keep ``± std``).

    Examples:
        >>> print(markdown_table([{"label": "GAQAT W4A4", "domains": {"0": (0.91, 0.01), "75": (0.8, 0.02)},
        ...                        "average": (0.855, 0.005), "val": (0.97, 0.0), "runs": 2}]))
        | method | test 0 | test 75 | average | val (train domains) | runs |
        |---|---|---|---|---|---|
        | GAQAT W4A4 | 91.0 ± 1.0 | 80.0 ± 2.0 | 85.5 ± 0.5 | 97.0 ± 0.0 | 2 |
        >>> print(markdown_table([{"label": "LSQ W4A4", "domains": {"0": (0.9, 0.0)}, "domain_runs": {"0": 1},
        ...                        "average": (0.9, 0.0), "average_seeds": 1, "val": (0.95, 0.0), "runs": 1}]))
        | method | test 0 | val (train domains) | runs |
        |---|---|---|---|
        | LSQ W4A4 | 90.0 ± – | 95.0 ± – | 1 |
    """
    domains: list[str] = []
    for row in rows:
        domains.extend(d for d in row["domains"] if d not in domains)
    domains.sort(key=lambda d: (0, float(d)) if d.replace(".", "", 1).lstrip("-").isdigit() else (1, d))
    with_val = any("val" in row for row in rows)
    header = ["method", *[f"test {d}" for d in domains]]
    header += ["average"] if len(domains) > 1 else []
    header += ["val (train domains)"] if with_val else []
    header += ["runs"]

    def cell(stat: tuple[float, float] | None, samples: int | None = None) -> str:
        return "–" if stat is None else spread_cell(*stat, samples, digits)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["label"], *[cell(row["domains"].get(d), row.get("domain_runs", {}).get(d)) for d in domains]]
        average = cell(row["average"])
        if row.get("average_seeds") == 1 and row["average"] is not None:
            average = f"{100 * row['average'][0]:.{digits}f} (1 seed)"
        cells += [average] if len(domains) > 1 else []
        cells += [cell(row.get("val"), row.get("average_seeds"))] if with_val else []
        cells += [str(row["runs"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
