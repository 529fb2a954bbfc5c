"""THEORY.md's statements 1–7 as executable checks (statements derived from the definitions in Kawaguchi,
Zhang & Deng (2022)).

Each check takes a model and data (and a training trajectory where needed), evaluates both sides of the
statement in float64 and returns a :class:`~theory.report.StatementReport` (numbers, tolerance, verdict):

* :mod:`theory.decomposition` -- 1 loss decomposition, 2 gradient bound (any θ);
* :mod:`theory.critical_points` -- 3 sufficiency (critical-point loss = ½dist(Y, Col J)²), 4 necessity;
* :mod:`theory.network_size` -- 5 width helps (nested embeddings), 6 depth does not (width-1 ReLU chain);
* :mod:`theory.beyond_ntk` -- 7 the statements hold while the kernel moves;
* :mod:`theory.symbolic` -- exact sympy proofs; :mod:`theory.demos` -- demonstrations on real training;
* :mod:`theory.verify` -- the ``dynamics verify`` command (``make run``).

>>> import torch, theory
>>> from dynamics.models import MLP
>>> _ = torch.manual_seed(0)
>>> theory.check_loss_decomposition(MLP(3, 2, depth=1, width=4), torch.randn(6, 3), torch.randn(6, 2)).holds
True
"""

from theory.beyond_ntk import check_beyond_ntk, evaluate_trajectory, kernel_distance
from theory.critical_points import check_necessity, check_sufficiency
from theory.decomposition import check_gradient_bound, check_loss_decomposition
from theory.geometry import LossGeometry, loss_geometry
from theory.network_size import check_chain_rank, check_duplicate_unit, check_width_helps
from theory.report import StatementReport, format_table

__all__ = ["check_loss_decomposition", "check_gradient_bound", "check_sufficiency", "check_necessity",
           "check_width_helps", "check_chain_rank", "check_duplicate_unit", "check_beyond_ntk",
           "evaluate_trajectory", "kernel_distance", "loss_geometry", "LossGeometry", "StatementReport",
           "format_table"]
