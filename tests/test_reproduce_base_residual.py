"""The base network's own residual lower bound at the end of a run (dynamics.reproduce.base_residual)."""

from __future__ import annotations

import json

import pytest

from _training_common import random_label_data, small_config
from dynamics.conditions import check_alignment
from dynamics.errors import RunStateError
from dynamics.models import create_for_data
from dynamics.reproduce.base_residual import (ALIGNMENT_LOWER_FILE, base_alignment_lower, need_for_lower_bound,
                                              read_alignment_lower)
from dynamics.training import train
from dynamics.training.checkpoint import load_checkpoint
from dynamics.training.run_folder import load_run


def _data():
    return random_label_data(n=120, dim=4, k=3, seed=0)


@pytest.fixture
def base_run(tmp_path):
    """A linear base model (p = 4·3 + 3 = 15) on 120 random-label points: n·k = 360 > p, so r > 0 is provable."""
    x, y = _data()
    cfg = small_config(model="mlp", model_options={"depth": 0}, epochs=2, batch_size=20)
    train(cfg, tmp_path / "base", data=(x, y, x, y), progress=False)
    return tmp_path / "base", (x, y, x, y)


def test_lower_bound_is_below_the_exact_residual_and_written(base_run):
    path, data = base_run
    out = base_alignment_lower(path, data)
    assert out["skipped"] is None and out["p"] == 15 and out["subset_size"] * out["k"] > out["p"]
    record = load_run(path)
    model = create_for_data("mlp", data[0], 3, depth=0)
    model.load_state_dict(load_checkpoint(path / "checkpoints" / "last.pt", record.config.digest())["model"])
    exact = check_alignment(model.eval(), data[0], data[1], method="dense").residual  # slow obvious reference
    assert 0 < out["lower"] <= exact * (1 + 1e-9) and exact <= out["upper"] * (1 + 1e-9)
    assert read_alignment_lower(record) == json.loads((path / ALIGNMENT_LOWER_FILE).read_text()) == \
        {**out, "notes": out["notes"]}


def test_skipped_with_a_reason_when_no_subset_can_bound_or_it_does_not_fit(base_run):
    path, data = base_run
    tiny = base_alignment_lower(path, data, memory_budget=1000, write=False)
    assert tiny["lower"] is None and "memory budget" in tiny["skipped"] and not (path / ALIGNMENT_LOWER_FILE).exists()
    wide = need_for_lower_bound(n=1000, k=10, p=77754)
    assert "n·k = 10000 ≤ p = 77754" in wide["skipped"]
    mnist = need_for_lower_bound(n=60000, k=10, p=77754)
    assert "GiB" in mnist["skipped"] and mnist["subset_size"] == 11664


def test_refuses_a_modified_or_unfinished_run(tmp_path):
    x, y = _data()
    cfg = small_config(model="mlp", model_options={"depth": 0}, epochs=2, batch_size=20, modified=True, tau=1)
    train(cfg, tmp_path / "mod", data=(x, y, x, y), progress=False)
    with pytest.raises(RunStateError, match="finished base run"):
        base_alignment_lower(tmp_path / "mod", (x, y, x, y))
