"""``evaluate`` metric modules shipped with the package, loaded offline by path.

Per-domain accuracy built on them is :mod:`gaqat_recipes.evaluation`.

Examples:
    >>> from gaqat_recipes.metrics import load_accuracy
    >>> load_accuracy().compute(predictions=[0, 1], references=[0, 0])
    {'accuracy': 0.5}
"""

from gaqat_recipes.metrics.loading import ACCURACY_PATH, METRICS_DIR, load_accuracy

__all__ = ["ACCURACY_PATH", "METRICS_DIR", "load_accuracy"]
