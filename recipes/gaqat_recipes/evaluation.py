"""Accuracy per domain: the one implementation, used by the training loop and for any model on a DatasetDict.

:func:`accuracy_by_domain` counts correct predictions per domain over batches ``(pixels, label, domain)``;
under Accelerate each process predicts its shard and ``gather_for_metrics`` collects them, so every
process returns the numbers of the whole split. The accuracy itself is the shipped ``evaluate`` metric
(:func:`gaqat_recipes.metrics.load_accuracy`). :func:`evaluate_per_domain` is the same for a model and a
``DatasetDict`` (one entry per key).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import datasets
import torch

from gaqat_recipes.data.transforms import PixelTransform, make_dataloader
from gaqat_recipes.metrics.loading import load_accuracy
from gaqat_recipes.models.build import logits_of

Predictor = torch.nn.Module | Callable[[torch.Tensor], Any]


def predicted_labels(output: Any) -> torch.Tensor:
    """Class indices from a model output: integer labels ``(N,)`` as they are, else the argmax of its logits.

    Examples:
        >>> predicted_labels(torch.tensor([[0.1, 0.9], [2.0, -1.0]])).tolist()
        [1, 0]
        >>> predicted_labels({"logits": torch.tensor([[0.0, 1.0]])}).tolist(), predicted_labels(torch.tensor([2])).tolist()
        ([1], [2])
    """
    if isinstance(output, torch.Tensor) and output.ndim == 1 and not output.is_floating_point():
        return output
    logits = logits_of(output)
    if logits.ndim != 2:
        raise ValueError(f"expected logits (N, C) or integer labels (N,); got a tensor of shape {tuple(logits.shape)}")
    return logits.argmax(dim=1)


@torch.no_grad()
def accuracy_by_domain(
    model: Predictor,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    domain_names: Sequence[str],
    *,
    accelerator: Any = None,
    metric: Any = None,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Accuracy per domain present in ``batches`` (``(pixels, label, domain index)``) and their unweighted mean.

    Args:
        model: a model (put in eval mode for the call and restored afterwards) or any function from pixels
            to logits / labels / an output with ``.logits``.
        batches: a loader (prepared by ``accelerator`` or plain) or any iterable of batches.
        domain_names: domain index -> name.
        accelerator: the run's ``accelerate.Accelerator``, to gather every process's shard (``None``: one process).
        metric: an ``evaluate`` accuracy module (default: :func:`~gaqat_recipes.metrics.load_accuracy`).
        device: where pixels go (default: the model's parameters' device, else where they are).

    Returns:
        ``{"per_domain": {name: accuracy}, "average": mean over domains}`` (JSON-ready floats).

    Examples:
        >>> data = torch.utils.data.TensorDataset(torch.eye(4), torch.tensor([0, 1, 2, 1]), torch.tensor([0, 0, 1, 1]))
        >>> model = torch.nn.Linear(4, 3, bias=False)
        >>> with torch.no_grad(): _ = model.weight.copy_(torch.eye(3, 4))
        >>> accuracy_by_domain(model, torch.utils.data.DataLoader(data, batch_size=3), ["a", "b"])
        {'per_domain': {'a': 1.0, 'b': 0.5}, 'average': 0.75}
    """
    is_module = isinstance(model, torch.nn.Module)
    was_training = is_module and model.training
    if device is None and is_module:
        first = next(model.parameters(), None)
        device = first.device if first is not None else None
    if is_module:
        model.eval()
    predictions, labels, domains = [], [], []
    try:
        for pixels, label, domain in batches:
            predicted = predicted_labels(model(pixels if device is None else pixels.to(device)))
            if accelerator is not None:
                predicted, label, domain = accelerator.gather_for_metrics((predicted, label, domain))
            predictions.append(predicted.cpu())
            labels.append(label.cpu())
            domains.append(domain.cpu())
    finally:
        if is_module:
            model.train(was_training)
    if not predictions:
        raise ValueError("no examples to evaluate; accuracy is undefined")
    metric = metric or load_accuracy(keep_in_memory=True)  # no cache files: safe when several processes evaluate
    predicted_all, label_all, domain_all = torch.cat(predictions), torch.cat(labels), torch.cat(domains)
    per_domain = {}
    for index in sorted(set(domain_all.tolist())):
        mask = domain_all == index
        result = metric.compute(predictions=predicted_all[mask].tolist(), references=label_all[mask].tolist())
        per_domain[domain_names[index]] = float(result["accuracy"])
    return {"per_domain": per_domain, "average": sum(per_domain.values()) / len(per_domain)}


def evaluate_per_domain(
    predictor: Predictor,
    dd: datasets.DatasetDict,
    transform: PixelTransform,
    *,
    domains: Sequence[str] | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Accuracy of ``predictor`` on each key (domain or split) of ``dd`` and the unweighted mean over them.

    ``predictor`` is a model (timm or Hugging Face: outputs with ``.logits`` are understood) or any function
    from ``pixel_values`` to logits or labels; ``transform`` is the ``PixelTransform`` used for training.
    Counting is :func:`accuracy_by_domain`'s.

    Examples:
        >>> from PIL import Image
        >>> from gaqat_recipes.data import from_hf_dataset
        >>> rows = {"image": [Image.new("L", (8, 8))] * 4, "label": [1, 1, 0, 1], "domain": ["a", "a", "b", "b"]}
        >>> dd = from_hf_dataset(datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()))
        >>> always_one = lambda x: torch.ones(len(x), dtype=torch.long)
        >>> evaluate_per_domain(always_one, dd, PixelTransform(size=8))
        {'per_domain': {'a': 1.0, 'b': 0.5}, 'average': 0.75}
    """
    names = list(dd) if domains is None else list(domains)
    unknown = [name for name in names if name not in dd]
    if unknown:
        raise ValueError(f"unknown domain(s) {unknown}; this dataset has {list(dd)}")
    if not names:
        raise ValueError("no domains to evaluate")
    for name in names:
        if dd[name].num_rows == 0:
            raise ValueError(f"domain {name!r} has no examples; accuracy is undefined")

    def batches() -> Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for index, name in enumerate(names):
            for batch in make_dataloader(dd[name], transform, batch_size=batch_size):
                yield batch["pixel_values"], batch["labels"], torch.full_like(batch["labels"], index)

    return accuracy_by_domain(predictor, batches(), names, device=device)
