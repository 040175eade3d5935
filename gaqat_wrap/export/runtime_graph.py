"""What onnxruntime really runs: the graph after its optimisation passes (QDQ fusion, layout changes).

onnxruntime fuses ``DequantizeLinear -> Conv -> QuantizeLinear`` into
``QLinearConv``, ``DequantizeLinear -> MatMul`` pairs into
``MatMulIntegerToFloat`` and so on, when the pattern and the types allow it.
The only reliable way to know whether a layer runs as an integer kernel is to
let onnxruntime optimise the graph and look: :func:`optimized_model` saves the
optimised graph (``SessionOptions.optimized_model_filepath``) and loads it back.

Examples:
    >>> import tempfile, numpy as np, onnx
    >>> from onnx import helper, numpy_helper, TensorProto
    >>> nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["x_q"]),
    ...          helper.make_node("DequantizeLinear", ["x_q", "x_s", "x_z"], ["x_dq"]),
    ...          helper.make_node("DequantizeLinear", ["w_q", "w_s"], ["w"]), helper.make_node("MatMul", ["x_dq", "w"], ["y"])]
    >>> constants = [numpy_helper.from_array(np.ones((4, 2), np.int8), "w_q"), numpy_helper.from_array(np.float32(0.5), "w_s"),
    ...              numpy_helper.from_array(np.float32(0.1), "x_s"), numpy_helper.from_array(np.uint8(0), "x_z")]
    >>> graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
    ...                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], constants)
    >>> path = tempfile.mkdtemp() + "/m.onnx"
    >>> onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), path)
    >>> optimized = optimized_model(path)
    >>> kernels_reading(optimized, {"fc": ["w_q", "w_s"]})
    {'fc': 'MatMulIntegerToFloat'}
    >>> node_type_counts(optimized)
    Counter({'QuantizeLinear': 1, 'MatMulIntegerToFloat': 1})
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from typing import TYPE_CHECKING

from gaqat_wrap.extras import require

if TYPE_CHECKING:
    import onnx


def optimized_model(path: str | os.PathLike, *, threads: int = 1, sess_options: object | None = None) -> onnx.ModelProto:
    """The graph onnxruntime (CPU, all optimisations) runs for the model at ``path``.

    ``sess_options`` (an ``onnxruntime.SessionOptions``) is used as given,
    except that its ``optimized_model_filepath`` is pointed at a temporary file.

    Examples:
        >>> import tempfile, onnx
        >>> from onnx import helper, TensorProto
        >>> x, y = (helper.make_tensor_value_info(name, TensorProto.FLOAT, [2]) for name in ("x", "y"))
        >>> nodes = [helper.make_node("Identity", ["x"], ["t"]), helper.make_node("Relu", ["t"], ["y"])]
        >>> path = tempfile.mkdtemp() + "/m.onnx"
        >>> model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 21)])
        >>> onnx.save(model, path)
        >>> [node.op_type for node in optimized_model(path).graph.node]  # onnxruntime removed the Identity
        ['Relu']
    """
    onnx = require("onnx", "onnx")
    onnxruntime = require("onnxruntime", "onnx")

    options = sess_options or onnxruntime.SessionOptions()
    if sess_options is None:
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
    with tempfile.TemporaryDirectory() as folder:
        options.optimized_model_filepath = os.path.join(folder, "optimized.onnx")
        onnxruntime.InferenceSession(os.fspath(path), sess_options=options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath, load_external_data=False)


def node_type_counts(model: onnx.ModelProto) -> Counter:
    """How many nodes of each op type the graph has.

    Examples:
        >>> from onnx import helper
        >>> nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
        ...          helper.make_node("Sigmoid", ["b"], ["y"])]
        >>> node_type_counts(helper.make_model(helper.make_graph(nodes, "g", [], [])))
        Counter({'Relu': 2, 'Sigmoid': 1})
    """
    return Counter(node.op_type for node in model.graph.node)


def kernels_reading(model: onnx.ModelProto, initializers: dict[str, list[str]]) -> dict[str, str | None]:
    """For each ``{key: [initializer names]}``, the op type of the first node computing with one of them.

    A ``DequantizeLinear`` in between is looked through: a layer whose weights
    onnxruntime left as ``DequantizeLinear -> Conv`` runs as ``"Conv"``. Pass a
    layer's weight and scale names (a fusion may re-pack and rename one of
    them); ``None`` means no node reads any of them.
    """
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    def kernel(name: str) -> str | None:
        for node in readers.get(name, ()):
            if node.op_type != "DequantizeLinear":
                return node.op_type
            found = kernel(node.output[0])
            if found is not None:
                return found
        return None

    return {key: next((k for k in map(kernel, names) if k is not None), None) for key, names in initializers.items()}
