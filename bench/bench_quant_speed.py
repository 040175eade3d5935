"""Training-step time and activation memory of W4A4 fake quantization: gaqat_wrap vs peer libraries.

For each model (timm ``vit_tiny_patch16_224`` and ``resnet18``, random init)
this measures one training step (forward + backward + AdamW step, batch 8 at
224x224, same input for everyone) in FP32 and with W4A4 fake quantization on
every Linear/Conv except the first and last layer (per-output-channel weight
scales, per-tensor input scales, learnable scales where the implementation
has them): its time and the bytes autograd keeps between forward and backward
(:func:`gaqat_wrap.quant.saved_tensor_bytes`, parameters excluded).

- ``ours``: :func:`gaqat_wrap.quantize_model` + :func:`gaqat_wrap.calibrate`
  (fused fake-quantized layers, the default);
- ``ours_int8``: the same with ``set_saved_inputs(model, "int8")``;
- ``ours_unfused``: the same with ``set_saved_inputs(model, "unfused")`` (the
  two-op path: input quantizer, then the layer's op);
- ``torch_lfq``: torch's ``_LearnableFakeQuantize`` (fused C++ kernels) on the
  weight (per channel) and the input (per tensor) of each layer;
- ``brevitas``: ``QuantLinear`` / ``QuantConv2d`` with 4-bit learned-scale
  quantizers (per-channel weights, per-tensor inputs);
- ``torchao``: torchao's QAT ``IntxFakeQuantizer`` with int4 and range
  learning (learnable scales); torchao has no per-tensor granularity, so the
  input is viewed as one row and quantized "per channel" of that row;
- ``fp32_compiled`` / ``ours_compiled``: FP32 and ``ours`` under
  ``torch.compile`` (inductor); compiled rows are compared with compiled FP32.

Steps are timed one by one in interleaved rounds (every implementation runs a
few steps, then the next one, ...) so that load from other processes hits all
of them alike; the figure is the median step time. Memory figures do not
depend on load. The script writes ``bench/results/quant_speed.json`` and
``docs/results/speed.md`` (which also shows ``bench/results/int8_codes_accuracy.json``).

Run: ``.venv/bin/python bench/bench_quant_speed.py`` (about 15 minutes on an idle 2-core machine,
compilation included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import gaqat_wrap
from gaqat_wrap import calibrate, quant_report, quantize_model
from gaqat_wrap.quant import saved_tensor_bytes, set_saved_inputs

ROOT = Path(__file__).resolve().parents[1]
BITS = 4
QN, QP = -(2 ** (BITS - 1)), 2 ** (BITS - 1) - 1
IMPLEMENTATIONS = ("fp32", "ours", "ours_int8", "ours_unfused", "torch_lfq", "brevitas", "torchao",
                   "fp32_compiled", "ours_compiled")
MODELS = ("vit_tiny_patch16_224", "resnet18")
TIME_GOAL, MEMORY_GOAL = 1.15, 1.10
"""Goals for ``ours`` against FP32: step time and saved-for-backward memory."""
BUSY_LOAD = 3.0
"""Above this 1-minute load average the page warns that its times are unreliable (2 cores)."""
INT8_ACCURACY = ROOT / "bench" / "results" / "int8_codes_accuracy.json"


def baseline(impl: str) -> str:
    """The FP32 row an implementation is compared with: compiled rows with compiled FP32."""
    return "fp32_compiled" if impl.endswith("_compiled") else "fp32"


# -- model construction -------------------------------------------------------
def build_model(name: str) -> nn.Module:
    """The timm model ``name`` with random weights (seed 0), in train mode."""
    import timm

    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False).train()


def quantized_layer_names(name: str) -> list[str]:
    """The layers gaqat_wrap quantizes by default (all Linear/Conv but first and last)."""
    model = quantize_model(build_model(name), bits=BITS)
    return [row.name for row in quant_report(model) if row.quantized]


def replace_layers(model: nn.Module, names: list[str], make: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """Replace each named Linear/Conv2d of ``model`` by ``make(layer)``."""
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, make(getattr(parent, child)))
    return model


def layer_forward(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``layer``'s own computation with a replacement weight."""
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight, layer.bias)
    return layer._conv_forward(x, weight, layer.bias)


def make_ours(model: nn.Module, names: list[str], batch: torch.Tensor, saved_inputs: str = "float") -> nn.Module:
    quantize_model(model, bits=BITS)
    calibrate(model, [batch])
    set_saved_inputs(model, saved_inputs)
    return model


class TorchLFQLayer(nn.Module):
    """A Linear/Conv2d with torch ``_LearnableFakeQuantize`` on its weight and input."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        from torch.ao.quantization._learnable_fake_quantize import _LearnableFakeQuantize
        from torch.ao.quantization.observer import MovingAverageMinMaxObserver, PerChannelMinMaxObserver

        self.layer = layer
        self.weight_fq = _LearnableFakeQuantize(
            PerChannelMinMaxObserver, quant_min=QN, quant_max=QP, channel_len=layer.weight.shape[0],
            use_grad_scaling=True, dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)
        self.input_fq = _LearnableFakeQuantize(
            MovingAverageMinMaxObserver, quant_min=QN, quant_max=QP, use_grad_scaling=True,
            dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_forward(self.layer, self.input_fq(x), self.weight_fq(self.layer.weight))


def make_torch_lfq(model: nn.Module, names: list[str], batch: torch.Tensor) -> nn.Module:
    from torch.ao.quantization._learnable_fake_quantize import _LearnableFakeQuantize

    replace_layers(model, names, TorchLFQLayer)
    with torch.no_grad():
        model(batch)  # observers set the initial scales
    for module in model.modules():
        if isinstance(module, _LearnableFakeQuantize):
            module.enable_param_learning()
    return model


def make_brevitas(model: nn.Module, names: list[str], batch: torch.Tensor) -> nn.Module:
    from brevitas.core.scaling import ScalingImplType
    from brevitas.nn import QuantConv2d, QuantLinear
    from brevitas.quant import Int8ActPerTensorFloat, Int8WeightPerChannelFloat

    class Int4WeightPerChannelLearned(Int8WeightPerChannelFloat):
        bit_width = BITS
        narrow_range = False
        scaling_impl_type = ScalingImplType.PARAMETER_FROM_STATS

    class Int4ActPerTensorLearned(Int8ActPerTensorFloat):
        bit_width = BITS
        collect_stats_steps = 1  # then the scale is a learned Parameter

    quant = {"weight_quant": Int4WeightPerChannelLearned, "input_quant": Int4ActPerTensorLearned,
             "return_quant_tensor": False}

    def make(layer: nn.Module) -> nn.Module:
        if isinstance(layer, nn.Linear):
            new = QuantLinear(layer.in_features, layer.out_features, bias=layer.bias is not None, **quant)
        else:
            new = QuantConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                              padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                              bias=layer.bias is not None, **quant)
        new.load_state_dict(layer.state_dict(), strict=False)
        return new

    replace_layers(model, names, make)
    model(batch)  # collects the activation statistics; later steps learn the scale
    return model


class TorchAOLayer(nn.Module):
    """A Linear/Conv2d with torchao QAT fake quantizers (int4, range learning)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        from torchao.quantization.qat import IntxFakeQuantizeConfig, IntxFakeQuantizer

        config = IntxFakeQuantizeConfig(torch.int4, "per_channel", is_symmetric=True, is_dynamic=False,
                                        range_learning=True)
        self.layer = layer
        self.weight_fq = IntxFakeQuantizer(config)
        self.input_fq = IntxFakeQuantizer(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.layer.weight
        w_q = self.weight_fq(weight.reshape(weight.shape[0], -1)).view_as(weight)
        x_q = self.input_fq(x.reshape(1, -1)).view_as(x)  # one row: a per-tensor scale
        return layer_forward(self.layer, x_q, w_q)


def make_torchao(model: nn.Module, names: list[str], batch: torch.Tensor) -> nn.Module:
    from torchao.quantization.qat import initialize_fake_quantizers

    replace_layers(model, names, TorchAOLayer)
    with torch.no_grad():
        initialize_fake_quantizers(model, (batch,))
    return model


BUILDERS: dict[str, Callable[[nn.Module, list[str], torch.Tensor], nn.Module]] = {
    "fp32": lambda model, names, batch: model,
    "ours": make_ours,
    "ours_int8": lambda model, names, batch: make_ours(model, names, batch, "int8"),
    "ours_unfused": lambda model, names, batch: make_ours(model, names, batch, "unfused"),
    "torch_lfq": make_torch_lfq,
    "brevitas": make_brevitas,
    "torchao": make_torchao,
    "fp32_compiled": lambda model, names, batch: model,
    "ours_compiled": make_ours,
}


# -- measurement ----------------------------------------------------------------
class Runner:
    """One model + AdamW that can run timed training steps (through ``torch.compile`` if ``compiled``)."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, compiled: bool = False) -> None:
        self.model, self.x, self.y = model, x, y
        self.forward = torch.compile(model) if compiled else model
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self.first_step_s: float | None = None

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.forward(self.x), self.y)
        loss.backward()
        self.optimizer.step()

    def warm_up(self, steps: int) -> None:
        start = time.perf_counter()
        self.step()  # compiles, for a compiled model
        self.first_step_s = time.perf_counter() - start
        for _ in range(steps - 1):
            self.step()

    def timed_step(self) -> None:
        start, cpu_start = time.perf_counter(), time.process_time()
        self.step()
        self.times.append(time.perf_counter() - start)
        self.cpu_times.append(time.process_time() - cpu_start)

    def saved_bytes(self) -> int:
        """Bytes of the distinct non-parameter tensors autograd keeps for backward in one forward."""
        return saved_tensor_bytes(lambda: F.cross_entropy(self.forward(self.x), self.y),
                                  exclude=self.model.parameters())


def measure(model_name: str, impls: list[str], batch: int, rounds: int, steps: int, warmup: int) -> dict:
    torch.manual_seed(1)
    x = torch.randn(batch, 3, 224, 224)
    y = torch.randint(0, 1000, (batch,))
    names = quantized_layer_names(model_name)
    runners = {}
    for impl in impls:
        model = BUILDERS[impl](build_model(model_name), names, x)
        runners[impl] = Runner(model, x, y, compiled=impl.endswith("_compiled"))
        runners[impl].warm_up(max(warmup, 1))
    for _ in range(rounds):
        for runner in runners.values():
            for _ in range(steps):
                runner.timed_step()
    rows = {}
    for impl, runner in runners.items():
        times_ms = [t * 1e3 for t in runner.times]
        q1, _, q3 = statistics.quantiles(times_ms, n=4) if len(times_ms) > 1 else (times_ms[0],) * 3
        rows[impl] = {
            "median_ms": round(statistics.median(runner.times) * 1e3, 1),
            "iqr_ms": [round(q1, 1), round(q3, 1)],
            "median_cpu_ms": round(statistics.median(runner.cpu_times) * 1e3, 1),
            "saved_for_backward_mib": round(runner.saved_bytes() / 2**20, 1),
            "first_step_s": round(runner.first_step_s, 1),
            "steps_timed": len(runner.times),
            "compared_with": baseline(impl),
        }
    for impl, row in rows.items():
        base = rows.get(baseline(impl))
        for key, ratio in (("median_ms", "ratio_to_fp32"), ("median_cpu_ms", "cpu_ratio_to_fp32"),
                           ("saved_for_backward_mib", "saved_ratio_to_fp32")):
            row[ratio] = round(row[key] / base[key], 3) if base else None
        print(f"{model_name:<22} {impl:<14} {row['median_ms']:8.1f} ms  x{row['ratio_to_fp32'] or float('nan'):.3f}  "
              f"saved {row['saved_for_backward_mib']:7.1f} MiB  x{row['saved_ratio_to_fp32'] or float('nan'):.3f}  "
              f"cpu {row['median_cpu_ms']:8.1f} ms  x{row['cpu_ratio_to_fp32'] or float('nan'):.3f}", flush=True)
    return {"quantized_layers": len(names), "implementations": rows}


# -- report ----------------------------------------------------------------------
def machine() -> dict:
    import importlib.metadata as md

    def version(dist: str) -> str | None:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "load_before": round(os.getloadavg()[0], 1),
        "cpu": cpu, "threads": torch.get_num_threads(), "python": platform.python_version(),
        "torch": torch.__version__, "gaqat_wrap": gaqat_wrap.__version__, "timm": version("timm"),
        "brevitas": version("brevitas"), "torchao": version("torchao"),
    }


LABELS = {
    "fp32": "FP32 (no quantization)",
    "ours": "gaqat_wrap LSQ (fused, default)",
    "ours_int8": "gaqat_wrap LSQ, int8 codes",
    "ours_unfused": "gaqat_wrap LSQ, two-op path",
    "torch_lfq": "torch `_LearnableFakeQuantize`",
    "brevitas": "brevitas `QuantLinear`/`QuantConv2d`",
    "torchao": "torchao `IntxFakeQuantizer`",
    "fp32_compiled": "FP32, `torch.compile`",
    "ours_compiled": "gaqat_wrap LSQ, `torch.compile`",
}


def _met(value: float, goal: float) -> str:
    return "met" if value <= goal else "not met"


def verdicts(results: dict) -> list[str]:
    """Per model: ours against the time and memory goals and the fastest peer; int8 codes; compiled."""
    lines = []
    for model_name, result in results["models"].items():
        rows = result["implementations"]
        if "ours" not in rows:
            continue
        ours = rows["ours"]
        line = (f"- **{model_name}**: gaqat_wrap {ours['ratio_to_fp32']:.2f}× FP32 step time (goal ≤ {TIME_GOAL:.2f}×: "
                f"{_met(ours['ratio_to_fp32'], TIME_GOAL)}), {ours['saved_ratio_to_fp32']:.2f}× FP32 saved for backward "
                f"(goal ≤ {MEMORY_GOAL:.2f}×: {_met(ours['saved_ratio_to_fp32'], MEMORY_GOAL)})")
        if "ours_unfused" in rows:
            line += f", against {rows['ours_unfused']['saved_ratio_to_fp32']:.2f}× for the two-op path"
        peers = {impl: row["ratio_to_fp32"] for impl, row in rows.items() if impl in ("torch_lfq", "brevitas", "torchao")}
        if peers:
            best = min(peers, key=peers.get)
            verdict = "faster than or as fast as" if ours["ratio_to_fp32"] <= peers[best] else "slower than"
            line += f"; {verdict} the fastest peer, {LABELS[best]} at {peers[best]:.2f}×"
        if "ours_int8" in rows:
            int8 = rows["ours_int8"]
            line += (f". int8 codes: {int8['saved_ratio_to_fp32']:.2f}× FP32 memory at {int8['ratio_to_fp32']:.2f}× "
                     "FP32 time")
        if "ours_compiled" in rows and rows["ours_compiled"]["ratio_to_fp32"] is not None:
            comp = rows["ours_compiled"]
            line += (f". Compiled: {comp['ratio_to_fp32']:.2f}× compiled FP32 time, {comp['saved_ratio_to_fp32']:.2f}× "
                     "its memory")
        lines.append(line + ".")
    return lines


def load_caveat(machine_info: dict) -> list[str]:
    """A warning under the verdicts when other processes loaded the machine during the run (times unreliable)."""
    loads = [machine_info.get("load_before", 0.0), machine_info.get("load_after", 0.0)]
    if max(loads) <= BUSY_LOAD:
        return []
    return ["", f"**The times above were measured on a busy machine** (1-minute load average {loads[0]} before and "
            f"{loads[1]} after the run, {machine_info['threads']} threads): the time ratios are not reliable at that "
            "load and do not verify the time goal; re-run on an idle machine for them. The memory figures do not "
            "depend on load."]


def int8_accuracy_section() -> list[str]:
    """The table of ``bench/bench_int8_codes_accuracy.py``'s results, when they exist."""
    if not INT8_ACCURACY.is_file():
        return ["No accuracy run of the int8-codes mode is recorded yet: run `bench/bench_int8_codes_accuracy.py`."]
    data = json.loads(INT8_ACCURACY.read_text())
    cfg = data["settings"]
    lines = [
        f"The demo configuration (`recipes/demo.py`: {cfg['dataset']}, `{cfg['model']}`, W{cfg['bits']}A{cfg['bits']}, "
        f"held-out {cfg['test_domain']}°, seed {cfg['seed']}, {cfg['steps']} steps, batch {cfg['batch_size']}) trained "
        "once in each mode (`bench/bench_int8_codes_accuracy.py`, measured "
        f"{data['date']}, load {data['load_before']} before, {data['load_after']} after):",
        "",
        "| method | saved inputs | held-out acc. (selected) | validation acc. (selected) | held-out acc. (last step) |",
        "|---|---|---:|---:|---:|",
    ]
    for run in data["runs"]:
        lines.append(f"| {run['method']} | {run['mode']} | {run['selected_test_acc']:.3f} | {run['selected_val_acc']:.3f} "
                     f"| {run['final_test_acc']:.3f} |")
    lines += ["", "One seed per cell: differences of a few points between single runs of this demo are within its "
              "seed-to-seed spread (see the domain-generalization results page), so the table shows that the mode "
              "trains, not that it is better or worse."]
    return lines


def markdown(results: dict) -> str:
    settings = results["settings"]
    lines = [
        "# Training-step speed and memory of fake quantization",
        "",
        "Time of one training step (forward + backward + AdamW step) at W4A4 and the activation memory it keeps,",
        "relative to the same model in FP32, for gaqat_wrap and for peer fake-quant layers at the same configuration:",
        "4-bit weights with one learnable scale per output channel and 4-bit layer inputs with one learnable scale per",
        "tensor, on every Linear/Conv except the first and last layer. Models are timm models with random weights;",
        f"batch {settings['batch']} at 224x224, the same input for every implementation. Compiled rows are compared",
        "with compiled FP32, the others with eager FP32.",
        "",
        "| model | implementation | ms / step (median) | × FP32 | saved for backward (MiB) | × FP32 "
        "| CPU ms / step | × FP32 (CPU) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model_name, result in results["models"].items():
        for impl, row in result["implementations"].items():
            lines.append(f"| {model_name} | {LABELS[impl]} | {row['median_ms']:.1f} | {row['ratio_to_fp32']:.2f} "
                         f"| {row['saved_for_backward_mib']:.1f} | {row['saved_ratio_to_fp32']:.2f} "
                         f"| {row['median_cpu_ms']:.1f} | {row['cpu_ratio_to_fp32']:.2f} |")
    m = results["machine"]
    lines += ["", *verdicts(results), *load_caveat(m)]
    lines += [
        "",
        "*ms / step* is wall-clock time; *CPU ms / step* is the process CPU time (all threads) of the same steps,",
        "less sensitive to other processes competing for the cores. *Saved for backward*: bytes of the distinct",
        "non-parameter tensors autograd keeps between forward and backward in one step (activation memory),",
        "counted by `gaqat_wrap.quant.saved_tensor_bytes`; unlike the times, these figures do not depend on load.",
        "",
        "## Where the activation memory goes",
        "",
        "An input quantizer followed by the layer's `F.linear` / `F.conv2d` keeps the layer input twice: `x` for",
        "the LSQ gradients and `x̂ = fq(x)` for the weight gradient (the *two-op path* row). gaqat_wrap's quantized",
        "Linear and Conv layers compute `op(fq(x), fq(w))` as one autograd node that keeps `x` only and rebuilds",
        "`x̂` in backward from the `x / s` that the LSQ backward computes anyway; their outputs and gradients are",
        "the two-op path's, bit for bit (`tests/quant/test_fused_layers.py`). What remains above FP32 is one",
        "clamped copy of each step size (a few KiB).",
        "",
        "`set_saved_inputs(model, \"int8\")` keeps two bytes per input element instead of `x`: the integer code",
        "and `round(x/s) - x/s` in 1/254 steps. Outputs, input and weight gradients stay exact; the input step",
        "size's gradient is off by at most 1/508 of a step per element. It lowers memory where nothing else",
        "keeps the layer input, as in ViT blocks (LayerNorm and GELU outputs feed the Linears), and raises it",
        "where something does: a ReLU keeps its output, which is the next convolution's input, so in a ReLU CNN",
        "the codes come on top of a tensor that stays anyway. It also costs time (the codes are written in",
        "forward and decoded in backward). Its accuracy on the demo:",
        "",
        *int8_accuracy_section(),
        "",
        "## torch.compile",
        "",
        "`torch.compile(model)` of a quantized model traces into one graph (`fullgraph=True` holds; the fused",
        "node's forward and backward are traced too) and trains like eager mode, GAQAT's second pass included",
        "(`tests/quant/test_compile.py`). A compiled training function around `optimizer.step(closure)` breaks",
        "its graph at one place, the GAQAT step, which runs eagerly (`torch.compiler.disable`): it reads one",
        "value back to the host per step (the skip decision) and keeps Python state between its passes. Both",
        "passes' forward and backward stay compiled graphs; parameters after 3 steps match eager mode within",
        "float32 rounding. Under compilation, AOTAutograd's partitioner decides what to keep for",
        "backward, not the fused node: by default it keeps the fake-quantized weight `ŵ` instead of rebuilding",
        "it (weights are materialised for the matmul in backward, which bans their recomputation), hence the",
        "compiled rows' memory. `torch._functorch.config.ban_recompute_materialized_backward = False` lifts",
        "that ban for every model (FP32 as well); on a small LayerNorm/GELU MLP it brought the compiled",
        "quantized model below eager FP32 (not measured on the models above).",
        "",
        "## On a GPU",
        "",
        "No GPU was available when these figures were made. `bench/gpu_step.py` measures ms / step, peak memory",
        "and images / s of FP32, LSQ, LSQ + SAM and GAQAT on `vit_small_patch16_224` and `resnet50` at batch 64",
        "in bf16 autocast; see [GPU step time and memory](gpu.md).",
        "",
        "## What each row measures",
        "",
        "- **gaqat_wrap LSQ**: `quantize_model(model, bits=4)` then `calibrate(model, [batch])`; the int8-codes",
        "  and two-op rows add `set_saved_inputs(model, \"int8\")` / `set_saved_inputs(model, \"unfused\")`.",
        "- **`torch.compile`** rows: `torch.compile(model)` (inductor, default options); the first (compiling)",
        "  step is a warm-up step and not timed.",
        "- **torch `_LearnableFakeQuantize`** (`torch.ao.quantization._learnable_fake_quantize`): one per-channel",
        "  symmetric quantizer on the weight and one per-tensor symmetric quantizer on the input of each layer,",
        "  range [-8, 7], LSQ gradient scaling on, observers used once for the initial scales, then",
        "  `enable_param_learning()`. Its forward and backward are fused C++ kernels; it also computes a",
        "  zero-point gradient.",
        "- **brevitas** `QuantLinear` / `QuantConv2d`: weight quantizer `Int8WeightPerChannelFloat` with",
        "  `bit_width=4`, `narrow_range=False` and a learned (`PARAMETER_FROM_STATS`) scale; input quantizer",
        "  `Int8ActPerTensorFloat` with `bit_width=4` (learned scale after one statistics-collection step).",
        "- **torchao** QAT `IntxFakeQuantizer(IntxFakeQuantizeConfig(torch.int4, 'per_channel', is_symmetric=True,",
        "  is_dynamic=False, range_learning=True))` on the weight (viewed as `(C_out, -1)`) and on the input.",
        "  torchao offers per-token, per-channel and per-group granularity but no per-tensor one and no",
        "  convolution layer, so the input is viewed as a single row (one learnable scale for the whole tensor)",
        "  and convolutions are wrapped by hand around the quantizers.",
        "",
        "## Why the LSQ op is cheap",
        "",
        "`gaqat_wrap.quant.lsq` keeps the exact LSQ forward `s * round(clamp(x / s, Qn, Qp))` (true division,",
        "round-half-to-even) and the strict-inequality gradients in plain PyTorch ops: the forward is one",
        "division and three in-place ops; the backward recomputes `x / s` and applies the strict",
        "`Qn < x/s < Qp` mask with `hardtanh_backward` instead of bool tensors (slow on CPU). The fused layer",
        "rebuilds `x̂` from that same `x / s` (one extra multiplication) and masks the gradient it computed",
        "itself in place, so it allocates fewer full-size buffers per step than the two-op path.",
        "On a busy machine every elementwise op also waits for all threads to be scheduled, so the op count",
        "matters as much as the bytes moved; fused C++ kernels (torch) suffer less from that.",
        "",
        "## Machine and method",
        "",
        f"- CPU: {m['cpu']}, `torch.set_num_threads({m['threads']})`.",
        f"- python {m['python']}, torch {m['torch']}, timm {m['timm']}, brevitas {m['brevitas']}, "
        f"torchao {m['torchao']}, gaqat_wrap {m['gaqat_wrap']}.",
        f"- {settings['warmup']} warm-up steps per implementation, then {settings['rounds']} interleaved rounds of "
        f"{settings['steps']} timed steps each (every implementation runs its steps, then the next one), so",
        "  background load affects all rows alike; the table shows the median step time.",
        f"- Measured {results['date']}" + (
            f"; load average (1 min) {m['load_before']} before and {m['load_after']} after the run "
            "(above 2, other processes competed for the 2 cores)." if "load_after" in m else "."),
        "",
        "Regenerate this page and `bench/results/quant_speed.json` with:",
        "",
        "```bash",
        ".venv/bin/python bench/bench_quant_speed.py",
        ".venv/bin/python bench/bench_int8_codes_accuracy.py   # the int8-codes accuracy table",
        ".venv/bin/python bench/bench_quant_speed.py --from-json   # re-render the page only",
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--impls", nargs="+", default=list(IMPLEMENTATIONS), choices=IMPLEMENTATIONS)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per implementation per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "quant_speed.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "docs" / "results" / "speed.md")
    parser.add_argument("--no-write", action="store_true", help="print only; write no files")
    parser.add_argument("--from-json", action="store_true", help="rewrite the markdown page from --json; measure nothing")
    args = parser.parse_args(argv)
    if args.from_json:
        results = json.loads(args.json.read_text())
        args.markdown.write_text(markdown(results))
        print(f"wrote {args.markdown} from {args.json}")
        return results
    if "fp32" not in args.impls:
        args.impls.insert(0, "fp32")
    if any(impl.endswith("_compiled") for impl in args.impls) and "fp32_compiled" not in args.impls:
        args.impls.insert(args.impls.index("ours_compiled"), "fp32_compiled")
    torch.set_num_threads(args.threads)
    results = {
        "benchmark": "quant_speed",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "settings": {"batch": args.batch, "rounds": args.rounds, "steps": args.steps, "warmup": args.warmup,
                     "bits": BITS, "optimizer": "AdamW"},
        "models": {name: measure(name, args.impls, args.batch, args.rounds, args.steps, args.warmup)
                   for name in args.models},
    }
    results["machine"]["load_after"] = round(os.getloadavg()[0], 1)
    if not args.no_write:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(results))
        print(f"wrote {args.json} and {args.markdown}")
    return results


if __name__ == "__main__":
    main()
