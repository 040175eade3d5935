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
from collections.abc import Callable


def mixin_subclass(mixin: type, cls: type, prefix: str, home_module: str, cache: dict[type, type]) -> type:
    """The subclass ``(mixin, cls)`` named ``prefix + cls.__name__``, cached in ``cache``."""
    if cls not in cache:
        name = f"{prefix}{cls.__name__}"
        qualname = f"{name}__{cls.__module__.replace('.', '_')}"
        new_cls = type(name, (mixin, cls), {"__module__": home_module, "__qualname__": qualname})
        setattr(sys.modules[home_module], qualname, new_cls)
        cache[cls] = new_cls
    return cache[cls]


def reduce_by_original_class(module: object, reduced: tuple, swapped_class: Callable[[type], type]) -> tuple:
    """A ``__reduce_ex__`` result that unpickles ``module`` through its original class.

    ``reduced`` is the default ``__reduce_ex__`` result; ``swapped_class``
    (a module-level function, pickled by reference) rebuilds the swapped class
    from the original one, so the pickle loads even in a fresh process.

    Examples:
        >>> import pickle, torch
        >>> from gaqat_wrap.quant.attention import quantize_attention
        >>> attention = torch.nn.MultiheadAttention(4, 1)
        >>> quantize_attention(attention, weight_bits=4, input_bits=None, role="attention")
        >>> type(pickle.loads(pickle.dumps(attention))).__name__
        'QuantizedMultiheadAttention'
    """
    return (_new_swapped, (swapped_class, module._gaqat_original_class), *reduced[2:])


def _new_swapped(swapped_class: Callable[[type], type], original: type) -> object:
    """Unpickling helper: an empty instance of the swapped subclass of ``original``."""
    cls = swapped_class(original)
    return cls.__new__(cls)
