"""Accuracy of a model on every domain (or split) of a ``DatasetDict``, and their average."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import datasets
import torch

from gaqat_recipes.data.transforms import PixelTransform, make_dataloader
from gaqat_recipes.metrics.loading import load_accuracy

Predictor = torch.nn.Module | Callable[[torch.Tensor], Any]


def predicted_labels(output: Any) -> torch.Tensor:
    """Class indices from a model output: logits ``(N, C)`` (argmax), labels ``(N,)``, or an object/dict with ``logits``.

    Examples:
        >>> import torch
        >>> predicted_labels(torch.tensor([[0.1, 0.9], [2.0, -1.0]])).tolist()
        [1, 0]
        >>> predicted_labels({"logits": torch.tensor([[0.0, 1.0]])}).tolist()
        [1]
    """
    if isinstance(output, dict) and "logits" in output:
        output = output["logits"]
    elif hasattr(output, "logits"):
        output = output.logits
    elif isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"cannot read predictions from {type(output).__name__}; return logits (N, C) or labels (N,)")
    if output.ndim == 2:
        return output.argmax(dim=1)
    if output.ndim == 1 and not output.is_floating_point():
        return output
    raise ValueError(f"expected logits (N, C) or integer labels (N,); got a tensor of shape {tuple(output.shape)}")


def _device_of(predictor: Predictor, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if isinstance(predictor, torch.nn.Module):
        first = next(predictor.parameters(), None)
        if first is not None:
            return first.device
    return torch.device("cpu")


@torch.no_grad()
def evaluate_per_domain(
    predictor: Predictor,
    dd: datasets.DatasetDict,
    transform: PixelTransform,
    *,
    domains: Sequence[str] | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Accuracy of ``predictor`` on each domain of ``dd`` and the unweighted mean over those domains.

    ``predictor`` is a model (timm or Hugging Face; called as ``predictor(pixel_values)``, put in eval mode
    for the call and restored afterwards) or any function from ``pixel_values`` to logits or labels.
    Accuracy is computed by the shipped ``evaluate`` metric (``load_accuracy``).

    Args:
        predictor: model or function.
        dd: ``DatasetDict`` keyed by domain (or the ``train``/``validation``/``test`` splits).
        transform: the same ``PixelTransform`` used for training.
        domains: which keys of ``dd`` to evaluate (default: all).
        batch_size: evaluation batch size.
        device: where inputs go (default: the model's parameters' device, else CPU).

    Returns:
        ``{"per_domain": {name: accuracy}, "average": mean accuracy}`` (JSON-ready floats).

    Examples:
        >>> import torch
        >>> import datasets
        >>> from PIL import Image
        >>> from gaqat_recipes.data import PixelTransform, from_hf_dataset
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
    target = _device_of(predictor, device)
    was_training = isinstance(predictor, torch.nn.Module) and predictor.training
    if isinstance(predictor, torch.nn.Module):
        predictor.eval()
    try:
        per_domain = {}
        metric = load_accuracy(keep_in_memory=True)  # no cache files: safe when several processes evaluate at once
        for name in names:
            if dd[name].num_rows == 0:
                raise ValueError(f"domain {name!r} has no examples; accuracy is undefined")
            for batch in make_dataloader(dd[name], transform, batch_size=batch_size):
                predictions = predicted_labels(predictor(batch["pixel_values"].to(target)))
                metric.add_batch(predictions=predictions.cpu().tolist(), references=batch["labels"].tolist())
            per_domain[name] = float(metric.compute()["accuracy"])
    finally:
        if was_training:
            predictor.train()
    return {"per_domain": per_domain, "average": sum(per_domain.values()) / len(per_domain)}
