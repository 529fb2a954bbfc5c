"""``reproduce``: skipping, resuming, missing datasets, dry runs, the CLI, and a tiny real end-to-end run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from dynamics.cli import reproduce as cli
from dynamics.cli.report import write_figures
from dynamics.errors import ConfigError, DataError, RunStateError
from dynamics.reproduce import campaign as runner
from dynamics.reproduce.presets import Preset
from dynamics.training.run_folder import load_run

pytest.importorskip("dynamics.training", reason="dynamics.training (TrainConfig, train) has not landed yet")
try:
    from dynamics.training import TrainConfig  # noqa: F401
except ImportError as exc:  # pragma: no cover - only before dynamics.training lands
    pytest.skip(f"dynamics.training is not importable yet: {exc}", allow_module_level=True)

TINY_FIELDS = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4,
               "batch_size": 32, "schedule": "step", "gamma": 0.1, "loss": "ce", "features": "auto",
               "probe_size": 8, "eval_every": 1}


def tiny_preset(datasets=("semeion", "mnist"), seeds=(0, 1)) -> Preset:
    return Preset(name="tiny", description="tiny MLP, 2 epochs", model="mlp",
                  model_options={"depth": 1, "width": 16}, epochs=2, epochs_augmented=2, augment=(False,),
                  seeds=tuple(seeds), datasets=tuple(datasets), milestone_fractions=(0.5,), tau_fraction=0.5,
                  probe_fraction=0.5, fixed=dict(TINY_FIELDS), device="cpu")


def fake_finished_run(path: Path, config: dict, test_acc: float = 0.8) -> None:
    """What train() leaves behind, written by hand (no training)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    lines = [{"type": "epoch", "epoch": e, "phase": "base", "train_loss": 1.0 / e, "train_acc": 0.5,
              "test_loss": 1.0, "test_acc": test_acc, "lr": 0.1, "epoch_time_s": 0.1, "samples_per_s": 10.0}
             for e in range(1, config["epochs"] + 1)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    cond = {"on_model_residual": 1e-8, "on_model_holds": True, "alignment_residual": 1e-9, "alignment_holds": True,
            "certificate": "exact", "n_checked": 10}
    (path / "summary.json").write_text(json.dumps({
        "config": config, "provenance": {}, "status": "completed", "epochs_completed": config["epochs"],
        "wall_time_s": 0.1, "final": {"train_loss": 0.5, "train_acc": 0.5, "test_loss": 1.0, "test_acc": test_acc,
                                      "test_error": 1 - test_acc},
        "conditions": {"tau": cond if config["modified"] else None, "end": cond if config["modified"] else None}}))


@pytest.fixture
def fake_train(monkeypatch):
    """Replace the training call: record what would be trained; mnist's files are 'missing'."""
    calls: list[tuple[str, str]] = []

    def _train(run, data):
        if run.config["dataset"] == "mnist":
            raise DataError("mnist: none of ['train-images-idx3-ubyte.gz'] found in /nowhere/mnist")
        calls.append((run.name, run.state))
        fake_finished_run(run.path, run.config)
        return {}

    monkeypatch.setattr(runner, "_train", _train)
    real_missing = runner._missing  # the fake's message is kept unless a data root is given (dry runs)
    monkeypatch.setattr(runner, "_missing", lambda dataset, root: None if root is None else real_missing(dataset, root))
    return calls


def test_missing_dataset_is_skipped_with_its_reason_and_the_others_run(tmp_path, fake_train):
    lines: list[str] = []
    table = runner.reproduce(tiny_preset(), out_dir=tmp_path, progress=lines.append, figures=False)
    assert [n for n, _ in fake_train] == ["semeion-noaug-base-seed0", "semeion-noaug-modified-seed0",
                                          "semeion-noaug-base-seed1", "semeion-noaug-modified-seed1"]
    assert [(s.dataset, s.reason) for s in table.skipped] == [
        ("mnist", "mnist: none of ['train-images-idx3-ubyte.gz'] found in /nowhere/mnist")]
    assert [r.dataset for r in table.rows] == ["semeion"] and table.rows[0].base.n == 2
    per_run = [ln for ln in lines if ln.startswith("[")]
    assert len([ln for ln in per_run if "starting" not in ln]) == 8  # one result line per planned run
    assert "found in /nowhere/mnist" in (tmp_path / "table.md").read_text()
    for name in ("table.md", "table.csv", "table.tex", "table.json"):
        assert (tmp_path / name).is_file()


def test_second_reproduce_trains_nothing_and_gives_the_same_table(tmp_path, fake_train):
    first = runner.reproduce(tiny_preset(datasets=("semeion",)), out_dir=tmp_path, figures=False)
    fake_train.clear()
    lines: list[str] = []
    second = runner.reproduce(tiny_preset(datasets=("semeion",)), out_dir=tmp_path, figures=False,
                              progress=lines.append)
    assert fake_train == []
    assert sum("already finished" in ln for ln in lines) == 4
    assert second.to_csv() == first.to_csv()


def test_interrupted_runs_are_resumed_or_restarted(tmp_path, fake_train):
    plan = runner.plan(tiny_preset(datasets=("semeion",), seeds=(0,)), tmp_path)
    assert [p.state for p in plan] == ["new", "new"]
    base, modified = plan
    base.path.mkdir(parents=True)
    (base.path / "config.json").write_text(json.dumps(base.config))
    (base.path / "checkpoints").mkdir()
    (base.path / "checkpoints" / "last.pt").write_bytes(b"checkpoint")  # started, has a checkpoint
    modified.path.mkdir(parents=True)
    (modified.path / "config.json").write_text(json.dumps(modified.config))  # started, no checkpoint yet
    assert [p.state for p in runner.plan(tiny_preset(datasets=("semeion",), seeds=(0,)), tmp_path)] == \
        ["resume", "restart"]
    runner.reproduce(tiny_preset(datasets=("semeion",), seeds=(0,)), out_dir=tmp_path, figures=False)
    assert fake_train == [(base.name, "resume"), (modified.name, "restart")]


def test_a_run_folder_with_another_configuration_is_an_error(tmp_path, fake_train):
    runner.reproduce(tiny_preset(datasets=("semeion",), seeds=(0,)), out_dir=tmp_path, figures=False)
    other = Preset(**{**tiny_preset(datasets=("semeion",), seeds=(0,)).to_dict(),
                      "fixed": {**TINY_FIELDS, "lr": 0.5}})
    with pytest.raises(RunStateError, match=r"different configuration \(fields \['lr'\]"):
        runner.reproduce(other, out_dir=tmp_path, figures=False)


def test_diverged_run_is_not_retrained_and_is_reported(tmp_path, fake_train):
    preset = tiny_preset(datasets=("semeion",), seeds=(0,))
    base = runner.plan(preset, tmp_path)[0]
    fake_finished_run(base.path, base.config)
    summary = json.loads((base.path / "summary.json").read_text())
    (base.path / "summary.json").write_text(json.dumps({**summary, "status": "nonfinite", "epochs_completed": 1}))
    table = runner.reproduce(preset, out_dir=tmp_path, figures=False)
    assert [n for n, _ in fake_train] == ["semeion-noaug-modified-seed0"]
    assert table.rows[0].base.n_nonfinite == 1 and "diverged" in table.to_markdown()


def test_dry_run_trains_nothing_writes_nothing_and_finds_missing_files(tmp_path, fake_train):
    empty_root = tmp_path / "data"
    empty_root.mkdir()
    lines: list[str] = []
    table = runner.reproduce(tiny_preset(), out_dir=tmp_path / "out", data_root=str(empty_root), dry_run=True,
                             progress=lines.append)
    assert fake_train == [] and not (tmp_path / "out").exists()
    assert {s.dataset for s in table.skipped} == {"semeion", "mnist"}
    assert all(str(empty_root) in s.reason for s in table.skipped)
    assert sum("would be skipped" in ln for ln in lines) == 2


def test_reproduce_command_line_dry_run(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--preset", "cpu", "--datasets", "semeion", "--seeds", "0,1", "--out",
                              str(tmp_path / "o"), "--data-root", str(tmp_path), "--dry-run"])
    assert args.seeds == [0, 1] and args.datasets == ["semeion"]
    assert cli.run(args) == 0
    err = capsys.readouterr().err
    assert "reproduce cpu: 4 runs" in err and err.count("would be skipped") == 1
    with pytest.raises(SystemExit):
        parser.parse_args(["--preset", "cpu", "--seeds", "a,b"])


def test_tiny_reproduce_end_to_end_on_generated_data(tmp_path):
    """Real training (train()) of 2 seeds x base/modified, 2 epochs, tau = 1, on generated 16x16 images."""
    import torch

    g = torch.Generator().manual_seed(0)
    x_train, x_test = torch.randn(48, 1, 16, 16, generator=g), torch.randn(24, 1, 16, 16, generator=g)
    y_train, y_test = torch.randint(0, 10, (48,), generator=g), torch.randint(0, 10, (24,), generator=g)
    empty_root = tmp_path / "data"
    empty_root.mkdir()
    lines: list[str] = []
    table = runner.reproduce(tiny_preset(), out_dir=tmp_path / "out", data_root=str(empty_root),
                             data={"semeion": (x_train, y_train, x_test, y_test)}, progress=lines.append,
                             figures=write_figures)
    assert [s.dataset for s in table.skipped] == ["mnist"] and str(empty_root) in table.skipped[0].reason
    (row,) = table.rows
    assert row.dataset == "semeion" and row.base.n == 2 and row.modified.n == 2
    assert row.condition.n_runs == 2
    runs = [load_run(p) for p in sorted((tmp_path / "out" / "runs").iterdir())]
    assert len(runs) == 4 and all(r.finished for r in runs)
    assert {r.tau for r in runs if r.modified} == {1}
    errors = sorted(100 * (1 - r.final.test_acc) for r in runs if not r.modified)
    assert sorted(row.base.test_errors) == pytest.approx(errors)
    losses = sorted(r.final.train_loss for r in runs if r.modified)
    assert sorted(row.modified.train_losses) == pytest.approx(losses)
    # "# train": recorded by the run (the data it was given), not the catalogue's 1000 for semeion
    assert row.n_train == 48 and all(r.summary.n_train == 48 for r in runs)
    assert row.condition.full_set_certified == [all(r.condition(w).full_set_certified for w in ("tau", "end"))
                                                for r in runs if r.modified]
    # the new per-seed keys, each from its run's own files
    mod = [r for r in runs if r.modified]
    assert row.modified.optimality_eps == [r.summary.run_certificate_end["epsilon_ce"] for r in mod]
    assert row.modified.train_accuracies == [r.final.train_acc for r in mod]
    assert row.modified.g_over_f_test == [r.summary.run_certificate_end["g_over_f_test"] for r in mod]
    assert all(0 <= c <= 1 for c in row.modified.test_predictions_changed)
    assert len(row.base.alignment_lower) == 2  # computed or skipped with a reason, never absent
    assert all((lo is None) == (note is not None) for lo, note in zip(row.base.alignment_lower,
                                                                      row.base.alignment_lower_notes))
    saved = json.loads((tmp_path / "out" / "table.json").read_text())["rows"][0]
    for key in ("optimality_eps", "train_accuracies", "g_over_f_test", "test_predictions_changed"):
        assert key in saved["modified"]
    assert "alignment_lower" in saved["base"] and "full_set_certified" in saved["condition"]
    assert {"dataset", "n_train"} <= set(saved) and {"seeds", "test_errors", "train_losses"} <= set(saved["base"])
    assert "r at" not in (tmp_path / "out" / "table.md").read_text()
    for name in ("table.md", "table.csv", "table.tex", "table.json", "training_curves.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    # the run-certificate figure: epsilon at tau and at the end of every modified run (it draws from the records)
    from figures import conditions_over_training
    assert conditions_over_training.has_data(runs)
    assert all(len(conditions_over_training.epsilon_curve(r)[0]) >= 1 for r in mod)
    assert conditions_over_training.plot(runs).axes
    # a second call trains nothing
    lines.clear()
    again = runner.reproduce(tiny_preset(), out_dir=tmp_path / "out", data_root=str(empty_root),
                             data={"semeion": (x_train, y_train, x_test, y_test)}, progress=lines.append)
    assert sum("already finished" in ln for ln in lines) == 4 and again.to_csv() == table.to_csv()


def test_gpu_preset_without_a_gpu_says_how_to_run_on_the_cpu(tmp_path, fake_train, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="--device cpu"):
        runner.reproduce("paper", datasets=["semeion"], seeds=[0], out_dir=tmp_path)
    assert fake_train == [] and not (tmp_path / "runs").exists()
    runner.reproduce("paper", datasets=["semeion"], seeds=[0], augment=[False], out_dir=tmp_path, device="cpu",
                     figures=False)
    assert [n for n, _ in fake_train] == ["semeion-noaug-base-seed0", "semeion-noaug-modified-seed0"]


def test_a_run_that_diverges_during_reproduce_is_reported_and_the_rest_go_on(tmp_path, monkeypatch):
    from dynamics.errors import NonFiniteError

    calls = []

    def _train(run, data):
        calls.append(run.name)
        fake_finished_run(run.path, run.config)
        if run.config["modified"] and run.config["seed"] == 0:
            summary = json.loads((run.path / "summary.json").read_text())
            (run.path / "summary.json").write_text(json.dumps({**summary, "status": "nonfinite"}))
            raise NonFiniteError("loss became nan at epoch 2, step 3")
        return {}

    monkeypatch.setattr(runner, "_train", _train)
    lines: list[str] = []
    table = runner.reproduce(tiny_preset(datasets=("semeion",)), out_dir=tmp_path, figures=False,
                             progress=lines.append)
    assert len(calls) == 4
    assert any("diverged after" in ln and "loss became nan" in ln for ln in lines)
    assert table.rows[0].modified.n_nonfinite == 1 and table.rows[0].modified.n == 1


def test_dataset_with_only_its_test_split_is_skipped_never_trained_on_it(tmp_path):
    """KMNIST here: test split and training labels present, training images missing (control: MNIST complete)."""
    from _data_files import write_mnist

    root = tmp_path / "data"
    write_mnist(root / "kmnist")
    (root / "kmnist" / "train-images-idx3-ubyte.gz").unlink()
    lines: list[str] = []
    table = runner.reproduce(tiny_preset(datasets=("kmnist",), seeds=(0,)), out_dir=tmp_path / "out",
                             data_root=str(root), progress=lines.append, figures=False)
    (skipped,) = table.skipped
    assert skipped.dataset == "kmnist" and skipped.reason.startswith("training images not available here: kmnist")
    assert "train-images-idx3-ubyte.gz" in skipped.reason and str(root / "kmnist") in skipped.reason
    assert table.rows == [] and not list((tmp_path / "out").rglob("config.json"))
    assert "training images not available here" in (tmp_path / "out" / "table.md").read_text()
    assert runner._missing("kmnist", str(root)).startswith("training images not available here")
    # control: with the training images back, they are no longer "not available" (generated files then fail the
    # published checksums: the loader's own message, not the missing-split one)
    write_mnist(root / "kmnist")
    reason = runner._missing("kmnist", str(root))
    assert reason is not None and not reason.startswith("training images not available")
