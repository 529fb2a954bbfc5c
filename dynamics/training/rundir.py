"""The run directory: ``config.json``, ``metrics.jsonl``, ``summary.json``, ``checkpoints/last.pt``.

:func:`prepare` decides whether a folder may receive a run (refusing a folder that holds another run unless
``resume`` or ``overwrite``); :func:`read_metrics` / :func:`truncate_metrics` read and repair ``metrics.jsonl``
(a resumed run drops records written after its checkpoint, so the file equals an uninterrupted run's).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from dynamics.atomic import append_line, write_text
from dynamics.errors import RunStateError

__all__ = ["RunDir", "read_metrics"]

RUN_FILES = ("config.json", "metrics.jsonl", "summary.json")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (a trailing partial line, left by a crash, is ignored)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


class RunDir:
    """Paths of one run folder and the operations on them."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.config = self.root / "config.json"
        self.metrics = self.root / "metrics.jsonl"
        self.summary = self.root / "summary.json"
        self.checkpoints = self.root / "checkpoints"
        self.last = self.checkpoints / "last.pt"

    def prepare(self, config: dict[str, Any], resume: bool, overwrite: bool) -> bool:
        """Check the folder and return whether to resume (False: a fresh run; the folder is cleared).

        Raises RunStateError when the folder holds another run (or unrelated files) and neither flag allows it,
        or when ``resume`` meets a run with a different configuration.
        """
        if resume and overwrite:
            raise RunStateError("--resume and --overwrite exclude each other: continue the run or replace it")
        if self.config.is_file():
            try:
                saved = json.loads(self.config.read_text())
            except json.JSONDecodeError:
                saved = None
            if resume:
                diff = _diff(saved or {}, config)
                if diff:
                    raise RunStateError(f"{self.root} holds a run with a different configuration ({diff}); "
                                        "resume it with the same options, or pass --overwrite to replace it")
                if self.last.is_file():
                    return True
                self.clear()  # killed before its first checkpoint: start it again
                return False
            if not overwrite:
                what = "the same configuration" if saved is not None and not _diff(saved, config) else \
                    f"a different configuration ({_diff(saved or {}, config)})"
                raise RunStateError(f"{self.root} already holds a run with {what}; pass --resume to continue it "
                                    "or --overwrite to replace it, or choose another --out")
        elif self.root.is_dir() and any(self.root.iterdir()) and not overwrite:
            raise RunStateError(f"{self.root} is not empty and holds no run (no config.json); choose an empty or new "
                                "--out, or pass --overwrite to write the run there anyway")
        self.clear()
        return False

    def clear(self) -> None:
        """Remove this toolkit's run files (never anything else)."""
        for name in RUN_FILES:
            (self.root / name).unlink(missing_ok=True)
        if self.checkpoints.is_dir():
            shutil.rmtree(self.checkpoints)
        self.root.mkdir(parents=True, exist_ok=True)

    def append(self, record: dict[str, Any]) -> None:
        append_line(self.metrics, json.dumps(record))

    def truncate_metrics(self, epoch: int) -> None:
        """Keep only records of epochs ≤ ``epoch`` (what the checkpoint at ``epoch`` had written)."""
        keep = [r for r in read_metrics(self.metrics) if int(r.get("epoch", 0)) <= epoch]
        write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in keep))


_IGNORED = {"device", "data_root"}


def _diff(saved: dict[str, Any], config: dict[str, Any]) -> str:
    keys = sorted((set(saved) | set(config)) - _IGNORED)
    diffs = [f"{k}: {saved.get(k)!r} vs {config.get(k)!r}" for k in keys if saved.get(k) != config.get(k)]
    return "; ".join(diffs[:5]) + (" ..." if len(diffs) > 5 else "")
