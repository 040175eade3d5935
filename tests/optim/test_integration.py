"""Shared param_groups and LR schedulers, Accelerate prepare/accumulate, GradScaler refusal, bf16 autocast."""

from __future__ import annotations

import pytest
import torch
from optim_helpers import build, loss_closure, make_base, max_param_diff, reference_step, twin

from gaqat_wrap.optim import FirstPassDone, GAQATOptimizer
from gaqat_wrap.quant import step_sizes


def test_param_groups_state_and_defaults_are_the_base_optimizers():
    model, data = build("mlp")
    base = torch.optim.AdamW([{"params": list(model.parameters()), "lr_scale": 0.5}], lr=1e-3)
    opt = GAQATOptimizer(base, model=model)
    assert opt.param_groups is base.param_groups and opt.defaults is base.defaults
    opt.step(loss_closure(model, *data[0]))
    assert opt.state is base.state and len(base.state) > 0
    assert opt.param_groups[0]["lr_scale"] == 0.5
    assert isinstance(opt, torch.optim.Optimizer)


def test_lr_scheduler_drives_the_wrapper():
    model, data = build("mlp")
    opt = GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=1.0), model=model)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for x, y in data[:2]:
        opt.step(loss_closure(model, x, y))
        scheduler.step()
    assert opt.param_groups[0]["lr"] == 0.25 == opt.base.param_groups[0]["lr"]


def test_params_added_later_are_tracked():
    model, data = build("mlp")
    scales = list(step_sizes(model).values())
    others = [p for p in model.parameters() if all(p is not s for s in scales)]
    opt = GAQATOptimizer(torch.optim.SGD(others, lr=0.1), model=model)
    opt.step(loss_closure(model, *data[0]))
    assert opt.freeze_report() == []
    opt.add_param_group({"params": scales})
    model.zero_grad(set_to_none=True)   # the step sizes kept the first step's gradients: that optimizer did not own them
    opt.step(loss_closure(model, *data[1]))
    assert [s.window_filled for s in opt.freeze_report()] == [1] * len(scales)


def test_first_pass_done_uses_the_gradients_present_as_g0():
    model, data = build("mlp")
    ref = twin(model)
    opt = GAQATOptimizer(make_base("sgd", model.parameters()), model=model, freeze_threshold=None)
    ref_base = make_base("sgd", ref.parameters())
    x, y = data[0]
    closure = loss_closure(model, x, y)
    closure()                                # the user's own first backward
    opt.step(FirstPassDone(closure))         # the closure runs only the second pass
    reference_step(ref, ref_base, x, y, rho=0.05)
    assert max_param_diff(model, ref) <= 1e-6


@pytest.mark.parametrize("variant", ["sam", "sagm"])
def test_a_closure_that_zeroes_gradients_itself_gives_the_same_step(variant):
    model, data = build("mlp")
    other = twin(model)
    opt = GAQATOptimizer(make_base("adamw", model.parameters()), model=model, variant=variant, window=1)
    opt2 = GAQATOptimizer(make_base("adamw", other.parameters()), model=other, variant=variant, window=1)
    for x, y in data:
        opt.step(loss_closure(model, x, y))
        closure = loss_closure(other, x, y)

        def zeroing_closure(closure=closure):
            opt2.zero_grad()
            return closure()
        opt2.step(zeroing_closure)
    assert max_param_diff(model, other) == 0.0


def test_fp16_grad_scaler_is_refused_with_a_message_naming_bf16():
    model, data = build("mlp")
    opt = GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model=model)
    scaler = torch.amp.GradScaler("cpu")
    closure = loss_closure(model, *data[0])
    scaler.scale(torch.nn.functional.cross_entropy(model(data[0][0]), data[0][1])).backward()
    with pytest.raises(RuntimeError, match="bf16"):
        scaler.step(opt, closure)


def test_bf16_autocast_steps_stay_finite():
    model, data = build("convnet")
    opt = GAQATOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-3), model=model, window=2)
    for x, y in data:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            opt.step(loss_closure(model, x, y))
    assert opt.skipped_steps == 0 and opt.steps == len(data)
    assert all(torch.isfinite(p).all() for p in model.parameters())


accelerate = pytest.importorskip("accelerate")


def accelerated(model, accumulation_steps=1):
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin

    plugin = GradientAccumulationPlugin(num_steps=accumulation_steps, sync_with_dataloader=False)
    accelerator = Accelerator(cpu=True, gradient_accumulation_plugin=plugin)
    opt = GAQATOptimizer(make_base("sgd", model.parameters()), model=model, freeze_threshold=None)
    model, opt = accelerator.prepare(model, opt)
    return accelerator, model, opt


def test_accelerate_prepare_forwards_step_closure():
    model, data = build("mlp")
    ref = twin(model)
    _, prepared, opt = accelerated(model)
    ref_base = make_base("sgd", ref.parameters())
    for x, y in data[:2]:
        opt.step(loss_closure(prepared, x, y))
        opt.zero_grad()
        reference_step(ref, ref_base, x, y, rho=0.05)
    assert max_param_diff(model, ref) <= 1e-6


def test_accelerate_accumulate_with_a_closure_replaying_all_micro_batches_is_exact_sam():
    """Documented semantics: g0 = the accumulated gradient; the closure replays every micro-batch of the step."""
    model, data = build("mlp")
    ref = twin(model)
    accelerator, prepared, opt = accelerated(model, accumulation_steps=2)
    ref_base = make_base("sgd", ref.parameters())
    micro = []
    for x, y in data:                                   # 4 micro-batches of 8 = 2 steps of 16
        micro.append((x, y))
        with accelerator.accumulate(prepared):
            loss = torch.nn.functional.cross_entropy(prepared(x), y)
            accelerator.backward(loss)

            def replay(batches=tuple(micro)):
                for bx, by in batches:
                    accelerator.backward(torch.nn.functional.cross_entropy(prepared(bx), by))

            opt.step(FirstPassDone(replay))              # skipped by Accelerate until the sync step
            opt.zero_grad()
        if accelerator.sync_gradients:
            micro = []
    assert opt.optimizer.steps == 2
    for i in (0, 2):
        x = torch.cat([data[i][0], data[i + 1][0]])
        y = torch.cat([data[i][1], data[i + 1][1]])
        reference_step(ref, ref_base, x, y, rho=0.05)
    assert max_param_diff(model, ref) <= 1e-5
