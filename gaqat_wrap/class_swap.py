"""Cached mixin subclasses for in-place class swaps (quantized and integer layers).

A swapped layer stays an instance of its original class: its class becomes
``type(prefix + name, (mixin, original), ...)``, created once per original
class and registered in its home module under a unique name so pickle finds it.

Examples:
    >>> import torch
    >>> class Loud(torch.nn.Module):
    ...     pass
    >>> cls = mixin_subclass(Loud, torch.nn.Linear, "Loud", __name__, {})
    >>> cls.__name__, issubclass(cls, torch.nn.Linear)
    ('LoudLinear', True)
"""

from __future__ import annotations

import sys


def mixin_subclass(mixin: type, cls: type, prefix: str, home_module: str, cache: dict[type, type]) -> type:
    """The subclass ``(mixin, cls)`` named ``prefix + cls.__name__``, cached in ``cache``."""
    if cls not in cache:
        name = f"{prefix}{cls.__name__}"
        qualname = f"{name}__{cls.__module__.replace('.', '_')}"
        new_cls = type(name, (mixin, cls), {"__module__": home_module, "__qualname__": qualname})
        setattr(sys.modules[home_module], qualname, new_cls)
        cache[cls] = new_cls
    return cache[cls]
