"""ONNX export with QuantizeLinear/DequantizeLinear (QDQ) for weights and layer inputs.

The integer-weight model (:func:`~gaqat_wrap.export.to_integer_model`) is
exported with torch's ONNX exporter (``dynamo=True``); its two custom ops
(:mod:`gaqat_wrap.export.ops`) come out as placeholder nodes carrying the
layer name, which are then replaced by standard ONNX:

* weight: integer initializer -> ``DequantizeLinear`` (per output channel,
  ``axis=0``, zero point 0);
* input: [``Clip``] -> ``QuantizeLinear`` -> ``DequantizeLinear`` (per
  tensor, zero point 0; ``uint8``/``uint4`` for unsigned inputs,
  ``int8``/``int4`` for signed).

Containers (``low_bit``): with ``"int4"`` (opset 21+) tensors of 4 bits or
fewer use ONNX ``INT4``/``UINT4`` (initializers packed two per byte), 5-8 bits
use ``INT8``/``UINT8``; with ``"int8"`` (opset 13+) every tensor uses an 8-bit
type. A bit width without a native type of its own (2, 3, 5, 6, 7 bits, or 4
bits under ``"int8"``) is stored in the next wider container: weights keep
their exact integer values, inputs get a ``Clip`` to ``[Qn*s, Qp*s]`` in front
of ``QuantizeLinear`` so the graph computes exactly the trained
quantization. Every such tensor is listed in the returned report and in the
model's ``metadata_props`` and triggers a warning (``strict=True`` raises
instead): the graph is correct, but a runtime will treat it as the wider type.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor, nn

from gaqat_wrap.export.integer_layer import IntegerLayerSpec
from gaqat_wrap.export.onnx_trace import PLACEHOLDER_DOMAIN, check_example_input, placeholder_layer, trace_with_placeholders
from gaqat_wrap.export.packing import pack_int4
from gaqat_wrap.extras import require

if TYPE_CHECKING:  # onnx is an optional extra: imported when an export runs
    import onnx

LowBit = Literal["int4", "int8"]
MIN_OPSET = {"int8": 13, "int4": 21}
"""Smallest opset for each container choice (INT4/UINT4 QDQ types arrived in opset 21)."""

_ONNX_TYPES = {(8, True): "INT8", (8, False): "UINT8", (4, True): "INT4", (4, False): "UINT4"}


@dataclass(frozen=True)
class QDQTensor:
    """How one quantized tensor is represented in the ONNX graph.

    ``native`` is False when the bit width has no ONNX type of its own and the tensor sits in the wider
    ``onnx_type`` container; ``clip`` is then the ``Clip`` range put in front of an input's ``QuantizeLinear``.

    Examples:
        >>> tensor = QDQTensor("fc", "input", 3, False, "UINT4", False, (0.0, 0.7))
        >>> str(tensor).split()
        ['fc', 'input', '3-bit', 'unsigned', 'in', 'a', 'UINT4', 'container', 'with', 'Clip[0,', '0.7]']
    """

    layer: str
    role: Literal["weight", "input"]
    bits: int
    signed: bool
    onnx_type: str
    native: bool
    clip: tuple[float, float] | None = None

    def __str__(self) -> str:
        how = "native" if self.native else f"in a {self.onnx_type} container" + (
            f" with Clip[{self.clip[0]:.4g}, {self.clip[1]:.4g}]" if self.clip else " (values exact)")
        return f"{self.layer:<40} {self.role:<6} {self.bits}-bit {'signed' if self.signed else 'unsigned':<8} {how}"


@dataclass
class OnnxExportReport:
    """What :func:`export_onnx_qdq` wrote: one row per quantized tensor.

    Examples:
        >>> report = OnnxExportReport("m.onnx", 21, "int4", [QDQTensor("fc", "input", 3, False, "UINT4", False, (0.0, 0.7))])
        >>> [t.layer for t in report.non_native]
        ['fc']
    """

    path: str
    opset: int
    low_bit: str
    tensors: list[QDQTensor] = field(default_factory=list)

    @property
    def non_native(self) -> list[QDQTensor]:
        """Tensors stored in a container wider than their bit width."""
        return [t for t in self.tensors if not t.native]

    def __str__(self) -> str:
        lines = [str(t) for t in self.tensors]
        lines.append(f"{len(self.tensors)} quantized tensors, {len(self.non_native)} not native "
                     f"(opset {self.opset}, low_bit={self.low_bit!r}) -> {self.path}")
        return "\n".join(lines)


def onnx_container(bits: int, signed: bool, low_bit: LowBit) -> tuple[str, int]:
    """``(ONNX element type name, container bits)`` for a ``bits``-bit tensor.

    Examples:
        >>> onnx_container(3, True, "int4"), onnx_container(4, False, "int8")
        (('INT4', 4), ('UINT8', 8))
    """
    container = 4 if low_bit == "int4" and bits <= 4 else 8
    return _ONNX_TYPES[(container, signed)], container


# -- the rewrite: placeholders -> standard QuantizeLinear / DequantizeLinear ----------------
def _integer_initializer(name: str, values: np.ndarray, onnx_type: str, container: int, signed: bool) -> onnx.TensorProto:
    from onnx import TensorProto, helper, numpy_helper

    if container == 4:
        packed = pack_int4(torch.from_numpy(values.astype(np.int8 if signed else np.uint8)), signed=signed)
        return helper.make_tensor(name, TensorProto.DataType.Value(onnx_type), list(values.shape),
                                  vals=packed.numpy().tobytes(), raw=True)
    return numpy_helper.from_array(values.astype(np.int8 if signed else np.uint8), name)


class _Rewriter:
    def __init__(self, specs: dict[str, IntegerLayerSpec], tensors: dict[str, dict[str, Tensor]], low_bit: LowBit) -> None:
        self.specs, self.tensors, self.low_bit = specs, tensors, low_bit
        self.initializers: dict[str, onnx.TensorProto] = {}
        self.report: dict[tuple[str, str], QDQTensor] = {}
        self.count = 0

    def _add(self, tensor: onnx.TensorProto) -> str:
        self.initializers.setdefault(tensor.name, tensor)
        return tensor.name

    def _unique(self, base: str) -> str:
        self.count += 1
        return f"{base}__{self.count}"

    def weight(self, node: onnx.NodeProto, layer: str) -> list[onnx.NodeProto]:
        from onnx import helper, numpy_helper

        spec, tensors = self.specs[layer], self.tensors[layer]
        onnx_type, container = onnx_container(spec.weight_bits, spec.weight_signed, self.low_bit)
        q = tensors["weight_int"].cpu().numpy()
        scale = tensors["weight_scale"].detach().cpu().float().numpy()
        inputs = [
            self._add(_integer_initializer(f"{layer}.weight_int", q, onnx_type, container, spec.weight_signed)),
            self._add(numpy_helper.from_array(scale, f"{layer}.weight_scale")),
            self._add(_integer_initializer(f"{layer}.weight_zero_point", np.zeros(scale.shape, np.int8), onnx_type, container,
                                           spec.weight_signed)),
        ]
        self.report[(layer, "weight")] = QDQTensor(layer, "weight", spec.weight_bits, spec.weight_signed,
                                                  onnx_type, spec.weight_bits == container)
        return [helper.make_node("DequantizeLinear", inputs, list(node.output), name=self._unique(f"{layer}/weight/DQ"), axis=0)]

    def input(self, node: onnx.NodeProto, layer: str) -> list[onnx.NodeProto]:
        from onnx import helper, numpy_helper

        spec, tensors = self.specs[layer], self.tensors[layer]
        onnx_type, container = onnx_container(spec.input_bits, spec.input_signed, self.low_bit)
        scale = np.asarray(tensors["input_scale"].detach().cpu().float().numpy(), dtype=np.float32).reshape(())
        qn, qp = spec.input_range
        scale_name = self._add(numpy_helper.from_array(scale, f"{layer}.input_scale"))
        zero_name = self._add(_integer_initializer(f"{layer}.input_zero_point", np.zeros((), np.int8), onnx_type, container,
                                                   spec.input_signed))
        x = node.input[0]
        nodes, clip = [], None
        if spec.input_bits != container:
            low, high = np.float32(qn) * scale, np.float32(qp) * scale
            clip = (float(low), float(high))
            clipped = self._unique(f"{layer}.input_clipped")
            nodes.append(helper.make_node("Clip", [x, self._add(numpy_helper.from_array(low, f"{layer}.input_clip_min")),
                                                   self._add(numpy_helper.from_array(high, f"{layer}.input_clip_max"))],
                                          [clipped], name=self._unique(f"{layer}/input/Clip")))
            x = clipped
        quantized = self._unique(f"{layer}.input_quantized")
        nodes.append(helper.make_node("QuantizeLinear", [x, scale_name, zero_name], [quantized],
                                      name=self._unique(f"{layer}/input/Q")))
        nodes.append(helper.make_node("DequantizeLinear", [quantized, scale_name, zero_name], list(node.output),
                                      name=self._unique(f"{layer}/input/DQ")))
        self.report[(layer, "input")] = QDQTensor(layer, "input", spec.input_bits, bool(spec.input_signed),
                                                 onnx_type, spec.input_bits == container, clip)
        return nodes

    def rewrite(self, model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
        from onnx import helper

        graph = model.graph
        new_nodes: list[onnx.NodeProto] = []
        for node in graph.node:
            if node.domain != PLACEHOLDER_DOMAIN:
                new_nodes.append(node)
                continue
            layer = placeholder_layer(node)
            new_nodes.extend(self.weight(node, layer) if node.op_type == "IntegerWeight" else self.input(node, layer))
        del graph.node[:]
        graph.node.extend(new_nodes)
        used = {name for node in graph.node for name in node.input}
        kept = [init for init in graph.initializer if init.name in used and init.name not in self.initializers]
        del graph.initializer[:]
        graph.initializer.extend(kept + list(self.initializers.values()))
        del graph.value_info[:]
        imports = [o for o in model.opset_import if o.domain not in (PLACEHOLDER_DOMAIN, "")]
        del model.opset_import[:]
        model.opset_import.extend([helper.make_opsetid("", opset), *imports])
        return model


def export_onnx_qdq(
    model: nn.Module,
    path: str | os.PathLike,
    example_input: Tensor,
    *,
    low_bit: LowBit = "int4",
    opset: int | None = None,
    strict: bool = False,
    dynamic_batch: bool = True,
) -> OnnxExportReport:
    """Export a trained quantized model to ONNX with QuantizeLinear/DequantizeLinear; return the report.

    ``model`` is a model made by :func:`gaqat_wrap.quantize_model` (trained or
    calibrated; it is not modified) or an integer model. ``example_input`` is
    one float32 image batch. The graph has one input ``"input"`` (batch size
    dynamic unless ``dynamic_batch=False``) and one output ``"logits"``
    (a Hugging Face model's ``.logits``). ``low_bit`` and the handling of bit
    widths without a native ONNX type are described in the module docstring;
    ``strict=True`` raises instead of warning about them. ``opset`` defaults to
    21 (the first with INT4/UINT4 QDQ).

    Examples:
        >>> import tempfile
        >>> from gaqat_wrap import quantize_model
        >>> net = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 2)), bits=4)
        >>> _ = net(torch.randn(16, 4))
        >>> report = export_onnx_qdq(net, tempfile.mkdtemp() + "/net.onnx", torch.randn(2, 4))
        >>> [(t.role, t.onnx_type, t.native) for t in report.tensors]
        [('weight', 'INT4', True), ('input', 'UINT4', True)]
    """
    onnx = require("onnx", "onnx")

    if low_bit not in MIN_OPSET:
        raise ValueError(f"low_bit must be 'int4' (opset 21+) or 'int8' (opset 13+), got {low_bit!r}")
    opset = 21 if opset is None else opset
    if opset < MIN_OPSET[low_bit]:
        hint = "; use low_bit='int8' for older opsets" if low_bit == "int4" else ""
        raise ValueError(f"low_bit={low_bit!r} needs opset >= {MIN_OPSET[low_bit]}, got {opset}{hint}")
    check_example_input(example_input)
    traced = trace_with_placeholders(model, example_input, opset=opset, dynamic_batch=dynamic_batch)
    specs = traced.specs
    rewriter = _Rewriter(specs, traced.tensors, low_bit)
    proto = rewriter.rewrite(traced.model, opset)
    rows = [rewriter.report[(name, role)] for name in specs for role in ("weight", "input") if (name, role) in rewriter.report]
    report = OnnxExportReport(os.fspath(path), opset, low_bit, rows)
    if report.non_native:
        message = (f"{len(report.non_native)} quantized tensors have no native ONNX type with low_bit={low_bit!r} and are "
                   f"stored in wider containers (exact values; inputs clipped to their trained range): "
                   + "; ".join(f"{t.layer} {t.role} {t.bits}-bit as {t.onnx_type}" for t in report.non_native[:5])
                   + (" ..." if len(report.non_native) > 5 else ""))
        if strict:
            raise ValueError(message + ". Use bit widths 4 (low_bit='int4') or 8, or pass strict=False")
        warnings.warn(message, UserWarning, stacklevel=2)
    onnx.helper.set_model_props(proto, {
        "gaqat.low_bit": low_bit,
        "gaqat.quantized_tensors": json.dumps([asdict(t) for t in report.tensors]),
        "gaqat.non_native": json.dumps([f"{t.layer}.{t.role}" for t in report.non_native]),
    })
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, os.fspath(path))
    return report
