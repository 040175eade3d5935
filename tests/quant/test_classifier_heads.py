"""keep_first_last keeps every classifier head in full precision; overrides that name kept layers quantize them.

Two-head models (a class head and a distillation head) used to get their main
head quantized while only the distillation head stayed FP, and
``overrides={"head": 8}`` on a kept head was ignored without a word (issue 16, item 8).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from gaqat_wrap import format_report, quant_report, quantize_model
from gaqat_wrap.quant.quantize import classifier_layers

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")


def rows(model: nn.Module) -> dict:
    return {r.name: r for r in quant_report(model)}


def kept_as_classifier(model: nn.Module) -> list[str]:
    return [r.name for r in quant_report(model) if not r.quantized and "classifier kept at full precision" in (r.reason or "")]


def deit_distilled() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                             num_classes=5)


def levit() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("levit_128s", pretrained=False, img_size=32, num_classes=5)


def hf_deit_with_teacher() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.DeiTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                     image_size=32, patch_size=8, num_labels=3)
    return transformers.DeiTForImageClassificationWithTeacher(config)


TWO_HEADS = {
    "timm_deit_tiny_distilled": (deit_distilled, ["head", "head_dist"]),
    "timm_levit_128s": (levit, ["head.linear", "head_dist.linear"]),
    "hf_deit_with_teacher": (hf_deit_with_teacher, ["cls_classifier", "distillation_classifier"]),
}


@pytest.mark.parametrize("name", list(TWO_HEADS))
def test_every_classifier_head_of_a_two_head_model_stays_full_precision(name):
    build, heads = TWO_HEADS[name]
    model = quantize_model(build(), bits=4)
    assert kept_as_classifier(model) == heads
    for head in heads:
        assert type(model.get_submodule(head)) is nn.Linear
    report = rows(model)
    first = next(iter(report))
    assert "first layer kept" in report[first].reason
    assert all(r.quantized for n, r in report.items() if n not in (first, *heads))


def test_a_two_head_model_still_runs_with_both_heads_in_full_precision():
    fp = deit_distilled().eval()
    model = quantize_model(copy.deepcopy(fp), bits=8).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_head(model.forward_features(images), pre_logits=True)
        torch.testing.assert_close(model.head(features), fp.head(features), rtol=0, atol=0)
        torch.testing.assert_close(model.head_dist(features), fp.head_dist(features), rtol=0, atol=0)
        assert torch.isfinite(model(images)).all()


def test_heads_are_found_by_name_among_the_direct_children_and_the_last_layer_counts_too():
    net = nn.Sequential()
    net.add_module("stem", nn.Conv2d(3, 4, 1))
    net.add_module("pool", nn.Flatten())
    net.add_module("classifier", nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)))
    net.add_module("extra", nn.Linear(3, 3))
    assert classifier_layers(net) == ["classifier.2", "extra"]


def test_get_classifier_returning_a_tuple_names_every_head():
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(4, 4)
            self.main = nn.Linear(4, 2)
            self.aux = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))

        def get_classifier(self):
            return self.main, self.aux

    assert classifier_layers(TwoHeads()) == ["main", "aux.1"]


# -- overrides and kept layers --------------------------------------------------------------------------------------

def test_an_override_naming_a_kept_head_quantizes_it_and_the_report_says_so():
    model = quantize_model(deit_distilled(), bits=4, overrides={"head": 8})
    report = rows(model)
    assert report["head"].quantized and (report["head"].weight_bits, report["head"].input_bits) == (8, 8)
    assert report["head"].note == "classifier quantized: override 'head' wins over keep_first_last"
    assert "override 'head' wins over keep_first_last" in format_report(model)
    assert not report["head_dist"].quantized and "classifier kept" in report["head_dist"].reason


def test_an_override_naming_the_first_layer_quantizes_it():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 2))
    quantize_model(net, bits=4, overrides={"0": (8, 6)})
    report = rows(net)
    assert (report["0"].weight_bits, report["0"].input_bits) == (8, 6)
    assert report["0"].note == "first layer quantized: override '0' wins over keep_first_last"
    assert not report["3"].quantized


@pytest.mark.parametrize(("options", "message"), [
    ({"overrides": {"*": 8, "2": 3}}, r"overrides pattern '2' sets the bits of no quantized layer \(2: earlier pattern '\*' "
                                      r"matches it first\)"),
    ({"overrides": {"2": 8}, "exclude": ["2"]}, r"overrides pattern '2' sets the bits of no quantized layer \(2: excluded "
                                                r"by pattern '2'\)"),
    ({"overrides": {"2": 8}, "include": ["1"]}, r"\(2: not matched by include patterns\)"),
], ids=["shadowed_by_an_earlier_pattern", "excluded_layer", "not_included"])
def test_an_override_that_sets_no_layers_bits_is_an_error_and_the_model_is_left_alone(options, message):
    net = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 2))
    fp = copy.deepcopy(net)
    with pytest.raises(ValueError, match=message):
        quantize_model(net, bits=4, **options)
    assert [type(m) for m in net] == [nn.Linear] * 4
    assert net.state_dict().keys() == fp.state_dict().keys()
    assert not any(hasattr(m, "_gaqat_skip_reason") for m in net.modules())
