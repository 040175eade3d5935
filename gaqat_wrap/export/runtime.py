"""Run an exported QDQ graph in onnxruntime.

onnxruntime 1.32's ``ClipQuantRewrite`` graph rule (it drops a ``Relu``/``Clip``
in front of a ``QuantizeLinear`` whose range already clips) fails on 4-bit
zero points ("Unexpected data type for QuantizeLinear input y_zero_point of
21"), so any ``low_bit="int4"`` graph with a ReLU or ReLU6 feeding a
quantized input cannot open with default session options. Disabling that one
rule is harmless: it is an optimisation, the graph stays the same.

Examples:
    >>> DISABLED_RULES
    ('ClipQuantRewrite',)
"""

from __future__ import annotations

import os
from typing import Any

DISABLED_RULES = ("ClipQuantRewrite",)
"""onnxruntime graph rules to disable for 4-bit QDQ graphs (see the module docstring)."""


def onnxruntime_session(path: str | os.PathLike, providers: list[str] | None = None, **options: Any) -> Any:
    """An ``onnxruntime.InferenceSession`` for an exported QDQ model (CPU by default), with the workaround above.

    ``options`` go to ``InferenceSession`` (e.g. ``sess_options``).

    Examples:
        >>> onnxruntime_session("missing.onnx")
        Traceback (most recent call last):
        ...
        FileNotFoundError: no ONNX model at missing.onnx
    """
    import onnxruntime

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no ONNX model at {os.fspath(path)}")
    disabled = sorted({*options.pop("disabled_optimizers", ()), *DISABLED_RULES})
    return onnxruntime.InferenceSession(os.fspath(path), providers=providers or ["CPUExecutionProvider"],
                                        disabled_optimizers=disabled, **options)
