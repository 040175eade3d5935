"""Resume from state_dict is bit-identical; non-finite passes skip the step without touching anything."""

from __future__ import annotations

import io

import pytest
import torch
from optim_helpers import build, loss_closure, twin

from gaqat_wrap.optim import GAQATOptimizer


def adamw_gaqat(model):
    base = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    return GAQATOptimizer(base, model=model, sam_rho=0.5, window=2, freeze_threshold=0.5)


def test_save_at_k_load_into_fresh_model_and_optimizer_continues_bit_identically():
    model, data = build("convnet")
    fresh = twin(model)
    opt = adamw_gaqat(model)
    k = 3
    steps = [data[i % len(data)] for i in range(2 * k)]
    for x, y in steps[:k]:
        opt.step(loss_closure(model, x, y))
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optim": opt.state_dict()}, buffer)
    for x, y in steps[k:]:
        opt.step(loss_closure(model, x, y))

    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    fresh.load_state_dict(checkpoint["model"])
    resumed = adamw_gaqat(fresh)
    resumed.load_state_dict(checkpoint["optim"])
    assert resumed.steps == k
    for x, y in steps[k:]:
        resumed.step(loss_closure(fresh, x, y))

    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert resumed.freeze_report() == opt.freeze_report()
    assert any(s.frozen_steps for s in opt.freeze_report())   # the freeze state was exercised
    assert resumed.state_dict()["gaqat"]["tracker"]["steps"] == 2 * k


def test_a_plain_base_state_dict_loads_with_fresh_gaqat_state():
    model, data = build("mlp")
    opt = adamw_gaqat(model)
    opt.step(loss_closure(model, *data[0]))
    opt.load_state_dict(opt.base.state_dict())
    assert opt.steps == 0 and opt.skipped_steps == 0


def poisoned_closure(model, x, y, which: str):
    """The loss (and so every gradient) is NaN in the chosen pass only."""
    from gaqat_wrap.second_pass import in_second_pass

    def run():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        if in_second_pass() == (which == "second"):
            loss = loss * float("nan")
        loss.backward()
        return loss
    return run


@pytest.mark.parametrize("which", ["first", "second"])
def test_non_finite_pass_skips_the_step_bit_exactly_and_training_continues(which):
    model, data = build("convnet")
    opt = adamw_gaqat(model)
    opt.step(loss_closure(model, *data[0]))
    params = [p.detach().clone() for p in model.parameters()]
    base_state = {k: v.clone() for k, v in opt.base.state_dict()["state"][0].items()}
    tracker_steps = opt.steps
    with pytest.warns(RuntimeWarning, match=f"non-finite loss or gradient in the {which} pass"):
        opt.step(poisoned_closure(model, *data[1], which))
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters(), strict=True))
    assert all(torch.equal(v, opt.base.state_dict()["state"][0][k]) for k, v in base_state.items())
    assert opt.skipped_steps == 1 and opt.steps == tracker_steps
    assert all(p.grad is None for p in model.parameters())
    opt.step(loss_closure(model, *data[2]))
    assert opt.steps == tracker_steps + 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(params, model.parameters(), strict=True))


def test_inf_gradient_on_one_parameter_is_caught():
    model, data = build("mlp")
    opt = adamw_gaqat(model)
    params = [p.detach().clone() for p in model.parameters()]
    closure = loss_closure(model, *data[0])

    def closure_with_inf():
        loss = closure()
        next(model.parameters()).grad[0, 0] = float("inf")
        return loss
    with pytest.warns(RuntimeWarning):
        opt.step(closure_with_inf)
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters(), strict=True))
    assert opt.skipped_steps == 1


def test_zero_gradient_gives_no_perturbation_and_no_nan():
    w = torch.nn.Parameter(torch.ones(3))
    opt = GAQATOptimizer(torch.optim.SGD([w], lr=0.1), sam_rho=0.5, freeze_threshold=None)
    (w * 0).sum().backward()
    opt.first_step()
    assert torch.equal(w, torch.ones(3))
    (w * 0).sum().backward()
    assert opt.second_step()
    assert torch.equal(w, torch.ones(3)) and opt.skipped_steps == 0
