"""The step contract: step(closure) runs both passes; FirstPassDone / a replay run the second; silent no-ops are errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from optim_helpers import build, loss_closure, make_base, max_param_diff, reference_step, twin

from gaqat_wrap.optim import FirstPassDone, GAQATOptimizer
from gaqat_wrap.second_pass import in_second_pass


def sgd_gaqat(model, **options):
    return GAQATOptimizer(make_base("sgd", model.parameters()), model=model, **options)


def test_zero_filled_gradients_are_refused_not_taken_as_the_first_pass():
    model, data = build("mlp")
    opt = sgd_gaqat(model)
    loss_closure(model, *data[0])()
    model.zero_grad(set_to_none=False)      # e.g. after a full-precision warm-up
    before = [p.detach().clone() for p in model.parameters()]
    calls = []
    closure = loss_closure(model, *data[1])
    with pytest.raises(RuntimeError, match=r"gradients are already present \(zero-filled"):
        opt.step(lambda: calls.append(1) or closure())
    assert calls == [] and opt.steps == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    opt.zero_grad()
    opt.step(closure)
    assert opt.steps == 1


def test_step_closure_always_runs_both_passes_and_equals_reference_sam():
    model, data = build("mlp")
    ref = twin(model)
    opt = sgd_gaqat(model, freeze_threshold=None)
    ref_base = make_base("sgd", ref.parameters())
    passes = []
    for x, y in data[:2]:
        closure = loss_closure(model, x, y)
        opt.step(lambda closure=closure: passes.append(in_second_pass()) or closure())
        reference_step(ref, ref_base, x, y, rho=0.05)
    assert passes == [False, True, False, True]
    assert max_param_diff(model, ref) <= 1e-6


def test_first_pass_done_without_gradients_is_an_error():
    model, data = build("mlp")
    opt = sgd_gaqat(model)
    with pytest.raises(RuntimeError, match="no parameter has a gradient"):
        opt.step(FirstPassDone(loss_closure(model, *data[0])))
    opt.set_replay(loss_closure(model, *data[0]))
    with pytest.raises(RuntimeError, match="no parameter has a gradient"):
        opt.step()


def test_a_closure_that_never_calls_backward_is_an_error_not_a_completed_step():
    model, data = build("convnet")
    opt = sgd_gaqat(model)
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    with pytest.raises(RuntimeError, match="computed no gradient in the first pass"):
        opt.step(lambda: torch.nn.functional.cross_entropy(model(data[0][0]), data[0][1]))
    assert opt.steps == 0
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())   # BN statistics restored


def test_a_second_pass_without_backward_is_an_error_not_a_wall_of_conflicts():
    model, data = build("mlp")
    before = [p.detach().clone() for p in model.parameters()]
    opt = sgd_gaqat(model, window=1)
    x, y = data[0]

    def first_pass_only():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        if not in_second_pass():
            loss.backward()
        return loss
    with pytest.raises(RuntimeError, match="no parameter has a gradient after the second pass"):
        opt.step(first_pass_only)
    assert opt.steps == 0 and all(s.conflicts == 0 for s in opt.freeze_report())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_a_step_size_without_a_second_pass_gradient_is_not_measured():
    torch.manual_seed(0)
    channel, weight = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    opt = GAQATOptimizer(torch.optim.SGD([channel, weight], lr=0.1), scales={"layer.weight": channel}, window=1)

    def closure():
        loss = (weight ** 2).sum() + (0 if in_second_pass() else (channel ** 2).sum())
        loss.backward()
        return loss
    opt.step(closure)
    status = opt.freeze_report()[0]
    assert (status.conflicts, status.window_filled, status.frozen) == (0, 0, False)


def test_second_step_without_first_step_is_an_error():
    model, _ = build("mlp")
    with pytest.raises(RuntimeError, match="without first_step"):
        sgd_gaqat(model).second_step()


@pytest.mark.parametrize("returned", ["0.5", [1.0], torch.ones(2)])
def test_a_closure_returning_something_other_than_a_loss_fails_with_nothing_changed(returned):
    model, data = build("convnet")
    opt = sgd_gaqat(model)
    params = [p.detach().clone() for p in model.parameters()]
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    closure = loss_closure(model, *data[0])
    with pytest.raises(TypeError, match="the closure must return the loss"):
        opt.step(lambda: closure() and returned)
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters(), strict=True))
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())
    assert all(p.grad is None for p in model.parameters())


def test_warnings_point_at_the_callers_line():
    model, data = build("mlp")
    opt = sgd_gaqat(model)
    x, y = data[0]

    def nan_closure():
        loss = torch.nn.functional.cross_entropy(model(x), y) * float("nan")
        loss.backward()
        return loss
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.step(nan_closure)
    skipped = [w for w in caught if "skipped a step" in str(w.message)]
    assert skipped and skipped[0].filename == __file__


@pytest.mark.parametrize("variant", ["sam", "sagm"])
@pytest.mark.parametrize("adaptive", [False, True])
def test_rho_zero_is_the_bare_base_optimizer_for_every_variant(variant, adaptive):
    model, data = build("convnet")
    bare = twin(model)
    opt = GAQATOptimizer(make_base("adamw", model.parameters()), model=model, sam_rho=0.0, variant=variant,
                         adaptive=adaptive)
    base = make_base("adamw", bare.parameters())
    passes = []
    for x, y in data:
        closure = loss_closure(model, x, y)
        opt.step(lambda closure=closure: passes.append(1) or closure())
        base.zero_grad()
        loss_closure(bare, x, y)()
        base.step()
    assert max_param_diff(model, bare) == 0.0
    assert len(passes) == len(data)       # one pass per step
    assert opt.steps == len(data)


def test_launched_processes_without_a_process_group_are_refused(monkeypatch):
    model, data = build("mlp")
    opt = sgd_gaqat(model)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match=r"Accelerator with cpu=True"):
        opt.step(loss_closure(model, *data[0]))
    assert opt.steps == 0 and all(p.grad is None for p in model.parameters())
