"""The runner: it learns, writes the run directory format, resumes bit for bit, refuses bad input."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _training_common import blobs, plateau_config, random_label_data, small_config
from dynamics.errors import ConfigError, DataError, InputError, NonFiniteError, RunStateError
from dynamics.training import AugmentedModel, TrainConfig, read_metrics, train
from dynamics.cli import train as cli
from dynamics.training.checkpoint import load_checkpoint
from dynamics.training.records import SCHEMA_VERSION, EpochRecord, ProbeRecord
from dynamics.training.optimizers import lr_factor

ROOT = Path(__file__).resolve().parent.parent


def test_loop_learns_separable_blobs(tmp_path):
    x, y = blobs()
    s = train(small_config(epochs=5), tmp_path, data=(x, y, x, y), progress=False)
    recs = [r for r in read_metrics(tmp_path / "metrics.jsonl") if isinstance(r, EpochRecord)]
    assert recs[-1].running_train_loss < 0.5 * recs[0].running_train_loss
    assert s.final.train_acc == 1.0 and s.final.test_error == 0.0


def test_run_directory_has_contract_format(tmp_path):
    x, y = blobs()
    cfg = small_config(epochs=3, probe_every=2, probe_size=8)
    s = train(cfg, tmp_path, data=(x, y, x[:9], y[:9]), progress=False)
    assert json.loads((tmp_path / "config.json").read_text()) == {"schema": SCHEMA_VERSION, "config": json.loads(json.dumps(cfg.to_dict()))}
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in lines if r["type"] == "epoch"]
    probes = [r for r in lines if r["type"] == "probe"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3] and all(r["phase"] == "base" for r in epochs)
    assert [r["epoch"] for r in probes] == [0, 2, 3]
    for key in ("running_train_loss", "running_train_acc", "test_loss", "test_acc", "lr", "epoch_time_s",
                "samples_per_s"):
        assert isinstance(epochs[-1][key], float)
    assert "train_loss" not in epochs[-1]  # the running mean is never called plain train_loss
    for key in ("alignment_residual", "rank", "sigma_min", "on_model_residual", "loss_fit", "loss_floor",
                "kernel_distance", "n_probe", "time_s"):
        assert key in probes[-1]
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["schema"] == SCHEMA_VERSION and on_disk["status"] == "completed" and on_disk["epochs_completed"] == 3
    assert set(on_disk["final"]) == {"train_loss", "train_acc", "test_loss", "test_acc", "test_error"}
    assert on_disk["conditions"]["tau"] is None and on_disk["conditions"]["end"]["on_model_holds"]
    assert on_disk["provenance"]["seed"] == 0 and "torch" in on_disk["provenance"]
    assert (tmp_path / "checkpoints" / "last.pt").is_file() and (tmp_path / "checkpoints" / "last.pt.sha256").is_file()
    assert s.to_dict()["final"] == on_disk["final"] and on_disk["n_train"] == 64 and on_disk["n_test"] == 9


@pytest.mark.parametrize("opt, extra", [("sgd", {"nesterov": True}), ("adam", {}), ("adamw", {}), ("rmsprop", {})])
def test_every_optimizer_trains_with_cosine_schedule(tmp_path, opt, extra):
    x, y = blobs(n=32)
    lr = 0.05 if opt == "sgd" else 0.01
    cfg = small_config(optimizer=opt, lr=lr, schedule="cosine", epochs=3, weight_decay=1e-4, **extra)
    train(cfg, tmp_path, data=(x, y, x, y), progress=False)
    recs = [r for r in read_metrics(tmp_path / "metrics.jsonl") if isinstance(r, EpochRecord)]
    assert [r.lr for r in recs] == pytest.approx([lr * lr_factor(cfg, e) for e in range(3)])
    assert recs[1].lr < recs[0].lr
    assert recs[-1].running_train_loss < recs[0].running_train_loss


def test_step_schedule_multiplies_lr_at_milestones():
    cfg = TrainConfig(schedule="step", milestones=[2, 4], gamma=0.5, epochs=5)
    assert [lr_factor(cfg, e) for e in range(5)] == [1, 1, 0.5, 0.5, 0.25]


def test_probes_do_not_change_the_training_trajectory(tmp_path):
    x, y = random_label_data()
    data = (x, y, x[:10], y[:10])
    train(plateau_config(True, epochs=4, tau=2), tmp_path / "plain", data=data, progress=False)
    train(plateau_config(True, epochs=4, tau=2, probe_every=1, probe_size=8), tmp_path / "probed", data=data,
          progress=False)
    a = load_checkpoint(tmp_path / "plain/checkpoints/last.pt")["model"]
    b = load_checkpoint(tmp_path / "probed/checkpoints/last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    probes = [r for r in read_metrics(tmp_path / "probed/metrics.jsonl") if isinstance(r, ProbeRecord)]
    assert [r.epoch for r in probes] == [0, 1, 2, 3, 4]
    assert probes[0].values["alignment_residual"] > 1e-3 and probes[-1].values["alignment_residual"] < 1e-8  # enforced after tau


def test_same_seed_same_run_and_different_seed_differs(tmp_path):
    x, y = blobs()
    finals = [train(small_config(seed=s), tmp_path / str(i), data=(x, y, x, y), progress=False).final
              for i, s in enumerate((0, 0, 1))]
    assert finals[0] == finals[1] and finals[0].train_loss != finals[2].train_loss


def _run_script(tmp_path: Path, out: Path, resume: bool, kill_after: int | None) -> subprocess.CompletedProcess:
    script = tmp_path / "job.py"
    script.write_text(
        "import sys, torch\n"
        f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
        "from _training_common import random_label_data, plateau_config\n"
        "from dynamics.training import train\n"
        "x, y = random_label_data()\n"
        "cfg = plateau_config(True, epochs=6, tau=3, probe_every=2, probe_size=8)\n"
        f"train(cfg, {str(out)!r}, resume={resume}, data=(x, y, x[:10], y[:10]), progress=False)\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("DYNAMICS_TEST_EXIT_AFTER_EPOCH", None)
    if kill_after is not None:
        env["DYNAMICS_TEST_EXIT_AFTER_EPOCH"] = str(kill_after)
    return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)


def _strip_times(recs):
    return [{k: v for k, v in r.to_dict().items() if k not in ("epoch_time_s", "samples_per_s", "time_s")}
            for r in recs]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    done = _run_script(tmp, tmp / "ref", False, None)
    assert done.returncode == 0, done.stderr
    return tmp / "ref"


@pytest.mark.parametrize("kill_after", [3, 4])  # 3: killed at tau (the switch happens after resuming); 4: after it
def test_killed_run_resumed_equals_uninterrupted_bit_for_bit(tmp_path, uninterrupted, kill_after):
    ref, cut = uninterrupted, tmp_path / "cut"
    killed = _run_script(tmp_path, cut, False, kill_after)
    assert killed.returncode == 17, killed.stderr
    state = load_checkpoint(cut / "checkpoints/last.pt")
    assert not (cut / "summary.json").exists() and state["epoch"] == kill_after
    assert (state["switch"] is None) == (kill_after == 3)
    resumed = _run_script(tmp_path, cut, True, None)
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_checkpoint(ref / "checkpoints/last.pt"), load_checkpoint(cut / "checkpoints/last.pt")
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert _strip_times(read_metrics(ref / "metrics.jsonl")) == _strip_times(read_metrics(cut / "metrics.jsonl"))
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (ref, cut))
    assert sa["final"] == sb["final"] and sa["switch"]["tau_effective"] == 3
    assert sa["conditions"]["tau"]["certificate"] == sb["conditions"]["tau"]["certificate"]


@pytest.mark.parametrize("g_input", ["clean", "augmented"])
def test_modified_run_with_augmentation_g_sees_clean_cache_or_augmented_image(tmp_path, monkeypatch, g_input):
    seen = []  # for every training-mode forward of f~: was g read from the clean training cache (index given)?
    original = AugmentedModel.forward

    def spy(self, x, index=None):
        if self.training:
            seen.append(index is not None)
        return original(self, x, index)

    monkeypatch.setattr(AugmentedModel, "forward", spy)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(24, 1, 8, 8, generator=g), torch.arange(24) % 3
    cfg = small_config(epochs=2, modified=True, tau=1, augment=True, check_size=8, g_input=g_input)
    s = train(cfg, tmp_path, data=(x, y, x, y), progress=False)
    assert s.status == "completed" and s.conditions_end.full_set_certified
    assert [r.phase for r in read_metrics(tmp_path / "metrics.jsonl")] == ["base", "modified"]
    assert seen and all(seen) if g_input == "clean" else seen and not any(seen)


def test_unknown_g_input_is_refused():
    with pytest.raises(ConfigError, match="g_input"):
        small_config(augment=True, g_input="noisy").validate()


def test_modified_batchnorm_cnn_is_checked_in_eval_mode(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(24, 1, 8, 8, generator=g), torch.arange(24) % 3
    cfg = small_config(model="cnn", model_options={"channels": [4, 4], "batchnorm": True}, epochs=2, modified=True,
                       tau=1, probe_every=1, probe_size=4, check_size=8)
    s = train(cfg, tmp_path, data=(x, y, x, y), progress=False)
    for c in (s.conditions_tau, s.conditions_end):
        assert c.details["bn_mode"].startswith("eval") and c.holds
    probes = [r for r in read_metrics(tmp_path / "metrics.jsonl") if isinstance(r, ProbeRecord)]
    assert [p.values["bn_mode"] for p in probes] == ["eval"] * 3


def test_resume_of_a_finished_run_returns_its_summary(tmp_path):
    x, y = blobs(n=16)
    s1 = train(small_config(epochs=2), tmp_path, data=(x, y, x, y), progress=False)
    s2 = train(small_config(epochs=2), tmp_path, resume=True, data=(x, y, x, y), progress=False)
    assert s1.final == s2.final


# --- bad input ---------------------------------------------------------------------------------------------------

def test_unknown_optimizer_lists_valid_ones():
    with pytest.raises(ConfigError, match="unknown optimizer 'lbfgs'.*adam.*sgd"):
        small_config(optimizer="lbfgs").validate()


def test_unknown_model_lists_valid_ones(tmp_path):
    x, y = blobs(n=8)
    with pytest.raises(ConfigError, match="unknown model 'nope'.*mlp"):
        train(small_config(model="nope"), tmp_path, data=(x, y, x, y), progress=False)


def test_unknown_dataset_lists_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'.*mnist"):
        train(small_config(dataset="imagenet"), tmp_path, progress=False)


def test_missing_data_says_where_it_looked(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "data")):
        train(small_config(dataset="semeion", data_root=str(tmp_path / "data")), tmp_path / "run", progress=False)


@pytest.mark.parametrize("tau", [0, 4, 9])
def test_tau_outside_the_budget_is_refused(tau):
    with pytest.raises(ConfigError, match=f"tau={tau} is outside the budget"):
        small_config(epochs=4, modified=True, tau=tau).validate()


def test_unknown_feature_construction_lists_valid_ones():
    with pytest.raises(ConfigError, match="unknown feature construction 'rbf'.*gaussian"):
        small_config(epochs=4, modified=True, tau=2, features="rbf").validate()


def test_folder_holding_a_different_run_is_refused_unless_resume_or_overwrite(tmp_path):
    x, y = blobs(n=16)
    train(small_config(epochs=1), tmp_path, data=(x, y, x, y), progress=False)
    with pytest.raises(RunStateError, match="different configuration .*lr.*--overwrite"):
        train(small_config(epochs=1, lr=0.1), tmp_path, data=(x, y, x, y), progress=False)
    with pytest.raises(RunStateError, match="different configuration"):
        train(small_config(epochs=1, lr=0.1), tmp_path, resume=True, data=(x, y, x, y), progress=False)
    s = train(small_config(epochs=1, lr=0.1), tmp_path, overwrite=True, data=(x, y, x, y), progress=False)
    assert s.config.lr == 0.1
    assert json.loads((tmp_path / "config.json").read_text())["config"]["lr"] == 0.1


def test_non_empty_folder_without_a_run_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    x, y = blobs(n=8)
    with pytest.raises(RunStateError, match="not empty and holds no run"):
        train(small_config(epochs=1), tmp_path, data=(x, y, x, y), progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_nonfinite_loss_stops_keeps_last_good_checkpoint_and_names_the_step(tmp_path):
    x, y = blobs(n=32)
    # epoch 1 trains normally; from epoch 2 the step schedule multiplies the lr by 1e9 and the loss blows up
    cfg = small_config(epochs=6, lr=0.05, momentum=0.0, loss="mse", schedule="step", milestones=[1], gamma=1e9)
    with pytest.raises(NonFiniteError, match=r"epoch 2, step \d+ .*last good checkpoint .*\(epoch 1\)"):
        train(cfg, tmp_path, data=(x, y, x, y), progress=False)
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["status"] == "nonfinite" and "step" in s["error"] and s["epochs_completed"] == 1
    state = load_checkpoint(tmp_path / "checkpoints/last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert [r.epoch for r in read_metrics(tmp_path / "metrics.jsonl")] == [1]


def test_data_argument_must_be_four_tensors(tmp_path):
    x, y = blobs(n=8)
    with pytest.raises(InputError, match="x_train, y_train, x_test, y_test"):
        train(small_config(), tmp_path, data=(x, y), progress=False)


# --- the modified framework end to end ----------------------------------------------------------------------------

def test_modified_reaches_global_minimum_where_base_plateaus(tmp_path):
    x, y = random_label_data()
    data = (x, y, x[:10], y[:10])
    base = train(plateau_config(False), tmp_path / "base", data=data, progress=False)
    mod = train(plateau_config(True, features="gaussian", feature_options={"bandwidth": 0.25}, full_check=True,
                               check_size=20), tmp_path / "mod", data=data, progress=False)
    assert base.final.train_loss > 0.2  # the bottleneck cannot fit random labels
    assert mod.final.train_loss < 1e-4 and mod.final.train_acc == 1.0
    for c in (mod.conditions_tau, mod.conditions_end):
        assert c.holds and c.full_set_certified, c
        assert c.alignment_residual < 1e-8 and "distinct points" in c.certificate
        assert c.details["full_set_lsqr"]["holds"] and c.details["full_set_lsqr"]["n"] == 40
    assert not base.conditions_end.alignment_holds
    recs = read_metrics(tmp_path / "mod" / "metrics.jsonl")
    assert [r.phase for r in recs if isinstance(r, EpochRecord)] == ["base"] * 30 + ["modified"] * 30


def _cli(argv):
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    return cli.run(p.parse_args(argv))


def test_cli_train_refuses_unknown_optimizer(tmp_path):
    with pytest.raises(ConfigError, match="unknown optimizer"):
        _cli(["--optimizer", "lbfgs", "--out", str(tmp_path)])


def test_cli_arguments_map_to_config():
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    cfg = cli.config_from_args(p.parse_args(
        ["--dataset", "semeion", "--model", "cnn", "--optimizer", "sgd", "--lr", "0.01", "--momentum", "0.9",
         "--weight-decay", "1e-4", "--batch-size", "64", "--epochs", "50", "--augment", "--modified", "--tau", "25",
         "--probe-every", "5", "--device", "cpu", "--seed", "3", "--out", "x", "--milestones", "30", "40"]))
    assert (cfg.dataset, cfg.model, cfg.batch_size, cfg.epochs, cfg.tau, cfg.probe_every, cfg.seed) == \
        ("semeion", "cnn", 64, 50, 25, 5, 3)
    assert cfg.augment and cfg.modified and cfg.schedule == "step" and cfg.milestones == [30, 40]
    assert cfg == TrainConfig(dataset="semeion", model="cnn", lr=0.01, momentum=0.9, weight_decay=1e-4, batch_size=64,
                              epochs=50, augment=True, modified=True, tau=25, probe_every=5, seed=3,
                              milestones=[30, 40])  # every other field: the dataclass default
    cfg.validate()


@pytest.mark.skipif(not os.environ.get("DYNAMICS_DATA"), reason="real data: set DYNAMICS_DATA (e.g. shared/datasets)")
def test_cli_trains_on_semeion_subset(capsys, tmp_path):
    rc = _cli(["--dataset", "semeion", "--model", "mlp", "--epochs", "2", "--train-subset", "100",
               "--modified", "--tau", "1", "--check-size", "16", "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["conditions"]["end"]["full_set_certified"] and "conditions at end" in capsys.readouterr().out


def test_modified_run_applies_the_phase2_settings_and_records_run_certificates(tmp_path):
    x, y = blobs(n=24)
    cfg = small_config(epochs=4, modified=True, tau=2, check_size=8, weight_decay=1e-3, phase2_weight_decay=0.0,
                       phase2_loss="mse", zeta_step=1e-2, zeta_step_final=1.0)
    s = train(cfg, tmp_path, data=(x, y, x, y), progress=False)
    recs = [r for r in read_metrics(tmp_path / "metrics.jsonl") if isinstance(r, EpochRecord)]
    assert [r.loss for r in recs] == ["ce", "ce", "mse", "mse"]
    # zeta's step grows geometrically from zeta_step (at tau) to zeta_step_final (last epoch): x1 then x100
    assert [r.zeta_lr for r in recs] == [None, None, pytest.approx(cfg.lr), pytest.approx(cfg.lr * 100)]
    groups = load_checkpoint(tmp_path / "checkpoints/last.pt")["optimizer"]["param_groups"]
    assert groups[0]["weight_decay"] == 0.0 and groups[-1]["weight_decay"] == cfg.zeta_weight_decay
    assert s.run_certificate_tau["when"] == "tau" and s.run_certificate_end["when"] == "end"
    assert s.loss_definition.startswith("mean over samples of ½") and "after the switch" in s.loss_definition
    pred = np.load(tmp_path / "test_predictions.npy")
    assert pred.dtype == np.int64 and pred.shape == (24,)
    assert float((torch.from_numpy(pred) == y).double().mean()) == s.final.test_acc
    base = train(small_config(epochs=2), tmp_path / "base", data=(x, y, x, y), progress=False)  # control
    assert base.run_certificate_end is None and (tmp_path / "base" / "test_predictions.npy").is_file()
