"""An interrupted and resumed Trainer run equals the uninterrupted one bit for bit, GAQAT state included.

The model is a plain ``nn.Module`` with BatchNorm: transformers 5 saves a ``PreTrainedModel``'s checkpoint under
legacy key names (``vit.encoder.layer.0...``) that its own ``resume_from_checkpoint`` does not map back, so a
resumed ViT loses its encoder weights with or without gaqat-wrap (transformers warns about missing keys).
"""

from __future__ import annotations

import shutil

import pytest
import torch
from datasets import Dataset
from test_trainer_callback import BATCH, GAQAT_OPTIONS, LR, _sgd
from torch import nn
from transformers import Trainer, TrainingArguments

from gaqat_wrap import calibrate, quantize_model
from gaqat_wrap.integrations import GAQATCallback

STEPS, SAVE_AT = 8, 4


class SmallBNNet(nn.Module):
    """A BatchNorm CNN with the Hugging Face calling convention: ``model(pixel_values=..., labels=...)["loss"]``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        logits = self.body(pixel_values)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = quantize_model(SmallBNNet(), bits=4)
    calibrate(model, [{"pixel_values": torch.randn(8, 3, 8, 8)}])
    return model


def _data(n: int) -> Dataset:
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(n, 3, 8, 8, generator=g)
    labels = torch.randint(0, 3, (n,), generator=g)
    return Dataset.from_dict({"pixel_values": pixels.numpy(), "labels": labels.numpy()}).with_format("torch")


def _args(output_dir, grad_accum: int) -> TrainingArguments:
    return TrainingArguments(output_dir=str(output_dir), per_device_train_batch_size=BATCH,
                             gradient_accumulation_steps=grad_accum, max_steps=STEPS, learning_rate=LR,
                             lr_scheduler_type="constant", logging_steps=1, train_sampling_strategy="sequential",
                             report_to=[], save_strategy="steps", save_steps=SAVE_AT, use_cpu=True,
                             dataloader_num_workers=0, seed=0, disable_tqdm=True)


def _train(output_dir, data, grad_accum: int, resume_from: str | None = None):
    model = _model()
    callback = GAQATCallback(**GAQAT_OPTIONS)
    trainer = Trainer(model=model, args=_args(output_dir, grad_accum), train_dataset=data,
                      optimizers=(_sgd(model), None), callbacks=[callback])
    trainer.train(resume_from_checkpoint=resume_from)
    return model, callback.optimizer


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_resumed_trainer_run_equals_the_uninterrupted_run(tmp_path, grad_accum):
    data = _data(BATCH * grad_accum * STEPS)
    full_model, full = _train(tmp_path / "full", data, grad_accum)
    # The "interrupted" run: only its step-4 checkpoint survives; a fresh process resumes from it.
    shutil.copytree(tmp_path / "full" / f"checkpoint-{SAVE_AT}", tmp_path / "resumed" / f"checkpoint-{SAVE_AT}")
    saved = torch.load(tmp_path / "resumed" / f"checkpoint-{SAVE_AT}" / "optimizer.pt", weights_only=True)
    assert saved["gaqat"]["steps"] == SAVE_AT and saved["gaqat"]["tracker"]["roles"]
    resumed_model, resumed = _train(tmp_path / "resumed", data, grad_accum,
                                    resume_from=str(tmp_path / "resumed" / f"checkpoint-{SAVE_AT}"))

    assert resumed.steps == full.steps == STEPS
    assert resumed.freeze_report() == full.freeze_report()
    assert any(s.frozen_steps for s in full.freeze_report())   # freezing was exercised across the resume
    for (name, a), b in zip(full_model.state_dict().items(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
