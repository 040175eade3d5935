"""Run an exported QDQ graph in onnxruntime, computing what the graph says.

Two onnxruntime 1.32 defaults get in the way, and :func:`onnxruntime_session`
changes exactly those:

* Its ``ClipQuantRewrite`` graph rule (it drops a ``Relu``/``Clip`` in front of
  a ``QuantizeLinear`` whose range already clips) fails on 4-bit zero points
  ("Unexpected data type for QuantizeLinear input y_zero_point of 21"), so a
  ``low_bit="int4"`` graph with a ReLU/ReLU6 feeding a quantized input does not
  open with default options. The rule is only an optimisation: disabled.
* It fuses ``DequantizeLinear`` + ``MatMul`` into ``MatMulNBits`` and by default
  (``session.qdq_matmulnbits_accuracy_level`` = 4) quantizes that MatMul's
  float input to int8 on the fly, which the graph does not ask for (measured:
  1.4% max logit change on a weight-only 8-bit vit_tiny_patch16_224). Set to 1
  (float32 compute; the fused integer-weight kernel is still used) unless the
  caller's ``sess_options`` already sets it.

Examples:
    >>> DISABLED_RULES, SESSION_CONFIG
    (('ClipQuantRewrite',), {'session.qdq_matmulnbits_accuracy_level': '1'})
"""

from __future__ import annotations

import os
from typing import Any

from gaqat_wrap.extras import require

DISABLED_RULES = ("ClipQuantRewrite",)
"""onnxruntime graph rules disabled for QDQ graphs (see the module docstring)."""

SESSION_CONFIG = {"session.qdq_matmulnbits_accuracy_level": "1"}
"""Session config entries set unless the caller's ``sess_options`` has them (see the module docstring)."""


def onnxruntime_session(path: str | os.PathLike, providers: list[str] | None = None, **options: Any) -> Any:
    """An ``onnxruntime.InferenceSession`` for an exported QDQ model (CPU by default), with the settings above.

    ``options`` go to ``InferenceSession`` (e.g. ``sess_options``, ``disabled_optimizers``).

    Examples:
        >>> onnxruntime_session("missing.onnx")
        Traceback (most recent call last):
        ...
        FileNotFoundError: no ONNX model at missing.onnx
    """
    onnxruntime = require("onnxruntime", "onnx")

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no ONNX model at {os.fspath(path)}")
    session_options = options.pop("sess_options", None) or onnxruntime.SessionOptions()
    for key, value in SESSION_CONFIG.items():
        try:
            session_options.get_session_config_entry(key)
        except RuntimeError:  # not set by the caller
            session_options.add_session_config_entry(key, value)
    disabled = sorted({*options.pop("disabled_optimizers", ()), *DISABLED_RULES})
    return onnxruntime.InferenceSession(os.fspath(path), sess_options=session_options,
                                        providers=providers or ["CPUExecutionProvider"], disabled_optimizers=disabled, **options)
