"""Per-domain accuracy under Accelerate: each process predicts its shard, ``gather_for_metrics`` collects them.

Accuracy is computed by the shipped ``evaluate`` metric (:func:`gaqat_recipes.metrics.load_accuracy`) on the
gathered predictions, so every process returns the same numbers whatever the number of processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from accelerate import Accelerator


@torch.no_grad()
def accuracy_by_domain(
    model: torch.nn.Module,
    loader: torch.utils.data.DataLoader,
    accelerator: Accelerator,
    domain_names: Sequence[str],
    metric: Any,
) -> dict[str, Any]:
    """Accuracy per domain present in ``loader`` (batches ``(pixels, label, domain)``) and their unweighted mean.

    Args:
        model: the (possibly wrapped) model; put in eval mode for the call and restored afterwards.
        loader: a loader prepared by ``accelerator`` (sharded over processes) or a plain one.
        accelerator: the run's Accelerator (used to gather).
        domain_names: domain index -> name.
        metric: an ``evaluate`` accuracy module (``load_accuracy()``).

    Returns:
        ``{"per_domain": {name: accuracy}, "average": mean over domains}``.

    Examples:
        >>> from accelerate import Accelerator
        >>> from gaqat_recipes.metrics import load_accuracy
        >>> data = torch.utils.data.TensorDataset(torch.eye(4), torch.tensor([0, 1, 2, 1]), torch.tensor([0, 0, 1, 1]))
        >>> loader = torch.utils.data.DataLoader(data, batch_size=3)
        >>> model = torch.nn.Linear(4, 3, bias=False)
        >>> with torch.no_grad(): _ = model.weight.copy_(torch.eye(3, 4))
        >>> accuracy_by_domain(model, loader, Accelerator(cpu=True), ["a", "b"], load_accuracy())
        {'per_domain': {'a': 1.0, 'b': 0.5}, 'average': 0.75}
    """
    was_training = model.training
    model.eval()
    predictions, labels, domains = [], [], []
    try:
        for pixels, label, domain in loader:
            predicted = model(pixels).argmax(dim=1)
            predicted, label, domain = accelerator.gather_for_metrics((predicted, label, domain))
            predictions.append(predicted.cpu())
            labels.append(label.cpu())
            domains.append(domain.cpu())
    finally:
        model.train(was_training)
    predicted_all, label_all, domain_all = torch.cat(predictions), torch.cat(labels), torch.cat(domains)
    per_domain = {}
    for index in sorted(set(domain_all.tolist())):
        mask = domain_all == index
        result = metric.compute(predictions=predicted_all[mask].tolist(), references=label_all[mask].tolist())
        per_domain[domain_names[index]] = float(result["accuracy"])
    return {"per_domain": per_domain, "average": sum(per_domain.values()) / len(per_domain)}
