"""``evaluate`` metric modules shipped with the package (loaded offline by path) and per-domain evaluation.

Examples:
    >>> from gaqat_recipes.metrics import load_accuracy
    >>> load_accuracy().compute(predictions=[0, 1], references=[0, 0])
    {'accuracy': 0.5}
"""

from gaqat_recipes.metrics.loading import ACCURACY_PATH, METRICS_DIR, load_accuracy
from gaqat_recipes.metrics.per_domain import evaluate_per_domain, predicted_labels

__all__ = ["ACCURACY_PATH", "METRICS_DIR", "evaluate_per_domain", "load_accuracy", "predicted_labels"]
