"""Issue 14, defects 3-9 for `dynamics train` and its run folder: one test per defect, each with its control.

Each test reproduces the defect as reported (corrupted checkpoint used, two writers in one folder, a checkpoint
of another configuration, raw tracebacks, silently accepted values, misleading messages, silent progress) and
asserts the clear refusal / stated behaviour; the control in each shows the same path still works when the
input is good, so the refusal is not a refusal of everything.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from _training_common import blobs, small_config
from dynamics.cli import main
from dynamics.errors import ConfigError, DataError, RunStateError
from dynamics.training import train
from dynamics.training.checkpoint import CheckpointError, load_checkpoint
from dynamics.training.run_lock import RunLock, RunLockedError

ROOT = Path(__file__).resolve().parent.parent
BLOBS = ["train", "--dataset", "blobs", "--model", "mlp", "--model-options", '{"width": 8, "depth": 1}',
         "--batch-size", "16", "--check-size", "8"]


def _data(n: int = 32):
    x, y = blobs(n=n)
    return (x, y, x[:8], y[:8])


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


# --- defect 3: a corrupted checkpoint is refused ---------------------------------------------------------------

def test_corrupted_checkpoint_is_refused_with_what_to_do_and_an_intact_one_resumes(tmp_path):
    cfg = small_config(epochs=3)
    train(cfg, tmp_path / "ok", data=_data(), progress=False)
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "ok", bad)
    for d in (tmp_path / "ok", bad):
        (d / "summary.json").unlink()
    ckpt = bad / "checkpoints" / "last.pt"
    raw = bytearray(ckpt.read_bytes())
    for i in range(400):  # flip 400 bytes in the middle, as in the report
        raw[len(raw) // 3 + i] ^= 0xFF
    ckpt.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt.*--overwrite"):
        train(cfg, bad, resume=True, data=_data(), progress=False)
    assert train(cfg, tmp_path / "ok", resume=True, data=_data(), progress=False).status == "completed"  # control


def test_a_save_interrupted_between_its_steps_leaves_a_verifiable_checkpoint(tmp_path):
    """The digest file accepts old and new while the checkpoint is replaced, so a crash at any step verifies."""
    train(small_config(epochs=2), tmp_path, data=_data(), progress=False)
    ckpt = tmp_path / "checkpoints" / "last.pt"
    digest = ckpt.with_name("last.pt.sha256")
    accepted = json.loads(digest.read_text())["accept"]
    assert len(accepted) == 1
    digest.write_text(json.dumps({"accept": ["0" * 64, *accepted]}))  # state after step 1 of the next save
    assert load_checkpoint(ckpt)["epoch"] == 2
    digest.write_text(json.dumps({"accept": ["0" * 64]}))  # control: a digest of other bytes is refused
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(ckpt)


# --- defect 4: one writer per run folder ----------------------------------------------------------------------

def test_second_training_into_a_locked_folder_is_refused_and_the_lock_is_released_after(tmp_path):
    with RunLock(tmp_path):  # a live training holds the folder
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            train(small_config(epochs=1), tmp_path, data=_data(), progress=False)
    assert not (tmp_path / "metrics.jsonl").exists()
    train(small_config(epochs=1), tmp_path, data=_data(), progress=False)  # control: free again
    assert not (tmp_path / ".lock").exists()  # released on exit


def test_lock_is_released_when_training_fails(tmp_path):
    cfg = small_config(epochs=3, lr=0.05, momentum=0.0, loss="mse", schedule="step", milestones=[1], gamma=1e9)
    with pytest.raises(Exception, match="the training loss became"):
        train(cfg, tmp_path, data=_data(), progress=False)
    assert not (tmp_path / ".lock").exists()


def test_stale_lock_of_a_dead_process_is_reported_and_taken_over(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / ".lock").write_text(json.dumps({"pid": dead.pid, "host": "here"}))
    with caplog.at_level("WARNING", logger="dynamics.training.run_lock"):
        s = train(small_config(epochs=1), tmp_path, data=_data(), progress=False)
    assert s.status == "completed"
    assert f"stale lock left by pid {dead.pid}" in caplog.text


# --- defect 5: a checkpoint is bound to its configuration ----------------------------------------------------

def test_checkpoint_of_another_configuration_is_refused(tmp_path):
    x, y = blobs(n=24)
    data = (x, y, x, y)
    train(small_config(epochs=2, modified=True, tau=1, check_size=8), tmp_path / "mod", data=data, progress=False)
    train(small_config(epochs=2), tmp_path / "base", data=data, progress=False)
    (tmp_path / "base" / "summary.json").unlink()
    for name in ("last.pt", "last.pt.sha256"):  # the modified run's checkpoint, copied into the base run
        shutil.copy(tmp_path / "mod" / "checkpoints" / name, tmp_path / "base" / "checkpoints" / name)
    with pytest.raises(CheckpointError, match="different configuration"):
        train(small_config(epochs=2), tmp_path / "base", resume=True, data=data, progress=False)
    shutil.rmtree(tmp_path / "base")  # control: the modified run resumes from its own checkpoint
    (tmp_path / "mod" / "summary.json").unlink()
    cfg = small_config(epochs=2, modified=True, tau=1, check_size=8)
    assert train(cfg, tmp_path / "mod", resume=True, data=data, progress=False).switch.tau_effective == 1


# --- defect 6: no raw tracebacks -------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["file", "proc", "readonly"])
def test_bad_out_folder_is_a_clear_error_before_anything_runs(tmp_path, capsys, where):
    if where == "file":
        out = tmp_path / "f"
        out.write_text("x")
    elif where == "proc":
        out = Path("/proc/self/run")
    else:
        if os.geteuid() == 0:
            pytest.skip("root can write anywhere")
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        out = ro / "run"
    rc, _, err = _cli([*BLOBS, "--epochs", "1", "--out", str(out)], capsys)
    assert rc == 2 and "--out" in err and "Traceback" not in err


def test_out_folder_checks_also_guard_the_python_api(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(RunStateError, match="is a file"):
        train(small_config(epochs=1), f, data=_data(), progress=False)


def test_seed_minus_one_is_refused_and_leaves_no_folder(tmp_path, capsys):
    rc, _, err = _cli([*BLOBS, "--epochs", "1", "--seed", "-1", "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and "seed must be in 0..4294967295" in err and not (tmp_path / "r").exists()
    rc, _, _ = _cli([*BLOBS, "--epochs", "1", "--seed", "5", "--out", str(tmp_path / "r")], capsys)
    assert rc == 0 and (tmp_path / "r" / "summary.json").is_file()  # control


def test_cuda_device_without_cuda_is_refused_before_the_data_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="sees no CUDA device; pass --device cpu"):
        train(small_config(dataset="semeion", device="cuda"), tmp_path / "r", progress=False)  # no data: no load
    assert not (tmp_path / "r").exists()


# --- defect 7: nothing silently accepted ------------------------------------------------------------------------

def test_negative_gamma_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="gamma must be > 0"):
        train(small_config(gamma=-1.0, schedule="step", milestones=[1]), tmp_path, data=_data(), progress=False)
    small_config(gamma=0.5, schedule="step", milestones=[1]).validate()  # control


def test_resume_of_a_folder_that_does_not_exist_is_refused(tmp_path):
    with pytest.raises(RunStateError, match="nothing to resume.*drop --resume"):
        train(small_config(epochs=1), tmp_path / "nope", resume=True, data=_data(), progress=False)
    assert not (tmp_path / "nope" / "config.json").exists()


def test_resume_after_checkpoints_were_deleted_is_refused_and_keeps_the_metrics(tmp_path):
    train(small_config(epochs=2), tmp_path, data=_data(), progress=False)
    (tmp_path / "summary.json").unlink()
    shutil.rmtree(tmp_path / "checkpoints")
    before = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(RunStateError, match="records 2 trained epoch.*checkpoint .* is missing.*--overwrite"):
        train(small_config(epochs=2), tmp_path, resume=True, data=_data(), progress=False)
    assert (tmp_path / "metrics.jsonl").read_text() == before


def test_train_subset_larger_than_the_dataset_is_refused_before_loading(tmp_path):
    with pytest.raises(ConfigError, match="train_subset=5000 is larger than semeion's training set \\(1000"):
        train(small_config(dataset="semeion", train_subset=5000, data_root=str(tmp_path / "no-data")), tmp_path / "r",
              progress=False)
    assert not (tmp_path / "r").exists()
    with pytest.raises(ConfigError, match="larger than the training set \\(32"):  # given tensors: checked too
        train(small_config(train_subset=33), tmp_path / "r2", data=_data(), progress=False)
    s = train(small_config(train_subset=20), tmp_path / "r3", data=_data(), progress=False)  # control
    assert s.n_train == 20


# --- defect 8: messages that say what happened ----------------------------------------------------------------

def test_corrupt_config_json_is_reported_as_damaged(tmp_path):
    train(small_config(epochs=1), tmp_path, data=_data(), progress=False)
    (tmp_path / "config.json").write_text('{"schema": 2, "config": {"epo')
    with pytest.raises(RunStateError, match="config.json is damaged .*--overwrite") as info:
        train(small_config(epochs=1), tmp_path, resume=True, data=_data(), progress=False)
    assert "different configuration" not in str(info.value)


def test_modified_with_one_epoch_says_it_needs_two():
    with pytest.raises(ConfigError, match="--modified needs at least 2 epochs") as info:
        small_config(epochs=1, modified=True).validate()
    assert "1..0" not in str(info.value)


def test_interrupt_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "dynamics", *BLOBS, "--epochs", "100000", "--out", str(out)]
    # the child gets the default SIGINT disposition: a shell starts background jobs with SIGINT ignored, and a
    # Python started that way never raises KeyboardInterrupt (the suite must not depend on how it was launched)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not (out / "checkpoints" / "last.pt.sha256").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted; the last checkpoint is after epoch" in err and "--resume" in err and "Traceback" not in err
    assert not (out / ".lock").exists()


# --- defect 9: progress off a terminal, and the two training losses named -------------------------------------

def test_one_plain_line_per_epoch_off_a_terminal_and_the_two_losses_named(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "dynamics", *BLOBS, "--epochs", "3", "--out", str(out)],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in lines] == ["1", "2", "3"] and all("running train loss" in ln for ln in lines)
    assert "final (eval mode, whole sets): train loss" in done.stdout
    epoch = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    summary = json.loads((out / "summary.json").read_text())
    assert "running_train_loss" in epoch and "train_loss" not in epoch and "train_loss" in summary["final"]
    quiet = subprocess.run([sys.executable, "-m", "dynamics", *BLOBS, "--epochs", "2", "--out", str(tmp_path / "q"),
                            "--no-progress"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                           env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert quiet.returncode == 0 and not any(ln.startswith("epoch ") for ln in quiet.stdout.splitlines())  # control


def test_missing_data_is_found_before_a_run_folder_is_made(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "no-data")):
        train(small_config(dataset="semeion", data_root=str(tmp_path / "no-data")), tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()
