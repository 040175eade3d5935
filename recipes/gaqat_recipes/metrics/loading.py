"""Load the metric modules shipped inside the package with ``evaluate.load(<absolute path>)`` (works offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import evaluate

METRICS_DIR = Path(__file__).resolve().parent
"""Installed folder of ``gaqat_recipes.metrics``, which holds the shipped ``evaluate`` metric modules."""
ACCURACY_PATH = METRICS_DIR / "accuracy"
"""Folder of the shipped accuracy metric (``accuracy/accuracy.py``), the path given to ``evaluate.load``."""


def load_accuracy(**load_options: Any) -> evaluate.EvaluationModule:
    """The shipped accuracy metric, loaded by absolute path (no network; the hub's ``"accuracy"`` needs one).

    Args:
        **load_options: passed to ``evaluate.load`` (e.g. ``num_process``/``process_id`` for distributed use).

    Examples:
        >>> metric = load_accuracy()
        >>> metric.compute(predictions=[1, 2, 3], references=[1, 2, 0])["accuracy"]
        0.6666666666666666
    """
    script = ACCURACY_PATH / "accuracy.py"
    if not script.is_file():
        raise FileNotFoundError(f"the accuracy metric module is missing at {script}; reinstall gaqat-wrap (package data)")
    return evaluate.load(str(ACCURACY_PATH), **load_options)
