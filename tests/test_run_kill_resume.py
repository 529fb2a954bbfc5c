"""Kill test: SIGKILL `dynamics train` at 10 seeded random moments of a short run, resume, compare bit for bit.

The run: the generated `blobs` data set, a tiny MLP, 12 epochs, modified with τ = 5, probes every 2 epochs
(a few seconds of training after a few seconds of start-up). A kill moment is drawn (seeded) as "k epoch
records written, then a delay of up to 40 ms": epochs take about 20 ms here while the checks at τ and at the end
take longer, so a uniform draw over wall time would land almost every kill in those checks. The kills land
before the first checkpoint, inside epochs, during checkpoint or metrics writes, at the switch and in the
final checks; the killed run is resumed with `--resume` (started afresh when it died before its first
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
        "--epochs", "12", "--batch-size", "8", "--modified", "--tau", "5", "--probe-every", "2", "--probe-size", "8",
        "--check-size", "16", "--no-progress"]
KILLS = 10
EPOCHS = 12
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


def _epochs_written(out: Path) -> int:
    try:
        return (out / "metrics.jsonl").read_text().count('"type": "epoch"')
    except FileNotFoundError:
        return 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kill") / "ref"
    done = subprocess.run(_cmd(out), capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    return out


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path, reference):
    ref = _outcome(reference)
    rng = random.Random(14)
    moments = sorted((rng.randint(0, EPOCHS), rng.uniform(0.0, 0.04)) for _ in range(KILLS))
    stages = []
    for i, (k, delay) in enumerate(moments):
        out = tmp_path / f"cut{i}"
        proc = subprocess.Popen(_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), cwd=ROOT)
        while not (out / "config.json").exists() and proc.poll() is None:
            time.sleep(0.002)
        while _epochs_written(out) < k and proc.poll() is None:
            time.sleep(0.002)
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
        where = f"kill {i} ({k} epochs written + {delay * 1e3:.0f} ms, checkpoint of epoch {stages[-1]})"
        assert done.returncode == 0, f"{where}: {done.stderr}"
        assert _same(_outcome(out), ref), f"{where}: the resumed run differs from the uninterrupted one"
    assert len(set(stages)) >= 5, f"the kills landed at too few stages to mean much: {stages}"


def test_the_comparison_can_fail_a_run_with_another_seed_differs(tmp_path, reference):
    out = tmp_path / "other"
    done = subprocess.run(_cmd(out, "--seed", "1"), capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    assert not _same(_outcome(out), _outcome(reference))
