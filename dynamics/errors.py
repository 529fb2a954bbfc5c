"""The project's exception classes.

Every error a user can cause is one of these, with a message that says what was wrong and what to do.
Subsystems define narrower classes next to their code, always deriving from :class:`DynamicsError`.
``InputError`` also derives from ``ValueError`` so that generic ``except ValueError`` code keeps working.
"""

from __future__ import annotations


class DynamicsError(Exception):
    """Base class of every error raised on purpose by this toolkit."""


class InputError(DynamicsError, ValueError):
    """An argument has the wrong type, shape, dtype or value (x, y, tolerances, options)."""


class ParameterSelectionError(InputError):
    """``params=`` selects nothing, names a parameter that does not exist, or the model has none."""


class BatchNormModeError(InputError):
    """A BatchNorm layer is in training mode and no ``bn_mode`` says which function to differentiate."""


class StochasticModelError(InputError):
    """The model is random in training mode (Dropout): its Jacobian is not a well-defined object."""


class MethodError(InputError):
    """An unknown ``method=`` / implementation name."""


class MemoryBudgetError(DynamicsError):
    """No tiling of the requested computation fits in ``memory_budget``."""


class ConfigError(InputError):
    """A training / reproduction configuration is invalid or inconsistent."""


class DataError(DynamicsError):
    """A dataset file is missing, truncated, corrupt or unreadable."""


class RunStateError(DynamicsError):
    """An output folder holds a different run, or a run cannot be resumed."""


class NonFiniteError(DynamicsError):
    """A loss or quantity became NaN/inf during a computation."""


class ModelModifiedError(DynamicsError):
    """A check changed the model it checks (a parameter or a buffer such as BatchNorm running statistics was
    written): a bug in the toolkit, never the user's; the numbers of that check are not trustworthy."""
