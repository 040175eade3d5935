"""Quick start: GAQAT under ``transformers.Trainer`` with one callback.

A tiny Hugging Face ViT (built from a config, no download) is quantized to
W4A4 and trained by an unchanged ``Trainer``; ``GAQATCallback`` turns its
optimizer steps into GAQAT steps and logs the freeze statistics.

Run: python docs/examples/quickstart_trainer.py
"""

import tempfile

import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments, ViTConfig, ViTForImageClassification

from gaqat_wrap import calibrate, quantize_model
from gaqat_wrap.integrations import GAQATCallback, GAQATTrainer

torch.manual_seed(0)
config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=64, num_labels=4)
model = quantize_model(ViTForImageClassification(config), bits=4)

# Stand-in data: noisy 32x32 images whose class (0-3) is a brighter image quadrant.
labels = torch.arange(64) % 4
images = torch.randn(64, 3, 32, 32)
for i, label in enumerate(labels.tolist()):
    images[i, :, 16 * (label // 2):16 * (label // 2) + 16, 16 * (label % 2):16 * (label % 2) + 16] += 1.5
train_dataset = Dataset.from_dict({"pixel_values": images.numpy(), "labels": labels.numpy()}).with_format("torch")

calibrate(model, [{"pixel_values": images[:16]}])   # batches are passed as model(**batch)

with tempfile.TemporaryDirectory() as output_dir:
    args = TrainingArguments(output_dir=output_dir, per_device_train_batch_size=8, gradient_accumulation_steps=2,
                             max_steps=4, learning_rate=5e-3, logging_steps=2, report_to=[], save_strategy="no",
                             use_cpu=True, disable_tqdm=True)
    callback = GAQATCallback(sam_rho=0.05, freeze_threshold=0.5, window=4)
    trainer = Trainer(model=model, args=args, train_dataset=train_dataset, callbacks=[callback])
    trainer.train()

    # The callback added its statistics to every logged step.
    for entry in trainer.state.log_history:
        if "loss" in entry:
            print(f"step {entry['step']}: loss {entry['loss']:.3f}, "
                  f"{entry['gaqat/frozen_scales']:.0f} step sizes frozen, mean disorder {entry['gaqat/mean_disorder']:.2f}")
    print(f"GAQAT steps: {callback.optimizer.steps}")

    # Fallback without a callback list: a Trainer subclass that builds the same callback.
    args.max_steps = 2
    trainer = GAQATTrainer(model=model, args=args, train_dataset=train_dataset,
                           gaqat={"sam_rho": 0.05, "freeze_threshold": 0.5, "window": 4})
    trainer.train()
    print(f"GAQATTrainer ran {trainer.gaqat_callback.optimizer.steps} GAQAT steps")
