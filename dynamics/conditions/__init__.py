"""The assumption and the condition: on-model structure and data architecture alignment.

* :mod:`.column_space` -- Col J, its numerical rank and the projector P (float64): the one rank/projector rule.
* :mod:`.gram` -- JᵀJ over sample blocks and J Jᵀ (the NTK), J never formed.
* :mod:`.on_model` -- :func:`check_on_model_structure`: is f_X = J_S θ_S for a parameter group S?
* :mod:`.alignment` -- :func:`check_alignment`: is vec(Y) in Col J? Two-sided bounds on r (dense, Gram, subset
  lower bound, LSQR), ``trivial`` when rank J = n·k.
* :mod:`.guard` -- every check refuses to return numbers if it modified the model it checked.
* :mod:`.decomposition` -- :func:`loss_decomposition_terms`: L = ½‖P(f−Y)‖² + ½‖(I−P)Y‖², measured.
* :mod:`.targets` -- validating y; :mod:`.reports` -- the report dataclasses.
"""

from dynamics.conditions.alignment import alignment_residual, check_alignment
from dynamics.conditions.column_space import ColumnSpace, column_space
from dynamics.conditions.decomposition import LossDecomposition, loss_decomposition_terms
from dynamics.conditions.on_model import check_on_model_structure
from dynamics.conditions.reports import AlignmentReport, Candidate, OnModelReport
from dynamics.conditions.targets import TargetError, normalise_targets

__all__ = ["ColumnSpace", "column_space", "check_on_model_structure", "check_alignment", "alignment_residual",
           "loss_decomposition_terms", "LossDecomposition", "OnModelReport", "AlignmentReport", "Candidate",
           "normalise_targets", "TargetError"]
