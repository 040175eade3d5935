"""Freeze statistics of a GAQATOptimizer as flat log entries (Trainer logs, trackers, recipes' metrics).

Examples:
    >>> import torch
    >>> from gaqat_wrap import GAQATOptimizer
    >>> w = torch.nn.Parameter(torch.ones(2))
    >>> sorted(freeze_log_entries(GAQATOptimizer(torch.optim.SGD([w], lr=0.1), freeze_threshold=None)))
    ['gaqat/frozen_fraction', 'gaqat/frozen_scales', 'gaqat/mean_disorder', 'gaqat/skipped_steps']
"""

from __future__ import annotations

from gaqat_wrap.optim import GAQATOptimizer


def freeze_log_entries(optimizer: GAQATOptimizer) -> dict[str, float]:
    """Summary statistics of ``optimizer.freeze_report()`` as flat log entries.

    Keys: ``gaqat/frozen_scales`` (count), ``gaqat/frozen_fraction``,
    ``gaqat/mean_disorder``, ``gaqat/skipped_steps``. Fractions are 0.0 when the
    optimizer tracks no step sizes (a full-precision model).

    Examples:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> freeze_log_entries(GAQATOptimizer(torch.optim.SGD([w], lr=0.1), freeze_threshold=None))["gaqat/frozen_scales"]
        0.0
    """
    report = optimizer.freeze_report()
    frozen = sum(s.frozen for s in report)
    return {
        "gaqat/frozen_scales": float(frozen),
        "gaqat/frozen_fraction": frozen / len(report) if report else 0.0,
        "gaqat/mean_disorder": sum(s.disorder for s in report) / len(report) if report else 0.0,
        "gaqat/skipped_steps": float(optimizer.skipped_steps),
    }
