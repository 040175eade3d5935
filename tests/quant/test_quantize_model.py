"""quantize_model: errors, policy, report, identity of Parameters/state_dict, calibration, param groups."""

from __future__ import annotations

import copy
import io
import pickle
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gaqat_wrap import QuantConfig, calibrate, format_report, param_groups, quant_report, quantize_model, second_pass
from gaqat_wrap.quant.layers import LINEAR, LayerAdapter, QuantizedLayer
from gaqat_wrap.quant.quantizer import LSQQuantizer, step_sizes


class SmallConvNet(nn.Module):
    """stem conv -> BN/ReLU -> grouped conv -> depthwise conv -> 1d conv -> linear -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.conv1d = nn.Conv1d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem(x)))
        x = self.depthwise(F.relu(self.grouped(x)))
        x = self.conv1d(x.flatten(2)).mean(-1)
        return self.head(F.gelu(self.fc(x)))


def mlp(width: int = 8, depth: int = 4) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(4, width)]
    for _ in range(depth - 2):
        layers += [nn.ReLU(), nn.Linear(width, width)]
    return nn.Sequential(*layers, nn.ReLU(), nn.Linear(width, 2))


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


# -- bad input ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"bits": 1}, ValueError, "bits must be between 2 and 8, got 1"),
    ({"bits": 9}, ValueError, "bits must be between 2 and 8, got 9"),
    ({"bits": 4.0}, TypeError, "bits must be an int"),
    ({"bits": True}, TypeError, "bits must be an int"),
    ({"bits": "4"}, TypeError, "bits must be an int"),
    ({"bits": 4, "act_bits": 0}, ValueError, "act_bits must be between 2 and 8"),
    ({"bits": 4, "act_bits": 8.5}, TypeError, "act_bits must be an int"),
    ({"bits": 4, "overrides": {"2": 12}}, ValueError, r"overrides\['2'\] must be between"),
    ({"bits": 4, "overrides": {"2": (4, 4, 4)}}, ValueError, "must be bits or"),
    ({"bits": 4, "weight_init": "max"}, ValueError, "weight_init must be one of"),
    ({"bits": 4, "act_signed": "yes"}, TypeError, "act_signed must be None, True or False"),
    ({"bits": 4, "include": [1]}, TypeError, "include must be a sequence of module-name glob strings"),
    ({"bits": 4, "not_an_option": 1}, TypeError, "not_an_option"),
])
def test_bad_options_raise_a_clear_error(kwargs, error, message):
    with pytest.raises(error, match=message):
        quantize_model(mlp(), **kwargs)


@pytest.mark.parametrize("option", ["include", "exclude"])
def test_glob_matching_no_layer_is_an_error_naming_it(option):
    message = rf"{option} pattern 'blocks\.\*' matches no Linear/Conv layer; layer names look like: 0, 2"
    with pytest.raises(ValueError, match=message):
        quantize_model(mlp(), bits=4, **{option: ["blocks.*"]})


def test_override_glob_matching_no_layer_is_an_error():
    with pytest.raises(ValueError, match="overrides pattern 'head' matches no"):
        quantize_model(mlp(), bits=4, overrides={"head": 8})


def test_non_module_is_rejected():
    with pytest.raises(TypeError, match=r"expects a torch\.nn\.Module, got dict"):
        quantize_model({"weight": torch.ones(2)}, bits=4)


def test_model_without_linear_or_conv_is_rejected():
    with pytest.raises(ValueError, match="Sequential has no Linear or Conv layer to quantize"):
        quantize_model(nn.Sequential(nn.ReLU(), nn.LayerNorm(3)), bits=4)


def test_model_where_every_candidate_is_skipped_is_rejected():
    with pytest.raises(ValueError, match="no layer of Sequential was quantized"):
        quantize_model(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), bits=4)


def test_quantizing_twice_is_an_error_and_leaves_the_model_alone():
    net = quantize_model(mlp(), bits=4)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(net, bits=8)
    after = net.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(r.weight_bits in (None, 4) for r in quant_report(net))


def test_config_and_bits_together_are_rejected():
    with pytest.raises(TypeError, match="either config=QuantConfig"):
        quantize_model(mlp(), bits=4, config=QuantConfig(bits=8))
    with pytest.raises(TypeError, match="config must be a QuantConfig, got dict"):
        quantize_model(mlp(), config={"bits": 4})


def test_config_object_is_used():
    net = quantize_model(mlp(), config=QuantConfig(bits=3, act_bits=6))
    layer = net[2]
    assert (layer.weight_quantizer.bits, layer.input_quantizer.bits) == (3, 6)


# -- policy ---------------------------------------------------------------------------------------------------------

def quantized_names(model: nn.Module) -> list[str]:
    return [r.name for r in quant_report(model) if r.quantized]


def test_first_and_last_layer_kept_by_default_with_reasons():
    net = quantize_model(mlp(depth=4), bits=4)
    report = {r.name: r for r in quant_report(net)}
    assert quantized_names(net) == ["2", "4"]
    assert "first layer kept at full precision" in report["0"].reason
    assert "classifier kept at full precision" in report["6"].reason
    assert type(net[0]) is nn.Linear and type(net[6]) is nn.Linear


def test_keep_first_last_false_quantizes_everything():
    net = quantize_model(mlp(depth=4), bits=4, keep_first_last=False)
    assert quantized_names(net) == ["0", "2", "4", "6"]


def test_classifier_found_through_get_classifier():
    class WithHead(SmallConvNet):
        def get_classifier(self) -> nn.Module:
            return self.fc  # declare fc as the head, although head runs last

    report = {r.name: r for r in quant_report(quantize_model(WithHead(), bits=4))}
    assert "classifier" in report["fc"].reason
    assert report["head"].quantized


def test_include_and_exclude_globs():
    net = quantize_model(SmallConvNet(), bits=4, include=["grouped", "depth*", "fc"], exclude=["fc"])
    report = {r.name: r for r in quant_report(net)}
    assert quantized_names(net) == ["grouped", "depthwise"]
    assert report["conv1d"].reason == "not matched by include patterns"
    assert report["fc"].reason == "excluded by pattern 'fc'"


def test_overrides_with_bits_and_tuples_first_match_wins():
    net = quantize_model(SmallConvNet(), bits=4, overrides={"grouped": (8, 6), "conv*": 3, "[!sh]*": 5})
    bits = {r.name: (r.weight_bits, r.input_bits) for r in quant_report(net) if r.quantized}
    assert bits == {"grouped": (8, 6), "depthwise": (5, 5), "conv1d": (3, 3), "fc": (5, 5)}


def test_act_bits_and_weight_only():
    net = quantize_model(mlp(), bits=3, act_bits=8)
    assert (net[2].weight_quantizer.bits, net[2].input_quantizer.bits) == (3, 8)
    net = quantize_model(mlp(), bits=4, quantize_inputs=False)
    assert net[2].input_quantizer is None
    assert "A: full precision" in format_report(net)


def test_grouped_depthwise_and_conv1d_layers_compute_like_the_original(images):
    fp = SmallConvNet().eval()
    q = quantize_model(copy.deepcopy(fp), bits=8, keep_first_last=False).eval()
    calibrate(q, [images])
    with torch.no_grad():
        ref, out = fp(images), q(images)
    assert quantized_names(q) == ["stem", "grouped", "depthwise", "conv1d", "fc", "head"]
    assert ((out - ref).norm() / ref.norm()).item() < 0.05


# -- report ---------------------------------------------------------------------------------------------------------

class OwnForwardConv(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


def test_report_lists_every_candidate_exactly_once():
    net = SmallConvNet()
    net.custom = OwnForwardConv(8, 8, 1)
    names = [n for n, m in net.named_modules() if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d)]
    quantize_model(net, bits=4)
    rows = quant_report(net)
    assert [r.name for r in rows] == names
    for r in rows:
        if r.quantized:
            assert r.weight_bits == 4 and r.input_bits == 4 and r.reason is None
            assert r.weight_granularity == "per-output-channel" and r.input_granularity == "per-tensor"
        else:
            assert r.reason and r.weight_bits is None
    text = format_report(net)
    assert text.splitlines()[-1] == f"{sum(r.quantized for r in rows)} of {len(names)} Linear/Conv layers quantized"


def test_subclass_with_its_own_forward_is_skipped_with_a_reason_and_left_unchanged(images):
    net = nn.Sequential(nn.Conv2d(3, 8, 1), OwnForwardConv(8, 8, 1), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 2, 1))
    custom = net[1]
    quantize_model(net, bits=4, keep_first_last=False)
    report = {r.name: r for r in quant_report(net)}
    assert not report["1"].quantized
    assert "OwnForwardConv overrides forward() and has no adapter" in report["1"].reason
    assert type(custom) is OwnForwardConv and not hasattr(custom, "weight_quantizer")
    h = torch.randn(2, 8, 4, 4)
    assert torch.equal(custom(h), nn.Conv2d.forward(custom, h) * 2)


def test_config_adapters_teach_a_custom_class(images):
    class DoubledWeightConv(nn.Conv2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self._conv_forward(x, self.weight * 2, self.bias)

    adapters = {DoubledWeightConv: LayerAdapter(lambda m: m.weight * 2, lambda m, x, w: m._conv_forward(x, w, m.bias))}
    net = nn.Sequential(nn.Conv2d(3, 4, 1), DoubledWeightConv(4, 4, 3), nn.Conv2d(4, 2, 1))
    fp = copy.deepcopy(net)
    quantize_model(net, bits=8, act_bits=8, adapters=adapters)
    layer = net[1]
    assert isinstance(layer, DoubledWeightConv) and isinstance(layer, QuantizedLayer)
    assert torch.equal(layer.effective_weight(), fp[1].weight * 2)
    with torch.no_grad():
        ref, out = fp(images), net(images)
    assert ((out - ref).norm() / ref.norm()).item() < 0.02


def test_padding_modes_are_kept(images):
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular"), nn.Conv2d(4, 2, 1))
    fp = copy.deepcopy(net)
    quantize_model(net, bits=8)
    with torch.no_grad():
        ref, out = fp(images), net(images)
    assert ((out - ref).norm() / ref.norm()).item() < 0.02


# -- identity of layers, parameters and state_dict ------------------------------------------------------------------

def test_layers_keep_class_parameters_and_state_dict_keys():
    net = SmallConvNet()
    originals = {name: (type(m), m.weight, m.bias) for name, m in net.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    keys = list(net.state_dict())
    param_ids = {id(p) for p in net.parameters()}
    quantize_model(net, bits=4)
    for name, (cls, weight, bias) in originals.items():
        module = net.get_submodule(name)
        assert isinstance(module, cls)
        assert module.weight is weight and module.bias is bias
    new_keys = list(net.state_dict())
    assert new_keys[: len(keys)] == keys or set(keys) <= set(new_keys)
    added = set(new_keys) - set(keys)
    assert added and all(".weight_quantizer." in k or ".input_quantizer." in k for k in added)
    assert "grouped.weight_quantizer.scale" in added and "grouped.input_quantizer.scale" in added
    assert param_ids <= {id(p) for p in net.parameters()}


def test_original_state_dict_loads_into_quantized_model():
    fp = SmallConvNet()
    net = quantize_model(copy.deepcopy(SmallConvNet()), bits=4)
    result = net.load_state_dict(fp.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert all(".weight_quantizer." in k or ".input_quantizer." in k for k in result.missing_keys)
    assert torch.equal(net.fc.weight, fp.fc.weight)


def test_scales_exist_at_once_and_an_optimizer_built_afterwards_sees_them(images):
    net = quantize_model(SmallConvNet(), bits=4)
    found = step_sizes(net)
    scales, roles = list(found.values()), sorted(found)
    assert roles == sorted(f"{n}.{k}" for n in ("grouped", "depthwise", "conv1d", "fc") for k in ("weight", "input"))
    assert all((p > 0).all() for p in scales)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    assert {id(p) for p in scales} <= {id(p) for g in opt.param_groups for p in g["params"]}
    before = [p.detach().clone() for p in scales]
    net(images).square().mean().backward()
    opt.step()
    changed = [not torch.equal(b, p) for b, p in zip(before, scales, strict=True)]
    assert all(changed)
    assert all(k in net.state_dict() for k in ("fc.weight_quantizer.scale", "fc.input_quantizer.scale"))


def test_weight_step_sizes_are_positive_per_channel():
    net = quantize_model(SmallConvNet(), bits=2)
    for name in ("grouped", "depthwise", "conv1d", "fc"):
        q = net.get_submodule(name).weight_quantizer
        assert q.scale.shape == (net.get_submodule(name).weight.shape[0],)
        assert q.is_initialized and q.is_signed and (q.scale > 0).all()


def test_deepcopy_and_pickle_keep_scale_roles(images):
    net = quantize_model(SmallConvNet(), bits=4).eval()
    calibrate(net, [images])
    expected = net(images)
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert list(step_sizes(clone)) == list(step_sizes(net))
        assert all(clone_scale is not scale for clone_scale, scale in
                   zip(step_sizes(clone).values(), step_sizes(net).values(), strict=True))
        assert isinstance(clone.fc, nn.Linear) and isinstance(clone.fc, QuantizedLayer)
        assert torch.equal(clone(images), expected)


def test_scale_roles_survive_dtype_and_device_moves_and_assign_loading():
    net = quantize_model(mlp(), bits=4)
    old = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        net.double()
    finally:
        torch.__future__.set_swap_module_params_on_conversion(old)
    assert step_sizes(net)["2.weight"] is net[2].weight_quantizer.scale
    net.load_state_dict(copy.deepcopy(net.state_dict()), assign=True)
    assert step_sizes(net)["4.input"] is net[4].input_quantizer.scale


def test_whole_model_pickle_loads_in_a_fresh_process(tmp_path):
    net = quantize_model(mlp(), bits=4)
    x = torch.randn(3, 4)
    path = tmp_path / "net.pt"
    torch.save({"model": net, "x": x, "y": net(x).detach()}, path)
    code = (f"import torch; d = torch.load({str(path)!r}, weights_only=False); m = d['model']; "
            "from gaqat_wrap.quant import step_sizes; "
            "assert torch.equal(m(d['x']), d['y']); print(type(m[2]).__name__, list(step_sizes(m))[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["QuantizedLinear", "2.weight"]


def test_state_dict_round_trip_restores_scales_and_flags(images):
    net = quantize_model(SmallConvNet(), bits=4).eval()
    calibrate(net, [images.abs()])  # all-positive data: unsigned inputs
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    fresh = quantize_model(SmallConvNet(), bits=4).eval()
    fresh.load_state_dict(torch.load(io.BytesIO(buf.getvalue())))
    assert fresh.grouped.input_quantizer.is_initialized
    assert fresh.grouped.input_quantizer.is_signed is net.grouped.input_quantizer.is_signed
    assert torch.equal(fresh(images), net(images))


# -- calibration ----------------------------------------------------------------------------------------------------

def test_calibrate_decides_sign_from_data():
    net = quantize_model(mlp(depth=4), bits=4)
    data = [torch.randn(8, 4) for _ in range(2)]
    assert calibrate(net, data) == 2
    report = {r.name: r for r in quant_report(net)}
    # layer 2 sees ReLU outputs (>= 0): unsigned; with act_signed forced it follows the config.
    assert report["2"].input_signed is False and net[2].input_quantizer.qrange == (0, 15)
    forced = quantize_model(mlp(depth=4), bits=4, act_signed=True)
    calibrate(forced, data)
    assert forced[2].input_quantizer.qrange == (-8, 7)


def test_calibrate_signed_when_data_has_negatives():
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))  # no ReLU: layer 1 sees negatives
    quantize_model(net, bits=4)
    calibrate(net, [torch.randn(8, 4)])
    assert net[1].input_quantizer.is_signed


def test_calibrate_uses_num_batches_and_all_their_data():
    net = quantize_model(nn.Sequential(nn.Identity(), nn.Linear(4, 4), nn.Linear(4, 2)), bits=4, keep_first_last=False,
                         act_init="lsq", exclude=["2"])
    seen = []
    batches = (seen.append(i) or torch.full((2, 4), float(i + 1)) for i in range(10))
    assert calibrate(net, batches, num_batches=3) == 3
    assert seen == [0, 1, 2], "calibrate must not pull batches it does not use"
    qp = net[1].input_quantizer.qrange[1]
    torch.testing.assert_close(net[1].input_quantizer.scale.detach(), torch.tensor([2 * 2.0 / qp**0.5]))


def test_calibrate_accepts_dict_and_tuple_batches_and_restores_mode():
    class Kw(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = mlp()

        def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
            return self.body(pixel_values)

    net = quantize_model(Kw(), bits=4).train()
    assert calibrate(net, [{"pixel_values": torch.randn(2, 4)}]) == 1
    assert net.training
    assert calibrate(quantize_model(mlp(), bits=4), [(torch.randn(2, 4), torch.zeros(2))]) == 1


def test_calibrate_errors():
    with pytest.raises(ValueError, match="no input quantizers to calibrate"):
        calibrate(mlp(), [torch.randn(2, 4)])
    with pytest.raises(ValueError, match="no input quantizers"):
        calibrate(quantize_model(mlp(), bits=4, quantize_inputs=False), [torch.randn(2, 4)])
    with pytest.raises(ValueError, match="num_batches must be >= 1"):
        calibrate(quantize_model(mlp(), bits=4), [torch.randn(2, 4)], num_batches=0)
    net = quantize_model(mlp(), bits=4)
    with pytest.raises(ValueError, match="got no batches"):
        calibrate(net, [])
    assert not any(q._calibrating for q in net.modules() if isinstance(q, LSQQuantizer))


def test_uncalibrated_input_scales_initialise_at_first_forward():
    net = quantize_model(mlp(), bits=4)
    assert not net[2].input_quantizer.is_initialized
    net(torch.randn(4, 4))
    assert net[2].input_quantizer.is_initialized and net[2].input_quantizer.scale.item() > 0


# -- param groups ---------------------------------------------------------------------------------------------------

def test_param_groups_keep_scales_out_of_weight_decay_and_apply_scale_lr():
    net = quantize_model(SmallConvNet(), bits=4)
    net.stem.weight.requires_grad_(False)
    groups = param_groups(net, weight_decay=0.05, scale_lr=1e-4, lr=1e-2)
    by_name = {g["group"]: g for g in groups}
    scales = {id(p) for p in step_sizes(net).values()}
    assert {id(p) for p in by_name["scales"]["params"]} == scales
    assert by_name["scales"]["step_size_roles"] == [role for role, p in step_sizes(net).items() if p.requires_grad]
    assert by_name["scales"]["weight_decay"] == 0.0 and by_name["scales"]["lr"] == 1e-4
    assert by_name["decay"]["weight_decay"] == 0.05 and by_name["decay"]["lr"] == 1e-2
    assert all(p.ndim >= 2 for p in by_name["decay"]["params"])
    assert all(id(p) not in scales and p.ndim < 2 for p in by_name["no_decay"]["params"])
    listed = [id(p) for g in groups for p in g["params"]]
    assert len(listed) == len(set(listed))
    assert set(listed) == {id(p) for p in net.parameters() if p.requires_grad}
    assert id(net.stem.weight) not in listed
    opt = torch.optim.AdamW(groups)
    assert [g["lr"] for g in opt.param_groups] == [1e-2, 1e-2, 1e-4]


@pytest.mark.parametrize(("kwargs", "message"), [({"weight_decay": -1.0}, "weight_decay must be >= 0"),
                                                  ({"scale_lr": -1.0}, "scale_lr must be >= 0")])
def test_param_groups_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        param_groups(quantize_model(mlp(), bits=4), **kwargs)


# -- second pass ----------------------------------------------------------------------------------------------------

def test_batchnorm_running_stats_unchanged_by_second_pass_forward(images):
    net = quantize_model(SmallConvNet(), bits=4).train()
    net(images)
    stats = {k: v.clone() for k, v in net.bn.state_dict().items()}
    buffers = dict(net.bn._buffers)
    with second_pass():
        out = net(images * 3 + 1)
    out.sum().backward()
    assert all(torch.equal(stats[k], v) for k, v in net.bn.state_dict().items())
    assert all(net.bn._buffers[k] is buf for k, buf in buffers.items()), "the same buffer tensors stay registered"
    net(images * 3 + 1)
    assert not torch.equal(stats["running_mean"], net.bn.running_mean), "outside second_pass() BN updates as usual"


def test_quantized_linear_adapter_is_used_for_linear_subclasses_without_own_forward():
    class TaggedLinear(nn.Linear):
        pass

    net = nn.Sequential(nn.Linear(4, 4), TaggedLinear(4, 4), nn.Linear(4, 2))
    quantize_model(net, bits=4)
    assert isinstance(net[1], TaggedLinear) and net[1]._gaqat_adapter == LINEAR


def test_calibrate_in_train_mode_uses_batch_statistics_and_leaves_running_stats_alone():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(),
                        nn.Linear(8 * 4 * 4, 2))
    eval_net = copy.deepcopy(net)
    quantize_model(net, bits=4)
    quantize_model(eval_net, bits=4)
    x = torch.randn(16, 3, 8, 8) * 5 + 3  # far from the BatchNorm's initial running statistics
    running = [b.clone() for b in net[1].buffers()]
    calibrate(net, [x], train_mode=True)
    calibrate(eval_net, [x])
    assert all(torch.equal(a, b) for a, b in zip(running, net[1].buffers(), strict=True))
    net.eval()
    calibrate(net, [x], train_mode=True)
    assert not net.training  # restores the mode it found
    # after a train-mode BatchNorm the input to conv 3 is ReLU(normalised) ~ O(1); in eval mode it is ~ O(10)
    assert net[3].input_quantizer.scale.item() < eval_net[3].input_quantizer.scale.item() / 2
