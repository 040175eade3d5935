"""Bad input gets an error that says what was wrong and what to do instead."""

from __future__ import annotations

import pytest
import torch

from gaqat_wrap.optim import GAQATConfig, GAQATOptimizer

# Most optimizers here have no step sizes to watch: the warning about that is not what these tests check.
pytestmark = pytest.mark.filterwarnings("ignore:GAQATOptimizer was not told")


def sgd():
    return torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)


def test_base_must_be_an_optimizer_instance():
    with pytest.raises(TypeError, match=r"torch.optim.Optimizer instance, got type"):
        GAQATOptimizer(torch.optim.SGD, sam_rho=0.05)
    with pytest.raises(TypeError, match="already a GAQATOptimizer"):
        GAQATOptimizer(GAQATOptimizer(sgd()))


@pytest.mark.parametrize("rho", [-0.1, float("nan"), float("inf"), "0.05"])
def test_rho_must_be_a_finite_non_negative_number(rho):
    with pytest.raises(ValueError, match="sam_rho must be a finite number >= 0"):
        GAQATOptimizer(sgd(), sam_rho=rho)


@pytest.mark.parametrize("rho", [-1.0, float("nan"), float("inf"), "0.1"])
def test_per_group_rho_is_checked_at_the_step_before_anything_changes(rho):
    w = torch.nn.Parameter(torch.ones(2))
    opt = GAQATOptimizer(torch.optim.SGD([{"params": [w], "sam_rho": rho}], lr=0.1))
    with pytest.raises(ValueError, match="'sam_rho' must be a finite number >= 0"):
        opt.step(lambda: (w ** 2).sum().backward())
    assert w.tolist() == [1.0, 1.0] and w.grad is None and opt.steps == 0


@pytest.mark.parametrize("threshold", [0.0, -0.5, 1.01, float("nan")])
def test_freeze_threshold_must_be_in_zero_one(threshold):
    with pytest.raises(ValueError, match=r"freeze_threshold must be in \(0, 1\].*None to never freeze"):
        GAQATOptimizer(sgd(), freeze_threshold=threshold)


@pytest.mark.parametrize("field", ["window", "reevaluate_every"])
@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_window_and_reevaluation_period_must_be_positive_integers(field, value):
    with pytest.raises(ValueError, match=f"{field} must be an integer >= 1"):
        GAQATOptimizer(sgd(), **{field: value})


@pytest.mark.parametrize(("field", "value"), [("metric", "dot"), ("freeze_mode", "weights"), ("variant", "asam")])
def test_choices_are_named_in_the_error(field, value):
    with pytest.raises(ValueError, match=f"{field} must be one of"):
        GAQATConfig(**{field: value})


def test_unknown_option_is_a_type_error():
    with pytest.raises(TypeError, match="rho"):
        GAQATOptimizer(sgd(), rho=0.1)


def test_config_and_keywords_are_exclusive():
    with pytest.raises(TypeError, match="either config"):
        GAQATOptimizer(sgd(), sam_rho=0.1, config=GAQATConfig())
    assert GAQATOptimizer(sgd(), config=GAQATConfig(window=3)).config.window == 3


def test_step_without_closure_or_replay_says_how_to_call_it():
    with pytest.raises(RuntimeError, match=r"needs a closure.*set_replay"):
        GAQATOptimizer(sgd()).step()


def test_first_step_twice_without_second_step_is_an_error():
    w = torch.nn.Parameter(torch.ones(2))
    opt = GAQATOptimizer(torch.optim.SGD([w], lr=0.1))
    (w ** 2).sum().backward()
    opt.first_step()
    (w ** 2).sum().backward()
    with pytest.raises(RuntimeError, match="second_step"):
        opt.first_step()


def test_replay_must_be_callable():
    with pytest.raises(TypeError, match="callable"):
        GAQATOptimizer(sgd()).set_replay(3)


def test_loading_a_checkpoint_with_another_window_is_refused():
    w = torch.nn.Parameter(torch.ones(2))
    opt = GAQATOptimizer(torch.optim.SGD([w], lr=0.1), scales={"s.weight": w}, window=2)
    opt.step(lambda: (w ** 2).sum().backward())
    other = GAQATOptimizer(torch.optim.SGD([w], lr=0.1), scales={"s.weight": w}, window=3)
    with pytest.raises(ValueError, match=r"other options \(window: saved 2, here 3"):
        other.load_state_dict(opt.state_dict())
