"""Quick start: GAQAT in an Accelerate training loop, with gradient accumulation.

Runs as one CPU process with ``python docs/examples/quickstart_accelerate.py``
and as two DDP processes (gloo) with
``accelerate launch --multi_gpu --num_processes 2 docs/examples/quickstart_accelerate.py``.
"""

import timm
import torch
from accelerate import Accelerator
from torch.nn.functional import cross_entropy
from torch.utils.data import DataLoader, TensorDataset

from gaqat_wrap import FirstPassDone, GAQATOptimizer, calibrate, param_groups, quantize_model

ACCUMULATION = 2   # micro-batches per optimizer step

accelerator = Accelerator(cpu=True, gradient_accumulation_steps=ACCUMULATION)
torch.manual_seed(0)   # same initial model on every process

model = quantize_model(timm.create_model("test_resnet", pretrained=False, num_classes=4), bits=4)

# Stand-in data: noisy 32x32 images whose class (0-3) is a brighter image quadrant.
labels = torch.arange(64) % 4
images = torch.randn(64, 3, 32, 32)
for i, label in enumerate(labels.tolist()):
    images[i, :, 16 * (label // 2):16 * (label // 2) + 16, 16 * (label % 2):16 * (label % 2) + 16] += 1.5
loader = DataLoader(TensorDataset(images, labels), batch_size=8, shuffle=True)

# Calibrate after creating the Accelerator: under DDP the statistics are all-reduced,
# so every process starts with the same step sizes.
calibrate(model, [images[:16]])

optimizer = GAQATOptimizer(torch.optim.AdamW(param_groups(model, weight_decay=0.05, scale_lr=1e-4), lr=1e-3),
                           model=model, sam_rho=0.05, freeze_threshold=0.5, window=4)
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

model.train()
for epoch in range(2):
    micro_batches = []
    for x, y in loader:
        micro_batches.append((x, y))
        with accelerator.accumulate(model):
            # First pass: Accelerate accumulates g0 over the micro-batches of the step.
            accelerator.backward(cross_entropy(model(x), y))

            def replay(batches=tuple(micro_batches)):
                # Second pass, at θ + ε: every micro-batch of this step again.
                total = 0.0
                for bx, by in batches:
                    loss = cross_entropy(model(bx), by)
                    accelerator.backward(loss)
                    total += loss.detach()
                return total / len(batches)

            # Accelerate skips step() and zero_grad() until the last micro-batch of the step;
            # FirstPassDone says the accumulated gradients are g0: replay runs once, for g1.
            optimizer.step(FirstPassDone(replay))
            optimizer.zero_grad()
        if accelerator.sync_gradients:
            micro_batches = []
    gaqat = optimizer.optimizer   # the GAQATOptimizer inside Accelerate's wrapper
    report = gaqat.freeze_report()
    accelerator.print(f"epoch {epoch}: {gaqat.steps} GAQAT steps, "
                      f"{sum(s.frozen for s in report)} of {len(report)} step sizes frozen")

with torch.no_grad():
    model.eval()
    correct = sum((model(x).argmax(1) == y).sum() for x, y in loader)
    correct = accelerator.reduce(torch.as_tensor(correct), reduction="sum")
accelerator.print(f"train accuracy {correct.item() / len(images):.2f} on {accelerator.num_processes} process(es)")
