"""dynamics: the theory of Kawaguchi, Zhang & Deng (2022) as software you can run on PyTorch networks.

Public API (shapes are documented on each function):

* :func:`jacobian`, :class:`JacobianOperator`, :func:`ntk` -- the Jacobian J of the stacked outputs
  (sample-major rows, ``named_parameters`` columns), J·v / Jᵀ·u without forming J, the empirical NTK,
  with explicit BatchNorm semantics (``bn_mode``).
* :func:`check_on_model_structure`, :func:`check_alignment` -- the assumption and the condition.
* :mod:`dynamics.models`, :mod:`dynamics.data`, :mod:`dynamics.training` -- models, datasets, training.
"""

from __future__ import annotations

import importlib
import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

from dynamics.engine.jacobian import JacobianOperator, jacobian  # noqa: E402
from dynamics.errors import DynamicsError  # noqa: E402

_LAZY = {
    "ntk": ("dynamics.engine.ntk", "ntk"),
    "check_on_model_structure": ("dynamics.conditions.on_model", "check_on_model_structure"),
    "check_alignment": ("dynamics.conditions.alignment", "check_alignment"),
}
_SUBPACKAGES = {"models", "data", "training", "conditions", "engine", "reproduce"}

__all__ = ["jacobian", "JacobianOperator", "ntk", "check_on_model_structure", "check_alignment",
           "DynamicsError", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        module_name, attr = _LAZY[name]
        value = getattr(importlib.import_module(module_name), attr)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"dynamics.{name}")
    raise AttributeError(f"module 'dynamics' has no attribute {name!r}")
