"""Classification accuracy as an ``evaluate`` metric module, shipped with gaqat-wrap so it loads offline.

Load it by path (``evaluate.load("accuracy")`` would fetch the hub version over the network)::

    from gaqat_recipes.metrics import load_accuracy
    metric = load_accuracy()   # == evaluate.load(<site-packages>/recipes/gaqat_recipes/metrics/accuracy)

Examples:
    >>> import evaluate, os
    >>> metric = evaluate.load(os.path.dirname(os.path.abspath(__file__)))
    >>> metric.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])
    {'accuracy': 0.75}
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Fraction of examples whose predicted class equals the reference class.
With sample weights it is the weighted fraction; with normalize=False it is the (weighted) count of correct predictions."""

_INPUTS = """
Args:
    predictions (list of int): predicted class index per example.
    references (list of int): true class index per example.
    normalize (bool, default True): return the fraction correct; False returns the (weighted) number correct.
    sample_weight (list of float, optional): non-negative weight per example.
Returns:
    accuracy (float): in [0, 1] when normalize is True.
"""

_CITATION = """gaqat-wrap accuracy metric (plain classification accuracy)."""


class Accuracy(evaluate.Metric):
    """Accuracy = (weighted) fraction of predictions equal to their references.

    Examples:
        >>> Accuracy().compute(predictions=[1, 0], references=[1, 1], sample_weight=[3.0, 1.0])
        {'accuracy': 0.75}
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, normalize: bool = True, sample_weight=None) -> dict[str, float]:
        predicted = np.asarray(predictions, dtype=np.int64)
        expected = np.asarray(references, dtype=np.int64)
        if predicted.shape != expected.shape:
            raise ValueError(f"predictions and references differ in length: {predicted.shape} vs {expected.shape}")
        weights = np.ones(predicted.shape, dtype=np.float64) if sample_weight is None else np.asarray(sample_weight, np.float64)
        if weights.shape != predicted.shape:
            raise ValueError(f"sample_weight needs one weight per example: {weights.shape} vs {predicted.shape}")
        if np.any(weights < 0):
            raise ValueError("sample_weight must be non-negative")
        correct = float(np.sum(weights * (predicted == expected)))
        if not normalize:
            return {"accuracy": correct}
        total = float(np.sum(weights))
        if total == 0.0:
            raise ValueError("accuracy of zero examples (or zero total weight) is undefined")
        return {"accuracy": correct / total}
