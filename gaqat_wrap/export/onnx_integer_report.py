"""What :func:`~gaqat_wrap.export.export_onnx_integer` wrote and what onnxruntime runs.

One row per quantized layer (weights, input and output grids, the folded
BatchNorm, the kernel expected and the kernel onnxruntime chose after its
graph optimisation), one row per tensor whose 8-bit grid was calibrated from
data, the node types left after optimisation, and every problem: a layer that
does not run as an integer kernel is named here, never left in float silently.

Examples:
    >>> row = LayerRow("layer1.0.conv1", "Conv", "INT8", "learned uint8 [0, 255]", "learned (layer1.0.conv2)",
    ...                "layer1.0.bn1", 0, "QLinearConv", "QLinearConv")
    >>> report = IntegerOnnxReport("m.onnx", 21, [row])
    >>> report.integer, report.problems
    (True, [])
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

INTEGER_KERNELS = frozenset({
    "QLinearConv", "QLinearMatMul", "MatMulIntegerToFloat", "MatMulNBits", "QGemm", "DynamicQuantizeMatMul",
    "ConvInteger", "MatMulInteger", "NhwcQLinearConv",
})
"""onnxruntime op types that compute a Conv/MatMul with integer weights and integer arithmetic (or MatMulNBits)."""


@dataclass(frozen=True)
class LayerRow:
    """One quantized layer of the exported graph.

    ``expected_kernel`` is what the graph is built to fuse into;
    ``runtime_kernel`` is the op type onnxruntime runs after optimisation
    (``None`` when the export was not verified).

    Examples:
        >>> LayerRow("fc", "MatMul", "MatMulNBits 4-bit", "learned uint8 [0, 15]", "float", None, 0,
        ...          "MatMulNBits", "MatMul").integer
        False
    """

    layer: str
    op: str
    weights: str
    input: str
    output: str
    batchnorm: str | None
    clamped_weights: int
    expected_kernel: str
    runtime_kernel: str | None = None
    note: str = ""

    @property
    def integer(self) -> bool:
        """True when the layer runs (or, unverified, is built to run) as an integer kernel."""
        kernel = self.runtime_kernel if self.runtime_kernel is not None else self.expected_kernel
        return kernel in INTEGER_KERNELS

    def __str__(self) -> str:
        runs = self.runtime_kernel or f"{self.expected_kernel} (not verified)"
        bn = f", folded {self.batchnorm}" + (f" ({self.clamped_weights} weights clamped)" if self.clamped_weights else "") \
            if self.batchnorm else ""
        note = f"  [{self.note}]" if self.note else ""
        return f"{self.layer:<32} {self.op:<7} W {self.weights:<22} in {self.input:<28} out {self.output:<34} -> {runs}{bn}{note}"


@dataclass(frozen=True)
class CalibratedTensor:
    """A tensor quantized with a grid calibrated from data (no learned step size fits it).

    Examples:
        >>> str(CalibratedTensor("add_1", "read by layer2.0.conv1 and an Add", 0.0, 5.1, 0.02, 0))
        'add_1                            [0, 5.1] -> scale 0.02, zero point 0: read by layer2.0.conv1 and an Add'
    """

    tensor: str
    reason: str
    minimum: float
    maximum: float
    scale: float
    zero_point: int

    def __str__(self) -> str:
        return (f"{self.tensor:<32} [{self.minimum:.4g}, {self.maximum:.4g}] -> scale {self.scale:.4g}, "
                f"zero point {self.zero_point}: {self.reason}")


@dataclass
class IntegerOnnxReport:
    """The report returned by :func:`~gaqat_wrap.export.export_onnx_integer`.

    ``node_types`` counts the op types of onnxruntime's optimised graph
    (empty when not verified); ``problems`` lists every layer or pattern
    that is not exported as integer, by name.

    Examples:
        >>> report = IntegerOnnxReport("m.onnx", 21, [], problems=["conv1: input not quantized"])
        >>> report.integer
        False
    """

    path: str
    opset: int
    layers: list[LayerRow] = field(default_factory=list)
    calibrated: list[CalibratedTensor] = field(default_factory=list)
    node_types: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def integer(self) -> bool:
        """True when every quantized layer runs as an integer kernel and nothing was reported."""
        return not self.problems and all(row.integer for row in self.layers)

    def __str__(self) -> str:
        lines = [f"{len(self.layers)} quantized layers -> {self.path} (opset {self.opset})"]
        lines += [f"  {row}" for row in self.layers]
        if self.calibrated:
            lines.append(f"{len(self.calibrated)} tensors calibrated from data (8-bit, no learned step size fits):")
            lines += [f"  {c}" for c in self.calibrated]
        if self.node_types:
            lines.append("onnxruntime node types after optimisation: "
                         + ", ".join(f"{op} {n}" for op, n in sorted(self.node_types.items(), key=lambda kv: (-kv[1], kv[0]))))
        lines += [f"PROBLEM: {p}" for p in self.problems]
        return "\n".join(lines)
