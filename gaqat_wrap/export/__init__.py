"""Export for the edge: integer weights in safetensors, ONNX graphs for onnxruntime's integer kernels."""

from gaqat_wrap.export.integer_file import export_integer_model, load_integer_model, read_export_config
from gaqat_wrap.export.integer_layer import IntegerLayer, IntegerLayerSpec
from gaqat_wrap.export.integer_model import exportable_layers, to_integer_model
from gaqat_wrap.export.onnx_integer import export_onnx_integer
from gaqat_wrap.export.onnx_integer_report import CalibratedTensor, IntegerOnnxReport, LayerRow
from gaqat_wrap.export.onnx_qdq import OnnxExportReport, QDQTensor, export_onnx_qdq
from gaqat_wrap.export.packing import pack_int4, unpack_int4
from gaqat_wrap.export.runtime import onnxruntime_session
from gaqat_wrap.export.runtime_graph import node_type_counts, optimized_model

__all__ = [
    "CalibratedTensor",
    "IntegerLayer",
    "IntegerLayerSpec",
    "IntegerOnnxReport",
    "LayerRow",
    "OnnxExportReport",
    "QDQTensor",
    "export_integer_model",
    "export_onnx_integer",
    "export_onnx_qdq",
    "exportable_layers",
    "load_integer_model",
    "node_type_counts",
    "onnxruntime_session",
    "optimized_model",
    "pack_int4",
    "read_export_config",
    "to_integer_model",
    "unpack_int4",
]
