"""Observe the value range of named tensors of an ONNX graph over calibration batches (in onnxruntime).

Used by :func:`~gaqat_wrap.export.export_onnx_integer` for the tensors that
need an 8-bit grid but have no learned step size (a residual sum read by
several layers, a convolution output that feeds a float op): the tensors are
added as graph outputs of a copy of the graph, which runs every batch.

Examples:
    >>> import numpy as np
    >>> from onnx import helper, TensorProto
    >>> graph = helper.make_graph([helper.make_node("Relu", ["input"], ["r"]), helper.make_node("Neg", ["r"], ["out"])], "g",
    ...                           [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 2])],
    ...                           [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 2])])
    >>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    >>> observe_ranges(model, ["r"], [np.array([[-1.0, 2.0]], np.float32), np.array([[3.0, 0.5]], np.float32)])
    {'r': (0.0, 3.0)}
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import torch

from gaqat_wrap.extras import require

if TYPE_CHECKING:
    import onnx


def observe_ranges(model: onnx.ModelProto, tensors: list[str], batches: Iterable[np.ndarray | torch.Tensor],
                   input_name: str = "input") -> dict[str, tuple[float, float]]:
    """``{tensor: (min, max)}`` over all ``batches`` fed to the graph input ``input_name``.

    Raises ``ValueError`` when ``batches`` is empty.
    """
    onnx = require("onnx", "onnx")
    onnxruntime = require("onnxruntime", "onnx")

    if not tensors:
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in tensors if name not in existing)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    low = dict.fromkeys(tensors, np.inf)
    high = dict.fromkeys(tensors, -np.inf)
    seen = 0
    for batch in batches:
        array = batch.detach().cpu().float().numpy() if isinstance(batch, torch.Tensor) else np.asarray(batch, np.float32)
        for name, value in zip(tensors, session.run(tensors, {input_name: array}), strict=True):
            low[name] = min(low[name], float(value.min()))
            high[name] = max(high[name], float(value.max()))
        seen += 1
    if not seen:
        raise ValueError("calibration_data is empty: pass an iterable of float32 input batches")
    return {name: (low[name], high[name]) for name in tensors}
