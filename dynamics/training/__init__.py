"""Training: the runner, any base algorithm, the modified framework A(base) that enforces alignment, probes.

* :func:`train` (``dynamics train`` on the command line) runs a :class:`TrainConfig` into a run directory
  (``config.json``, ``metrics.jsonl``, ``summary.json``, ``checkpoints/last.pt``); resumable, DDP-ready.
* :mod:`~dynamics.training.framework` -- f̃ = f + g at the switch τ; :mod:`~dynamics.training.features` --
  the feature constructions of g and their alignment certificates.
* :mod:`~dynamics.training.probes` -- the conditions measured on a fixed probe subset during training.
"""

from __future__ import annotations

from dynamics.training.config import TrainConfig
from dynamics.training.features import FEATURES, Certificate, make_features
from dynamics.training.framework import AugmentedModel, switch
from dynamics.training.optimizers import OPTIMIZERS
from dynamics.training.probes import Probe, measure
from dynamics.training.rundir import read_metrics
from dynamics.training.runner import evaluate, train

__all__ = ["TrainConfig", "train", "evaluate", "AugmentedModel", "switch", "FEATURES", "Certificate",
           "make_features", "OPTIMIZERS", "Probe", "measure", "read_metrics"]
