"""Oscillation freezing and dampening of weights, with GAQATOptimizer, and BatchNorm re-estimation.

A tiny timm ResNet (built from its config, no download) is quantized to W4A4 and trained with
GAQATOptimizer around SGD. An OscillationFreezer watches the 4-bit weight integers after every
update, freezes the weights that keep flipping back and forth, and anneals a dampening loss that
the loop adds to the task loss. Before evaluation, the BatchNorm statistics are re-estimated on
training batches. The data are random tensors so the script runs anywhere in seconds.

Run: python docs/examples/oscillation_freezing.py
"""

import timm
import torch
from torch.utils.data import DataLoader, TensorDataset

from gaqat_wrap import GAQATOptimizer, OscillationFreezer, calibrate, param_groups, quantize_model, reestimate_batchnorm

torch.manual_seed(0)
model = quantize_model(timm.create_model("test_resnet", pretrained=False, num_classes=4), bits=4)

labels = torch.arange(96) % 4
images = torch.randn(96, 3, 32, 32)
for i, label in enumerate(labels.tolist()):   # the class is the brighter image quadrant
    images[i, :, 16 * (label // 2):16 * (label // 2) + 16, 16 * (label % 2):16 * (label % 2) + 16] += 1.5
loader = DataLoader(TensorDataset(images, labels), batch_size=16, shuffle=True)
calibrate(model, [x for x, _ in list(loader)[:2]])

epochs = 3
base = torch.optim.SGD(param_groups(model, weight_decay=5e-5, scale_lr=1e-3), lr=0.05, momentum=0.9)
optimizer = GAQATOptimizer(base, model=model, sam_rho=0.05, freeze_threshold=None)   # LSQ + SAM
# A schedule for an 18-step demo; for real runs keep the defaults (momentum 1e-3, threshold 0.1 -> 0.01).
freezer = OscillationFreezer(model, optimizer, total_steps=epochs * len(loader), momentum=0.05,
                             freeze_threshold=0.15, freeze_threshold_final=0.08, warm_start=0.25, dampening=0.1)

model.train()
for epoch in range(epochs):
    total = 0.0
    for x, y in loader:

        def closure(x=x, y=y):
            loss = torch.nn.functional.cross_entropy(model(x), y) + freezer.dampening_loss()
            loss.backward()
            return loss

        total += optimizer.step(closure).item()
    threshold = "none yet (warm start)" if freezer.threshold is None else f"{freezer.threshold:.3f}"
    print(f"epoch {epoch}  mean loss {total / len(loader):.3f}  freezing threshold {threshold}  "
          f"dampening weight {freezer.dampening_weight:.3f}")

for status in freezer.report():
    print(f"  {status.role:22s} {status.bits}-bit  {status.frozen:5d} of {status.weights:6d} frozen  "
          f"mean frequency {status.mean_frequency:.4f}  {status.note}")

used = reestimate_batchnorm(model, loader, num_batches=4)   # before evaluation: BN statistics of the final weights
model.eval()
with torch.no_grad():
    accuracy = (model(images).argmax(1) == labels).float().mean().item()
print(f"BatchNorm statistics re-estimated on {used} batches; training accuracy {accuracy:.2f}")
