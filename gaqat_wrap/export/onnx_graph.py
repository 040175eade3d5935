"""A small editable view of an ONNX graph: producers, consumers, constants, unique names, topological order.

The export passes (:mod:`gaqat_wrap.export.batchnorm_folding`,
:mod:`gaqat_wrap.export.onnx_integer`) rewrite a traced graph node by node;
this class keeps the bookkeeping out of them. :meth:`OnnxGraph.build` returns the
edited model (the model it was made from is left as it was).

Examples:
    >>> from onnx import helper, TensorProto
    >>> graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["y"], ["z"])], "g",
    ...                           [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
    ...                           [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])])
    >>> view = OnnxGraph(helper.make_model(graph))
    >>> view.producer("y").op_type, [n.op_type for n in view.consumers("y")]
    ('Relu', ['Neg'])
    >>> view.bypass(view.producer("y"))   # remove the Relu: its consumers read its input
    >>> [(n.op_type, list(n.input)) for n in view.build().graph.node]
    [('Neg', ['x'])]
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from gaqat_wrap.extras import require

if TYPE_CHECKING:
    import onnx


class OnnxGraph:
    """Mutable view of ``model.graph``; :meth:`build` returns the edited model with its nodes in topological order."""

    def __init__(self, model: onnx.ModelProto) -> None:
        onnx = require("onnx", "onnx")
        from onnx import numpy_helper

        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        model = self.model
        self.nodes: list[onnx.NodeProto] = list(model.graph.node)
        self.initializers: dict[str, onnx.TensorProto] = {t.name: t for t in model.graph.initializer}
        self._arrays: dict[str, np.ndarray] = {}
        for node in self.nodes:  # Constant nodes count as initializers
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1 \
                    and node.attribute[0].name == "value":
                self._arrays[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.outputs = {o.name for o in model.graph.output}
        self._names = {name for node in self.nodes for name in (*node.input, *node.output, node.name)} | set(self.initializers)
        self._index: tuple[dict[str, onnx.NodeProto], dict[str, list[onnx.NodeProto]]] | None = None

    # -- lookups ----------------------------------------------------------------------------
    def _build_index(self) -> tuple[dict[str, onnx.NodeProto], dict[str, list[onnx.NodeProto]]]:
        if self._index is None:
            producers: dict[str, onnx.NodeProto] = {}
            consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
            for node in self.nodes:
                for name in node.output:
                    producers[name] = node
                for name in dict.fromkeys(node.input):
                    if name:
                        consumers[name].append(node)
            self._index = (producers, consumers)
        return self._index

    def producer(self, tensor: str) -> onnx.NodeProto | None:
        """The node that writes ``tensor`` (``None`` for graph inputs and initializers)."""
        return self._build_index()[0].get(tensor)

    def consumers(self, tensor: str) -> list[onnx.NodeProto]:
        """The nodes that read ``tensor``, in graph order, each once."""
        return list(self._build_index()[1].get(tensor, ()))

    def constant(self, tensor: str) -> np.ndarray | None:
        """The value of an initializer or ``Constant`` output, else ``None``."""
        from onnx import numpy_helper

        if tensor in self._arrays:
            return self._arrays[tensor]
        if tensor in self.initializers:
            self._arrays[tensor] = numpy_helper.to_array(self.initializers[tensor])
            return self._arrays[tensor]
        return None

    # -- edits ------------------------------------------------------------------------------
    def unique(self, base: str) -> str:
        """A tensor/node name not used yet, derived from ``base``."""
        name, count = base, 0
        while name in self._names:
            count += 1
            name = f"{base}__{count}"
        self._names.add(name)
        return name

    def add_initializer(self, name: str, value: np.ndarray | onnx.TensorProto) -> str:
        """Add a constant under a fresh name derived from ``name``; return that name."""
        from onnx import numpy_helper

        unique = self.unique(name)
        if isinstance(value, np.ndarray):
            tensor = numpy_helper.from_array(value, unique)
        else:
            tensor = value
            tensor.name = unique
        self.initializers[unique] = tensor
        return unique

    def add_node(self, op_type: str, inputs: list[str], outputs: list[str] | int = 1, *, name: str,
                 domain: str = "", **attributes: object) -> onnx.NodeProto:
        """Append a node; ``outputs`` as a count gets fresh names derived from ``name``."""
        from onnx import helper

        if isinstance(outputs, int):
            outputs = [self.unique(f"{name}_out{i}" if outputs > 1 else f"{name}_out") for i in range(outputs)]
        node = helper.make_node(op_type, inputs, outputs, name=self.unique(name), domain=domain or None, **attributes)
        self.nodes.append(node)
        self._index = None
        return node

    def remove(self, node: onnx.NodeProto) -> None:
        """Delete ``node`` (its outputs must no longer be read)."""
        self.nodes = [n for n in self.nodes if n is not node]
        self._index = None

    def replace_input(self, node: onnx.NodeProto, old: str, new: str) -> None:
        """Make ``node`` read ``new`` wherever it read ``old``."""
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        self._index = None

    def set_input(self, node: onnx.NodeProto, index: int, name: str) -> None:
        """Make input ``index`` of ``node`` read ``name`` (appending empty optional inputs as needed)."""
        while len(node.input) <= index:
            node.input.append("")
        node.input[index] = name
        self._index = None

    def redirect(self, old: str, new: str, *, keep: tuple[onnx.NodeProto, ...] = ()) -> None:
        """Every reader of ``old`` (except the nodes in ``keep``) reads ``new`` instead; graph outputs are renamed."""
        for node in self.consumers(old):
            if not any(node is k for k in keep):
                self.replace_input(node, old, new)
        if old in self.outputs:
            producer = self.producer(new)
            if producer is None:
                raise ValueError(f"cannot make {new!r} the graph output {old!r}: it is not computed by a node")
            producer.output[list(producer.output).index(new)] = old
            for node in self.consumers(new):
                self.replace_input(node, new, old)

    def bypass(self, node: onnx.NodeProto) -> None:
        """Remove a one-input-one-output node: its readers read its input."""
        self.redirect(node.output[0], node.input[0])
        self.remove(node)

    # -- output -----------------------------------------------------------------------------
    def topological(self) -> list[onnx.NodeProto]:
        """The nodes in an order where every node comes after the producers of its inputs."""
        available = {i.name for i in self.model.graph.input} | set(self.initializers) | {""}
        pending, ordered = list(self.nodes), []
        while pending:
            ready = [n for n in pending if all(name in available for name in n.input)]
            if not ready:
                missing = sorted({name for n in pending for name in n.input if name not in available})[:5]
                raise ValueError(f"graph has a cycle or reads undefined tensors: {missing}")
            ready_ids = {id(n) for n in ready}
            for node in ready:
                ordered.append(node)
                available.update(node.output)
            pending = [n for n in pending if id(n) not in ready_ids]
        return ordered

    def build(self) -> onnx.ModelProto:
        """A new model with the edited nodes in topological order, only the initializers they read, no stale shapes."""
        onnx = require("onnx", "onnx")

        ordered = self.topological()
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        graph = model.graph
        del graph.node[:]
        graph.node.extend(ordered)
        used = {name for node in ordered for name in node.input}
        del graph.initializer[:]
        graph.initializer.extend(t for name, t in self.initializers.items() if name in used)
        del graph.value_info[:]
        return model
