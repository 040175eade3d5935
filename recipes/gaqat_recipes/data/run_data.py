"""The data of one run: its leave-one-domain-out splits and their images as tensors at the model's input size.

:func:`load_run_data` is the data step of :func:`gaqat_recipes.train_dg` (and of the diagnostics in
``bench/dg``): an unknown domain or a bad folder fails here, before any model is built.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import datasets
import torch

from gaqat_recipes.data.registry import EMBEDDED_DATASETS, load_dg_dataset
from gaqat_recipes.data.schema import class_names
from gaqat_recipes.data.split import leave_one_domain_out
from gaqat_recipes.data.tensors import image_tensors
from gaqat_recipes.data.transforms import PixelTransform

if TYPE_CHECKING:
    from gaqat_recipes.config import TrainConfig
    from gaqat_recipes.models.build import InputSpec


@functools.lru_cache(maxsize=2)
def _embedded_dataset(name: str) -> datasets.DatasetDict:
    # A sweep runs many configurations in one process; build each embedded benchmark once.
    return load_dg_dataset(name)


def load_splits(config: TrainConfig) -> tuple[datasets.DatasetDict, list[str]]:
    """The ``train`` / ``validation`` / ``test`` splits of ``config`` and the dataset's domain names.

    Examples:
        >>> from gaqat_recipes import TrainConfig
        >>> splits, domains = load_splits(TrainConfig(test_domain="75", dataset="rotated_mnist"))
        >>> splits["test"].num_rows, domains[-1]
        (833, '75')
    """
    if config.dataset in EMBEDDED_DATASETS:
        dd = _embedded_dataset(config.dataset)
    else:
        dd = load_dg_dataset(config.dataset, **config.image_folder_options())
    splits = leave_one_domain_out(dd, config.test_domain, val_fraction=config.val_fraction, seed=config.seed)
    if config.max_train_examples is not None and config.max_train_examples < splits["train"].num_rows:
        subset = splits["train"].shuffle(seed=config.seed).select(range(config.max_train_examples))
        splits = datasets.DatasetDict({"train": subset, "validation": splits["validation"], "test": splits["test"]})
    return splits, list(dd)


@dataclass
class RunData:
    """The data of one run.

    Attributes:
        splits: ``train`` / ``validation`` / ``test`` rows (see :func:`load_splits`).
        domains: every domain of the dataset, in dataset order (the ``domain`` column indexes it).
        classes: class names in label order.
        input_spec: image side, channels and normalisation of the tensors (the model's).
        tensors: each split as a torch dataset of ``(pixels, label, domain)`` items.

    Examples:
        >>> from gaqat_recipes.models import InputSpec
        >>> data = RunData({}, ["0", "15", "75"], ["a"], InputSpec(28, 1, (0.5,), (0.5,)), {}, test_domain="15")
        >>> data.train_domains
        ['0', '75']
    """

    splits: datasets.DatasetDict
    domains: list[str]
    classes: list[str]
    input_spec: InputSpec
    tensors: dict[str, torch.utils.data.Dataset]
    test_domain: str = ""

    @property
    def train_domains(self) -> list[str]:
        """The domains the run trains and validates on (every domain but the held-out one)."""
        return [d for d in self.domains if d != self.test_domain]


def load_run_data(config: TrainConfig, spec: InputSpec) -> RunData:
    """Load and split the dataset of ``config`` and turn every split into tensors shaped by ``spec``.

    Examples:
        >>> import tempfile
        >>> from gaqat_recipes import TrainConfig, write_toy_domains
        >>> from gaqat_recipes.models import input_spec
        >>> config = TrainConfig(test_domain="c", dataset=str(write_toy_domains(tempfile.mkdtemp(), per_class=4)))
        >>> data = load_run_data(config, input_spec("mnist_cnn_tiny"))
        >>> data.domains, data.classes, len(data.tensors["test"]), tuple(data.tensors["test"][0][0].shape)
        (['a', 'b', 'c'], ['class0', 'class1'], 8, (1, 28, 28))
    """
    splits, domains = load_splits(config)
    transform = PixelTransform(size=spec.size, mean=spec.mean, std=spec.std, channels=spec.channels)
    tensors = {name: image_tensors(splits[name], transform, config.cache_limit_gb) for name in splits}
    return RunData(splits=splits, domains=domains, classes=class_names(splits), input_spec=spec, tensors=tensors,
                   test_domain=config.test_domain)
