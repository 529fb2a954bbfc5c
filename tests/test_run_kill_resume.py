"""Kill test: SIGKILL `dynamics train` at 10 seeded random moments of a short run, resume, compare bit for bit.

The run: the generated `blobs` data set, a tiny MLP, 8 epochs, modified with τ = 3, probes every 2 epochs
(a few seconds of training after a few seconds of start-up). Each kill lands anywhere after the run folder
appeared (before the first checkpoint, inside an epoch, during a checkpoint or metrics write, at the switch,
in the final checks); the killed run is resumed with `--resume` (started afresh when it died before its first
checkpoint, as documented) until it completes. Its final parameters, metrics (without timings) and final
metrics / conditions must equal the uninterrupted run's exactly: arithmetic on CPU with deterministic algorithms
is reproducible bit for bit, so equality, not a tolerance, is the claim.

Control: a run with another seed differs from the reference, so the comparison can fail.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dynamics.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["train", "--dataset", "blobs", "--model", "mlp", "--model-options", '{"width": 16, "depth": 1}',
        "--epochs", "8", "--batch-size", "8", "--modified", "--tau", "3", "--probe-every", "2", "--probe-size", "8",
        "--check-size", "16", "--no-progress"]
KILLS = 10
TIMING_KEYS = {"epoch_time_s", "samples_per_s", "time_s", "wall_time_s", "train_time_s", "probe_time_s",
               "probe_fraction"}


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dynamics", *ARGS, "--out", str(out), *extra]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1")


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _outcome(out: Path) -> tuple[dict, list, dict]:
    model = load_checkpoint(out / "checkpoints" / "last.pt")["model"]
    metrics = [_strip(json.loads(line)) for line in (out / "metrics.jsonl").read_text().splitlines()]
    s = json.loads((out / "summary.json").read_text())
    summary = _strip({k: s[k] for k in ("status", "epochs_completed", "final", "conditions", "switch", "n_train")})
    return model, metrics, summary


def _same(a: tuple, b: tuple) -> bool:
    ma, mb = a[0], b[0]
    return (ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
            and a[1] == b[1] and a[2] == b[2])


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("kill") / "ref"
    proc = subprocess.Popen(_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(),
                            cwd=ROOT)
    while not (out / "config.json").exists() and proc.poll() is None:
        time.sleep(0.01)
    t0 = time.perf_counter()
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return out, time.perf_counter() - t0


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path, reference):
    ref_out, window = reference
    ref = _outcome(ref_out)
    rng = random.Random(14)
    moments = sorted(rng.uniform(0.0, window) for _ in range(KILLS))
    stages = []
    for i, delay in enumerate(moments):
        out = tmp_path / f"cut{i}"
        proc = subprocess.Popen(_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), cwd=ROOT)
        while not (out / "config.json").exists() and proc.poll() is None:
            time.sleep(0.005)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        ckpt = out / "checkpoints" / "last.pt"
        stages.append(load_checkpoint(ckpt)["epoch"] if ckpt.exists() else -1)
        for _ in range(3):
            done = subprocess.run(_cmd(out, "--resume"), capture_output=True, text=True, env=_env(), cwd=ROOT,
                                  timeout=600)
            if done.returncode == 0:
                break
        assert done.returncode == 0, f"kill {i} after {delay:.2f} s: {done.stderr}"
        assert _same(_outcome(out), ref), f"kill {i} after {delay:.2f} s (checkpoint epoch {stages[-1]}) differs"
    assert len(set(stages)) >= 3, f"the kills landed at too few stages to mean much: {stages}"


def test_the_comparison_can_fail_a_run_with_another_seed_differs(tmp_path, reference):
    out = tmp_path / "other"
    done = subprocess.run(_cmd(out, "--seed", "1"), capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    assert not _same(_outcome(out), _outcome(reference[0]))
