"""dynamics: the theory of Kawaguchi, Zhang & Deng (2022) as software you can run on PyTorch networks.

Public API (shapes are documented on each function):

* :func:`jacobian`, :class:`JacobianOperator`, :func:`ntk` -- the Jacobian J of the stacked outputs
  (sample-major rows, ``named_parameters`` columns), J·v / Jᵀ·u without forming J, the empirical NTK,
  with explicit BatchNorm semantics (``bn_mode``).
* :func:`check_on_model_structure`, :func:`check_alignment` -- the assumption and the condition.
* :mod:`dynamics.models`, :mod:`dynamics.data`, :mod:`dynamics.training` -- models, datasets, training.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

from dynamics import conditions, data, engine, models, reproduce, training  # noqa: E402
from dynamics.conditions.alignment import check_alignment  # noqa: E402
from dynamics.conditions.on_model import check_on_model_structure  # noqa: E402
from dynamics.engine.jacobian import JacobianOperator, jacobian  # noqa: E402
from dynamics.engine.ntk import ntk  # noqa: E402
from dynamics.errors import DynamicsError  # noqa: E402

__all__ = ["jacobian", "JacobianOperator", "ntk", "check_on_model_structure", "check_alignment",
           "DynamicsError", "__version__", "conditions", "data", "engine", "models", "reproduce", "training"]
