"""Training: the loop, any base algorithm, the modified framework A(base) that enforces alignment, probes.

* :func:`train` (``dynamics train`` on the command line) runs a :class:`TrainConfig` into a run folder
  (:mod:`~dynamics.training.run_folder`); resumable bit for bit, locked, checkpoints verified, DDP-ready.
  :mod:`~dynamics.training.run_state` holds the state a checkpoint saves, :mod:`~dynamics.training.summary` the
  summary; the records written are the dataclasses of :mod:`dynamics.training.records`.
* :mod:`~dynamics.training.framework` -- f̃ = f + g at the switch τ; :mod:`~dynamics.training.features` --
  the feature constructions of g and their alignment certificates.
* :mod:`~dynamics.training.probes` -- the conditions measured on a fixed probe subset during training.
"""

from __future__ import annotations

from dynamics.training.config import Phases, TrainConfig
from dynamics.training.evaluation import evaluate, loss_fn
from dynamics.training.features import FEATURES, make_features
from dynamics.training.framework import AugmentedModel, switch
from dynamics.training.loop import train
from dynamics.training.optimizers import OPTIMIZERS
from dynamics.training.probes import Probe, measure
from dynamics.training.run_folder import RunRecord, load_run, read_metrics

__all__ = ["TrainConfig", "Phases", "train", "evaluate", "loss_fn", "AugmentedModel", "switch", "FEATURES",
           "make_features", "OPTIMIZERS", "Probe", "measure", "read_metrics", "RunRecord", "load_run"]
