"""nn.MultiheadAttention: every projection reported as quantized really runs quantized.

The reference is computed independently: torch's own ``nn.MultiheadAttention``
run on explicitly fake-quantized inputs and weights (``s * clamp(round(x / s))``
written out here), with ``out_proj`` replaced by the identity so that its input
can be fake-quantized before the explicitly quantized output projection.
Everything runs in float64, so the only difference left is summation order.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gaqat_wrap import GAQATOptimizer, calibrate, format_report, quant_report, quantize_model
from gaqat_wrap.quant import QuantizedAttention, QuantizedLayer, step_sizes
from gaqat_wrap.quant.attention import quantize_attention

from zoo_checks import wake_up  # isort: skip

torchvision = pytest.importorskip("torchvision")

E, HEADS = 8, 2


def fake_quant(x: torch.Tensor, quantizer) -> torch.Tensor:
    """The LSQ forward written out: per-channel along dim 0 for weights, per tensor for inputs."""
    bits, signed = quantizer.bits, quantizer.is_signed
    qn, qp = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    s = quantizer.scale.detach()
    s = s.view(-1, *([1] * (x.dim() - 1))) if quantizer.kind == "weight" else s
    return s * torch.clamp(torch.round(x / s), qn, qp)


class Attend(nn.Module):
    """Wraps one attention module so that quantize_model, calibrate and the optimizer see a model."""

    def __init__(self, **options) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(E, HEADS, **options)

    def forward(self, query, key=None, value=None, **kwargs):
        key = query if key is None else key
        value = key if value is None else value
        return self.attn(query, key, value, **kwargs)


def quantized_attention(bits: int = 4, **options) -> tuple[nn.MultiheadAttention, nn.MultiheadAttention]:
    """(quantized, full-precision copy), float64, step sizes moved off their init so each one matters."""
    torch.manual_seed(0)
    model = Attend(**options).double()
    fp = copy.deepcopy(model.attn)
    quantize_model(model, bits=bits, keep_first_last=False)
    model.double()
    return model.attn, fp


def reference(fp: nn.MultiheadAttention, attn: nn.MultiheadAttention, query, key, value, **kwargs):
    """fp's own forward with fake-quantized inputs and weights, and a fake-quantized out projection."""
    ref = copy.deepcopy(fp)
    quantize = attn.input_quantizer
    inputs = {id(t): fake_quant(t, quantize) for t in (query, key, value)}  # one quantized tensor per distinct input
    with torch.no_grad():
        for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
            if getattr(ref, name) is not None:
                getattr(ref, name).copy_(fake_quant(getattr(ref, name), getattr(attn, f"{name}_quantizer")))
        ref.out_proj.weight.copy_(torch.eye(fp.embed_dim, dtype=torch.float64))
        if ref.out_proj.bias is not None:
            ref.out_proj.bias.zero_()
    attended, weights = ref(inputs[id(query)], inputs[id(key)], inputs[id(value)], **kwargs)
    out_proj = attn.out_proj
    output = F.linear(fake_quant(attended, out_proj.input_quantizer), fake_quant(fp.out_proj.weight, out_proj.weight_quantizer),
                      fp.out_proj.bias)
    return output, weights


def inputs(batch_first: bool, batched: bool = True, kdim: int = E, vdim: int = E, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)

    def make(length: int, dim: int) -> torch.Tensor:
        shape = (3, length, dim) if batch_first else (length, 3, dim)
        x = torch.randn(shape, generator=gen, dtype=torch.float64)
        return x if batched else (x[0] if batch_first else x[:, 0])

    return make(4, E), make(5, kdim), make(5, vdim)


def masks(batched: bool = True, target: int = 4, source: int = 5):
    """Boolean key padding / attention masks (True = masked), a float 3-d mask, each leaving key 0 visible."""
    gen = torch.Generator().manual_seed(7)
    padding = torch.rand(3, source, generator=gen) < 0.4
    padding[:, 0] = False
    attn = torch.rand(target, source, generator=gen) < 0.3
    attn[:, 0] = False
    additive = torch.randn(3 * HEADS if batched else HEADS, target, source, generator=gen, dtype=torch.float64)
    return (padding if batched else padding[0]), attn, additive


def additive(mask: torch.Tensor) -> torch.Tensor:
    """A boolean mask as the float mask torch adds to the scores (-inf where True)."""
    return torch.zeros(mask.shape, dtype=torch.float64).masked_fill(mask, float("-inf"))


CALLS = {
    "plain": lambda m: {},
    "key_padding_mask": lambda m: {"key_padding_mask": m[0]},
    "bool_attn_mask": lambda m: {"attn_mask": m[1]},
    "float_3d_mask_and_padding": lambda m: {"attn_mask": m[2], "key_padding_mask": additive(m[0])},
    "per_head_weights": lambda m: {"average_attn_weights": False, "attn_mask": m[2]},
    "no_weights": lambda m: {"need_weights": False},
    "no_weights_with_masks": lambda m: {"need_weights": False, "attn_mask": m[1], "key_padding_mask": m[0]},
}


def assert_matches_reference(attn, fp, query, key, value, **kwargs):
    output, weights = attn(query, key, value, **kwargs)
    expected, expected_weights = reference(fp, attn, query, key, value, **kwargs)
    torch.testing.assert_close(output, expected, rtol=1e-10, atol=1e-10)
    assert (weights is None) == (expected_weights is None)
    if weights is not None:
        torch.testing.assert_close(weights, expected_weights, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("call", list(CALLS))
def test_cross_attention_equals_torch_on_explicitly_fake_quantized_inputs_and_weights(batch_first, call):
    attn, fp = quantized_attention(batch_first=batch_first)
    query, key, value = inputs(batch_first)
    attn(query, key, value)  # first forward initialises the input step size
    assert_matches_reference(attn, fp, query, key, value, **CALLS[call](masks()))


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("call", ["plain", "no_weights", "bool_attn_mask", "per_head_weights"])
def test_self_attention_and_unbatched_inputs_equal_the_reference(batch_first, call):
    attn, fp = quantized_attention(batch_first=batch_first)
    x, _, _ = inputs(batch_first)
    attn(x, x, x)
    assert_matches_reference(attn, fp, x, x, x, **CALLS[call](masks(target=4, source=4)))
    single, _, _ = inputs(batch_first, batched=False)
    assert_matches_reference(attn, fp, single, single, single, **CALLS[call](masks(batched=False, target=4, source=4)))


@pytest.mark.parametrize("need_weights", [True, False])
def test_causal_hint_equals_the_reference(need_weights):
    attn, fp = quantized_attention(batch_first=True)
    x, _, _ = inputs(True)
    causal = nn.Transformer.generate_square_subsequent_mask(4, dtype=torch.float64)
    attn(x, x, x)
    assert_matches_reference(attn, fp, x, x, x, attn_mask=causal, is_causal=True, need_weights=need_weights)
    with pytest.raises(RuntimeError, match="Need attn_mask if specifying the is_causal hint"):
        attn(x, x, x, is_causal=True)


@pytest.mark.parametrize("options", [
    {"kdim": 6, "vdim": 5},
    {"add_bias_kv": True},
    {"add_zero_attn": True},
    {"add_bias_kv": True, "add_zero_attn": True, "kdim": 3, "vdim": 7},
    {"bias": False},
], ids=["separate_kv_dims", "bias_kv", "zero_attn", "all_at_once", "no_bias"])
def test_attention_options_equal_the_reference(options):
    attn, fp = quantized_attention(batch_first=False, **options)
    query, key, value = inputs(False, kdim=options.get("kdim", E), vdim=options.get("vdim", E))
    attn(query, key, value)
    for call in ("plain", "float_3d_mask_and_padding", "no_weights_with_masks"):
        assert_matches_reference(attn, fp, query, key, value, **CALLS[call](masks()))


def test_separate_projection_weights_get_their_own_per_channel_quantizers():
    attn, _ = quantized_attention(kdim=6, vdim=5)
    names = ("q_proj_weight", "k_proj_weight", "v_proj_weight")
    shapes = {name: getattr(attn, f"{name}_quantizer").scale.shape for name in names}
    assert shapes == dict.fromkeys(names, torch.Size([E]))
    assert not hasattr(attn, "in_proj_weight_quantizer")
    packed, _ = quantized_attention()
    assert packed.in_proj_weight_quantizer.scale.shape == (3 * E,)


def test_self_attention_quantizes_its_one_input_once():
    attn, _ = quantized_attention(batch_first=True)
    calls = []
    attn.input_quantizer.register_forward_hook(lambda module, args, output: calls.append(args[0]))
    x, key, _ = inputs(True)
    attn(x, x, x)
    assert len(calls) == 1
    calls.clear()
    attn(x, key, key)
    assert len(calls) == 2 and calls[1] is key


def test_every_step_size_changes_the_output_and_gets_a_gradient():
    attn, _ = quantized_attention(batch_first=True)
    query, key, value = inputs(True)
    attn(query, key, value)
    scale_ids = {id(p) for p in step_sizes(attn).values()}
    scales = {name: p for name, p in attn.named_parameters() if id(p) in scale_ids}
    assert set(scales) == {"in_proj_weight_quantizer.scale", "input_quantizer.scale",
                           "out_proj.weight_quantizer.scale", "out_proj.input_quantizer.scale"}
    output, _ = attn(query, key, value)
    output.pow(2).sum().backward()
    for name, scale in scales.items():
        assert scale.grad is not None and scale.grad.abs().sum() > 0, f"{name} got no gradient"
    with torch.no_grad():
        for name, scale in scales.items():
            saved = scale.clone()
            scale.mul_(1.5)
            changed = attn(query, key, value)[0]
            scale.copy_(saved)
            assert not torch.equal(changed, output), f"{name} does not take part in the forward"


def test_report_lists_the_attention_and_its_out_proj_with_the_truth():
    model = Attend()
    quantize_model(model, bits=4, act_bits=8, keep_first_last=False)
    rows = {r.name: r for r in quant_report(model)}
    assert list(rows) == ["attn", "attn.out_proj"]
    assert (rows["attn"].quantized, rows["attn"].weight_bits, rows["attn"].input_bits) == (True, 4, 8)
    assert rows["attn"].layer_type == "MultiheadAttention" and "in_proj_weight quantized" in rows["attn"].note
    assert rows["attn.out_proj"].quantized and isinstance(model.attn.out_proj, QuantizedLayer)
    assert format_report(model).splitlines()[-1] == "2 of 2 Linear/Conv/MultiheadAttention layers quantized"


def test_an_excluded_attention_never_reports_its_out_proj_as_quantized():
    """Before: out_proj was reported quantized while MultiheadAttention read its weight directly (issue 16, item 7)."""
    model = nn.Sequential(nn.Linear(E, E), Attend(), nn.Linear(E, 2))
    fp = copy.deepcopy(model)
    quantize_model(model, bits=4, keep_first_last=False, exclude=["1.attn"])
    rows = {r.name: r for r in quant_report(model)}
    assert not rows["1.attn"].quantized and rows["1.attn"].reason == "excluded by pattern '1.attn'"
    out_proj = rows["1.attn.out_proj"]
    assert not out_proj.quantized and "MultiheadAttention reads out_proj.weight directly" in out_proj.reason
    assert type(model[1].attn) is nn.MultiheadAttention and type(model[1].attn.out_proj) is type(fp[1].attn.out_proj)
    x = torch.randn(2, 3, E)
    with torch.no_grad():
        torch.testing.assert_close(model[1](fp[0](x))[0], fp[1](fp[0](x))[0])


def test_an_excluded_out_proj_runs_in_full_precision_inside_a_quantized_attention():
    plain = Attend(batch_first=True).double()
    quantize_model(plain, bits=4, keep_first_last=False, exclude=["attn.out_proj"])
    assert isinstance(plain.attn, QuantizedAttention)
    assert type(plain.attn.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    assert not {r.name: r for r in quant_report(plain)}["attn.out_proj"].quantized


def test_a_subclass_with_its_own_forward_is_skipped_with_the_reason():
    class Custom(nn.MultiheadAttention):
        def forward(self, *args, **kwargs):
            return super().forward(*args, **kwargs)

    model = nn.Sequential(nn.Linear(E, E), nn.Linear(E, E))
    model.attn = Custom(E, HEADS)
    quantize_model(model, bits=4, keep_first_last=False)
    rows = {r.name: r for r in quant_report(model)}
    assert "overrides MultiheadAttention.forward()" in rows["attn"].reason
    assert "reads out_proj.weight directly" in rows["attn.out_proj"].reason
    with pytest.raises(TypeError, match=r"overrides MultiheadAttention\.forward"):
        quantize_attention(Custom(E, HEADS), weight_bits=4, input_bits=4, role="attn")


def test_nested_tensors_are_refused_with_a_clear_error():
    attn, _ = quantized_attention(batch_first=True)
    nested = torch.nested.nested_tensor([torch.randn(2, E, dtype=torch.float64), torch.randn(3, E, dtype=torch.float64)],
                                        layout=torch.jagged)
    with pytest.raises(NotImplementedError, match="does not take nested tensors"):
        attn(nested, nested, nested)


def test_state_dict_deepcopy_and_pickle_keep_the_quantized_attention(tmp_path):
    attn, _ = quantized_attention(batch_first=True)
    query, key, value = inputs(True)
    attn(query, key, value)
    keys = set(attn.state_dict())
    assert {"in_proj_weight", "in_proj_weight_quantizer.scale", "input_quantizer.scale", "out_proj.weight"} <= keys
    fresh = Attend(batch_first=True).double()
    quantize_model(fresh, bits=4, keep_first_last=False)
    fresh.double()
    fresh.attn.load_state_dict(attn.state_dict())
    torch.save(copy.deepcopy(attn), tmp_path / "attn.pt")
    loaded = torch.load(tmp_path / "attn.pt", weights_only=False)
    for other in (fresh.attn, loaded):
        assert isinstance(other, QuantizedAttention)
        torch.testing.assert_close(other(query, key, value)[0], attn(query, key, value)[0], rtol=0, atol=0)


def test_calibrate_initialises_the_attention_input_step_size():
    model = Attend(batch_first=True)
    quantize_model(model, bits=4, keep_first_last=False)
    assert not model.attn.input_quantizer.is_initialized
    calibrate(model, [torch.randn(2, 5, E)])
    assert model.attn.input_quantizer.is_initialized and model.attn.out_proj.input_quantizer.is_initialized


# -- torchvision VisionTransformer (its encoder blocks use nn.MultiheadAttention) ------------------------------------

def vision_transformer() -> nn.Module:
    """A tiny torchvision ViT; its zero-initialised head is woken up, else no gradient reaches the blocks."""
    torch.manual_seed(0)
    return wake_up(torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                       hidden_dim=32, mlp_dim=64, num_classes=5))


def test_torchvision_vit_attention_is_quantized_and_reported_truthfully():
    model = quantize_model(vision_transformer(), bits=4)
    rows = {r.name: r for r in quant_report(model)}
    block = "encoder.layers.encoder_layer_0.self_attention"
    assert rows[block].quantized and rows[f"{block}.out_proj"].quantized
    assert not rows["conv_proj"].quantized and not rows["heads.head"].quantized
    assert all(r.quantized for name, r in rows.items() if name not in ("conv_proj", "heads.head"))
    expected = {f"{block}.{part}" for part in ("in_proj_weight_quantizer.scale", "input_quantizer.scale",
                                              "out_proj.weight_quantizer.scale", "out_proj.input_quantizer.scale")}
    scale_ids = {id(p) for p in step_sizes(model).values()}
    assert expected <= {name for name, p in model.named_parameters() if id(p) in scale_ids}


def test_torchvision_vit_attention_equals_torch_on_explicitly_quantized_inputs_and_weights():
    fp = vision_transformer().double().eval()
    model = quantize_model(copy.deepcopy(fp), bits=4).double().eval()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    calibrate(model, [images])
    tokens = torch.randn(2, 17, 32, dtype=torch.float64)
    for index in range(2):
        block, fp_block = model.encoder.layers[index], fp.encoder.layers[index]
        normed = block.ln_1(tokens)
        with torch.no_grad():
            expected, _ = reference(fp_block.self_attention, block.self_attention, normed, normed, normed, need_weights=False)
            output = block.self_attention(normed, normed, normed, need_weights=False)[0]
        torch.testing.assert_close(output, expected, rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        assert torch.isfinite(model(images)).all()


def test_torchvision_vit_trains_with_the_sam_second_pass():
    model = quantize_model(vision_transformer(), bits=4)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    scale_ids = {id(p) for p in step_sizes(model).values()}
    scales = {name: p for name, p in model.named_parameters() if id(p) in scale_ids}
    passes = []

    def closure():
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        passes.append({name: p.grad.clone() for name, p in scales.items() if p.grad is not None})
        return loss

    optimizer = GAQATOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-3), model=model, sam_rho=0.05)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    loss = optimizer.step(closure)
    assert torch.isfinite(loss) and len(passes) == 2
    for grads in passes:
        assert set(grads) == set(scales) and all(g.abs().sum() > 0 for g in grads.values())
    attention = "encoder.layers.encoder_layer_1.self_attention"
    assert not torch.equal(passes[0][f"{attention}.in_proj_weight_quantizer.scale"],
                           passes[1][f"{attention}.in_proj_weight_quantizer.scale"]), "the second pass saw the perturbation"
    moved = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert f"{attention}.in_proj_weight" in moved and f"{attention}.out_proj.weight" in moved
    assert f"{attention}.in_proj_weight" in {s.role for s in optimizer.freeze_report()}


# -- nn.TransformerEncoderLayer: torch's fused inference path reads the raw weights ---------------------------------

def test_transformer_encoder_fast_paths_do_not_bypass_quantized_layers():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, batch_first=True, dropout=0.0)
    model = nn.Sequential(nn.Linear(16, 16), nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=True),
                          nn.Linear(16, 3))
    quantize_model(model, bits=4)
    model.eval()
    x = torch.randn(2, 5, 16)
    padding = torch.zeros(2, 5, dtype=torch.bool)
    padding[1, 3:] = True
    for kwargs in ({}, {"src_key_padding_mask": padding}):
        slow = model[2](model[1](model[0](x), **kwargs))  # gradients enabled: torch never takes its fused path
        with torch.no_grad():
            fast_eligible = model[2](model[1](model[0](x), **kwargs))
        valid = ~padding if kwargs else torch.ones_like(padding)
        torch.testing.assert_close(fast_eligible[valid], slow[valid], rtol=0, atol=0)


def test_integer_export_refuses_a_quantized_attention_instead_of_exporting_it_in_full_precision(tmp_path):
    from gaqat_wrap.export import export_integer_model

    model = quantize_model(vision_transformer(), bits=4)
    calibrate(model, [torch.randn(2, 3, 32, 32)])
    message = (r"cannot export quantized nn.MultiheadAttention layers \(\S*encoder_layer_0\.self_attention"
               r".*exclude=\['\*\.self_attention'\]\)")
    with pytest.raises(TypeError, match=message):
        export_integer_model(model, tmp_path / "vit.safetensors")
    excluded = quantize_model(vision_transformer(), bits=4, exclude=["*.self_attention"])
    calibrate(excluded, [torch.randn(2, 3, 32, 32)])
    export_integer_model(excluded, tmp_path / "vit.safetensors")
