"""Plots and tables of training runs and sweeps.

Examples:
    >>> from gaqat_recipes.reporting import markdown_table
    >>> print(markdown_table([{"label": "fp", "domains": {"75": (0.8, 0.01)}, "domain_runs": {"75": 3},
    ...                        "average": (0.8, 0.01), "runs": 3}]))
    | method | test 75 | runs |
    |---|---|---|
    | fp | 80.0 ± 1.0 | 3 |
"""

from gaqat_recipes.reporting.paired import (
    difference_cell,
    paired_cells,
    paired_cells_markdown,
    paired_comparisons,
    paired_difference,
    paired_markdown,
    seed_clustered_difference,
    verdict,
)
from gaqat_recipes.reporting.plots import plot_ablation, plot_freeze_heatmap, plot_heldout_bars, plot_learning_curves, plot_run
from gaqat_recipes.reporting.tables import markdown_table, summarize_runs

__all__ = [
    "difference_cell",
    "markdown_table",
    "paired_cells",
    "paired_cells_markdown",
    "paired_comparisons",
    "paired_difference",
    "paired_markdown",
    "plot_ablation",
    "plot_freeze_heatmap",
    "plot_heldout_bars",
    "plot_learning_curves",
    "plot_run",
    "seed_clustered_difference",
    "summarize_runs",
    "verdict",
]
