"""What a run is made of before its first step: splits, image tensors, the model, and (quantized methods) LSQ.

``train_dg`` and the diagnostics in ``bench/`` build their starting point with :func:`build_run_inputs`
and :func:`quantize_and_calibrate`, so a diagnostic measures exactly the model a training run would start from.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import datasets
import torch

from gaqat_recipes.config import TrainConfig
from gaqat_recipes.data.registry import EMBEDDED_DATASETS, load_dg_dataset
from gaqat_recipes.data.schema import class_names
from gaqat_recipes.data.split import leave_one_domain_out
from gaqat_recipes.data.transforms import PixelTransform
from gaqat_recipes.models.build import InputSpec, build_model, input_spec
from gaqat_recipes.tensors import image_tensors
from gaqat_wrap import calibrate, quantize_model


@functools.lru_cache(maxsize=2)
def _embedded_dataset(name: str) -> datasets.DatasetDict:
    # A sweep runs many configurations in one process; build each embedded benchmark once.
    return load_dg_dataset(name)


def load_splits(config: TrainConfig) -> tuple[datasets.DatasetDict, list[str]]:
    """The ``train`` / ``validation`` / ``test`` splits of ``config`` and the dataset's domain names.

    Examples:
        >>> splits, domains = load_splits(TrainConfig(test_domain="75", dataset="rotated_mnist"))
        >>> splits["test"].num_rows, domains[-1]
        (833, '75')
    """
    dd = _embedded_dataset(config.dataset) if config.dataset in EMBEDDED_DATASETS else load_dg_dataset(config.dataset)
    splits = leave_one_domain_out(dd, config.test_domain, val_fraction=config.val_fraction, seed=config.seed)
    if config.max_train_examples is not None and config.max_train_examples < splits["train"].num_rows:
        subset = splits["train"].shuffle(seed=config.seed).select(range(config.max_train_examples))
        splits = datasets.DatasetDict({"train": subset, "validation": splits["validation"], "test": splits["test"]})
    return splits, list(dd)


@dataclass
class RunInputs:
    """The data and the (not yet quantized) model of one run.

    Attributes:
        splits: ``train`` / ``validation`` / ``test`` rows (see :func:`load_splits`).
        domains: every domain of the dataset, in dataset order.
        classes: class names in label order.
        input_spec: image side, channels and normalisation the model expects.
        data: image tensors of each split (``(pixels, label, domain)`` items), transformed for the model.
        model: the model built from ``config.model`` (pretrained weights when ``config.pretrained``).

    Examples:
        >>> import tempfile
        >>> from gaqat_recipes.toy import write_toy_domains
        >>> folder = str(write_toy_domains(tempfile.mkdtemp(), per_class=4))
        >>> run = build_run_inputs(TrainConfig(test_domain="c", dataset=folder, model="mnist_cnn_tiny"))
        >>> pixels, label, domain = run.data["train"][0]
        >>> tuple(pixels.shape) == (run.input_spec.channels, run.input_spec.size, run.input_spec.size)
        True
    """

    splits: datasets.DatasetDict
    domains: list[str]
    classes: list[str]
    input_spec: InputSpec
    data: dict[str, torch.utils.data.Dataset]
    model: torch.nn.Module


def build_run_inputs(config: TrainConfig) -> RunInputs:
    """Load and split the dataset of ``config``, build its model and turn every split into image tensors.

    Unknown domains, models or datasets raise here. Seed first (``accelerate.utils.set_seed``) when the
    model's random initialisation must be reproducible.

    Examples:
        >>> import tempfile
        >>> from gaqat_recipes.toy import write_toy_domains
        >>> folder = str(write_toy_domains(tempfile.mkdtemp(), per_class=4))
        >>> run = build_run_inputs(TrainConfig(test_domain="c", dataset=folder, model="mnist_cnn_tiny"))
        >>> run.domains, run.classes, len(run.data["test"])
        (['a', 'b', 'c'], ['class0', 'class1'], 8)
    """
    splits, domains = load_splits(config)
    classes = class_names(splits)
    spec = input_spec(config.model, pretrained=config.pretrained, image_size=config.image_size)
    transform = PixelTransform(size=spec.size, mean=spec.mean, std=spec.std, channels=spec.channels)
    model = build_model(config.model, num_classes=len(classes), pretrained=config.pretrained,
                        image_size=config.image_size, in_chans=spec.channels)
    data = {name: image_tensors(splits[name], transform, config.cache_limit_gb) for name in splits}
    return RunInputs(splits=splits, domains=domains, classes=classes, input_spec=spec, data=data, model=model)


def quantize_and_calibrate(model: torch.nn.Module, train_data: torch.utils.data.Dataset, config: TrainConfig) -> None:
    """Quantize ``model`` in place at ``config.bits`` and calibrate its input step sizes.

    Calibration reads ``config.calib_batches`` batches of ``config.batch_size`` training images in an order
    drawn from ``config.seed``, so the same config always starts from the same step sizes.

    Examples:
        >>> from gaqat_wrap.quant import quant_report
        >>> layers = [torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)]
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), *layers)
        >>> images = torch.utils.data.TensorDataset(torch.rand(8, 1, 4, 4), torch.zeros(8, dtype=torch.long))
        >>> quantize_and_calibrate(model, images, TrainConfig(test_domain="75", bits=3, batch_size=4, calib_batches=2))
        >>> [layer.weight_bits for layer in quant_report(model)]  # first and last layers stay full precision
        [None, 3, None]
    """
    quantize_model(model, bits=config.bits)
    order = torch.Generator().manual_seed(config.seed)
    loader = torch.utils.data.DataLoader(train_data, batch_size=config.batch_size, shuffle=True, generator=order)
    calibrate(model, (batch[0] for batch in loader), num_batches=config.calib_batches)
