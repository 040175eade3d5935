"""Layer adapters are scoped to a QuantConfig; the process-wide register_adapter is deprecated (issue 15)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from gaqat_wrap import QuantConfig, quant_report, quantize_model
from gaqat_wrap.quant import LayerAdapter, register_adapter
from gaqat_wrap.quant import layers as layers_module
from gaqat_wrap.quant.layers import CONV, adapter_for


class TripledWeightConv(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * 3, self.bias)


TRIPLED = LayerAdapter(lambda m: m.weight * 3, CONV.compute)


def net_with(custom: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 1), custom, nn.Conv2d(4, 2, 1))


def quantized_names(model: nn.Module) -> list[str]:
    return [r.name for r in quant_report(model) if r.quantized]


def test_an_adapter_in_one_config_does_not_leak_into_other_quantize_calls():
    config = QuantConfig(bits=8, keep_first_last=False, adapters={TripledWeightConv: TRIPLED})
    taught = quantize_model(net_with(TripledWeightConv(4, 4, 3)), config=config)
    untaught = quantize_model(net_with(TripledWeightConv(4, 4, 3)), bits=8, keep_first_last=False)
    assert quantized_names(taught) == ["0", "1", "2"]
    assert quantized_names(untaught) == ["0", "2"]
    assert "TripledWeightConv overrides forward() and has no adapter" in quant_report(untaught)[1].reason
    assert TripledWeightConv not in layers_module._GLOBAL_ADAPTERS


def test_a_config_adapter_computes_like_the_layer_it_teaches():
    fp = net_with(TripledWeightConv(4, 4, 3))
    model = quantize_model(copy.deepcopy(fp), bits=8, keep_first_last=False, quantize_inputs=False,
                           adapters={TripledWeightConv: TRIPLED})
    assert torch.equal(model[1].effective_weight(), fp[1].weight * 3)
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        h = model[0](x)
        expected = fp[1]._conv_forward(h, model[1].weight_quantizer(fp[1].weight * 3), fp[1].bias)
        assert torch.equal(model[1](h), expected)


def test_a_subclass_without_its_own_forward_uses_its_bases_adapter():
    class Renamed(TripledWeightConv):
        pass

    class OwnForward(TripledWeightConv):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) + 1

    adapters = {TripledWeightConv: TRIPLED}
    assert adapter_for(Renamed(4, 4, 3), adapters) is TRIPLED
    assert "OwnForward overrides forward() and has no adapter" in adapter_for(OwnForward(4, 4, 3), adapters)


def test_timm_adapters_stay_available_next_to_config_adapters():
    timm_layers = pytest.importorskip("timm.layers")
    net = nn.Sequential(nn.Conv2d(3, 4, 1), timm_layers.StdConv2d(4, 4, 3), TripledWeightConv(4, 4, 3), nn.Conv2d(4, 2, 1))
    quantize_model(net, bits=4, adapters={TripledWeightConv: TRIPLED})
    assert quantized_names(net) == ["1", "2"]


def test_config_adapters_win_over_the_deprecated_global_registry(monkeypatch):
    monkeypatch.setattr(layers_module, "_GLOBAL_ADAPTERS", {})
    doubled = LayerAdapter(lambda m: m.weight * 2, CONV.compute)
    with pytest.warns(DeprecationWarning, match=r"pass QuantConfig\(adapters=\{cls: adapter\}\)"):
        register_adapter(TripledWeightConv, doubled)
    assert adapter_for(TripledWeightConv(4, 4, 3)) is doubled, "the deprecated path still works"
    assert adapter_for(TripledWeightConv(4, 4, 3), {TripledWeightConv: TRIPLED}) is TRIPLED
    model = quantize_model(net_with(TripledWeightConv(4, 4, 3)), bits=4, keep_first_last=False,
                           adapters={TripledWeightConv: TRIPLED})
    assert model[1]._gaqat_adapter is TRIPLED


@pytest.mark.parametrize(("adapters", "error", "message"), [
    ([TRIPLED], TypeError, r"adapters must be a dict \{layer class: LayerAdapter\}, got list"),
    ({nn.ReLU: TRIPLED}, TypeError, "adapters keys must be subclasses of nn.Linear or nn.Conv1d/2d/3d .* got ReLU"),
    ({"TripledWeightConv": TRIPLED}, TypeError, "adapters keys must be subclasses .* got 'TripledWeightConv'"),
    ({TripledWeightConv: lambda m: m.weight}, TypeError, r"adapters\[TripledWeightConv\] must be a LayerAdapter, got function"),
])
def test_bad_adapters_are_rejected_when_the_config_is_built(adapters, error, message):
    with pytest.raises(error, match=message):
        QuantConfig(adapters=adapters)

