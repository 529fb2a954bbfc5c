"""The Jacobian / NTK engine: J, J·v, Jᵀ·u and the empirical NTK of PyTorch networks.

Layers: :mod:`.parameters` (which columns), :mod:`.batchnorm` (which function, when BatchNorm is present),
:mod:`.stacked` (the stacked-output function f_X(θ_S)), :mod:`.jacobian` (J and its operator),
:mod:`.ntk` (the kernel, several exact algorithms).
"""

from dynamics.engine.jacobian import JacobianOperator, jacobian
from dynamics.engine.ntk import NTKInfo, ntk

__all__ = ["jacobian", "JacobianOperator", "ntk", "NTKInfo"]
