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


def test_cpu_preset_states_its_reductions_in_the_caption():
    p = PRESETS["cpu"]
    runs = preset_config_dicts("cpu")
    assert len(runs) == 2 * 3 * 2  # mnist, semeion x 3 seeds x {base, modified}
    assert {c["model"] for _, c in runs} == {CPU_MODEL} and {c["augment"] for _, c in runs} == {False}
    by_dataset = {(c["dataset"], c["epochs"], tuple(c["milestones"]), c["tau"]) for _, c in runs if c["modified"]}
    assert by_dataset == {("mnist", 15, (7, 11), 9), ("semeion", 50, (25, 37), 30)}
    caption = p.caption()
    for fact in ("resnet_small", "15 epochs instead of 50 (except Semeion", "3 seeds instead of 5",
                 "no augmentation runs", "subset of 10,000 of the 60,000 training images"):
        assert fact in caption
    # everything not listed as a reduction equals the paper protocol
    paper = dict(preset_config_dicts("paper", ["mnist"], augment=[False], seeds=[0]))["mnist-noaug-base-seed0"]
    cpu = dict(runs)["mnist-noaug-base-seed0"]
    differ = {k for k in paper if paper[k] != cpu[k]}
    assert differ == {"model", "epochs", "milestones", "probe_every", "device", "train_subset"}
    assert cpu["train_subset"] == 10000 and dict(runs)["semeion-noaug-base-seed0"]["train_subset"] is None


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
