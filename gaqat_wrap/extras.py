"""Optional dependencies: imported where they are used, with an error that names the extra to install.

``pip install gaqat-wrap`` brings only torch, numpy and safetensors. Everything else is an extra named
for what it enables (``trainer``, ``accelerate``, ``peft``, ``timm``, ``onnx``); a module that needs
one imports it through :func:`require`, so ``import gaqat_wrap`` never imports it.

Examples:
    >>> require("math", "none").sqrt(4.0)
    2.0
"""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, or raise ``ImportError`` saying which extra of gaqat-wrap provides it.

    Examples:
        >>> require("no_such_module_here", "onnx")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ImportError: no_such_module_here is needed here but not installed: pip install 'gaqat-wrap[onnx]'...
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        raise ImportError(f"{top} is needed here but not installed: pip install 'gaqat-wrap[{extra}]' "
                          f"(or pip install {top})") from err
