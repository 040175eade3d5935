"""The command line as a new user meets it: generated flags, real help, the core's choices, image-folder options."""

from __future__ import annotations

import argparse
import typing
from dataclasses import dataclass, fields

import pytest

from gaqat_recipes import TrainConfig, load_splits
from gaqat_recipes import cli as cli_module
from gaqat_recipes.cli import add_train_arguments, attribute_help, config_from_args
from gaqat_wrap import GAQATConfig
from gaqat_wrap.optim.config import FREEZE_MODES, METRICS, VARIANTS


def _parser(**options) -> argparse.ArgumentParser:
    return add_train_arguments(argparse.ArgumentParser(), **options)


def _config(*flags: str) -> TrainConfig:
    return config_from_args(_parser(require_test_domain=False).parse_args(list(flags)))


def test_every_flag_has_a_real_explanation_and_says_its_default():
    for action in _parser()._actions:
        if action.dest in ("help", "test_domain"):
            continue
        text = action.help or ""
        flag_words = set(action.option_strings[0].strip("-").split("-"))
        assert len(set(text.lower().replace(",", " ").split()) - flag_words) >= 4, (action.option_strings, text)
        assert "default" in text, (action.option_strings, text)


def test_help_states_the_cpu_friendly_default_model_and_what_threads_and_cache_mean():
    helps = {a.option_strings[0]: a.help for a in _parser()._actions if a.option_strings}
    assert TrainConfig(test_domain="0").model == "mnist_cnn_small"
    assert "mnist_cnn_small (the default" in helps["--model"]
    assert "every core" in helps["--threads"]
    assert "GiB" in helps["--cache-limit-gb"] and "pixels" in helps["--image-size"] and "same as lr" in helps["--scale-lr"]



@pytest.mark.parametrize("main", [cli_module.main, cli_module.sweep_main, cli_module.report_main, cli_module.ablation_main])
def test_help_prints_for_every_command_even_with_a_percent_sign_in_a_help_text(main, capsys):
    with pytest.raises(SystemExit) as exit_info:   # argparse formats help with %: a bare "30%" used to crash --help
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out
    if main is not cli_module.report_main:
        assert "--channels-last" in out and "30% less" in out

def test_every_gaqat_config_field_is_a_flag_with_its_documented_help_and_the_cores_choices():
    actions = {a.dest: a for a in _parser()._actions}
    documented = attribute_help(GAQATConfig)
    for f in fields(GAQATConfig):
        action = actions[f"gaqat.{f.name}"]
        assert documented[f.name] in action.help
    assert list(actions["gaqat.metric"].choices) == list(METRICS)
    assert list(actions["gaqat.variant"].choices) == list(VARIANTS)
    assert list(actions["gaqat.freeze_mode"].choices) == list(FREEZE_MODES)


def test_gaqat_flags_fill_the_nested_options_and_the_methods_own_fields_win():
    config = _config("--test-domain", "0", "--method", "sagm-qat", "--variant", "sam", "--freeze-threshold", "0.3",
                     "--window", "5", "--permanent-freeze")
    assert config.gaqat == {"variant": "sam", "freeze_threshold": 0.3, "window": 5, "permanent_freeze": True}
    resolved = config.gaqat_config()
    assert (resolved.variant, resolved.freeze_threshold, resolved.window, resolved.permanent_freeze) == ("sagm", None, 5, True)
    assert _config("--test-domain", "0", "--freeze-threshold", "none").gaqat == {"freeze_threshold": None}


def test_a_new_gaqat_config_field_becomes_a_flag_without_touching_the_command_line(monkeypatch):
    @dataclass
    class WithOscillation(GAQATConfig):
        """Options.

        Attributes:
            oscillation_threshold: freeze a weight whose integer value flips more often than this.
        """

        oscillation_threshold: float | None = None

    monkeypatch.setattr(cli_module, "GAQATConfig", WithOscillation)
    args = _parser(require_test_domain=False).parse_args(["--oscillation-threshold", "0.02"])
    assert vars(args)["gaqat.oscillation_threshold"] == 0.02
    assert "flips more often" in {a.dest: a.help for a in _parser()._actions}["gaqat.oscillation_threshold"]
    assert typing.get_type_hints(WithOscillation)["oscillation_threshold"] == float | None


def test_unknown_gaqat_option_in_a_config_is_an_error_naming_the_fields():
    with pytest.raises(ValueError, match=r"unknown GAQAT option\(s\) \['windw'\]; GAQATConfig fields are sam_rho"):
        TrainConfig(test_domain="0", gaqat={"windw": 5})


def test_older_flat_configs_load_into_the_nested_gaqat_options():
    old = {"test_domain": "75", "method": "gaqat", "sam_rho": 0.05, "freeze_threshold": None, "window": None,
           "freeze_mode": "smooth", "metric": "cosine", "permanent_freeze": False, "perturb_scales": False}
    config = TrainConfig.from_dict(old)
    assert config.gaqat == {"sam_rho": 0.05, "freeze_mode": "smooth", "metric": "cosine", "permanent_freeze": False,
                            "perturb_scales": False}
    assert config.gaqat_config() == GAQATConfig(freeze_mode="smooth")


def test_image_folder_flags_reach_the_loader(make_folder):
    root = make_folder({"a": {"cat": 2, "Hund": 2}, "b": {"cat": 2, "dog": 1}, "c": {"cat": 1}})
    with pytest.raises(ValueError, match="class_union=True"):
        load_splits(_config("--dataset", str(root), "--test-domain", "c"))
    config = _config("--dataset", str(root), "--test-domain", "c", "--class-union", "--folder-to-class", "a/Hund=dog",
                     "--classes", "dog", "cat", "--extensions", ".png")
    assert config.folder_to_class == {"a": {"Hund": "dog"}} and config.classes == ["dog", "cat"]
    splits, domains = load_splits(config)
    assert domains == ["a", "b", "c"] and splits["test"].features["label"].names == ["dog", "cat"]
    assert splits["train"].num_rows + splits["validation"].num_rows == 7
    with pytest.raises(ValueError, match="holds no images with suffixes"):
        load_splits(_config("--dataset", str(root), "--test-domain", "c", "--class-union", "--extensions", ".jpg"))


def test_image_folder_options_are_refused_for_an_embedded_dataset():
    with pytest.raises(ValueError, match="apply to an image folder"):
        TrainConfig(test_domain="0", class_union=True)


def test_bad_folder_to_class_entry_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["--test-domain", "0", "--folder-to-class", "Hund=dog"])
    assert "DOMAIN/FOLDER=CLASS" in capsys.readouterr().err
