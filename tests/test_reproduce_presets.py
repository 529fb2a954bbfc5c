"""The reproduction presets: the paper protocol exactly, the CPU reductions stated, every config valid."""

from __future__ import annotations

import dataclasses

import pytest

from dynamics.errors import ConfigError
from dynamics.data.catalogue import PAPER_ORDER as ALL_DATASETS
from dynamics.reproduce.presets import (CPU_MODEL, PAPER_MODEL, PRESETS, Preset, get_preset,
                                        preset_config_dicts, preset_configs, run_name)


def _train_config():
    try:
        from dynamics.training import TrainConfig
    except ImportError as exc:  # pragma: no cover - only before dynamics.training lands
        pytest.skip(f"dynamics.training is not importable yet: {exc}")
    return TrainConfig


def test_paper_preset_is_the_paper_protocol():
    runs = preset_config_dicts("paper")
    # 6 datasets x {no aug, aug} x 5 seeds x {base, modified}
    assert len(runs) == 6 * 2 * 5 * 2 and len({n for n, _ in runs}) == len(runs)
    assert {c["dataset"] for _, c in runs} == set(ALL_DATASETS)
    assert {c["seed"] for _, c in runs} == {0, 1, 2, 3, 4}
    for name, c in runs:
        assert (c["model"], c["optimizer"], c["lr"], c["momentum"], c["weight_decay"], c["batch_size"]) == \
            (PAPER_MODEL, "sgd", 0.01, 0.9, 1e-4, 64)
        assert (c["schedule"], c["gamma"], c["loss"], c["train_subset"]) == ("step", 0.1, "ce", None)
        assert c["epochs"] == (200 if c["augment"] else 50)
        assert c["milestones"] == ([100, 150] if c["augment"] else [25, 37])
        assert c["tau"] == ((120 if c["augment"] else 30) if c["modified"] else None)
        assert c["eval_every"] == 1 and c["probe_every"] == c["epochs"] // 10
        assert name == run_name(c["dataset"], c["augment"], c["modified"], c["seed"])
    assert PRESETS["paper"].reductions == ()


def test_cpu_preset_is_full_data_and_states_its_reductions_in_the_caption():
    p = PRESETS["cpu"]
    runs = preset_config_dicts("cpu")
    # mnist x 3 seeds, semeion x 5 seeds, kmnist x 3 seeds (skipped where its training images are missing)
    counts = {d: sum(c["dataset"] == d for _, c in runs) for d in ("mnist", "semeion", "kmnist")}
    assert counts == {"mnist": 2 * 3, "semeion": 2 * 5, "kmnist": 2 * 3} and len(runs) == sum(counts.values())
    assert {c["seed"] for _, c in runs if c["dataset"] == "semeion"} == {0, 1, 2, 3, 4}
    assert {c["seed"] for _, c in runs if c["dataset"] == "mnist"} == {0, 1, 2}
    assert all(c["train_subset"] is None for _, c in runs)  # full data: no subset anywhere
    assert {c["model"] for _, c in runs} == {CPU_MODEL} and {c["augment"] for _, c in runs} == {False}
    by_dataset = {(c["dataset"], c["epochs"], c["batch_size"], c["tau"]) for _, c in runs if c["modified"]}
    assert by_dataset == {("mnist", 8, 256, 4), ("semeion", 50, 64, 25), ("kmnist", 8, 256, 4)}
    caption = p.caption()
    for fact in ("resnet8", "MNIST: 8 epochs instead of 50", "3 seeds instead of 5", "no augmentation runs",
                 "one-cycle", "tau = 50 % instead of 60 %"):
        assert fact in caption
    assert "subset" not in caption


def test_cpu_preset_meets_the_model_and_recipe_statement():
    """CifarResNet(1, 10, depth=8, width=1.0): skips, BatchNorm, widths 16/32/64, 77,754 parameters; SGD
    Nesterov 0.9, weight decay 5e-4, per-step one-cycle to peak 0.2 at 25 %, channels_last."""
    import torch

    import dynamics.models as dm
    from dynamics.models.resnet import BasicBlock

    for _, c in preset_config_dicts("cpu"):
        assert (c["optimizer"], c["momentum"], c["nesterov"], c["weight_decay"], c["lr"]) == ("sgd", 0.9, True,
                                                                                              5e-4, 0.2)
        assert (c["schedule"], c["onecycle_pct_start"], c["channels_last"], c["milestones"]) == \
            ("onecycle", 0.25, True, [])
        assert c["features"] == "auto" and c["epsilon_every"] == 1 and c["probe_every"] == 0
    m = dm.create(CPU_MODEL, in_channels=1, num_classes=10, **PRESETS["cpu"].model_options)
    assert sum(p.numel() for p in m.parameters()) == 77754
    assert sum(isinstance(b, BasicBlock) for b in m.modules()) == 3
    assert sum(isinstance(b, torch.nn.BatchNorm2d) for b in m.modules()) >= 7
    convs = [mod.out_channels for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert {16, 32, 64} == set(convs)


def test_every_preset_config_is_a_valid_complete_train_config():
    TrainConfig = _train_config()
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for preset in PRESETS:
        dicts = preset_config_dicts(preset)
        assert all(set(d) <= fields for _, d in dicts)
        configs = preset_configs(preset)
        assert [n for n, _ in configs] == [n for n, _ in dicts]
        for (_, d), (_, cfg) in zip(dicts, configs):
            assert isinstance(cfg, TrainConfig) and cfg.validate() is cfg
            assert {k: getattr(cfg, k) for k in d} == d  # nothing left to a default silently


def test_preset_models_exist_in_the_model_registry_and_build_for_the_datasets():
    import torch

    import dynamics.models as dm

    assert PAPER_MODEL in dm.available() and CPU_MODEL in dm.available()
    m = dm.create(CPU_MODEL, in_channels=1, num_classes=10)
    for size in (28, 16):  # MNIST, Semeion
        assert m(torch.zeros(2, 1, size, size)).shape == (2, 10)


def test_subsets_of_datasets_seeds_and_augmentation():
    runs = preset_config_dicts("paper", ["semeion", "mnist"], augment=[True], seeds=[3])
    assert [n for n, _ in runs] == ["semeion-aug-base-seed3", "semeion-aug-modified-seed3",
                                    "mnist-aug-base-seed3", "mnist-aug-modified-seed3"]
    runs = preset_config_dicts("cpu", ["semeion"], device="cuda", data_root="/data")
    assert {(c["device"], c["data_root"]) for _, c in runs} == {("cuda", "/data")}


def test_bad_preset_dataset_or_seeds_raise_config_error():
    with pytest.raises(ConfigError, match="unknown preset 'gpu'"):
        get_preset("gpu")
    with pytest.raises(ConfigError, match="unknown dataset"):
        preset_config_dicts("paper", ["imagenet"])
    with pytest.raises(ConfigError, match="no datasets"):
        preset_config_dicts("paper", [])
    with pytest.raises(ConfigError, match="distinct"):
        preset_config_dicts("cpu", seeds=[1, 1])


def test_tau_and_milestones_stay_inside_the_budget_for_any_epochs():
    p = Preset(name="t", description="t", model="mlp")
    for epochs in range(2, 60):
        assert 1 <= p.tau(epochs) < epochs
        assert all(1 <= m <= epochs for m in p.milestones(epochs))
