"""Export for the edge: integer weights in safetensors, ONNX QuantizeLinear/DequantizeLinear."""

from gaqat_wrap.export.integer_file import export_integer_model, load_integer_model, read_export_config
from gaqat_wrap.export.integer_layer import IntegerLayer, IntegerLayerSpec
from gaqat_wrap.export.integer_model import exportable_layers, to_integer_model
from gaqat_wrap.export.onnx_qdq import OnnxExportReport, QDQTensor, export_onnx_qdq
from gaqat_wrap.export.packing import pack_int4, unpack_int4
from gaqat_wrap.export.runtime import onnxruntime_session

__all__ = [
    "IntegerLayer",
    "IntegerLayerSpec",
    "OnnxExportReport",
    "QDQTensor",
    "export_integer_model",
    "export_onnx_qdq",
    "exportable_layers",
    "load_integer_model",
    "onnxruntime_session",
    "pack_int4",
    "read_export_config",
    "to_integer_model",
    "unpack_int4",
]
