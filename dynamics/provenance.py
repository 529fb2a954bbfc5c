"""Provenance attached to every saved result: versions, git commit, machine, time, seed, config.

>>> p = provenance(seed=0)
>>> sorted(k in p for k in ("torch", "python", "git_commit", "machine", "seed"))
[True, True, True, True, True]
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy
import scipy
import torch

__all__ = ["provenance", "git_commit", "machine_description", "package_version"]

_REPO = Path(__file__).resolve().parent.parent


def git_commit(repo: str | os.PathLike | None = None) -> str | None:
    """The commit hash of the checkout the package runs from (suffixed ``-dirty`` if modified), or None."""
    repo = Path(repo) if repo is not None else _REPO
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            return None
        commit = out.stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return commit + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine_description() -> dict[str, Any]:
    """CPU / GPU / OS facts that a timing or a result depends on."""
    desc: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    desc["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if torch.cuda.is_available():
        desc["gpu"] = torch.cuda.get_device_name(0)
        desc["cuda"] = torch.version.cuda
    return desc


def package_version() -> str | None:
    """The installed version of the ``dynamics`` distribution (pyproject.toml), or None when it runs from a
    source tree that was never installed."""
    try:
        return metadata.version("dynamics")
    except metadata.PackageNotFoundError:
        return None


def provenance(seed: int | None = None, config: Any = None, **extra: Any) -> dict[str, Any]:
    """A JSON-ready provenance record.

    Args:
        seed: the random seed the result was produced with.
        config: a dataclass or dict describing the run (stored as a dict).
        **extra: anything else worth recording (bn_mode, dtype, ...).
    """
    if config is not None and hasattr(config, "to_dict"):
        config = config.to_dict()
    elif config is not None and hasattr(config, "__dataclass_fields__"):
        config = dataclasses.asdict(config)
    rec: dict[str, Any] = {
        "dynamics": package_version(),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "machine": machine_description(),
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
    }
    if config is not None:
        rec["config"] = config
    rec.update(extra)
    return rec
