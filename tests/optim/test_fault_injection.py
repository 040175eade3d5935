"""Fault injection: a step that raises or meets a non-finite value leaves everything exactly as it was.

Each case runs one good step, then a faulty one (an exception or a NaN in the first or the second pass, on a model
with BatchNorm and quantizers), and checks bit-identical parameters, BatchNorm buffers, quantizer buffers and base
optimizer state, no gradients left behind, the step counters, and that the next step trains normally.
"""

from __future__ import annotations

import pytest
import torch
from optim_helpers import build, loss_closure, mlp

from gaqat_wrap.optim import GAQATOptimizer
from gaqat_wrap.second_pass import in_second_pass, second_pass


class Injected(Exception):
    """Stands in for an OOM or a failing data pipeline inside the closure."""


def snapshot(model: torch.nn.Module, opt: GAQATOptimizer) -> dict:
    return {
        "params": [p.detach().clone() for p in model.parameters()],
        "buffers": {name: b.clone() for name, b in model.named_buffers()},
        "base": {i: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
                 for i, s in opt.base.state_dict()["state"].items()},
        "steps": (opt.steps, opt.skipped_steps),
    }


def assert_unchanged(before: dict, model: torch.nn.Module, opt: GAQATOptimizer, skipped: int) -> None:
    after = snapshot(model, opt)
    assert all(torch.equal(a, b) for a, b in zip(before["params"], after["params"], strict=True))
    assert before["buffers"].keys() == after["buffers"].keys()
    for name, value in before["buffers"].items():
        assert torch.equal(value, after["buffers"][name]), name
    for i, state in before["base"].items():
        for k, v in state.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(after["base"][i][k])), (i, k)
    assert after["steps"] == (before["steps"][0], before["steps"][1] + skipped)
    assert all(p.grad is None for p in model.parameters())


def faulty_closure(model, x, y, fault: str, which: str):
    def run():
        is_target = in_second_pass() == (which == "second")
        if fault == "raise" and is_target:
            model(x)                           # the forward ran (BN statistics moved) before the failure
            raise Injected(f"injected in the {which} pass")
        if fault == "interrupt" and is_target:
            model(x)
            raise KeyboardInterrupt
        inputs = x * float("nan") if fault == "nan-input" and is_target else x
        loss = torch.nn.functional.cross_entropy(model(inputs), y)
        loss.backward()
        return loss
    return run


def trained_convnet():
    model, data = build("convnet")
    opt = GAQATOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-2), model=model, sam_rho=0.5, window=2)
    opt.step(loss_closure(model, *data[0]))   # base state exists, BN statistics moved once
    return model, data, opt


@pytest.mark.parametrize("which", ["first", "second"])
@pytest.mark.parametrize("fault", ["raise", "interrupt"])
def test_an_exception_inside_the_step_restores_everything_and_the_optimizer_stays_usable(fault, which):
    model, data, opt = trained_convnet()
    before = snapshot(model, opt)
    expected = Injected if fault == "raise" else KeyboardInterrupt
    with pytest.raises(expected):
        opt.step(faulty_closure(model, *data[1], fault, which))
    assert_unchanged(before, model, opt, skipped=0)
    opt.step(loss_closure(model, *data[2]))   # no "first_step() was called twice"
    assert opt.steps == 2


@pytest.mark.parametrize("which", ["first", "second"])
def test_a_nan_input_skips_the_step_and_leaves_batchnorm_statistics_untouched(which):
    model, data, opt = trained_convnet()
    before = snapshot(model, opt)
    with pytest.warns(RuntimeWarning, match=f"in the {which} pass .*BatchNorm / quantizer buffers unchanged"):
        opt.step(faulty_closure(model, *data[1], "nan-input", which))
    assert_unchanged(before, model, opt, skipped=1)
    opt.step(loss_closure(model, *data[2]))
    assert opt.steps == 2 and all(torch.isfinite(b).all() for b in model.buffers() if b.is_floating_point())


def test_a_failure_in_the_first_forward_also_undoes_lazy_step_size_initialisation():
    model, data = mlp(), build("mlp")[1]   # mlp() is not calibrated: input step sizes initialise at the first forward
    opt = GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model=model)
    quantizer = model[2].input_quantizer
    assert not quantizer.is_initialized
    with pytest.raises(Injected):
        opt.step(faulty_closure(model, *data[0], "raise", "first"))
    assert not quantizer.is_initialized and not bool(quantizer.initialized)
    opt.step(loss_closure(model, *data[0]))
    assert quantizer.is_initialized and opt.steps == 1


def test_a_refused_grad_scaler_step_does_not_poison_later_plain_steps():
    model, data = build("mlp")
    opt = GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model=model)
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(torch.nn.functional.cross_entropy(model(data[0][0]), data[0][1])).backward()
    with pytest.raises(RuntimeError, match="bf16"):
        scaler.step(opt, loss_closure(model, *data[0]))
    assert not hasattr(opt, "grad_scale") and not hasattr(opt, "found_inf")
    opt.zero_grad()
    opt.step(loss_closure(model, *data[1]))
    assert opt.steps == 1


def test_the_hand_written_api_can_drop_a_step_whose_second_pass_failed():
    model, data = build("mlp")
    before = [p.detach().clone() for p in model.parameters()]
    opt = GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model=model, sam_rho=0.5)
    loss_closure(model, *data[0])()
    opt.first_step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))   # at θ + ε
    with pytest.raises(RuntimeError, match="abandon_step"):
        opt.first_step()
    opt.abandon_step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    loss_closure(model, *data[0])()
    opt.first_step()
    with second_pass():
        loss_closure(model, *data[0])()
    assert opt.second_step() and opt.steps == 1
