"""Paired comparisons of runs: the mean difference over runs that share a held-out domain and a seed.

Two methods trained on the same held-out domain with the same seed see the same data split, the same
data order and the same initialization, so their difference is far less noisy than the difference of
two means over seeds. This module computes those paired differences (``run - reference``) with their
standard error, the verdict rule used to choose defaults, and the "method minus each baseline" table
written into every sweep report.

Examples:
    >>> mk = lambda m, s, t: {"config": {"method": m, "bits": 4, "test_domain": "0", "seed": s},
    ...                       "selected": {"val_acc": 0.9, "test_acc": t}}
    >>> runs = [mk("gaqat", 0, 0.72), mk("gaqat", 1, 0.74), mk("qat", 0, 0.70), mk("qat", 1, 0.70)]
    >>> row = paired_comparisons(runs)[0]
    >>> row["comparison"], [round(v, 4) for v in row["test"][:2]], row["test"][2]
    ('GAQAT W4A4 − LSQ W4A4', [0.03, 0.01], 2)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gaqat_recipes.reporting.tables import spread_cell

CONFIDENCE = 0.95
"""Two-sided confidence of the verdict: a paired mean counts as evidence beyond ``critical_value(pairs)`` SE."""


VERDICT_RULE = ("the verdict uses validation only: better/worse when |Δ val| exceeds Student's t (95%, two-sided, "
                "pairs − 1 df) standard errors, e.g. 4.3 SE for 3 pairs, 2.6 for 6, 2.1 for 18")
"""The verdict rule in words, for report headings."""


def critical_value(pairs: int) -> float:
    """How many standard errors a paired mean must exceed: Student's t at :data:`CONFIDENCE`, ``pairs - 1`` df.

    About 2 for many pairs, but 4.3 for 3 pairs and 12.7 for 2: a standard error estimated from a handful
    of pairs is itself noisy, and "2 SE" would then call noise a result far more often than 5% of the time.

    Examples:
        >>> [round(critical_value(n), 2) for n in (2, 3, 6, 18, 1000)]
        [12.71, 4.3, 2.57, 2.11, 1.96]
    """
    from scipy import stats

    if pairs < 2:
        raise ValueError(f"a standard error needs at least 2 pairs, got {pairs}")
    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, pairs - 1))


def pair_key(run: Mapping[str, Any]) -> tuple[str, int]:
    """The (held-out domain, seed) of a run: what two runs must share to be paired.

    Examples:
        >>> pair_key({"config": {"test_domain": 75, "seed": 1}})
        ('75', 1)
    """
    return str(run["config"]["test_domain"]), int(run["config"]["seed"])


def paired_difference(runs: Sequence[Mapping[str, Any]], reference: Sequence[Mapping[str, Any]],
                      metric: str) -> tuple[float, float, int]:
    """Mean and standard error of ``run - reference`` of ``selected[metric]`` over runs paired by (domain, seed).

    Only pairs present on both sides count; the standard error is 0 for a single pair (tables show it as
    ``–``, see :func:`difference_cell`) and the mean is NaN when there is no pair.

    Examples:
        >>> mk = lambda d, s, v: {"config": {"test_domain": d, "seed": s}, "selected": {"val_acc": v}}
        >>> mean, se, pairs = paired_difference([mk("0", 0, 0.8), mk("0", 1, 0.9)], [mk("0", 0, 0.7), mk("0", 1, 0.7)],
        ...                                     "val_acc")
        >>> round(mean, 6), round(se, 6), pairs
        (0.15, 0.05, 2)
    """
    ref = {pair_key(r): r["selected"][metric] for r in reference}
    return _mean_and_se([r["selected"][metric] - ref[pair_key(r)] for r in runs if pair_key(r) in ref])


def _mean_and_se(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, standard error (0 for one value) and count of ``values``; NaN, NaN, 0 when there are none."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return math.nan, math.nan, 0
    se = float(array.std(ddof=1) / math.sqrt(array.size)) if array.size > 1 else 0.0
    return float(array.mean()), se, int(array.size)


def seed_clustered_difference(runs: Sequence[Mapping[str, Any]], reference: Sequence[Mapping[str, Any]],
                              metric: str) -> tuple[float, float, int]:
    """Like :func:`paired_difference`, but the pairs of each seed are averaged first: mean ± SE over seeds.

    Runs of one seed share their initialization across held-out domains, so with many held-out domains
    per seed their pairs are not independent; treating the seed as the unit gives a cautious standard
    error. The count returned is the number of seeds (the degrees of freedom of :func:`verdict` follow it).

    Examples:
        >>> mk = lambda d, s, v: {"config": {"test_domain": d, "seed": s}, "selected": {"val_acc": v}}
        >>> mine = [mk(d, s, 0.8 + 0.1 * s) for d in "ab" for s in (0, 1)]
        >>> mean, se, seeds = seed_clustered_difference(mine, [mk(d, s, 0.7) for d in "ab" for s in (0, 1)], "val_acc")
        >>> round(mean, 6), round(se, 6), seeds
        (0.15, 0.05, 2)
    """
    ref = {pair_key(r): r["selected"][metric] for r in reference}
    by_seed: dict[int, list[float]] = {}
    for run in runs:
        if pair_key(run) in ref:
            by_seed.setdefault(pair_key(run)[1], []).append(run["selected"][metric] - ref[pair_key(run)])
    return _mean_and_se([float(np.mean(diffs)) for diffs in by_seed.values()])


def verdict(mean_diff: float, standard_error: float, pairs: int) -> str:
    """``better`` / ``worse`` when the paired mean exceeds :func:`critical_value` standard errors, else ``no evidence``.

    Examples:
        >>> verdict(0.02, 0.005, 6), verdict(0.01, 0.01, 6), verdict(-0.03, 0.01, 6), verdict(0.05, 0.0, 1)
        ('better', 'no evidence', 'worse', 'no evidence')
        >>> verdict(0.03, 0.01, 3), verdict(0.03, 0.01, 18)   # 3 SE: not enough with 3 pairs, enough with 18
        ('no evidence', 'better')
    """
    if pairs < 2 or not math.isfinite(mean_diff) or standard_error <= 0:
        return "no evidence"
    threshold = critical_value(pairs) * standard_error
    if mean_diff > threshold:
        return "better"
    if mean_diff < -threshold:
        return "worse"
    return "no evidence"


def _paired_at(reference_bits: int | None, bits: int | None) -> bool:
    """Whether a baseline at ``reference_bits`` pairs with a method at ``bits``: a quantized one at its own bit
    width, a full-precision one (``None``) at every bit width."""
    return reference_bits in (None, bits)


def paired_comparisons(runs: Sequence[Mapping[str, Any]], method: str = "gaqat",
                       baseline: str | None = None) -> list[dict[str, Any]]:
    """``method`` minus every other method in ``runs``, paired by (held-out domain, seed), per bit width.

    With ``baseline``, the other way round: every other method minus ``baseline`` (``method`` is then
    ignored), e.g. ``baseline="sagm-qat"`` for "what beats LSQ + SAGM".

    A quantized baseline is paired at the same bit width; a full-precision baseline (``fp``, ``fp-sam``)
    is paired with ``method`` at every bit width. Rows (empty when ``method`` is absent): ``comparison``
    (label), ``method``, ``baseline``, ``bits``, ``test`` and ``val`` as (mean, standard error, pairs)
    of the selected held-out and training-domain validation accuracy, and ``verdict`` (from validation
    only, see :func:`verdict`). Baselines without a shared (domain, seed) are left out.

    Examples:
        >>> mk = lambda m, b, t: {"config": {"method": m, "bits": b, "test_domain": "0", "seed": 0},
        ...                       "selected": {"val_acc": 0.9, "test_acc": t}}
        >>> rows = paired_comparisons([mk("gaqat", 3, 0.7), mk("qat", 4, 0.8), mk("fp", 4, 0.9)])
        >>> [(r["comparison"], round(r["test"][0], 6)) for r in rows]  # no LSQ W3A3 to pair with
        [('GAQAT W3A3 − FP (ERM)', -0.2)]
        >>> [r["comparison"] for r in paired_comparisons([mk("gaqat", 4, 0.7), mk("qat", 4, 0.8)], baseline="qat")]
        ['GAQAT W4A4 − LSQ W4A4']
    """
    from gaqat_recipes.methods import METHODS
    from gaqat_recipes.reporting.tables import group_by_method_bits, method_bits_order, run_label

    groups = group_by_method_bits(runs)
    order = list(METHODS)
    by_bits = sorted(groups.items(), key=lambda item: method_bits_order(item[0]))
    if baseline is not None:
        pairs = [(key, members, ref_key, reference) for key, members in by_bits if key[0] != baseline
                 for ref_key, reference in by_bits if ref_key[0] == baseline and _paired_at(ref_key[1], key[1])]
    else:
        pairs = [(key, members, ref_key, reference) for key, members in by_bits if key[0] == method
                 for ref_key, reference in sorted(groups.items(), key=lambda item: order.index(item[0][0]))
                 if ref_key[0] != method and _paired_at(ref_key[1], key[1])]
    rows = []
    for (name, bits), members, (reference_name, _), reference in pairs:
        test = paired_difference(members, reference, "test_acc")
        if test[2] == 0:
            continue
        val = paired_difference(members, reference, "val_acc")
        rows.append({"comparison": f"{run_label(members[0])} − {run_label(reference[0])}", "method": name,
                     "baseline": reference_name, "bits": bits, "test": test, "val": val, "verdict": verdict(*val)})
    return rows


def paired_markdown(rows: Sequence[Mapping[str, Any]], digits: int = 1) -> str:
    """A markdown table of :func:`paired_comparisons` rows, differences in accuracy points (± standard error).

    Examples:
        >>> print(paired_markdown([{"comparison": "GAQAT W4A4 − LSQ W4A4", "test": (0.021, 0.009, 6),
        ...                         "val": (0.004, 0.003, 6), "verdict": "no evidence"}]))
        | comparison | Δ held-out | Δ val (train domains) | verdict (val) | pairs |
        |---|---|---|---|---|
        | GAQAT W4A4 − LSQ W4A4 | +2.1 ± 0.9 | +0.4 ± 0.3 | no evidence | 6 |
    """
    lines = ["| comparison | Δ held-out | Δ val (train domains) | verdict (val) | pairs |", "|---|---|---|---|---|"]
    lines += [f"| {row['comparison']} | {difference_cell(row['test'], digits)} | {difference_cell(row['val'], digits)} "
              f"| {row['verdict']} | {row['test'][2]} |" for row in rows]
    return "\n".join(lines)


def paired_cells(runs: Sequence[Mapping[str, Any]], reference: str, metric: str = "val_acc") -> list[dict[str, Any]]:
    """Every method minus ``reference``, cell by cell: one difference per (held-out domain, seed), per bit width.

    What :func:`paired_comparisons` averages, shown before averaging: with a handful of pairs no verdict
    is possible, and the cells themselves (does a lead repeat from one cell to the next?) are the result.
    Per bit width, the first row is ``reference``'s own ``selected[metric]`` (``"difference": False``),
    then one row per other method with its differences (paired as :func:`paired_comparisons` pairs them:
    a quantized reference at its own bit width, a full-precision one at every bit width). Each row has
    ``label``, ``bits``, ``cells`` ({(domain, seed): value}) and ``mean`` (mean, standard error, pairs).

    Examples:
        >>> mk = lambda m, d, v: {"config": {"method": m, "bits": 3, "test_domain": d, "seed": 0},
        ...                       "selected": {"val_acc": v}}
        >>> ref, mine = paired_cells([mk("sagm-qat", "fog", 0.9), mk("gaqat", "fog", 0.87)], "sagm-qat")
        >>> ref["label"], ref["cells"], mine["label"], round(mine["cells"][("fog", 0)], 6)
        ('LSQ + SAGM W3A3', {('fog', 0): 0.9}, 'GAQAT W3A3', -0.03)
    """
    from gaqat_recipes.methods import METHODS
    from gaqat_recipes.reporting.tables import group_by_method_bits, run_label

    groups = group_by_method_bits(runs)
    order = list(METHODS)
    rows = []
    for (name, bits), base in sorted(groups.items(), key=lambda item: -(item[0][1] or 0)):
        if name != reference:
            continue
        base_cells = {pair_key(run): float(run["selected"][metric]) for run in base}
        rows.append({"label": run_label(base[0]), "bits": bits, "difference": False, "cells": base_cells,
                     "mean": _mean_and_se(list(base_cells.values()))})
        for (other, other_bits), members in sorted(groups.items(), key=lambda item: order.index(item[0][0])):
            if other == reference or not _paired_at(bits, other_bits):
                continue
            cells = {pair_key(run): float(run["selected"][metric]) - base_cells[pair_key(run)]
                     for run in members if pair_key(run) in base_cells}
            if cells:
                rows.append({"label": run_label(members[0]), "bits": bits, "difference": True, "cells": cells,
                             "mean": _mean_and_se(list(cells.values()))})
    return rows


def paired_cells_markdown(rows: Sequence[Mapping[str, Any]], digits: int = 1) -> str:
    """A markdown table of :func:`paired_cells` rows: one column per (held-out domain, seed), then mean ± SE.

    Columns run seed by seed (domains in order, numbers by value); a method without a run in a cell shows
    ``not run``. The reference's row holds its accuracy (%), the others their differences in points.

    Examples:
        >>> rows = [{"label": "LSQ + SAGM W3A3", "difference": False, "cells": {("fog", 0): 0.899, ("edges", 0): 0.92},
        ...          "mean": (0.9095, 0.0105, 2)},
        ...         {"label": "GAQAT W3A3", "difference": True, "cells": {("fog", 0): -0.03}, "mean": (-0.03, 0.0, 1)}]
        >>> print(paired_cells_markdown(rows))
        | method | `edges`, seed 0 | `fog`, seed 0 | mean ± SE |
        |---|---|---|---|
        | LSQ + SAGM W3A3 (accuracy, %) | 92.0 | 89.9 | 91.0 ± 1.1 |
        | GAQAT W3A3 | not run | -3.0 | -3.0 ± – |
    """
    if not rows:
        return ""

    def column_order(key: tuple[str, int]) -> tuple[int, bool, float, str]:
        domain, seed = key
        numeric = domain.lstrip("-").replace(".", "", 1).isdigit()
        return seed, not numeric, float(domain) if numeric else 0.0, domain

    columns = sorted({key for row in rows for key in row["cells"]}, key=column_order)
    lines = ["| method | " + " | ".join(f"`{domain}`, seed {seed}" for domain, seed in columns) + " | mean ± SE |",
             "|---|" + "---|" * (len(columns) + 1)]
    for row in rows:
        sign = "+" if row["difference"] else ""
        cells = [f"{100 * row['cells'][key]:{sign}.{digits}f}" if key in row["cells"] else "not run" for key in columns]
        mean = spread_cell(*row["mean"], digits, signed=row["difference"])
        label = row["label"] if row["difference"] else f"{row['label']} (accuracy, %)"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines)


def difference_cell(stat: Sequence[float], digits: int = 1) -> str:
    """``"+m ± se"`` in accuracy points of a (mean, standard error, pairs) difference.

    A single pair has no standard error: it is shown as ``–``, not as a misleading ``0.0``.

    Examples:
        >>> difference_cell((0.021, 0.009, 6)), difference_cell((-0.012, 0.0, 1)), difference_cell((0.0, 0.0, 3))
        ('+2.1 ± 0.9', '-1.2 ± –', '+0.0 ± 0.0')
    """
    return spread_cell(stat[0], stat[1], stat[2], digits, signed=True)
