"""The practical regime under SGD (theory/practical.py): a small CNN with p < n·k, reduced runs (a few seconds).

The reduced runs use synthetic 8×8 images, so they always exercise the code; the Semeion test reads
$DYNAMICS_DATA and is skipped, with the reason, when it is unset or lacks the file. Each verdict is checked
against an independent reference (loss and ½dist² from a dense J and torch.linalg.lstsq), and the control
(unreachable targets) must fail.
"""

from __future__ import annotations

import os

import pytest
import torch

from dynamics.cli import main
from dynamics.data import DataMissingError
from dynamics.engine.jacobian import jacobian
from dynamics.errors import InputError
from theory import verify
from theory.practical import (
    GRAD_TOL, RTOL, PracticalCNN, demo_reachable, demo_width_sweep_sgd, planted_teacher, semeion_images,
    synthetic_images, teacher_targets, train_sgd,
)


def _reference(model, x, y) -> tuple[float, float]:
    """(L, ½dist(Y, Col J)²) from a dense J by autograd and a least-squares solve: the slow obvious way."""
    with torch.no_grad():
        loss = 0.5 * float(((model(x) - y) ** 2).sum())
    J = jacobian(model, x, dtype=torch.float64)
    Y = y.reshape(-1, 1)
    z = torch.linalg.lstsq(J, Y, driver="gelsd").solution
    return loss, 0.5 * float(((Y - J @ z) ** 2).sum())


@pytest.fixture(scope="module")
def reduced():
    torch.set_num_threads(1)
    x = synthetic_images(40, seed=0)
    rows, runs = demo_reachable(x, "synthetic", k=2, width=2, control_width=8, steps=300)
    return x, rows, runs


def test_parameter_count_and_practical_regime():
    m = PracticalCNN(2, 2)
    p = sum(q.numel() for q in m.parameters())
    assert p == 10 * 2 + 9 * 4 + 2 + 4 * 2 * 2 + 2 == 76
    x = synthetic_images(30, seed=1)  # n·k = 60 ≤ p = 76: not the practical regime, refused
    with pytest.raises(InputError, match="practical regime"):
        demo_reachable(x, "synthetic", width=2, steps=1)


def test_teacher_targets_depend_on_the_seed_only():
    x = synthetic_images(50, seed=2)
    y = teacher_targets(x, 2, 3, seed=4)
    assert y.shape == (50, 3) and torch.equal(y, teacher_targets(x, 2, 3, seed=4))
    assert not torch.equal(y, teacher_targets(x, 2, 3, seed=5))


def test_planted_teacher_is_reachable_and_moved():
    """The planted targets are outputs of a network of the student's architecture, so L = 0 is attained
    (load the teacher's parameters into the student); the teacher is not the student (r(θ₀) > 0 control)."""
    x = synthetic_images(40, seed=3)
    student = PracticalCNN(2, 2, seed=1, gain=2.0)
    teacher = planted_teacher(student, 0.5, seed=0)
    with torch.no_grad():
        y = teacher(x)
        for a, b in zip(student.parameters(), teacher.parameters()):
            assert float((b - a).norm() / a.norm()) == pytest.approx(0.5, rel=1e-12)
        assert float(((student(x) - y) ** 2).sum()) > 1e-3
        clone = PracticalCNN(2, 2, seed=7, gain=2.0)
        clone.load_state_dict(teacher.state_dict())
        assert float(((clone(x) - y) ** 2).sum()) == 0.0   # same arithmetic: exactly reachable
    with pytest.raises(InputError):
        planted_teacher(student, 0.0)


def test_gain_scales_the_weights_only():
    a, b = PracticalCNN(2, 2, seed=3), PracticalCNN(2, 2, seed=3, gain=2.0)
    assert torch.equal(b.conv1.weight, 2 * a.conv1.weight) and torch.equal(b.readout.weight, 2 * a.readout.weight)
    assert torch.equal(b.conv2.bias, a.conv2.bias)
    with pytest.raises(InputError):
        PracticalCNN(2, 2, gain=0.0)


def test_training_records_match_the_reference(reduced):
    x, rows, runs = reduced
    run = runs["control"]
    y = teacher_targets(x, 8, 2, seed=0)
    loss, half_dist2 = _reference(run.model, x, y)
    # float64 on n·k = 80 rows: the recorded numbers agree with the slow route to ~1e-10 relative
    assert run.losses[-1] == pytest.approx(loss, rel=1e-10)
    assert run.half_dist2[-1] == pytest.approx(half_dist2, rel=1e-6, abs=1e-12)
    assert run.losses[-1] < 0.2 * run.losses[0]  # SGD trained
    # statement 1's lower side at every record: L ≥ ½dist² (on-model: f ∈ Col J)
    assert all(h <= l * (1 + 1e-9) + 1e-12 for l, h in zip(run.losses, run.half_dist2))
    assert run.steps[0] == 0 and run.steps[-1] == 300 and run.cpu_seconds > 0


def test_rows_are_non_trivial_and_the_control_fails(reduced):
    x, rows, _ = reduced
    reachable, identity, control = rows
    for r in rows:
        assert r.quantities["p"] == 76 and r.quantities["nk"] == 80 and not r.trivial
        assert r.quantities["rank"] <= 76 < 80
        assert r.quantities["r_dense"] == pytest.approx(r.quantities["r"], rel=1e-6, abs=1e-12)
    assert control.control and not control.expected
    assert not control.holds and control.passed            # unreachable: L = 0 must fail
    assert control.quantities["L_rel"] > RTOL and control.quantities["r"] > 1e-3


def test_a_row_is_a_limit_only_below_grad_tol(reduced):
    _, rows, _ = reduced
    for r in rows:
        not_limit = r.quantities["rel_grad"] > GRAD_TOL
        assert ("NOT CONVERGED" in r.notes) == not_limit
        if not_limit:
            assert not r.holds  # a run that did not converge never passes


def test_identity_verdict_follows_its_quantities(reduced):
    _, rows, _ = reduced
    identity = rows[1]
    q = identity.quantities
    assert identity.holds == (q["rel_grad"] <= GRAD_TOL and q["rel_gap"] <= RTOL)


def test_width_sweep_reduced():
    x = synthetic_images(40, seed=0)
    row = demo_width_sweep_sgd(x, "synthetic", k=2, teacher_width=8, widths=(1, 2), steps=200)
    q = row.quantities
    assert q["p"] == [10 + 9 + 1 + 8 + 2, 76] and q["nk"] == 80 and not row.trivial
    # statement 1's lower side per width: L_T ≥ ½dist²
    assert all(a >= b - 1e-12 for a, b in zip(q["L_T_rel"], q["half_dist2_rel"]))
    expected_holds = q["max_rel_grad"] <= GRAD_TOL and q["max_gap_rel"] <= RTOL
    assert row.holds == expected_holds
    assert len(row.series["losses"]) == 2 and len(row.series["losses"][0]) == len(row.series["steps"][0])


def test_bad_training_arguments():
    x = synthetic_images(8)
    with pytest.raises(InputError):
        train_sgd(PracticalCNN(1, 1), x, torch.zeros(8, 1, dtype=torch.float64), steps=0)
    with pytest.raises(InputError):
        train_sgd(PracticalCNN(1, 1), x, torch.zeros(8, 1, dtype=torch.float64), steps=5, final_lr=0.0)
    with pytest.raises(InputError):
        PracticalCNN(0, 2)


def test_semeion_reduced():
    root = os.environ.get("DYNAMICS_DATA")
    if not root:
        pytest.skip("DYNAMICS_DATA is not set: the Semeion rows need its data root")
    try:
        x = semeion_images(60, root)
    except DataMissingError as exc:
        pytest.skip(f"Semeion absent under DYNAMICS_DATA: {exc}")
    assert x.shape == (60, 1, 8, 8) and x.dtype == torch.float64
    assert float(x.mean()) == pytest.approx(0.0, abs=1e-12)
    rows, _ = demo_reachable(x, "Semeion", k=2, width=2, control_width=8, steps=150)
    assert not rows[2].holds and rows[2].passed and not any(r.trivial for r in rows)


def test_default_verify_does_not_run_the_practical_rows(monkeypatch, tmp_path):
    assert "practical" not in verify.GROUPS and verify.FULL_GROUPS == ("practical",)
    seen = {}

    def fake(**kw):
        seen.update(kw)
        return verify.VerifyResult(reports=[])

    monkeypatch.setattr(verify, "collect", fake)
    main(["verify", "--out", str(tmp_path / "a"), "--no-figures"])
    assert seen["full"] is False
    main(["verify", "--full", "--out", str(tmp_path / "b"), "--no-figures"])
    assert seen["full"] is True


def test_full_without_semeion_is_skipped_with_the_reason(tmp_path):
    result = verify.collect(include=(), full=True, data_root=str(tmp_path))
    assert result.reports == [] and result.skipped[0].startswith("Practical (Semeion): skipped (")
    assert "practical" in result.seconds
