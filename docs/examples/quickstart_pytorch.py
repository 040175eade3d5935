"""Quick start: GAQAT in a plain PyTorch training loop.

A small timm ResNet (built from its config, no download) is quantized to
W4A4, its input step sizes are calibrated, and it is trained with
GAQATOptimizer wrapped around AdamW. The data are random tensors so the
script runs anywhere in seconds; swap in your own DataLoader.

Run: python docs/examples/quickstart_pytorch.py
"""

import timm
import torch
from torch.utils.data import DataLoader, TensorDataset

from gaqat_wrap import GAQATOptimizer, calibrate, format_report, param_groups, quantize_model

torch.manual_seed(0)

# 1. Any timm model; "test_resnet" is a tiny ResNet (try "resnet18" or "vit_small_patch16_224").
model = timm.create_model("test_resnet", pretrained=False, num_classes=4)

# 2. Fake-quantize every Linear/Conv to 4-bit weights and inputs (stem and classifier stay FP).
model = quantize_model(model, bits=4)

# Stand-in data: 64 noisy 32x32 images whose class (0-3) is a brighter image quadrant.
labels = torch.arange(64) % 4
images = torch.randn(64, 3, 32, 32)
for i, label in enumerate(labels.tolist()):
    images[i, :, 16 * (label // 2):16 * (label // 2) + 16, 16 * (label % 2):16 * (label % 2) + 16] += 1.5
loader = DataLoader(TensorDataset(images, labels), batch_size=16, shuffle=True)

# 3. Input step sizes from a few batches (without this they initialise at the first forward).
calibrate(model, [x for x, _ in list(loader)[:2]])
print(format_report(model).splitlines()[-1])

# 4. Step sizes get no weight decay and their own learning rate; GAQAT wraps the base optimizer.
base = torch.optim.AdamW(param_groups(model, weight_decay=0.05, scale_lr=1e-4), lr=1e-3)
optimizer = GAQATOptimizer(base, model=model, sam_rho=0.05, freeze_threshold=0.5, window=4)

model.train()
for epoch in range(3):
    total = 0.0
    for x, y in loader:

        def closure(x=x, y=y):
            # forward + backward; GAQAT calls it twice per step (at θ and at θ + ε)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        loss = optimizer.step(closure)   # no zero_grad needed: the optimizer clears gradients after the step
        total += loss.item()
    print(f"epoch {epoch}  mean loss {total / len(loader):.3f}")

# 5. Per step size: disorder = fraction of conflicting steps in the window; frozen = left out of the update.
report = optimizer.freeze_report()
frozen = sum(s.frozen for s in report)
print(f"{optimizer.steps} GAQAT steps; {frozen} of {len(report)} step sizes frozen after the last decision")
for status in report[:4]:
    print(f"  {status.role:28s} disorder {status.disorder:.2f}  frozen {status.frozen}  frozen for {status.frozen_steps} steps")
