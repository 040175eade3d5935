"""Warnings that point at the user's line, not at a frame inside gaqat_wrap, torch or a training framework.

``warnings.warn(..., stacklevel=n)`` with a fixed ``n`` lands inside
``torch/utils/_contextlib.py`` when the warning comes from a method decorated with
``@torch.no_grad()``, or inside Accelerate's optimizer wrapper when the user calls
``AcceleratedOptimizer.step``. :func:`warn_at_caller` walks up to the first frame
outside those packages.

Examples:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_at_caller("careful")
    >>> caught[0].filename.startswith("<doctest")   # this example's own line, not caller_warnings.py
    True
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

_INTERNAL_PACKAGES = ("gaqat_wrap", "torch", "accelerate", "transformers")


def _package_roots() -> tuple[str, ...]:
    roots = []
    for name in _INTERNAL_PACKAGES:
        module = sys.modules.get(name)
        file = getattr(module, "__file__", None)
        if file:
            roots.append(str(Path(file).resolve().parent))
    return tuple(roots)


def warn_at_caller(message: str, category: type[Warning] = RuntimeWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the first calling frame outside the internal packages."""
    roots = _package_roots()
    frame = sys._getframe(1)
    level = 2
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(roots):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
