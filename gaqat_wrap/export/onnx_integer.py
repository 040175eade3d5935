"""ONNX export that onnxruntime runs with integer kernels: BatchNorm folded, one Q/DQ pair between layers.

:func:`export_onnx_qdq` writes the trained quantization faithfully (QDQ on
weights and layer inputs, float layer outputs, BatchNorm unfolded), which
onnxruntime cannot fuse: it runs slower than FP32. :func:`export_onnx_integer`
writes the graph onnxruntime's QDQ fusions turn into ``QLinearConv``,
``QLinearAdd``, ``QGemm``, ``MatMulIntegerToFloat`` (and ``MatMulNBits``):

1. **BatchNorm folding** into the convolution in front of it, then
   re-quantizing the weight with the step size ``s * |gamma / sigma|`` (see
   :mod:`gaqat_wrap.export.batchnorm_folding`).
2. **Weights**: symmetric per-output-channel integers with the learned step
   sizes, in 8-bit containers (``DequantizeLinear``, zero point 0) for
   convolutions and 5-8-bit Linear layers; Linear layers of 4 bits or fewer
   become ``com.microsoft.MatMulNBits`` (:mod:`gaqat_wrap.export.matmul_nbits`).
   Conv/Gemm biases become int32 at scale ``s_x * s_w``. Integers of fewer than
   8 bits are stored as ``q * m`` with step ``s / m`` (the largest ``m`` per
   channel that fits): the same weights on an ``m`` times finer bias grid.
3. **Activations** are uint8 (:mod:`gaqat_wrap.export.activation_quant`). Each
   layer input keeps its learned step size. Each convolution output gets
   one ``QuantizeLinear``: the learned grid of the layer that reads it
   when one layer (or several with the same grid) does, so ``Relu``/``Clip``
   in between become the integer range of that grid; otherwise an 8-bit grid
   calibrated from ``calibration_data`` (as onnxruntime's ``quantize_static``
   does), listed in the report. ``Add``, ``Concat`` and average pools whose
   inputs are quantized get quantized outputs the same way (``QLinearAdd``...),
   and so does ``x * gate`` where ``x`` is quantized and the gate comes from a
   ``HardSigmoid``/``Sigmoid`` (``QLinearMul``; the gate gets a calibrated
   grid): squeeze-excite, SiLU, and ``HardSwish``, which is first written as
   ``x * HardSigmoid(x)`` after an integer convolution;
   ``MaxPool``, ``Reshape``, ``Flatten``, ``Transpose`` keep the grid of their
   input. Linear layer outputs stay float (``MatMulIntegerToFloat``, or ``QGemm``
   with a float output) unless a ``Relu`` follows, and LayerNorm, softmax, GELU
   and the other float ops stay float.

On x86 CPUs without VNNI, onnxruntime's u8 x s8 kernels add pairs of
products in int16 and can saturate; with ``weight_storage="auto"`` a layer whose
worst case (``2 * max input code * max|weight integer|``) exceeds int16 stores
its weights as uint8 with zero point 128 instead, which onnxruntime runs with
exact u8 x u8 kernels.

The export then asks onnxruntime which kernel runs each layer (its optimised
graph) and reports any layer left in float by name (``strict=True`` raises).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor, nn

from gaqat_wrap.export.activation_quant import ActivationQuant
from gaqat_wrap.export.batchnorm_folding import fold_into_weights
from gaqat_wrap.export.integer_layer import IntegerLayerSpec
from gaqat_wrap.export.matmul_nbits import MATMUL_NBITS_DOMAIN, matmul_nbits_attributes, matmul_nbits_weights
from gaqat_wrap.export.onnx_graph import OnnxGraph
from gaqat_wrap.export.onnx_integer_report import CalibratedTensor, IntegerOnnxReport, LayerRow
from gaqat_wrap.export.onnx_trace import PLACEHOLDER_DOMAIN, placeholder_layer, trace_with_placeholders
from gaqat_wrap.export.packing import pack_int4
from gaqat_wrap.export.range_calibration import observe_ranges
from gaqat_wrap.export.runtime_graph import kernels_reading, node_type_counts, optimized_model
from gaqat_wrap.extras import require

if TYPE_CHECKING:
    import onnx

WeightStorage = Literal["auto", "int8", "uint8"]
PASSTHROUGH_OPS = frozenset({"MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity"})
"""Ops that move or select values without changing them: their output keeps the grid of their input."""
CLIP_OPS = frozenset({"Relu", "Clip"})
INTEGER_INPUT_OPS = frozenset({"Add", "Concat", "GlobalAveragePool", "AveragePool", "Mul"})
"""Ops onnxruntime runs on uint8 tensors (QLinearAdd, QLinearConcat, QLinearGlobalAveragePool, QLinearAveragePool,
QLinearMul); a ``Mul`` only when it gates a quantized tensor (see ``GATE_OPS``)."""
GATE_OPS = frozenset({"HardSigmoid", "Sigmoid"})
"""Producers of a [0, 1] gate: ``x * gate(...)`` (hardswish, SiLU, squeeze-excite) runs as QLinearMul when ``x`` is
quantized, the gate getting a calibrated 8-bit grid."""
INT16_PAIR_LIMIT = 32767
"""u8 x s8 kernels without VNNI add two products in int16: exact while ``2 * max|x_u8| * max|w| <= 32767``."""


@dataclass
class _Layer:
    """One quantized layer while the graph is rewritten."""

    name: str
    spec: IntegerLayerSpec
    node: onnx.NodeProto
    kind: Literal["conv", "matmul", "gemm", "other"]
    weight_int: np.ndarray
    weight_scale: np.ndarray
    grid: ActivationQuant | None
    weight_tensor: str
    input_placeholder: onnx.NodeProto | None
    bias: np.ndarray | None = None
    batchnorm: str | None = None
    clamped: int = 0
    storage: str = "int8"
    input_chain: list[onnx.NodeProto] = field(default_factory=list)
    weight_names: list[str] = field(default_factory=list)
    input_grid: ActivationQuant | None = None
    note: str = ""

    @property
    def linear(self) -> bool:
        return self.kind in ("matmul", "gemm")

    @property
    def integer_conv(self) -> bool:
        return self.kind == "conv" and self.grid is not None and self.storage in ("int8", "uint8")

    @property
    def integer_linear(self) -> bool:
        return self.linear and self.grid is not None and self.storage in ("int8", "uint8")


@dataclass
class _Site:
    """A float tensor that gets one QuantizeLinear (``source`` is what the Q reads; ``absorbed`` a Relu/Clip)."""

    tensor: str
    source: str
    reason: str
    absorbed: onnx.NodeProto | None = None
    bounds: tuple[float | None, float | None] | None = None
    grid: ActivationQuant | None = None
    reader_grid: ActivationQuant | None = None  # a learned grid that re-quantizes from this site's calibrated grid


def _attribute(node: onnx.NodeProto, name: str, default: object = None) -> object:
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


class _IntegerGraph:
    """The rewrite of a traced graph into the integer graph (one instance per export)."""

    def __init__(self, traced, *, weight_storage: WeightStorage, matmul_nbits: bool, int4_conv_weights: bool,
                 accuracy_level: int) -> None:
        self.graph = OnnxGraph(traced.model)
        self.traced = traced
        self.weight_storage = weight_storage
        self.matmul_nbits = matmul_nbits
        self.int4_conv_weights = int4_conv_weights
        self.accuracy_level = accuracy_level
        self.layers: dict[str, _Layer] = {}
        self.problems: list[str] = []
        self.quantized_by: dict[str, ActivationQuant] = {}  # DQ output -> grid it dequantizes
        self.uses_contrib = False

    # -- 1. find the layers ---------------------------------------------------------------------
    def find_layers(self) -> None:
        graph = self.graph
        weights, inputs = {}, {}
        for node in graph.nodes:
            if node.domain == PLACEHOLDER_DOMAIN:
                (weights if node.op_type == "IntegerWeight" else inputs)[placeholder_layer(node)] = node
        for name, spec in self.traced.specs.items():
            tensors = self.traced.tensors[name]
            placeholder = weights[name]
            graph.remove(placeholder)
            grid = None
            if spec.input_bits is not None:
                grid = ActivationQuant.learned(bits=spec.input_bits, signed=bool(spec.input_signed),
                                               scale=float(tensors["input_scale"].float()), origin=name)
            layer = _Layer(name, spec, placeholder, "other", tensors["weight_int"].cpu().numpy().astype(np.int64),
                           tensors["weight_scale"].detach().cpu().float().numpy(), grid, placeholder.output[0],
                           inputs.get(name))
            self._bind_compute_node(layer)
            self.layers[name] = layer

    def _bind_compute_node(self, layer: _Layer) -> None:
        """Find the Conv/MatMul that reads the weight; Linear weights become (K, N) MatMul operands."""
        graph, weight = self.graph, layer.weight_tensor
        readers = graph.consumers(weight)
        reader = readers[0] if len(readers) == 1 else None
        if reader is not None and reader.op_type == "Conv" and list(reader.input).index(weight) == 1:
            layer.node, layer.kind = reader, "conv"
        elif reader is not None and reader.op_type == "Transpose" and list(_attribute(reader, "perm", [])) == [1, 0] \
                and len(graph.consumers(reader.output[0])) == 1 \
                and graph.consumers(reader.output[0])[0].op_type == "MatMul" \
                and graph.consumers(reader.output[0])[0].input[1] == reader.output[0]:
            matmul = graph.consumers(reader.output[0])[0]
            graph.replace_input(matmul, reader.output[0], weight)
            graph.remove(reader)
            layer.node, layer.kind = matmul, "matmul"
        elif reader is not None and reader.op_type == "Gemm" and reader.input[1] == weight \
                and _attribute(reader, "transB", 0) == 1 and not _attribute(reader, "transA", 0) \
                and _attribute(reader, "alpha", 1.0) == 1.0 and _attribute(reader, "beta", 1.0) == 1.0:
            layer.node, layer.kind = reader, "gemm"
        else:
            found = reader.op_type if reader is not None else f"{len(readers)} readers"
            layer.note = f"weight read by {found}, not a Conv/MatMul/Gemm: kept as float with dequantized weights"
            self.problems.append(f"{layer.name}: {layer.note}")
            layer.node = reader if reader is not None else layer.node

    def _gemm_as_matmul(self, gemm: onnx.NodeProto) -> onnx.NodeProto:
        """``Gemm(x, W, b, transB=1)`` -> ``MatMul(x, W^T)`` [+ ``Add(b)``] (MatMulNBits has no transposed form)."""
        graph = self.graph
        output = gemm.output[0]
        has_bias = len(gemm.input) > 2 and gemm.input[2]
        product = graph.unique(f"{gemm.name}_matmul") if has_bias else output
        matmul = graph.add_node("MatMul", [gemm.input[0], gemm.input[1]], [product], name=f"{gemm.name}_matmul")
        if has_bias:
            graph.add_node("Add", [product, gemm.input[2]], [output], name=f"{gemm.name}_bias")
        graph.remove(gemm)
        return matmul

    # -- 2. BatchNorm folding -------------------------------------------------------------------
    def fold_batchnorms(self) -> None:
        graph = self.graph
        for layer in self.layers.values():
            if layer.kind != "conv":
                continue
            output = layer.node.output[0]
            readers = graph.consumers(output)
            if output in graph.outputs or len(readers) != 1 or readers[0].op_type != "BatchNormalization":
                continue
            batchnorm = readers[0]
            params = [graph.constant(name) for name in batchnorm.input[1:5]]
            if any(p is None for p in params) or _attribute(batchnorm, "training_mode", 0):
                self.problems.append(f"{layer.name}: BatchNorm {batchnorm.name} is not in eval mode with constant "
                                     "statistics and stays unfolded; export the model in eval mode")
                continue
            gamma, beta, mean, var = params
            bias = graph.constant(layer.node.input[2]) if len(layer.node.input) > 2 and layer.node.input[2] else None
            folded = fold_into_weights(layer.weight_int, layer.weight_scale, bias, gamma=gamma, beta=beta, mean=mean,
                                       var=var, eps=float(_attribute(batchnorm, "epsilon", 1e-5)),
                                       weight_range=self._weight_range(layer))
            layer.weight_int, layer.weight_scale, layer.bias = folded.weight_int, folded.weight_scale, folded.bias
            layer.batchnorm, layer.clamped = batchnorm.name, folded.clamped
            graph.redirect(batchnorm.output[0], output)
            graph.remove(batchnorm)

    def _four_bit_storage(self, layer: _Layer) -> str | None:
        """``"nbits"`` / ``"int4"`` when the layer's weights are stored in 4 bits, else ``None``."""
        if layer.spec.weight_bits > 4:
            return None
        if layer.linear and self.matmul_nbits:
            return "nbits"
        if layer.kind == "conv" and self.int4_conv_weights:
            return "int4"
        return None

    def _weight_range(self, layer: _Layer) -> tuple[int, int]:
        return (-8, 7) if self._four_bit_storage(layer) else (-128, 127)

    # -- 3. weights, biases and the learned input grids --------------------------------------------
    def emit_layers(self) -> None:
        for layer in self.layers.values():
            layer.storage = self._storage(layer)
            if layer.storage in ("int8", "uint8"):
                self._refine_weight_grid(layer)
            self._emit_input(layer)
            if layer.storage == "nbits":
                self._emit_matmul_nbits(layer)
            else:
                self._emit_weight(layer)
            if layer.kind == "conv" and layer.bias is not None:
                self.graph.set_input(layer.node, 2, self.graph.add_initializer(f"{layer.name}.bias", layer.bias))

    def _storage(self, layer: _Layer) -> str:
        packed = self._four_bit_storage(layer)
        if packed:
            return packed
        if self.weight_storage != "auto" or layer.grid is None:
            return "int8" if self.weight_storage == "auto" else self.weight_storage
        worst = 2 * layer.grid.high * int(np.abs(layer.weight_int).max(initial=0))
        return "int8" if worst <= INT16_PAIR_LIMIT else "uint8"

    def _refine_weight_grid(self, layer: _Layer) -> None:
        """Store ``q * m`` with step ``s / m`` (same weights) for the largest integer ``m`` per channel that fits.

        The weights do not change, but the int32 bias grid ``s_x * s_w`` becomes ``m`` times finer: at
        4 bits (``|q| <= 8``, ``m`` up to 15) rounding the bias to ``s_x * s_w`` would otherwise move
        about 2 % of the next layer's 4-bit codes by one step (measured on a trained W4A4 CNN). ``m`` is
        limited so that the worst case of int8 weights still fits u8 x s8 int16 pairs.
        """
        if layer.kind == "other":
            return
        channels = layer.weight_int.shape[0]
        peak = np.abs(layer.weight_int.reshape(channels, -1)).max(axis=1)
        multiplier = np.maximum(127 // np.maximum(peak, 1), 1)  # 1 for 8-bit weights (peak 127 or 128)
        if layer.storage == "int8" and layer.grid is not None:
            multiplier = np.minimum(multiplier, np.maximum(INT16_PAIR_LIMIT // (2 * layer.grid.high * np.maximum(peak, 1)), 1))
        shape = (channels,) + (1,) * (layer.weight_int.ndim - 1)
        layer.weight_int = layer.weight_int * multiplier.reshape(shape)
        layer.weight_scale = (layer.weight_scale.astype(np.float64) / multiplier).astype(np.float32)

    def _emit_input(self, layer: _Layer) -> None:
        placeholder = layer.input_placeholder
        if placeholder is None:
            return
        chain_output, layer.input_chain = self.quantize(placeholder.input[0], layer.grid, f"{layer.name}.input")
        self.graph.redirect(placeholder.output[0], chain_output)
        self.graph.remove(placeholder)

    def quantize(self, tensor: str, grid: ActivationQuant, name: str, *, clip: bool = True) -> tuple[str, list]:
        """Emit ``tensor -> QuantizeLinear -> [Clip] -> DequantizeLinear``; return the DQ output and the nodes."""
        graph = self.graph
        scale = graph.add_initializer(f"{name}_scale", np.array(grid.scale, np.float32))
        zero = graph.add_initializer(f"{name}_zero_point", np.array(grid.zero_point, np.uint8))
        q = graph.add_node("QuantizeLinear", [tensor, scale, zero], name=f"{name}/Q")
        nodes, integers = [q], q.output[0]
        if clip and (grid.low, grid.high) != (0, 255):
            bounds = [graph.add_initializer(f"{name}_{end}", np.array(value, np.uint8))
                      for end, value in (("low", grid.low), ("high", grid.high))]
            clip_node = graph.add_node("Clip", [integers, *bounds], name=f"{name}/Clip")
            nodes.append(clip_node)
            integers = clip_node.output[0]
        dq = graph.add_node("DequantizeLinear", [integers, scale, zero], name=f"{name}/DQ")
        nodes.append(dq)
        self.quantized_by[dq.output[0]] = grid
        return dq.output[0], nodes

    def _emit_weight(self, layer: _Layer) -> None:
        from onnx import TensorProto, helper

        graph = self.graph
        values, axis = layer.weight_int, 0
        if layer.kind == "matmul":
            values, axis = values.T, 1
        channels = layer.weight_scale.shape[0]
        if layer.storage == "int4":
            packed = pack_int4(torch.from_numpy(np.ascontiguousarray(values).astype(np.int8)), signed=True).numpy().tobytes()
            weight = graph.add_initializer(f"{layer.name}.weight_q", helper.make_tensor(
                "w", TensorProto.INT4, list(values.shape), vals=packed, raw=True))
            zero = graph.add_initializer(f"{layer.name}.weight_zero_point", helper.make_tensor(
                "z", TensorProto.INT4, [channels], vals=pack_int4(torch.zeros(channels, dtype=torch.int8)).numpy().tobytes(),
                raw=True))
        elif layer.storage == "uint8":
            weight = graph.add_initializer(f"{layer.name}.weight_q", np.ascontiguousarray(values + 128).astype(np.uint8))
            zero = graph.add_initializer(f"{layer.name}.weight_zero_point", np.full(channels, 128, np.uint8))
        else:
            weight = graph.add_initializer(f"{layer.name}.weight_q", np.ascontiguousarray(values).astype(np.int8))
            zero = graph.add_initializer(f"{layer.name}.weight_zero_point", np.zeros(channels, np.int8))
        scale = graph.add_initializer(f"{layer.name}.weight_scale", layer.weight_scale.astype(np.float32))
        graph.add_node("DequantizeLinear", [weight, scale, zero], [layer.weight_tensor], name=f"{layer.name}/weight/DQ",
                       axis=axis)
        layer.weight_names = [weight, scale]

    def integer_biases(self) -> None:
        """Conv/Gemm biases as int32 at scale ``s_x * s_w`` (``s_x``: the grid the layer finally reads)."""
        for layer in self.layers.values():
            if layer.kind in ("conv", "gemm") and layer.input_grid is not None and layer.storage in ("int8", "uint8"):
                self._emit_integer_bias(layer, layer.input_grid)

    def _emit_integer_bias(self, layer: _Layer, grid: ActivationQuant) -> None:
        graph, node = self.graph, layer.node
        bias = graph.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if bias is None:
            return
        bias_scale = (np.float32(grid.scale) * layer.weight_scale).astype(np.float32)
        exact = np.round(bias.astype(np.float64) / bias_scale.astype(np.float64))
        limit = np.iinfo(np.int32)
        if ((exact < limit.min) | (exact > limit.max)).any():
            self.problems.append(f"{layer.name}: bias does not fit int32 at scale s_x * s_w; clamped")
        values = np.clip(exact, limit.min, limit.max).astype(np.int32)
        name = graph.add_node("DequantizeLinear", [
            graph.add_initializer(f"{layer.name}.bias_q", values),
            graph.add_initializer(f"{layer.name}.bias_scale", bias_scale),
            graph.add_initializer(f"{layer.name}.bias_zero_point", np.zeros_like(values))],
            name=f"{layer.name}/bias/DQ", axis=0).output[0]
        graph.set_input(node, 2, name)
        if layer.kind == "gemm":  # onnxruntime's QGemm selector reads beta; the exporter may leave it implicit
            self._set_attribute(node, "beta", 1.0)
            self._set_attribute(node, "alpha", 1.0)

    @staticmethod
    def _set_attribute(node: onnx.NodeProto, name: str, value: float) -> None:
        from onnx import helper

        if _attribute(node, name) is None:
            node.attribute.append(helper.make_attribute(name, value))

    def _emit_matmul_nbits(self, layer: _Layer) -> None:
        graph = self.graph
        if layer.kind == "gemm":
            layer.node, layer.kind = self._gemm_as_matmul(layer.node), "matmul"
        node = layer.node
        packed, scales = matmul_nbits_weights(layer.weight_int, layer.weight_scale)
        n, k = layer.weight_int.shape
        weight = graph.add_initializer(f"{layer.name}.weight_q", packed)
        scale = graph.add_initializer(f"{layer.name}.weight_scale", scales)
        graph.add_node("MatMulNBits", [node.input[0], weight, scale], list(node.output), name=f"{layer.name}/MatMulNBits",
                       domain=MATMUL_NBITS_DOMAIN, **matmul_nbits_attributes(k, n, accuracy_level=self.accuracy_level))
        graph.remove(node)
        layer.node = graph.producer(node.output[0])
        layer.weight_names = [weight, scale]
        self.uses_contrib = True

    # -- 4. where each Q/DQ pair goes -------------------------------------------------------------
    def _clip_bounds(self, node: onnx.NodeProto) -> tuple[float | None, float | None] | None:
        if node.op_type == "Relu":
            return 0.0, None
        bounds = []
        for index in (1, 2):
            if len(node.input) <= index or not node.input[index]:
                bounds.append(None)
                continue
            value = self.graph.constant(node.input[index])
            if value is None:
                return None
            bounds.append(float(value))
        return bounds[0], bounds[1]

    def _site(self, tensor: str, reason: str) -> _Site:
        """A site on ``tensor``, absorbing a single following Relu/Clip with constant bounds."""
        graph = self.graph
        readers = graph.consumers(tensor)
        if tensor not in graph.outputs and len(readers) == 1 and readers[0].op_type in CLIP_OPS \
                and readers[0].output[0] not in graph.outputs:
            bounds = self._clip_bounds(readers[0])
            if bounds is not None:
                return _Site(readers[0].output[0], tensor, reason, readers[0], bounds)
        return _Site(tensor, tensor, reason)

    def _passthrough_outputs(self, tensor: str) -> list[str]:
        """Tensors reached from ``tensor`` through passthrough ops (they share its grid)."""
        found = []
        for reader in self.graph.consumers(tensor):
            if reader.op_type in PASSTHROUGH_OPS and reader.input[0] == tensor and reader.output[0] not in self.graph.outputs:
                found.append(reader.output[0])
                found += self._passthrough_outputs(reader.output[0])
        return found

    def _terminal_readers(self, tensor: str) -> list[onnx.NodeProto]:
        readers = []
        for reader in self.graph.consumers(tensor):
            if reader.op_type in PASSTHROUGH_OPS and reader.input[0] == tensor and reader.output[0] not in self.graph.outputs:
                readers += self._terminal_readers(reader.output[0])
            else:
                readers.append(reader)
        return readers

    def _is_gate(self, tensor: str) -> bool:
        producer = self.graph.producer(tensor)
        return producer is not None and producer.op_type in GATE_OPS

    def split_hardswish(self) -> None:
        """``HardSwish(x)`` after an integer convolution becomes ``x * HardSigmoid(x)`` (the ONNX definition), so
        onnxruntime runs the product as QLinearMul instead of a float HardSigmoid and Mul (its own rewrite)."""
        graph = self.graph
        outputs = {layer.node.output[0] for layer in self.layers.values() if layer.integer_conv}
        for node in [n for n in graph.nodes if n.op_type == "HardSwish" and n.input[0] in outputs]:
            graph.remove(node)
            gate = graph.add_node("HardSigmoid", [node.input[0]], name=f"{node.name}/gate", alpha=1 / 6, beta=0.5)
            graph.add_node("Mul", [node.input[0], gate.output[0]], [node.output[0]], name=f"{node.name}/mul")

    def place_sites(self) -> list[_Site]:
        graph = self.graph
        sites: list[_Site] = []
        covered: set[str] = set()

        def add(site: _Site) -> None:
            sites.append(site)
            covered.update([site.tensor, *self._passthrough_outputs(site.tensor)])

        for layer in self.layers.values():
            if layer.integer_linear and self._site(layer.node.output[0], "").absorbed is not None:
                # onnxruntime fuses Gemm/MatMul -> Relu only with a QuantizeLinear after the Relu
                add(self._site(layer.node.output[0], f"output of {layer.name} (through its {layer.kind} -> Relu/Clip)"))
                continue
            if not layer.integer_conv:
                continue
            if layer.node.output[0] in graph.outputs:
                layer.note = "its output is a graph output, which QLinearConv cannot write: runs as float Conv"
                self.problems.append(f"{layer.name}: {layer.note}")
                continue
            add(self._site(layer.node.output[0], f"output of {layer.name}"))
        for node in graph.topological():
            if node.op_type not in INTEGER_INPUT_OPS or node.output[0] in graph.outputs:
                continue
            data = [name for name in node.input if name]
            if node.op_type in ("GlobalAveragePool", "AveragePool"):
                data = data[:1]
            if any(graph.constant(name) is not None for name in data) or not any(name in covered for name in data):
                continue
            if node.op_type == "Mul" and not all(name in covered or self._is_gate(name) for name in data):
                continue
            for name in data:
                if name not in covered:
                    add(_Site(name, name, f"input of {node.op_type} {node.name}"))
            add(self._site(node.output[0], f"output of {node.op_type} {node.name}"))
        return sites

    def choose_grids(self, sites: list[_Site]) -> list[_Site]:
        """Give each site the learned grid of its readers where one fits; return the sites that need calibration."""
        chain_owner = {id(layer.input_chain[0]): layer for layer in self.layers.values() if layer.input_chain}
        uncalibrated = []
        for site in sites:
            readers = self._terminal_readers(site.tensor)
            learned = [chain_owner[id(r)] for r in readers if id(r) in chain_owner]
            others = [r for r in readers if id(r) not in chain_owner]
            grids = [layer.grid for layer in learned]
            same = grids and all(g.same_grid(grids[0]) for g in grids)
            full_8_bit = grids and all((g.low, g.high) == (0, 255) and g.zero_point == grids[0].zero_point for g in grids)
            if (same and (not others or grids[0].bits >= 8)) or full_8_bit:
                # one Q/DQ pair: the (widest) learned 8-bit grid of the readers is this tensor's grid
                site.grid = max(grids, key=lambda g: g.scale)
                site.reason += f", read by {', '.join(layer.name for layer in learned)}"
                if site.bounds is not None:
                    site.grid = site.grid.after_clip(*site.bounds)
            else:
                what = [f"{len(learned)} layers with different grids"] if len({g.scale for g in grids}) > 1 else \
                    [f"{learned[0].name} ({grids[0].bits}-bit)"] if learned else []
                what += sorted({r.op_type for r in others})
                site.reason += "; read by " + " and ".join(what)
                site.reader_grid = grids[0] if grids else None
                uncalibrated.append(site)
        return uncalibrated

    def calibrate(self, sites: list[_Site], data: Iterable[Tensor] | None) -> list[CalibratedTensor]:
        if not sites:
            return []
        if data is None:
            names = ", ".join(site.tensor for site in sites[:4]) + (" ..." if len(sites) > 4 else "")
            raise ValueError(f"{len(sites)} tensors need an 8-bit grid calibrated from data ({names}): pass "
                             "calibration_data=[batch, ...] (a few batches of real inputs)")
        ranges = observe_ranges(self.graph.build(), [site.tensor for site in sites], data)
        rows = []
        for site in sites:
            low, high = ranges[site.tensor]
            site.grid = ActivationQuant.calibrated(low, high, origin=site.tensor) if site.reader_grid is None else \
                ActivationQuant.calibrated_for(low, high, site.reader_grid, origin=site.tensor)
            if site.bounds is not None:
                site.grid = site.grid.after_clip(*site.bounds)
            rows.append(CalibratedTensor(site.tensor, site.reason, low, high, site.grid.scale, site.grid.zero_point))
        return rows

    def emit_sites(self, sites: list[_Site]) -> None:
        graph = self.graph
        for index, site in enumerate(sites):
            output, nodes = self.quantize(site.source, site.grid, f"act{index}")
            if site.absorbed is not None:
                graph.redirect(site.tensor, output)
                graph.remove(site.absorbed)
            else:
                graph.redirect(site.tensor, output, keep=(nodes[0],))
            self._propagate(output, site.grid, f"act{index}")

    def _propagate(self, dequantized: str, grid: ActivationQuant, name: str) -> None:
        """Re-quantize the outputs of passthrough ops with the same grid, so onnxruntime runs them on uint8."""
        graph = self.graph
        for reader in graph.consumers(dequantized):
            if reader.op_type in PASSTHROUGH_OPS and reader.input[0] == dequantized \
                    and reader.output[0] not in graph.outputs:
                output, nodes = self.quantize(reader.output[0], grid, f"{name}_{reader.op_type}", clip=False)
                graph.redirect(reader.output[0], output, keep=(nodes[0],))
                self._propagate(output, grid, f"{name}_{reader.op_type}")

    def merge_inputs(self) -> None:
        """A layer input whose source is already on the layer's grid reads it directly (no second Q/DQ)."""
        graph = self.graph
        for layer in self.layers.values():
            layer.input_grid = layer.grid
            if not layer.input_chain:
                continue
            source = layer.input_chain[0].input[0]
            grid = self.quantized_by.get(source)
            if grid is not None and grid.zero_point == layer.grid.zero_point and layer.grid.low <= grid.low \
                    and grid.high <= layer.grid.high and (grid.scale == layer.grid.scale or layer.grid.bits >= 8):
                graph.redirect(layer.input_chain[-1].output[0], source)
                for node in layer.input_chain:
                    graph.remove(node)
                layer.input_chain = []
                layer.input_grid = grid
                if grid.scale != layer.grid.scale:
                    layer.note = f"reads the 8-bit grid of {grid.origin} (scale {grid.scale:.4g}, its own {layer.grid.scale:.4g})"

    # -- 5. describe -----------------------------------------------------------------------------
    def rows(self, sites: list[_Site]) -> list[LayerRow]:
        outputs = {site.source: site for site in sites}
        rows = []
        for layer in self.layers.values():
            storage = {"int8": "INT8", "uint8": "UINT8 (zero point 128)", "int4": "INT4 (size only)",
                       "nbits": "MatMulNBits 4-bit"}[layer.storage]
            grid = layer.grid
            source = "float" if grid is None else \
                f"{grid.source} uint8 zp {grid.zero_point} [{grid.low}, {grid.high}]"
            site = outputs.get(layer.node.output[0])
            output = "float" if site is None else f"{site.grid.source} (scale {site.grid.scale:.3g})"
            expected = self._expected_kernel(layer, site)
            rows.append(LayerRow(layer.name, layer.kind, storage, source, output, layer.batchnorm, layer.clamped,
                                 expected, note=layer.note))
        return rows

    def _expected_kernel(self, layer: _Layer, site: _Site | None) -> str:
        if layer.storage == "nbits":
            return "MatMulNBits"
        if layer.grid is None or layer.storage == "int4" or layer.kind == "other":
            return f"{layer.node.op_type} (float)"
        if layer.kind == "conv":
            return "QLinearConv" if site is not None else "Conv (float)"
        if layer.kind == "gemm":
            return "QGemm"
        return "QLinearMatMul" if site is not None else "MatMulIntegerToFloat"


def export_onnx_integer(
    model: nn.Module,
    path: str | os.PathLike,
    example_input: Tensor,
    calibration_data: Iterable[Tensor] | None = None,
    *,
    weight_storage: WeightStorage = "auto",
    matmul_nbits: bool = True,
    int4_conv_weights: bool = False,
    accuracy_level: int = 4,
    opset: int = 21,
    strict: bool = False,
    dynamic_batch: bool = True,
    verify: bool = True,
) -> IntegerOnnxReport:
    """Export a trained quantized model to an ONNX graph that onnxruntime runs with integer kernels.

    ``model`` is a model made by :func:`gaqat_wrap.quantize_model` (trained or
    calibrated; not modified) or an integer model; ``example_input`` one
    float32 batch. ``calibration_data`` (float32 batches) calibrates the
    tensors that need an 8-bit grid without a learned step size (listed in
    ``report.calibrated``); it is required when there are any. See the module
    docstring for the graph and ``docs/deploy.md`` for measured speed.

    * ``weight_storage``: ``"auto"`` (int8, or uint8 with zero point 128 where
      u8 x s8 int16 pairs could saturate), ``"int8"`` or ``"uint8"``.
    * ``matmul_nbits``: Linear layers of 4 bits or fewer as ``MatMulNBits``
      with ``accuracy_level`` (4: int8 compute; 1: float32, exact).
    * ``int4_conv_weights``: store convolutions of 4 bits or fewer as INT4
      (half the file size); onnxruntime 1.32 has no integer kernel for INT4
      convolution weights, so they run as float Conv and are reported.
    * ``verify``: ask onnxruntime which kernel runs each layer
      (``report.layers[i].runtime_kernel``, ``report.node_types``).

    A layer that does not run as an integer kernel is named in
    ``report.problems`` with a warning; ``strict=True`` raises instead.

    Examples:
        >>> import tempfile
        >>> from gaqat_wrap import calibrate, quantize_model
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <...>
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8),
        ...                     nn.ReLU(), nn.Conv2d(8, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
        >>> net = quantize_model(net, bits=8).eval()
        >>> _ = calibrate(net, [torch.randn(4, 3, 12, 12)])
        >>> images = [torch.randn(4, 3, 12, 12) for _ in range(2)]
        >>> report = export_onnx_integer(net, tempfile.mkdtemp() + "/net.onnx", images[0], images)
        >>> [(row.layer, row.batchnorm, row.runtime_kernel) for row in report.layers]
        [('3', '...', 'QLinearConv'), ('6', None, 'QLinearConv')]
        >>> report.integer, report.node_types["BatchNormalization"]
        (True, 0)
    """
    onnx = require("onnx", "onnx")

    if weight_storage not in ("auto", "int8", "uint8"):
        raise ValueError(f"weight_storage must be 'auto', 'int8' or 'uint8', got {weight_storage!r}")
    matmul_nbits_attributes(16, 1, accuracy_level=accuracy_level)  # validates accuracy_level
    traced = trace_with_placeholders(model, example_input, opset=opset, dynamic_batch=dynamic_batch)
    builder = _IntegerGraph(traced, weight_storage=weight_storage, matmul_nbits=matmul_nbits,
                            int4_conv_weights=int4_conv_weights, accuracy_level=accuracy_level)
    builder.find_layers()
    builder.fold_batchnorms()
    builder.emit_layers()
    builder.split_hardswish()
    sites = builder.place_sites()
    calibrated = builder.calibrate(builder.choose_grids(sites), calibration_data)
    builder.emit_sites(sites)
    builder.merge_inputs()
    builder.integer_biases()
    proto = builder.graph.build()
    imports = [o for o in proto.opset_import if o.domain not in (PLACEHOLDER_DOMAIN, "", MATMUL_NBITS_DOMAIN)]
    del proto.opset_import[:]
    proto.opset_import.extend([onnx.helper.make_opsetid("", opset), *imports])
    if builder.uses_contrib:
        proto.opset_import.append(onnx.helper.make_opsetid(MATMUL_NBITS_DOMAIN, 1))
    report = IntegerOnnxReport(os.fspath(path), opset, builder.rows(sites), calibrated, problems=list(builder.problems))
    onnx.helper.set_model_props(proto, {
        "gaqat.export": "integer",
        "gaqat.calibrated_tensors": json.dumps([c.tensor for c in calibrated]),
    })
    onnx.checker.check_model(proto, full_check=not builder.uses_contrib)
    onnx.save_model(proto, os.fspath(path))
    if verify:
        _verify(report, builder)
    not_integer = [row for row in report.layers if not row.integer]
    for row in not_integer:
        if row.note:
            continue
        runs = row.runtime_kernel or row.expected_kernel
        report.problems.append(f"{row.layer}: runs as {runs}, not an integer kernel"
                               + (" (int4_conv_weights=True: size only)" if row.weights.startswith("INT4") else ""))
    if report.problems:
        message = f"{len(report.problems)} layers/patterns are not exported as integer: " + "; ".join(report.problems[:5]) \
            + (" ..." if len(report.problems) > 5 else "")
        if strict:
            os.remove(os.fspath(path))
            raise ValueError(message + ". Pass strict=False to export anyway (the report lists them)")
        warnings.warn(message, UserWarning, stacklevel=2)
    return report


def _verify(report: IntegerOnnxReport, builder: _IntegerGraph) -> None:
    """Fill in the kernel onnxruntime runs for each layer and the node types after optimisation."""
    optimized = optimized_model(report.path)
    kernels = kernels_reading(optimized, {layer.name: layer.weight_names for layer in builder.layers.values()})
    report.layers = [LayerRow(**{**row.__dict__, "runtime_kernel": kernels.get(row.layer) or "removed"})
                     for row in report.layers]
    report.node_types = node_type_counts(optimized)
