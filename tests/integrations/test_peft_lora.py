"""LoRA adapters (peft) on a quantized ViT train with GAQATOptimizer; merging re-quantizes."""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from transformers import ViTConfig, ViTForImageClassification

from gaqat_wrap import calibrate, quantize_model
from gaqat_wrap.integrations import train_scales
from gaqat_wrap.optim import GAQATOptimizer
from gaqat_wrap.quant import QuantizedLayer, lsq_fake_quant, step_sizes


def _lora_vit(scales_trainable: bool):
    torch.manual_seed(0)
    config = ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=32, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = quantize_model(ViTForImageClassification(config), bits=4)
    calibrate(model, [{"pixel_values": torch.randn(8, 3, 16, 16)}])
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                              init_lora_weights=False))
    if scales_trainable:
        train_scales(model)
    return model


def _batch():
    g = torch.Generator().manual_seed(3)
    return {"pixel_values": torch.randn(8, 3, 16, 16, generator=g), "labels": torch.randint(0, 3, (8,), generator=g)}


def _train(model, steps=3):
    optimizer = GAQATOptimizer(torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2),
                               model=model, sam_rho=0.05, freeze_threshold=0.5, window=2)
    batch = _batch()
    for _ in range(steps):
        optimizer.step(lambda: model(**batch).loss.backward())
    return optimizer


def test_lora_on_quantized_layers_trains_adapters_and_scales_not_base_weights():
    model = _lora_vit(scales_trainable=True)
    lora_targets = [m for n, m in model.named_modules() if n.endswith(("q_proj", "v_proj")) and hasattr(m, "base_layer")]
    assert lora_targets and all(isinstance(m.base_layer, QuantizedLayer) for m in lora_targets)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = _train(model)

    after = dict(model.named_parameters())
    base_weights = [n for n in before if n.endswith("base_layer.weight")]
    adapters = [n for n in before if "lora_" in n]
    scale_ids = {id(p) for p in step_sizes(model).values()}
    scales = [n for n, p in after.items() if id(p) in scale_ids]
    assert base_weights and adapters and scales
    assert all(torch.equal(before[n], after[n]) for n in base_weights)
    assert all(not torch.equal(before[n], after[n]) for n in adapters)
    assert any(not torch.equal(before[n], after[n]) for n in scales)
    # conflict statistics exist for every trainable step size
    assert len(optimizer.freeze_report()) == len(scales)


def test_scales_stay_fixed_unless_made_trainable():
    model = _lora_vit(scales_trainable=False)
    scale_ids = {id(p) for p in step_sizes(model).values()}
    scales = {n: p.detach().clone() for n, p in model.named_parameters() if id(p) in scale_ids}
    optimizer = _train(model)
    assert all(torch.equal(scales[n], p) for n, p in model.named_parameters() if n in scales)
    assert optimizer.freeze_report() == []


def test_merge_and_unload_requantizes_the_merged_weight_with_the_existing_scales():
    model = _lora_vit(scales_trainable=True)
    _train(model, steps=2)
    model.eval()
    batch = _batch()
    with torch.no_grad():
        unmerged = model(pixel_values=batch["pixel_values"]).logits
    merged_model = model.merge_and_unload()
    layer = merged_model.vit.layers[0].attention.q_proj
    assert isinstance(layer, QuantizedLayer) and isinstance(layer, torch.nn.Linear)
    with torch.no_grad():
        merged = merged_model(pixel_values=batch["pixel_values"]).logits
        # the merged layer computes with Q(W + BA): its effective weight lies on the step-size grid
        w = layer.weight
        step = layer.weight_quantizer.scale.view(-1, 1)
        qn, qp = layer.weight_quantizer.qrange
        on_grid = lsq_fake_quant(w, step, qn, qp) / step
        torch.testing.assert_close(on_grid, on_grid.round(), rtol=0, atol=1e-4)
    # merging changes the function (the LoRA branch was FP on the unquantized input): documented behaviour
    assert not torch.allclose(unmerged, merged, atol=1e-6)
