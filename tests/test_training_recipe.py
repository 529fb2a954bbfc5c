"""The CPU preset's recipe pieces in the runner: the per-step one-cycle schedule, channels_last, the thread count,
and the run certificate's epsilon after phase-2 epochs."""

from __future__ import annotations

import json

import pytest
import torch

from _training_common import blobs, small_config
from dynamics.errors import ConfigError
from dynamics.training import read_metrics, train
from dynamics.training.optimizers import onecycle_factor, set_step_lr
from dynamics.training.records import EpochRecord
from dynamics.training.threads import free_cores, resolve_threads


@pytest.mark.parametrize("total, pct", [(37, 0.25), (8, 0.3), (200, 0.25), (5, 0.0)])
def test_onecycle_factor_matches_torch_onecycle_lr(total, pct):
    """Reference: torch.optim.lr_scheduler.OneCycleLR (cycle_momentum off), stepped once per optimiser step."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.2, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=total, pct_start=pct,
                                                cycle_momentum=False)
    ref = []
    for step in range(total):
        ref.append(opt.param_groups[0]["lr"])
        opt.step()
        if step < total - 1:
            sched.step()
    mine = [0.2 * onecycle_factor(s, total, pct) for s in range(total)]
    assert mine == pytest.approx(ref, rel=1e-12, abs=1e-15)  # same formula; only rounding differs


def test_onecycle_control_a_wrong_peak_position_is_detected():
    """Control: the comparison above fails for a schedule peaking elsewhere (so it can fail)."""
    shifted = [onecycle_factor(s, 37, 0.5) for s in range(37)]
    assert max(abs(a - b) for a, b in zip(shifted, [onecycle_factor(s, 37, 0.25) for s in range(37)])) > 0.1


def test_runner_steps_the_onecycle_schedule_per_batch_and_leaves_zeta_alone(tmp_path):
    x, y = blobs(n=64)
    cfg = small_config(schedule="onecycle", lr=0.2, epochs=4, batch_size=16, nesterov=True, modified=True, tau=2)
    seen = []
    original = set_step_lr

    def spy(opt, cfg_, epoch, step, steps, n_groups=None):
        lr = original(opt, cfg_, epoch, step, steps, n_groups)
        seen.append((epoch, step, lr, [g["lr"] for g in opt.param_groups]))
        return lr

    import dynamics.training.loop as loop
    loop.set_step_lr = spy
    try:
        train(cfg, tmp_path, data=(x, y, x, y), progress=False)
    finally:
        loop.set_step_lr = original
    steps = 4  # 64 / 16
    assert [(e, s) for e, s, _, _ in seen] == [(e, s) for e in range(4) for s in range(steps)]
    for e, s, lr, groups in seen:
        assert lr == pytest.approx(0.2 * onecycle_factor(e * steps + s, 4 * steps))
        assert groups[0] == lr
    for e in (2, 3):  # after the switch: zeta's group (the last) keeps its per-epoch step, theta's changes per step
        in_epoch = [groups for e_, _, _, groups in seen if e_ == e]
        assert all(len(g) == 2 for g in in_epoch)
        assert len({g[-1] for g in in_epoch}) == 1 and len({g[0] for g in in_epoch}) == steps
    recs = [r for r in read_metrics(tmp_path / "metrics.jsonl") if isinstance(r, EpochRecord)]
    assert [r.lr for r in recs] == pytest.approx([0.2 * onecycle_factor(e * steps, 16) for e in range(4)])


def test_channels_last_trains_the_same_function_within_rounding(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 3, (32,), generator=g)
    runs = {}
    for cl in (False, True):
        cfg = small_config(model="resnet8", model_options={"width": 0.25}, epochs=1, batch_size=16,
                           channels_last=cl)
        runs[cl] = train(cfg, tmp_path / str(cl), data=(x, y, x, y), progress=False)
    # same data order and initialisation; convolutions summed in another order: agree to float32 rounding
    assert runs[True].final.train_loss == pytest.approx(runs[False].final.train_loss, rel=1e-4)
    state = torch.load(tmp_path / "True" / "checkpoints" / "last.pt", weights_only=False)
    conv = next(v for k, v in state["model"].items() if v.dim() == 4 and v.shape[1] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


def test_threads_are_chosen_recorded_and_validated(tmp_path, monkeypatch):
    assert free_cores(cores=2, load=6.0) == 1 and free_cores(cores=16, load=0.2) == 16
    assert free_cores(cores=4, load=1.4) == 3
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    n, reason = resolve_threads(None)
    assert n >= 1 and "sched_getaffinity" in reason
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's explicit choice wins over the free-core count
    assert resolve_threads(None) == (3, "OMP_NUM_THREADS=3")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    x, y = blobs(n=16)
    before = torch.get_num_threads()
    s = train(small_config(epochs=1, threads=1), tmp_path, data=(x, y, x, y), progress=False)
    assert s.threads == {"threads": 1, "reason": "given (--threads 1)"}
    assert json.loads((tmp_path / "summary.json").read_text())["threads"]["threads"] == 1
    assert torch.get_num_threads() == before  # restored after the run
    with pytest.raises(ConfigError, match="threads must be a positive integer"):
        small_config(threads=0).validate()


def test_epsilon_is_recorded_after_phase2_epochs_and_matches_the_end_certificate_rule(tmp_path):
    x, y = blobs(n=48)
    cfg = small_config(epochs=5, modified=True, tau=2, epsilon_every=1, features="gaussian")
    s = train(cfg, tmp_path, data=(x, y, x, y), progress=False)
    recs = [r for r in read_metrics(tmp_path / "metrics.jsonl") if isinstance(r, EpochRecord)]
    # phase-2 epochs 3 and 4 (the last, 5, is the summary's end certificate); none before the switch
    assert [r.epoch for r in recs if r.epsilon_ce is not None] == [3, 4]
    assert all(r.epsilon_ce is None for r in recs if r.epoch <= 2)
    assert s.run_certificate_end["epsilon_ce"] is not None
    off = small_config(epochs=5, modified=True, tau=2, epsilon_every=0, features="gaussian")
    train(off, tmp_path / "off", data=(x, y, x, y), progress=False)
    recs_off = [r for r in read_metrics(tmp_path / "off" / "metrics.jsonl") if isinstance(r, EpochRecord)]
    assert all(r.epsilon_ce is None for r in recs_off)
    # recording epsilon does not change the trajectory
    assert [r.running_train_loss for r in recs_off] == [r.running_train_loss for r in recs]
