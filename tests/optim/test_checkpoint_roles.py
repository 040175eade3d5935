"""Checkpoints carry each step size's role and the options: a resume can neither misattach nor silently change them."""

from __future__ import annotations

import pytest
import torch
from optim_helpers import build, loss_closure, twin

from gaqat_wrap import param_groups
from gaqat_wrap.optim import GAQATOptimizer
from gaqat_wrap.quant import step_sizes


def trained(model, data, groups, **options):
    opt = GAQATOptimizer(torch.optim.SGD(groups, lr=0.05), model=model, sam_rho=0.5, window=2, **options)
    for x, y in data[:3]:
        opt.step(loss_closure(model, x, y))
    return opt


def test_param_groups_rebuilt_in_another_order_get_their_own_windows_back():
    """SGD without momentum has no per-parameter state: only the GAQAT state depends on the order."""
    model, data = build("mlp")
    fresh = twin(model)
    opt = trained(model, data, param_groups(model))
    saved_model, saved = {k: v.clone() for k, v in model.state_dict().items()}, opt.state_dict()
    for x, y in data[3:]:
        opt.step(loss_closure(model, x, y))

    fresh.load_state_dict(saved_model)
    groups = param_groups(fresh)
    scales = next(g for g in groups if g["group"] == "scales")
    scales["params"].reverse()                       # the same step sizes, in another order
    del scales["step_size_roles"]                    # (model= names them)
    resumed = GAQATOptimizer(torch.optim.SGD(groups, lr=0.05), model=fresh, sam_rho=0.5, window=2)
    resumed.load_state_dict(saved)
    assert [s.role for s in resumed.freeze_report()] == list(reversed(list(step_sizes(fresh))))
    for x, y in data[3:]:
        resumed.step(loss_closure(fresh, x, y))
    by_role = {s.role: s for s in opt.freeze_report()}
    assert {s.role: s for s in resumed.freeze_report()} == by_role
    assert any(s.conflicts for s in by_role.values())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True))


@pytest.mark.parametrize(("option", "value"), [("sam_rho", 0.1), ("variant", "sagm"), ("metric", "sign"),
                                               ("freeze_threshold", 0.7)])
def test_a_checkpoint_saved_with_other_options_is_refused_before_anything_changes(option, value):
    model, data = build("mlp")
    saved = trained(model, data, model.parameters()).state_dict()
    other_options = {"sam_rho": 0.5, "window": 2, option: value}
    other = GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=0.05), model=model, **other_options)
    other.step(loss_closure(model, *data[0]))
    with pytest.raises(ValueError, match=rf"other options \({option}: saved"):
        other.load_state_dict(saved)
    assert other.steps == 1


def test_a_checkpoint_of_other_step_sizes_is_refused():
    model, data = build("mlp")
    saved = trained(model, data, model.parameters()).state_dict()
    saved["gaqat"]["tracker"]["roles"] = [f"renamed.{r}" for r in saved["gaqat"]["tracker"]["roles"]]
    other = GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=0.05), model=model, sam_rho=0.5, window=2)
    with pytest.raises(ValueError, match="tracks step sizes this optimizer does not have"):
        other.load_state_dict(saved)


def test_roles_come_from_the_model_the_param_groups_or_an_explicit_mapping():
    model, _ = build("mlp")
    roles = list(step_sizes(model))
    by_model = GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model=model)
    by_groups = GAQATOptimizer(torch.optim.SGD(param_groups(model), lr=0.1))
    by_mapping = GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), scales=step_sizes(model))
    for opt in (by_model, by_groups, by_mapping):
        assert [s.role for s in opt.freeze_report()] == roles


def test_without_any_source_of_step_sizes_the_optimizer_says_freezing_is_off():
    model, _ = build("mlp")
    with pytest.warns(UserWarning, match="not told which parameters are quantizer step sizes"):
        opt = GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=0.1))
    assert opt.freeze_report() == []
