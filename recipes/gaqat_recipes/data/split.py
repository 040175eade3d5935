"""Leave-one-domain-out split with training-domain validation (DomainBed's model-selection protocol).

The held-out domain is the test set and is never seen for training or model selection. From every
training domain a fraction ``val_fraction`` is held out (DomainBed's ``holdout_fraction``, default
0.2) with a shuffle seeded per domain; the rest of all training domains is concatenated into ``train``
and the held-out parts into ``validation``.
"""

from __future__ import annotations

import hashlib

import datasets
import numpy as np

from gaqat_recipes.data.schema import check_dg_dict


def domain_seed(seed: int, domain: str) -> int:
    """A 32-bit seed for one domain's validation shuffle, stable across processes and Python versions.

    Examples:
        >>> domain_seed(0, "photo") == domain_seed(0, "photo") != domain_seed(1, "photo")
        True
    """
    digest = hashlib.sha256(f"{seed}:{domain}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _resolve_domain(dd: datasets.DatasetDict, domain: str | int) -> str:
    name = str(domain)
    if name not in dd:
        raise ValueError(f"unknown domain {domain!r}; this dataset has domains {list(dd)}")
    return name


def holdout_size(num_rows: int, val_fraction: float) -> int:
    """How many rows of a training domain go to validation: ``floor(num_rows * val_fraction)``, at least one
    when ``val_fraction > 0`` and the domain has two or more rows (tiny domains would otherwise give none).

    Examples:
        >>> holdout_size(834, 0.2), holdout_size(10, 0.05), holdout_size(1, 0.2), holdout_size(50, 0.0)
        (166, 1, 0, 0)
    """
    size = int(num_rows * val_fraction)
    if val_fraction > 0 and size == 0 and num_rows >= 2:
        size = 1
    return size


def leave_one_domain_out(
    dd: datasets.DatasetDict, test_domain: str | int, val_fraction: float = 0.2, seed: int = 0
) -> datasets.DatasetDict:
    """Split a DG ``DatasetDict`` into ``train`` / ``validation`` (training domains) and ``test`` (held-out domain).

    Args:
        dd: ``DatasetDict`` keyed by domain (see ``load_dg_dataset``).
        test_domain: name of the held-out domain; an ``int`` is converted with ``str`` (Rotated-MNIST's
            domains are named ``"0"``, ``"15"``, ...).
        val_fraction: fraction of every training domain held out for validation, in ``[0, 1)``.
        seed: seed of the per-domain validation shuffles (same seed, same split).

    Examples:
        >>> from gaqat_recipes.data import build_rotated_mnist
        >>> splits = leave_one_domain_out(build_rotated_mnist(), test_domain=75, val_fraction=0.2)
        >>> {name: ds.num_rows for name, ds in splits.items()}
        {'train': 3337, 'validation': 830, 'test': 833}
    """
    check_dg_dict(dd)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
    test_name = _resolve_domain(dd, test_domain)
    if len(dd) < 2:
        raise ValueError(f"leave-one-domain-out needs at least two domains; this dataset has only {list(dd)}")
    train_parts, val_parts = [], []
    for name, ds in dd.items():
        if name == test_name:
            continue
        order = np.random.RandomState(domain_seed(seed, name)).permutation(ds.num_rows)
        n_val = holdout_size(ds.num_rows, val_fraction)
        val_parts.append(ds.select(np.sort(order[:n_val])))
        train_parts.append(ds.select(np.sort(order[n_val:])))
    return datasets.DatasetDict(
        {
            "train": datasets.concatenate_datasets(train_parts),
            "validation": datasets.concatenate_datasets(val_parts),
            "test": dd[test_name],
        }
    )
