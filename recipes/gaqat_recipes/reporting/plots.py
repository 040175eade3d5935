"""PNG plots of training runs and sweeps (matplotlib ``Figure`` objects, no pyplot: the user's backend is untouched).

- :func:`plot_learning_curves`: validation / test accuracy and training loss over steps, selected step marked.
- :func:`plot_freeze_heatmap`: per-scale disorder over training (scales x freeze decisions), frozen cells outlined.
- :func:`plot_heldout_bars`: held-out accuracy per method (mean ± std over seeds), grouped by bits.
- :func:`plot_ablation`: per ablation variant, the paired difference to the reference (validation and held-out).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from gaqat_recipes.reporting.files import write_atomic


def plot_learning_curves(metrics: Mapping[str, Any], path: str | Path) -> Path:
    """Validation and test-domain accuracy (left axis) and training loss (right axis) over steps.

    Examples:
        >>> import tempfile, pathlib
        >>> history = [{"step": s, "val_acc": 0.5 + s / 10, "test_acc": 0.4, "train_loss": 1.0 / s} for s in (1, 2, 3)]
        >>> out = plot_learning_curves({"history": history, "selected": {"step": 3}, "config": {"method": "qat"}},
        ...                            pathlib.Path(tempfile.mkdtemp()) / "curves.png")
        >>> out.stat().st_size > 0
        True
    """
    history = metrics["history"]
    steps = [h["step"] for h in history]
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    ax.plot(steps, [h["val_acc"] for h in history], marker="o", label="validation (training domains)")
    ax.plot(steps, [h["test_acc"] for h in history], marker="s", label="test (held-out domain)")
    ax.axvline(metrics["selected"]["step"], color="gray", linestyle="--", label="selected (best validation)")
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy")
    loss_ax = ax.twinx()
    loss_ax.plot(steps, [h["train_loss"] for h in history], color="tab:red", alpha=0.4, label="train loss")
    loss_ax.set_ylabel("train loss", color="tab:red")
    config = metrics.get("config", {})
    ax.set_title(f"{config.get('method', '')}  test domain {config.get('test_domain', '')}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_freeze_heatmap(trace: Mapping[str, Any], path: str | Path, title: str = "") -> Path:
    """Heatmap of every quantizer scale's disorder (rows) at every freeze decision (columns); frozen cells hatched.

    ``trace`` is ``metrics["freeze_trace"]``: ``steps``, ``roles``, ``disorder`` and ``frozen`` (one row per decision).

    Examples:
        >>> import tempfile, pathlib
        >>> trace = {"steps": [10, 20], "roles": ["a.weight", "a.input"], "disorder": [[0.1, 0.6], [0.2, 0.7]],
        ...          "frozen": [[False, True], [False, True]]}
        >>> plot_freeze_heatmap(trace, pathlib.Path(tempfile.mkdtemp()) / "freeze.png").suffix
        '.png'
    """
    disorder = np.asarray(trace["disorder"], dtype=float).T
    frozen = np.asarray(trace["frozen"], dtype=bool).T
    roles, steps = trace["roles"], trace["steps"]
    fig = Figure(figsize=(min(10.0, max(5.0, 0.12 * len(steps) + 3)), min(12.0, max(2.5, 0.28 * len(roles) + 1.2))))
    ax = fig.subplots()
    image = ax.imshow(disorder, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    rows, cols = np.nonzero(frozen)
    ax.scatter(cols, rows, marker="x", color="white", s=12, linewidths=0.8, label="frozen")
    ax.set_yticks(range(len(roles)), roles, fontsize=7)
    tick_positions = np.linspace(0, len(steps) - 1, num=min(len(steps), 8)).round().astype(int)
    ax.set_xticks(tick_positions, [str(steps[i]) for i in tick_positions])
    ax.set_xlabel("step (freeze decisions)")
    fig.colorbar(image, ax=ax, label="disorder (conflict fraction in window)")
    if rows.size:
        ax.legend(loc="upper right", fontsize=7, framealpha=0.6)
    ax.set_title(title or "per-scale gradient conflict disorder")
    fig.tight_layout()
    return _save(fig, path)


def plot_run(metrics: Mapping[str, Any], output_dir: str | Path) -> list[Path]:
    """All plots of one run into ``output_dir``: ``learning_curves.png``, and ``freeze_heatmap.png`` when scales were tracked.

    Examples:
        >>> import tempfile
        >>> history = [{"step": 1, "val_acc": 0.5, "test_acc": 0.4, "train_loss": 1.0}]
        >>> [p.name for p in plot_run({"history": history, "selected": {"step": 1}, "config": {}}, tempfile.mkdtemp())]
        ['learning_curves.png']
    """
    output_dir = Path(output_dir)
    written = [plot_learning_curves(metrics, output_dir / "learning_curves.png")]
    trace = metrics.get("freeze_trace")
    if trace and trace.get("steps") and trace.get("roles"):
        config = metrics.get("config", {})
        title = f"{config.get('method', '')} W{config.get('bits', '')}A{config.get('bits', '')}: disorder per scale (x = frozen)"
        written.append(plot_freeze_heatmap(trace, output_dir / "freeze_heatmap.png", title=title))
    return written


def plot_heldout_bars(summary: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Bar chart of held-out (test-domain) accuracy per method, with error bars (std over seeds).

    ``summary`` rows have ``label`` (bar name), ``domains`` ({domain: (mean, std)}) and ``average`` ((mean, std));
    one group of bars per held-out domain, plus an ``average`` group when there are several domains.

    Examples:
        >>> import tempfile, pathlib
        >>> rows = [{"label": "fp", "domains": {"75": (0.8, 0.01)}, "average": (0.8, 0.01)},
        ...         {"label": "gaqat W4", "domains": {"75": (0.7, 0.02)}, "average": (0.7, 0.02)}]
        >>> plot_heldout_bars(rows, pathlib.Path(tempfile.mkdtemp()) / "bars.png").exists()
        True
    """
    domains = sorted({d for row in summary for d in row["domains"]}, key=_domain_order)
    groups = domains + (["average"] if len(domains) > 1 else [])
    width = 0.8 / max(len(summary), 1)
    fig = Figure(figsize=(max(5.0, 1.2 * len(groups) + 0.5 * len(summary)), 3.8))
    ax = fig.subplots()
    x = np.arange(len(groups))
    for i, row in enumerate(summary):
        stats = [row["domains"].get(g, (np.nan, 0.0)) if g != "average" else row["average"] or (np.nan, 0.0)
                 for g in groups]
        means = [100 * m for m, _ in stats]
        stds = [100 * s for _, s in stats]
        bars = ax.bar(x + (i - (len(summary) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=row["label"])
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    ax.set_xticks(x, [f"test {g}" if g != "average" else g for g in groups])
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title or "held-out accuracy, checkpoint chosen on training-domain validation", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_ablation(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Horizontal bars: each variant's mean paired difference to the reference ± standard error, validation and held-out.

    ``rows`` are :func:`gaqat_recipes.ablation.summarize_ablation` rows; the reference row (no
    ``val_diff``) is the zero line.

    Examples:
        >>> import tempfile, pathlib
        >>> rows = [{"name": "default"}, {"name": "window_5", "val_diff": (0.01, 0.005), "test_diff": (-0.02, 0.01)}]
        >>> plot_ablation(rows, pathlib.Path(tempfile.mkdtemp()) / "ablation.png").suffix
        '.png'
    """
    compared = [row for row in rows if "val_diff" in row]
    fig = Figure(figsize=(6.5, max(2.5, 0.45 * len(compared) + 1.2)))
    ax = fig.subplots()
    y = np.arange(len(compared))
    for offset, key, label in ((-0.2, "val_diff", "validation (training domains): decides"),
                               (0.2, "test_diff", "held-out domain: reported only")):
        means = [100 * row[key][0] for row in compared]
        errors = [100 * row[key][1] for row in compared]
        ax.barh(y + offset, means, 0.38, xerr=errors, capsize=3, label=label)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(y, [row["name"] for row in compared], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("paired difference to the defaults (points, ± standard error)")
    ax.legend(fontsize=7, loc="best")
    ax.set_title(title or "GAQAT ablation", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _domain_order(name: str) -> tuple[int, float | str]:
    try:
        return (0, float(name))
    except ValueError:
        return (1, name)


def _save(fig: Any, path: str | Path) -> Path:
    return write_atomic(path, lambda temporary: fig.savefig(temporary, dpi=110, format="png"))
