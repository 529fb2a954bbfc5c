"""DDP: two gloo processes on CPU reach the single-process result (same global batch) within tolerance."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _training_common import blobs, small_config  # noqa: E402
from dynamics.training import read_metrics, train  # noqa: E402
from dynamics.training.checkpoint import load_checkpoint  # noqa: E402
from dynamics.training.distributed import spawn  # noqa: E402
from dynamics.training.records import EpochRecord  # noqa: E402


def _config(modified: bool):
    # 40 samples, global batch 8: 5 steps per epoch, every batch splits 4 + 4 across the two processes
    return small_config(epochs=4, batch_size=8, modified=modified, tau=2 if modified else None,
                        features="gaussian", weight_decay=1e-4)


def _worker(out: str, modified: bool) -> None:
    torch.set_num_threads(1)
    x, y = blobs(n=40)
    train(_config(modified), out, data=(x, y, x, y), progress=False)


def test_two_process_ddp_matches_single_process_including_the_switch(tmp_path):
    x, y = blobs(n=40)
    single = train(_config(True), tmp_path / "single", data=(x, y, x, y), progress=False)
    spawn(_worker, 2, (str(tmp_path / "ddp"), True))
    ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert ddp["provenance"]["world_size"] == 2 and ddp["status"] == "completed"
    a = load_checkpoint(tmp_path / "single/checkpoints/last.pt")["model"]
    b = load_checkpoint(tmp_path / "ddp/checkpoints/last.pt")["model"]
    assert a.keys() == b.keys() and "zeta" in a
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    ea = [r.running_train_loss for r in read_metrics(tmp_path / "single/metrics.jsonl") if isinstance(r, EpochRecord)]
    eb = [r.running_train_loss for r in read_metrics(tmp_path / "ddp/metrics.jsonl") if isinstance(r, EpochRecord)]
    torch.testing.assert_close(torch.tensor(ea), torch.tensor(eb), rtol=1e-4, atol=1e-6)
    assert abs(single.final.train_loss - ddp["final"]["train_loss"]) < 1e-4
