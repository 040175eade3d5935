"""With freezing off, GAQATOptimizer is exactly SAM / ASAM / SAGM from their equations; rho=0 is the bare base."""

from __future__ import annotations

import pytest
import torch
from optim_helpers import build, loss_closure, make_base, max_param_diff, reference_step, twin

from gaqat_wrap.optim import GAQATOptimizer

STEPS = 3


@pytest.mark.parametrize("base_kind", ["sgd", "adamw"])
@pytest.mark.parametrize("model_name", ["mlp", "convnet", "timm_test_vit"])
def test_sam_step_equals_reference_sam(model_name, base_kind):
    model, data = build(model_name)
    ref = twin(model)
    opt = GAQATOptimizer(make_base(base_kind, model.parameters()), model=model, sam_rho=0.05, freeze_threshold=None)
    ref_base = make_base(base_kind, ref.parameters())
    initial = twin(model)
    for x, y in data[:STEPS]:
        opt.step(loss_closure(model, x, y))
        reference_step(ref, ref_base, x, y, rho=0.05)
    assert max_param_diff(model, ref) <= 1e-6
    assert max_param_diff(model, initial) > 1e-4   # it did train


@pytest.mark.parametrize("base_kind", ["sgd", "adamw"])
def test_asam_step_equals_reference_asam(base_kind):
    model, data = build("convnet")
    ref = twin(model)
    opt = GAQATOptimizer(make_base(base_kind, model.parameters()), model=model, sam_rho=0.5, freeze_threshold=None,
                         adaptive=True, eta=0.01)
    ref_base = make_base(base_kind, ref.parameters())
    for x, y in data[:STEPS]:
        opt.step(loss_closure(model, x, y))
        reference_step(ref, ref_base, x, y, rho=0.5, adaptive=True, eta=0.01)
    assert max_param_diff(model, ref) <= 1e-6


@pytest.mark.parametrize("base_kind", ["sgd", "adamw"])
def test_sagm_step_equals_reference_sagm(base_kind):
    model, data = build("mlp")
    ref = twin(model)
    opt = GAQATOptimizer(make_base(base_kind, model.parameters()), model=model, sam_rho=0.05, freeze_threshold=None,
                         variant="sagm", sagm_alpha=0.01)
    ref_base = make_base(base_kind, ref.parameters())
    for x, y in data[:STEPS]:
        opt.step(loss_closure(model, x, y))
        reference_step(ref, ref_base, x, y, rho=0.05, variant="sagm", alpha=0.01)
    assert max_param_diff(model, ref) <= 1e-6


def test_sagm_differs_from_sam():
    model, data = build("mlp")
    sam_model = twin(model)
    sagm = GAQATOptimizer(make_base("sgd", model.parameters()), model=model, freeze_threshold=None, variant="sagm")
    sam = GAQATOptimizer(make_base("sgd", sam_model.parameters()), model=sam_model, freeze_threshold=None)
    x, y = data[0]
    sagm.step(loss_closure(model, x, y))
    sam.step(loss_closure(sam_model, x, y))
    assert max_param_diff(model, sam_model) > 1e-4


@pytest.mark.parametrize("base_kind", ["sgd", "adamw"])
def test_rho_zero_equals_bare_base_optimizer(base_kind):
    model, data = build("convnet")
    ref = twin(model)
    opt = GAQATOptimizer(make_base(base_kind, model.parameters()), model=model, sam_rho=0.0)   # freezing on: no conflict at rho=0
    ref_opt = make_base(base_kind, ref.parameters())
    for x, y in data[:STEPS]:
        opt.step(loss_closure(model, x, y))
        ref_opt.zero_grad()
        loss_closure(ref, x, y)()
        ref_opt.step()
    assert max_param_diff(model, ref) <= 1e-6
    assert not any(s.frozen for s in opt.freeze_report())


def test_per_group_rho_overrides_sam_rho():
    model, data = build("mlp")
    ref = twin(model)
    params = list(model.parameters())
    opt = GAQATOptimizer(torch.optim.SGD([{"params": params, "sam_rho": 0.0}], lr=0.05), sam_rho=0.5,
                         freeze_threshold=None)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.05)
    x, y = data[0]
    opt.step(loss_closure(model, x, y))
    loss_closure(ref, x, y)()
    ref_opt.step()
    assert max_param_diff(model, ref) <= 1e-6


def test_hand_written_first_and_second_step_equal_step_closure():
    from gaqat_wrap import second_pass

    model, data = build("mlp")
    other = twin(model)
    opt = GAQATOptimizer(make_base("adamw", model.parameters()), model=model, window=2)
    opt2 = GAQATOptimizer(make_base("adamw", other.parameters()), model=other, window=2)
    for x, y in data:
        opt.step(loss_closure(model, x, y))
        loss_closure(other, x, y)()
        opt2.first_step()
        with second_pass():
            loss_closure(other, x, y)()
        assert opt2.second_step()
    assert max_param_diff(model, other) == 0.0
    assert [s.disorder for s in opt.freeze_report()] == [s.disorder for s in opt2.freeze_report()]


class Davda54StyleSAM:
    """SAM computed in exactly the order of the widely used davda54/sam ``first_step`` / ``second_step``.

    ‖g‖ is ``torch.norm`` of the stacked per-parameter ``grad.norm(p=2)``; each parameter moves by
    ``grad * (rho / (‖g‖ + 1e-12))``; the old values are put back by assignment; then the base steps.
    Every parameter with a gradient is perturbed (so GAQAT is compared with ``perturb_scales=True``).
    """

    def __init__(self, base: torch.optim.Optimizer, rho: float) -> None:
        self.base, self.rho, self.saved = base, rho, {}

    def params(self):
        return [p for group in self.base.param_groups for p in group["params"] if p.grad is not None]

    @torch.no_grad()
    def first_step(self) -> None:
        norm = torch.norm(torch.stack([(1.0 * p.grad).norm(p=2) for p in self.params()]), p=2)
        scale = self.rho / (norm + 1e-12)
        for p in self.params():
            self.saved[p] = p.data.clone()
            p.add_(1.0 * p.grad * scale.to(p))
        self.base.zero_grad()

    @torch.no_grad()
    def second_step(self) -> None:
        for p in self.params():
            p.data = self.saved[p]
        self.base.step()
        self.base.zero_grad()


@pytest.mark.parametrize("base_kind", ["sgd", "adamw"])
@pytest.mark.parametrize("model_name", ["mlp", "convnet"])
def test_sam_step_equals_davda54_sam_bit_for_bit(model_name, base_kind):
    from gaqat_wrap import second_pass

    model, data = build(model_name)
    ref = twin(model)
    opt = GAQATOptimizer(make_base(base_kind, model.parameters()), model=model, sam_rho=0.05, freeze_threshold=None,
                         perturb_scales=True)
    sam = Davda54StyleSAM(make_base(base_kind, ref.parameters()), rho=0.05)
    for x, y in data:
        opt.step(loss_closure(model, x, y))
        loss_closure(ref, x, y)()
        sam.first_step()
        with second_pass():
            loss_closure(ref, x, y)()
        sam.second_step()
    assert max_param_diff(model, ref) == 0.0
