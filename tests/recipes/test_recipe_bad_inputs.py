"""Bad input fails with a clear error before any training starts and before the output folder exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from gaqat_recipes import TrainConfig, train_dg
from gaqat_recipes import run as run_module
from gaqat_recipes.cli import main


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"dataset": "mnist_typo"}, ValueError, "unknown dataset 'mnist_typo'"),
        ({"dataset": "/no/such/folder"}, FileNotFoundError, "does not exist"),
        ({"method": "lsq"}, ValueError, "unknown method 'lsq'"),
        ({"bits": 9}, ValueError, "bits must be an integer in 2..8"),
        ({"bits": 1}, ValueError, "bits must be an integer in 2..8"),
        ({"model": "resnet_typo"}, ValueError, "unknown model 'resnet_typo'"),
    ],
)
def test_invalid_config_is_rejected_when_built(overrides, error, message, tmp_path):
    with pytest.raises(error, match=message):
        TrainConfig(test_domain="0", output_dir=str(tmp_path / "out"), **overrides)
    assert not (tmp_path / "out").exists()


def test_unknown_domain_fails_before_the_model_is_built_or_output_written(tiny_config, monkeypatch):
    config = tiny_config(test_domain="z")

    def must_not_build(*args, **kwargs):
        raise AssertionError("the model was built before the domain was checked")

    monkeypatch.setattr(run_module, "build_model", must_not_build)
    with pytest.raises(ValueError, match=r"unknown domain 'z'; this dataset has domains \['a', 'b', 'c'\]"):
        train_dg(config)
    assert not Path(config.output_dir).exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dataset", "mnist_typo"], "unknown dataset"),
        (["--dataset", "./missing_folder"], "does not exist"),
        (["--method", "lsq"], "invalid choice: 'lsq'"),
        (["--bits", "12"], "bits must be an integer in 2..8"),
    ],
)
def test_command_line_errors_exit_with_a_message_and_write_nothing(flags, message, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["--test-domain", "0", "--output-dir", str(out), *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_command_line_unknown_domain_exits_with_a_message(toy_folder, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit):
        main(["--dataset", toy_folder, "--test-domain", "q", "--model", "mnist_cnn_tiny", "--output-dir", str(out)])
    assert "unknown domain 'q'" in capsys.readouterr().err
    assert not out.exists()
