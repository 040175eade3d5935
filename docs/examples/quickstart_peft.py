"""Quick start: peft LoRA adapters on a quantized model, trained with GAQAT.

Quantize first, then add LoRA: the adapters wrap the quantized Linear layers
(still ``nn.Linear`` instances), peft freezes the base weights, and
``train_scales`` lets the LSQ step sizes train beside the adapters.

Run: python docs/examples/quickstart_peft.py
"""

import torch
from peft import LoraConfig, get_peft_model
from transformers import ViTConfig, ViTForImageClassification

from gaqat_wrap import GAQATOptimizer, calibrate, quantize_model
from gaqat_wrap.integrations import train_scales

torch.manual_seed(0)
config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=64, num_labels=4)
model = quantize_model(ViTForImageClassification(config), bits=4)

# Stand-in data: noisy 32x32 images whose class (0-3) is a brighter image quadrant.
labels = torch.arange(64) % 4
images = torch.randn(64, 3, 32, 32)
for i, label in enumerate(labels.tolist()):
    images[i, :, 16 * (label // 2):16 * (label // 2) + 16, 16 * (label % 2):16 * (label % 2) + 16] += 1.5
calibrate(model, [{"pixel_values": images[:16]}])

# transformers 5 names the ViT attention projections q_proj / k_proj / v_proj / o_proj.
lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], modules_to_save=["classifier"])
model = get_peft_model(model, lora)
print(f"step sizes made trainable: {train_scales(model)}")
model.print_trainable_parameters()

trainable = [p for p in model.parameters() if p.requires_grad]
optimizer = GAQATOptimizer(torch.optim.AdamW(trainable, lr=5e-3), model=model, sam_rho=0.05, freeze_threshold=0.5,
                           window=4)

model.train()
for step in range(8):
    batch = torch.randint(0, 64, (16,))

    def closure(batch=batch):
        loss = model(pixel_values=images[batch], labels=labels[batch]).loss   # HF models return .loss
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    if step % 4 == 3:
        report = optimizer.freeze_report()
        print(f"step {step + 1}: loss {loss.item():.3f}, {sum(s.frozen for s in report)} of {len(report)} step sizes frozen")

# Merging adds B·A into the FP weight, which is then re-quantized with the existing step sizes,
# so the merged model computes a (slightly) different function than the adapters did.
model.eval()
with torch.no_grad():
    unmerged = model(pixel_values=images).logits
    merged_model = model.merge_and_unload()
    merged = merged_model(pixel_values=images).logits
print(f"max |logit change| after merge_and_unload: {(merged - unmerged).abs().max().item():.4f}")
