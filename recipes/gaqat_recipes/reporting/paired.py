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

SIGNIFICANCE_SE = 2.0
"""A paired mean difference counts as evidence when it exceeds this many standard errors."""


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

    Only pairs present on both sides count; the standard error is 0 for a single pair and the mean is
    NaN when there is no pair.

    Examples:
        >>> mk = lambda d, s, v: {"config": {"test_domain": d, "seed": s}, "selected": {"val_acc": v}}
        >>> mean, se, pairs = paired_difference([mk("0", 0, 0.8), mk("0", 1, 0.9)], [mk("0", 0, 0.7), mk("0", 1, 0.7)],
        ...                                     "val_acc")
        >>> round(mean, 6), round(se, 6), pairs
        (0.15, 0.05, 2)
    """
    ref = {pair_key(r): r["selected"][metric] for r in reference}
    diffs = np.asarray([r["selected"][metric] - ref[pair_key(r)] for r in runs if pair_key(r) in ref], dtype=float)
    if diffs.size == 0:
        return math.nan, math.nan, 0
    se = float(diffs.std(ddof=1) / math.sqrt(diffs.size)) if diffs.size > 1 else 0.0
    return float(diffs.mean()), se, int(diffs.size)


def verdict(mean_diff: float, standard_error: float, pairs: int) -> str:
    """``better`` / ``worse`` when the paired mean exceeds :data:`SIGNIFICANCE_SE` standard errors, else ``no evidence``.

    Examples:
        >>> verdict(0.02, 0.005, 6), verdict(0.01, 0.01, 6), verdict(-0.03, 0.01, 6), verdict(0.05, 0.0, 1)
        ('better', 'no evidence', 'worse', 'no evidence')
    """
    if pairs < 2 or not math.isfinite(mean_diff) or standard_error <= 0:
        return "no evidence"
    if mean_diff > SIGNIFICANCE_SE * standard_error:
        return "better"
    if mean_diff < -SIGNIFICANCE_SE * standard_error:
        return "worse"
    return "no evidence"


def paired_comparisons(runs: Sequence[Mapping[str, Any]], method: str = "gaqat") -> list[dict[str, Any]]:
    """``method`` minus every other method in ``runs``, paired by (held-out domain, seed), per bit width.

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
    """
    from gaqat_recipes.methods import METHODS
    from gaqat_recipes.reporting.tables import method_bits, run_label

    groups: dict[tuple[str, int | None], list[Mapping[str, Any]]] = {}
    for run in runs:
        groups.setdefault(method_bits(run), []).append(run)
    order = list(METHODS)
    rows = []
    for (name, bits), members in sorted(groups.items(), key=lambda item: (-(item[0][1] or 0), order.index(item[0][0]))):
        if name != method:
            continue
        for (baseline, baseline_bits), reference in sorted(groups.items(), key=lambda item: order.index(item[0][0])):
            if baseline == method or baseline_bits not in (None, bits):
                continue
            test = paired_difference(members, reference, "test_acc")
            if test[2] == 0:
                continue
            val = paired_difference(members, reference, "val_acc")
            rows.append({"comparison": f"{run_label(members[0])} − {run_label(reference[0])}", "method": method,
                         "baseline": baseline, "bits": bits, "test": test, "val": val, "verdict": verdict(*val)})
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
    def cell(stat: Sequence[float]) -> str:
        return f"{100 * stat[0]:+.{digits}f} ± {100 * stat[1]:.{digits}f}"

    lines = ["| comparison | Δ held-out | Δ val (train domains) | verdict (val) | pairs |", "|---|---|---|---|---|"]
    lines += [f"| {row['comparison']} | {cell(row['test'])} | {cell(row['val'])} | {row['verdict']} | {row['test'][2]} |"
              for row in rows]
    return "\n".join(lines)
