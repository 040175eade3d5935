"""GAQAT ablations: one option changed at a time from the library defaults, compared on training-domain validation.

Each :class:`AblationVariant` is the ``gaqat`` method with a few :class:`gaqat_wrap.GAQATConfig` fields
overridden (or another method, e.g. ``sam-qat`` as the "never freeze" end of the threshold axis).
Every variant runs over the same held-out domains and seeds through :func:`~gaqat_recipes.run_sweep`
(resumable), into ``<root>/<variant name>/``. The summary pairs each variant's runs with the reference
variant's runs of the same held-out domain and seed, and reports the mean paired difference of the
training-domain validation accuracy (the only number allowed to choose a default) with its standard
error; held-out accuracy is reported beside it but never used for the decision.

Decision rule (:func:`verdict`): a variant is ``better`` when its mean paired validation gain over the
reference exceeds :func:`~gaqat_recipes.reporting.paired.critical_value` standard errors (Student's t, 95%,
pairs − 1 df), ``worse`` when its loss does, else ``no evidence``.
A default changes only for a ``better`` verdict.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gaqat_recipes.config import TrainConfig
from gaqat_recipes.reporting.files import folder_lock, write_text_atomic
from gaqat_recipes.reporting.paired import CONFIDENCE, VERDICT_RULE, paired_difference, verdict
from gaqat_recipes.reporting.plots import plot_ablation
from gaqat_recipes.reporting.tables import mean_std, spread_cell
from gaqat_recipes.sweep import SweepSpec, run_sweep
from gaqat_wrap import GAQATConfig

REFERENCE = "default"
"""Name of the variant every other one is compared with (the library defaults)."""


@dataclass(frozen=True)
class AblationVariant:
    """One point of the ablation: a method and the config fields it changes.

    Attributes:
        name: folder and row name (``threshold_0.3``).
        factor: the option this variant moves (rows of one factor are compared together).
        overrides: :class:`gaqat_wrap.GAQATConfig` fields this variant sets (``freeze_threshold``,
            ``window``, ``freeze_mode``, ``metric``, ``permanent_freeze``, ``perturb_scales``).
        method: training method (``gaqat`` unless the variant is a baseline such as ``sam-qat``).

    Examples:
        >>> AblationVariant("window_5", "window", {"window": 5}).describe()
        'window=5'
    """

    name: str
    factor: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    method: str = "gaqat"

    def describe(self) -> str:
        """Short human-readable form of what this variant changes."""
        if self.method != "gaqat":
            return f"method {self.method}"
        if not self.overrides:
            return "library defaults"
        return ", ".join(f"{k}={v}" for k, v in self.overrides.items())


def _default_description() -> str:
    d = GAQATConfig()
    return (f"τ={d.freeze_threshold}, K={d.window}, metric={d.metric}, freeze_mode={d.freeze_mode}, "
            f"permanent_freeze={d.permanent_freeze}, perturb_scales={d.perturb_scales}")


GAQAT_ABLATIONS: tuple[AblationVariant, ...] = (
    AblationVariant(REFERENCE, "defaults"),
    AblationVariant("no_freezing", "freeze_threshold", method="sam-qat"),
    AblationVariant("threshold_0.3", "freeze_threshold", {"freeze_threshold": 0.3}),
    AblationVariant("threshold_0.7", "freeze_threshold", {"freeze_threshold": 0.7}),
    AblationVariant("window_5", "window", {"window": 5}),
    AblationVariant("window_20", "window", {"window": 20}),
    AblationVariant("freeze_mode_smooth", "freeze_mode", {"freeze_mode": "smooth"}),
    AblationVariant("metric_sign", "metric", {"metric": "sign"}),
    AblationVariant("permanent_freeze", "permanent_freeze", {"permanent_freeze": True}),
    AblationVariant("perturb_scales", "perturb_scales", {"perturb_scales": True}),
)
"""The published one-factor-at-a-time ablation; ``default`` is :class:`GAQATConfig`'s defaults."""


def ablation_variant(name: str) -> AblationVariant:
    """Look a variant of :data:`GAQAT_ABLATIONS` up by name, with an error listing the names.

    Examples:
        >>> ablation_variant("metric_sign").overrides
        {'metric': 'sign'}
        >>> ablation_variant("metric_l2")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown ablation variant 'metric_l2'; choose from default, no_freezing, ...
    """
    for variant in GAQAT_ABLATIONS:
        if variant.name == name:
            return variant
    raise ValueError(f"unknown ablation variant {name!r}; choose from {', '.join(v.name for v in GAQAT_ABLATIONS)}")


def run_ablation(
    base: TrainConfig,
    variants: Sequence[AblationVariant],
    *,
    bits: int,
    test_domains: Sequence[str],
    seeds: Sequence[int],
    root: str | Path,
    log: Callable[[str], None] = print,
) -> dict[str, list[dict[str, Any]]]:
    """Run (or resume) every variant over ``test_domains`` x ``seeds`` at ``bits``; return ``{variant name: runs}``.

    ``base`` holds the shared training options; each variant's runs go to ``<root>/<variant name>/``
    in the sweep layout. Writes ``<root>/results.md`` and ``<root>/results.json`` (see :func:`write_ablation_report`).

    Examples:
        >>> import tempfile
        >>> from gaqat_recipes.toy import write_toy_domains
        >>> folder = str(write_toy_domains(tempfile.mkdtemp(), per_class=4))
        >>> base = TrainConfig(test_domain="c", dataset=folder, model="mnist_cnn_tiny", steps=2, batch_size=8,
        ...                    eval_every=1, gaqat={"window": 1}, threads=1, plots=False, save_checkpoint=False)
        >>> runs = run_ablation(base, [ablation_variant("default"), ablation_variant("metric_sign")], bits=4,
        ...                     test_domains=["c"], seeds=[0], root=tempfile.mkdtemp(), log=lambda s: None)
        >>> sorted(runs), runs["metric_sign"][0]["method"]["gaqat"]["metric"]
        (['default', 'metric_sign'], 'sign')
    """
    if not variants:
        raise ValueError("an ablation needs at least one variant")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique, got {names}")
    root = Path(root)
    results: dict[str, list[dict[str, Any]]] = {}
    for index, variant in enumerate(variants, start=1):
        log(f"== ablation variant {index}/{len(variants)}: {variant.name} ({variant.describe()})")
        spec = SweepSpec(methods=[variant.method], bits=[bits], test_domains=list(test_domains), seeds=list(seeds),
                         extra={"gaqat": {**base.gaqat, **variant.overrides}})
        results[variant.name] = run_sweep(base, spec, root / variant.name, log=log)
    write_ablation_report(summarize_ablation(results, variants), root)
    return results


def _mean_frozen_fraction(run: Mapping[str, Any]) -> float:
    return float(np.mean([h.get("frozen_fraction", 0.0) for h in run["history"]]))


def summarize_ablation(results: Mapping[str, Sequence[Mapping[str, Any]]],
                       variants: Sequence[AblationVariant]) -> list[dict[str, Any]]:
    """One row per variant: validation and held-out accuracy (mean, std), frozen fraction, paired diffs, verdict.

    Paired differences and the verdict are against the :data:`REFERENCE` variant when it is in ``results``.

    Examples:
        >>> mk = lambda s, v, t: {"config": {"test_domain": "0", "seed": s}, "selected": {"val_acc": v, "test_acc": t},
        ...                       "history": [{"frozen_fraction": 0.1}]}
        >>> results = {"default": [mk(0, 0.80, 0.6), mk(1, 0.82, 0.7), mk(2, 0.81, 0.6)],
        ...            "window_5": [mk(0, 0.85, 0.6), mk(1, 0.88, 0.6), mk(2, 0.86, 0.7)]}
        >>> rows = summarize_ablation(results, [ablation_variant("default"), ablation_variant("window_5")])
        >>> rows[1]["name"], rows[1]["verdict"], round(rows[1]["val_diff"][0], 3)
        ('window_5', 'better', 0.053)
    """
    reference = results.get(REFERENCE)
    rows = []
    for variant in variants:
        runs = results.get(variant.name)
        if not runs:
            continue
        row: dict[str, Any] = {
            "name": variant.name,
            "factor": variant.factor,
            "change": variant.describe(),
            "val": mean_std([r["selected"]["val_acc"] for r in runs]),
            "test": mean_std([r["selected"]["test_acc"] for r in runs]),
            "frozen_fraction": float(np.mean([_mean_frozen_fraction(r) for r in runs])),
            "runs": len(runs),
        }
        if reference is not None and variant.name != REFERENCE:
            val_diff = paired_difference(runs, reference, "val_acc")
            row["val_diff"] = val_diff[:2]
            row["test_diff"] = paired_difference(runs, reference, "test_acc")[:2]
            row["pairs"] = val_diff[2]
            row["verdict"] = verdict(*val_diff)
        rows.append(row)
    return rows


def ablation_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of :func:`summarize_ablation` rows (accuracies and differences in percentage points).

    Examples:
        >>> print(ablation_table([{"name": "default", "change": "library defaults", "val": (0.9, 0.01),
        ...                        "test": (0.7, 0.02), "frozen_fraction": 0.1, "runs": 3}]))
        | variant | change | val (train domains) | Δ val vs default | held-out | Δ held-out | frozen | verdict (val) | runs |
        |---|---|---|---|---|---|---|---|---|
        | default | library defaults | 90.0 ± 1.0 | – | 70.0 ± 2.0 | – | 10.0% | reference | 3 |

        A single run (or a single pair) has no spread, shown as ``–`` rather than a misleading ``0.0``:

        >>> print(ablation_table([{"name": "window_5", "change": "window=5", "val": (0.9, 0.0), "test": (0.7, 0.0),
        ...                        "val_diff": (0.012, 0.0), "test_diff": (-0.03, 0.0), "pairs": 1,
        ...                        "frozen_fraction": 0.1, "verdict": "no evidence", "runs": 1}]).splitlines()[-1])
        | window_5 | window=5 | 90.0 ± – | +1.2 ± – | 70.0 ± – | -3.0 ± – | 10.0% | no evidence | 1 |
    """
    header = ["variant", "change", "val (train domains)", f"Δ val vs {REFERENCE}", "held-out", "Δ held-out", "frozen",
              "verdict (val)", "runs"]

    def pm(stat: Sequence[float] | None, samples: int | None, signed: bool = False) -> str:
        return "–" if stat is None else spread_cell(stat[0], stat[1], samples, signed=signed)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        runs, pairs = row["runs"], row.get("pairs")
        cells = [row["name"], row["change"], pm(row["val"], runs), pm(row.get("val_diff"), pairs, True),
                 pm(row["test"], runs), pm(row.get("test_diff"), pairs, True), f"{100 * row['frozen_fraction']:.1f}%",
                 row.get("verdict", "reference"), str(row["runs"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_ablation_report(rows: Sequence[Mapping[str, Any]], root: str | Path) -> dict[str, Path]:
    """Write ``results.md`` (table + decision rule), ``results.json`` (rows) and ``ablation.png`` into ``root``.

    Examples:
        >>> import tempfile
        >>> rows = [{"name": "default", "change": "library defaults", "val": (0.9, 0.0), "test": (0.7, 0.0),
        ...          "frozen_fraction": 0.1, "runs": 1}]
        >>> sorted(p.name for p in write_ablation_report(rows, tempfile.mkdtemp()).values())
        ['ablation.png', 'results.json', 'results.md']
    """
    root = Path(root)
    paths = {"table": root / "results.md", "json": root / "results.json", "plot": root / "ablation.png"}
    heading = ("GAQAT ablation, one option at a time from the defaults "
               f"({_default_description()}). Δ = mean paired difference (same held-out domain and seed) ± its "
               f"standard error, in points. Verdict: {VERDICT_RULE}.")
    with folder_lock(root):
        write_text_atomic(paths["table"], f"{heading}\n\n{ablation_table(rows)}\n")
        write_text_atomic(paths["json"], json.dumps({"reference": REFERENCE, "defaults": GAQATConfig().to_dict(),
                                                     "verdict_confidence": CONFIDENCE, "rows": list(rows)}, indent=2))
        plot_ablation(rows, paths["plot"])
    return paths
