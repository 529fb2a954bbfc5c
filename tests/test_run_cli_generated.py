"""`dynamics train`'s options are generated from TrainConfig: one option per field, its help and default shown,
and the configuration built back field by field, so a default cannot diverge again (it did for `schedule`)."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from dynamics.cli import train as train_cli
from dynamics.training.config import TrainConfig


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    train_cli.add_arguments(p)
    return p


def test_every_field_has_an_option_with_help_and_its_default_shown():
    actions = {a.dest: a for a in _parser()._actions}
    for f in dataclasses.fields(TrainConfig):
        a = actions[f.name]
        assert a.option_strings == ["--" + f.name.replace("_", "-")]
        assert f.metadata.get("help") and a.help.startswith(f.metadata["help"])
        if not isinstance(getattr(TrainConfig(), f.name), bool):
            assert "(default: " in a.help, f.name


def test_no_options_give_the_dataclass_defaults():
    assert train_cli.config_from_args(_parser().parse_args(["--out", "x"])) == TrainConfig()


@pytest.mark.parametrize("argv, field, value", [
    (["--betas", "0.5", "0.6"], "betas", (0.5, 0.6)), (["--tau", "3", "--modified"], "tau", 3),
    (["--train-subset", "none"], "train_subset", None), (["--model-options", '{"width": 2}'], "model_options",
                                                          {"width": 2}),
    (["--milestones"], "milestones", []), (["--full-check"], "full_check", True),
])
def test_each_kind_of_field_parses_back(argv, field, value):
    cfg = train_cli.config_from_args(_parser().parse_args([*argv, "--out", "x"]))
    assert getattr(cfg, field) == value


def test_a_field_without_help_would_be_caught(monkeypatch):
    """Control: the first test fails when a field lacks its help text."""
    f = next(f for f in dataclasses.fields(TrainConfig) if f.name == "lr")
    monkeypatch.setattr(f, "metadata", {})
    with pytest.raises(AssertionError):
        test_every_field_has_an_option_with_help_and_its_default_shown()
