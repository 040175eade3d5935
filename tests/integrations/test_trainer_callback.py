"""transformers.Trainer + GAQATCallback equals the hand-written GAQAT loop."""

from __future__ import annotations

import copy

import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments, ViTConfig, ViTForImageClassification

from gaqat_wrap import calibrate, quantize_model
from gaqat_wrap.integrations import GAQATCallback, GAQATTrainer
from gaqat_wrap.optim import GAQATOptimizer

BATCH, STEPS, LR = 4, 4, 0.05
GAQAT_OPTIONS = {"sam_rho": 0.05, "freeze_threshold": 0.5, "window": 2}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32, num_labels=3,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = quantize_model(ViTForImageClassification(config), bits=4)
    calibrate(model, [{"pixel_values": torch.randn(8, 3, 16, 16)}])
    return model


def _data(n: int) -> Dataset:
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(n, 3, 16, 16, generator=g)
    labels = torch.randint(0, 3, (n,), generator=g)
    return Dataset.from_dict({"pixel_values": pixels.numpy(), "labels": labels.numpy()}).with_format("torch")


def _args(tmp_path, grad_accum: int, max_grad_norm: float) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=BATCH,
                             gradient_accumulation_steps=grad_accum, max_steps=STEPS, learning_rate=LR,
                             lr_scheduler_type="constant", max_grad_norm=max_grad_norm, logging_steps=1,
                             train_sampling_strategy="sequential", report_to=[], save_strategy="no", use_cpu=True,
                             dataloader_num_workers=0, seed=0, disable_tqdm=True)


def _sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)


def _hand_loop(model, data, grad_accum: int, max_grad_norm: float) -> GAQATOptimizer:
    """The documented semantics: g0 and g1 both accumulate all micro-batches (loss / GA) and are clipped."""
    optimizer = GAQATOptimizer(_sgd(model), model=model, **GAQAT_OPTIONS)
    model.train()
    for step in range(STEPS):
        micro = [data[(step * grad_accum + i) * BATCH:(step * grad_accum + i + 1) * BATCH] for i in range(grad_accum)]

        def closure(micro=micro):
            total = 0.0
            for batch in micro:
                loss = model(**batch).loss / grad_accum
                loss.backward()
                total += loss.detach()
            if max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            return total

        optimizer.step(closure)
    return optimizer


@pytest.mark.parametrize(("grad_accum", "max_grad_norm"), [(1, 0.0), (2, 0.0), (2, 0.5)])
def test_trainer_callback_matches_hand_written_loop(tmp_path, grad_accum, max_grad_norm):
    data = _data(BATCH * grad_accum * STEPS)
    trained = _model()
    reference = copy.deepcopy(trained)
    callback = GAQATCallback(**GAQAT_OPTIONS)
    trainer = Trainer(model=trained, args=_args(tmp_path, grad_accum, max_grad_norm), train_dataset=data,
                      optimizers=(_sgd(trained), None), callbacks=[callback])
    trainer.train()
    hand = _hand_loop(reference, data, grad_accum, max_grad_norm)

    assert callback.optimizer is not None and callback.optimizer.steps == hand.steps == STEPS
    for (name, p_trainer), p_hand in zip(trained.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p_trainer, p_hand, rtol=0, atol=1e-6, msg=f"{name} differs")
    assert [s.frozen for s in callback.optimizer.freeze_report()] == [s.frozen for s in hand.freeze_report()]
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == STEPS and all("gaqat/frozen_scales" in entry for entry in logged)


def test_gaqat_trainer_subclass_runs_gaqat_steps(tmp_path):
    model = _model()
    before = copy.deepcopy(model.state_dict())
    trainer = GAQATTrainer(model=model, args=_args(tmp_path, 1, 0.0), train_dataset=_data(BATCH * STEPS),
                           gaqat=GAQAT_OPTIONS)
    trainer.train()
    assert isinstance(trainer.gaqat_callback.optimizer, GAQATOptimizer)
    assert trainer.gaqat_callback.optimizer.steps == STEPS
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_fp16_grad_scaler_is_refused_with_bf16_hint(tmp_path):
    from gaqat_wrap.integrations.trainer import _check_supported

    class FakeAccelerator:
        distributed_type = "NO"
        state = None
        scaler = object()

    class FakeTrainer:
        accelerator = FakeAccelerator()

    with pytest.raises(NotImplementedError, match="bf16"):
        _check_supported(FakeTrainer())
