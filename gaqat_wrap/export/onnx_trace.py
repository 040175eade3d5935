"""Trace a quantized model to ONNX with one placeholder node per quantized tensor.

The integer-weight model (:func:`~gaqat_wrap.export.to_integer_model`) is
exported with torch's ONNX exporter (``dynamo=True``). Its two custom ops
(:mod:`gaqat_wrap.export.ops`) come out as nodes of the domain
:data:`PLACEHOLDER_DOMAIN` that carry the layer name:

* ``IntegerWeight(weight_int, scale)``: the layer's dequantized weight;
* ``InputQDQ(x, scale)`` (attributes ``qn``, ``qp``): the layer's fake-quantized input.

The ONNX writers (:func:`~gaqat_wrap.export.export_onnx_qdq`,
:func:`~gaqat_wrap.export.export_onnx_integer`) replace them with standard
nodes; the torch exporter itself cannot write 4-bit types and rejects
non-8-bit ranges in ``torch.fake_quantize_*``.

Examples:
    >>> from gaqat_wrap import quantize_model
    >>> net = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 2)), bits=4)
    >>> _ = net(torch.randn(16, 4))
    >>> traced = trace_with_placeholders(net, torch.randn(2, 4), opset=21)
    >>> sorted(n.op_type for n in traced.model.graph.node if n.domain == PLACEHOLDER_DOMAIN)
    ['InputQDQ', 'IntegerWeight']
    >>> list(traced.specs)
    ['2']
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from gaqat_wrap.export.integer_layer import IntegerLayerSpec
from gaqat_wrap.export.integer_model import exportable_layers, integer_tensors, to_integer_model
from gaqat_wrap.extras import require
from gaqat_wrap.quant.layers import QuantizedLayer

if TYPE_CHECKING:  # onnx is an optional extra: imported when an export runs
    import onnx

PLACEHOLDER_DOMAIN = "ai.gaqat.export"


@dataclass
class TracedModel:
    """The traced ONNX model and, per quantized layer, its spec and integer tensors (``weight_int``, ...).

    Examples:
        >>> TracedModel(model=None, specs={}, tensors={}).specs
        {}
    """

    model: onnx.ModelProto
    specs: dict[str, IntegerLayerSpec]
    tensors: dict[str, dict[str, Tensor]]


def placeholder_layer(node: onnx.NodeProto) -> str:
    """The layer name a placeholder node carries.

    Examples:
        >>> import onnx
        >>> placeholder_layer(onnx.helper.make_node("InputQDQ", ["x", "s"], ["y"], domain=PLACEHOLDER_DOMAIN, layer="fc"))
        'fc'
    """
    from onnx import helper

    return helper.get_attribute_value(next(a for a in node.attribute if a.name == "layer")).decode()


def _register_placeholder_schemas() -> None:
    """Declare the two placeholder ops so the exporter can build nodes for them (idempotent)."""
    onnx = require("onnx", "onnx")
    from onnx.defs import OpSchema

    floats = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)", "tensor(double)"]
    layer = OpSchema.Attribute("layer", OpSchema.AttrType.STRING, "name of the quantized layer")
    if not onnx.defs.has("IntegerWeight", PLACEHOLDER_DOMAIN):
        onnx.defs.register_schema(OpSchema(
            "IntegerWeight", PLACEHOLDER_DOMAIN, 1,
            inputs=[OpSchema.FormalParameter("weight_int", "I"), OpSchema.FormalParameter("scale", "F")],
            outputs=[OpSchema.FormalParameter("weight", "F")],
            type_constraints=[("I", ["tensor(int8)", "tensor(uint8)"], ""), ("F", floats, "")],
            attributes=[layer]))
    if not onnx.defs.has("InputQDQ", PLACEHOLDER_DOMAIN):
        onnx.defs.register_schema(OpSchema(
            "InputQDQ", PLACEHOLDER_DOMAIN, 1,
            inputs=[OpSchema.FormalParameter("x", "F"), OpSchema.FormalParameter("scale", "F")],
            outputs=[OpSchema.FormalParameter("y", "F")], type_constraints=[("F", floats, "")],
            attributes=[OpSchema.Attribute("qn", OpSchema.AttrType.INT, ""), OpSchema.Attribute("qp", OpSchema.AttrType.INT, ""),
                        layer]))


def _translation_table() -> dict:
    onnxscript = require("onnxscript", "onnx")

    _register_placeholder_schemas()
    opset = onnxscript.values.Opset(PLACEHOLDER_DOMAIN, 1)

    def integer_weight(weight_int, scale, layer: str):
        return opset.IntegerWeight(weight_int, scale, layer=layer)

    def input_qdq(x, scale, qn: int, qp: int, layer: str):
        return opset.InputQDQ(x, scale, qn=qn, qp=qp, layer=layer)

    return {torch.ops.gaqat_export.dequantize_weight.default: integer_weight,
            torch.ops.gaqat_export.quantize_dequantize_input.default: input_qdq}


class _Logits(nn.Module):
    """Return the logits tensor of a model whose output may be a Hugging Face ModelOutput or a tuple."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        output = self.model(x)
        if isinstance(output, Tensor):
            return output
        if hasattr(output, "logits"):
            return output.logits
        return output[0]


def check_example_input(example_input: object) -> None:
    """Raise ``TypeError`` unless ``example_input`` is a float32 tensor batch.

    Examples:
        >>> check_example_input(torch.zeros(2, 3, dtype=torch.float64))
        Traceback (most recent call last):
        ...
        TypeError: example_input must be a float32 torch.Tensor batch (export the model in float32)
    """
    if not isinstance(example_input, Tensor) or example_input.dtype != torch.float32:
        raise TypeError("example_input must be a float32 torch.Tensor batch (export the model in float32)")


def trace_with_placeholders(model: nn.Module, example_input: Tensor, *, opset: int, dynamic_batch: bool = True) -> TracedModel:
    """Export ``model`` (fake-quant or integer; not modified) to ONNX with placeholder nodes.

    The graph has one input ``"input"`` (batch size dynamic unless
    ``dynamic_batch=False``) and one output ``"logits"`` (a Hugging Face
    model's ``.logits``).
    """
    check_example_input(example_input)
    layers = exportable_layers(model)
    integer = to_integer_model(model) if any(isinstance(m, QuantizedLayer) for _, m in layers) else model
    specs, tensors = {}, {}
    for name, layer in exportable_layers(integer):
        specs[name], tensors[name] = integer_tensors(name, layer)
    wrapper = _Logits(integer).eval()
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(wrapper, (example_input,), dynamo=True, opset_version=opset, verbose=False,
                                    input_names=["input"], output_names=["logits"], dynamic_shapes=dynamic_shapes,
                                    custom_translation_table=_translation_table())
    return TracedModel(program.model_proto, specs, tensors)
