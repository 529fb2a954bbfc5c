"""Statements 5 and 6 of THEORY.md: when a bigger network helps alignment and when it does not.

Derived from the definitions in Kawaguchi et al. (2022).

* Width helps (5). Embed an MLP in a wider one by new units with zero outgoing weights
  (:func:`theory.embedding.widen`): the function is the same and J̃[:, old] = J, so Col J ⊆ Col J̃, the residual
  r and the lower bound ½ dist(Y, Col J)² can only fall. :func:`check_width_helps` measures all of it.
* Depth does not help (6). The width-1 bias-free ReLU chain f = w_L relu(w_{L-1} ... relu(w_1ᵀx)) is
  1-homogeneous in each scalar w_l, so ∂f_X/∂w_l = f_X / w_l for l ≥ 2, and f_X is in the span of the d_x
  first-layer columns: rank J ≤ d_x for every depth (d_x + 1 with a first-layer bias).
  :func:`check_chain_rank` measures rank J over depths; :func:`check_duplicate_unit` shows that duplicated
  neurons add parameters but no rank.

>>> import torch
>>> from dynamics.models import MLP
>>> _ = torch.manual_seed(0)
>>> x, y = torch.randn(10, 3), torch.randn(10, 1)
>>> check_width_helps(MLP(3, 1, depth=1, width=1, activation="tanh"), x, y, width=4).holds
True
>>> check_chain_rank(depths=(1, 2, 5), in_features=3).holds
True
"""

from __future__ import annotations

import copy
from typing import Optional, Sequence

import torch
from torch import nn

from dynamics.conditions.column_space import ColumnSpace
from dynamics.engine.jacobian import jacobian
from dynamics.errors import InputError
from dynamics.models.theory_nets import ReLUChain
from theory.embedding import duplicate_unit, widen
from theory.geometry import loss_geometry
from theory.report import StatementReport

__all__ = ["check_width_helps", "check_chain_rank", "chain_column_identity", "check_duplicate_unit",
           "positive_chain"]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    den = float(torch.linalg.vector_norm(b))
    return float(torch.linalg.vector_norm(a - b)) / den if den > 0 else float(torch.linalg.vector_norm(a))


def check_width_helps(model: nn.Module, x, y, width: int, seed: int = 0, rtol: float = 1e-8,
                      rank_rtol: Optional[float] = None, setting: str = "", layers: Optional[Sequence[int]] = None,
                      strict: bool = False, expected: bool = True) -> StatementReport:
    """Statement 5 at the model's current θ, embedded in an MLP whose hidden layers ``layers`` (default all)
    have ``width`` units.

    Measures: ``f_diff`` = ‖f̃_X − f_X‖/‖f_X‖; ``J_block_diff`` = ‖J̃[:, old] − J‖/‖J‖; ``colJ_residual`` =
    ‖(I − P̃)J‖_F/‖J‖_F (Col J ⊆ Col J̃); r, r̃; ½dist², ½dist̃²; the ranks. Both column spaces use the same
    absolute singular-value threshold (the wide one's, from ``rank_rtol``), so the numerical ranks are
    comparable (σ_i(J) ≤ σ_i(J̃) for a column sub-matrix).

    Holds (the guaranteed part) when f_diff, J_block_diff ≤ ``rtol``, colJ_residual ≤ ``colJ_tol`` =
    max(rtol, sqrt(nk)·threshold/‖J‖_F) (what the dropped directions allow), r̃ ≤ r + r_tol and
    ½dist̃² ≤ ½dist² + (rtol + 2·r_tol)·½‖Y‖², with r_tol = rtol + both column spaces' stated accuracy. These hold at every θ by construction of the embedding; ``strict=True`` adds
    the generic part that can fail: when rank J < nk the widening adds independent columns (rank J̃ > rank J). A
    widening whose new columns are dependent (duplicated units, the middle of a width-1 chain) fails it.

    The row is ``trivial`` when rank J = nk already (r = 0 before widening).
    """
    wide, old = widen(model, width, seed=seed, layers=layers)
    gw = loss_geometry(wide, x, y, rank_rtol=rank_rtol)
    g = loss_geometry(model, x, y)
    threshold = gw.space.tolerance
    sigma_max = float(torch.linalg.matrix_norm(g.jac, ord=2)) if g.jac.numel() else 0.0
    if sigma_max > 0 and threshold > 0:
        g.space = ColumnSpace.from_jacobian(g.jac, rtol=max(threshold / sigma_max, 1e-300))
    j_norm = max(float(g.jac.norm()), 1e-300)
    col_tol = max(rtol, (g.n * g.k) ** 0.5 * threshold / j_norm)
    scale = max(g.y_norm2_half, 1e-300)
    q = {"p": g.p, "nk": g.n * g.k, "rank": g.space.rank, "p_wide": gw.p, "rank_wide": gw.space.rank,
         "f_diff": _rel(gw.f, g.f), "J_block_diff": _rel(gw.jac[:, old], g.jac),
         "colJ_residual": gw.space.residual(g.jac) / j_norm,
         "r": g.alignment_residual, "r_wide": gw.alignment_residual,
         "half_dist2": g.dist2_half, "half_dist2_wide": gw.dist2_half}
    # r and r̃ are each accurate to their column space's stated accuracy (eps·max(m, p)·(σ_max/σ_r)², which is
    # 1e-8 and more for ill-conditioned J at a critical point): compare within rtol plus both
    r_tol = rtol + g.space.accuracy + gw.space.accuracy
    q["r_tol"] = r_tol
    holds = (q["f_diff"] <= rtol and q["J_block_diff"] <= rtol and q["colJ_residual"] <= col_tol
             and q["r_wide"] <= q["r"] + r_tol
             and q["half_dist2_wide"] <= q["half_dist2"] + (rtol + 2 * r_tol) * scale)
    trivial = g.space.full_row_rank
    if strict and not trivial:
        holds = holds and q["rank_wide"] > q["rank"]
    hidden = [m.out_features for m in model.body if isinstance(m, nn.Linear)]
    where = "all hidden layers" if layers is None else f"hidden layers {list(layers)}"
    name = "width helps (generic)" if strict else "width helps"
    notes = "new units with zero outgoing weights: same f, Col J ⊆ Col J̃, r̃ ≤ r" + (
        "; a generic widening adds rank" if strict else "") + (
        "; TRIVIAL: rank J = nk before widening" if trivial else "")
    return StatementReport("5", name, setting or f"MLP hidden {hidden} -> width {width} ({where}), n={g.n}, "
                           f"k={g.k}", q, {"rtol": rtol, "colJ_tol": col_tol}, holds, expected, notes=notes,
                           trivial=trivial)


def positive_chain(depth: int, in_features: int, bias_first: bool = False, seed: int = 0,
                   dtype: torch.dtype = torch.float64) -> ReLUChain:
    """A :class:`~dynamics.models.ReLUChain` with seeded weights, the scalar layers (l ≥ 2) made positive
    (|w_l| + 0.5), and the first-layer bias too, so the chain is active on the samples where w_1ᵀx + b_1 > 0."""
    gen = torch.Generator().manual_seed(seed)
    chain = ReLUChain(depth, in_features, bias_first=bias_first).to(dtype)
    with torch.no_grad():
        for name, p in chain.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=dtype))
            if p.numel() == 1:
                p.abs_().add_(0.5)
    return chain


def chain_column_identity(chain: nn.Module, x) -> float:
    """max over scalar layers l ≥ 2 of ‖∂f_X/∂w_l − f_X/w_l‖ / ‖f_X‖ for a one-output ReLU chain.

    >>> import torch
    >>> chain = positive_chain(4, 3)
    >>> chain_column_identity(chain, torch.randn(8, 3, dtype=torch.float64)) < 1e-14
    True
    """
    J = jacobian(chain, x, dtype=torch.float64)
    names = [n for n, p in chain.named_parameters() if p.requires_grad]
    shapes = [p.numel() for n, p in chain.named_parameters() if p.requires_grad]
    f = _forward(chain, x)
    if f.shape[0] != J.shape[0]:
        raise InputError("chain_column_identity needs a chain with one output (out_features=1)")
    fn = float(torch.linalg.vector_norm(f))
    worst, col = 0.0, 0
    params = dict(chain.named_parameters())
    for name, numel in zip(names, shapes):
        if numel == 1 and not name.endswith("bias") and not name.startswith("body.0."):
            w = float(params[name].detach())
            worst = max(worst, float(torch.linalg.vector_norm(J[:, col] - f / w)) / max(fn, 1e-300))
        col += numel
    return worst


def _forward(model: nn.Module, x) -> torch.Tensor:
    """f_X in float64 on a copy (the model is not changed)."""
    m = copy.deepcopy(model).to(torch.float64)
    with torch.no_grad():
        return m(torch.as_tensor(x).to(torch.float64)).reshape(-1)


def check_chain_rank(depths: Sequence[int] = tuple(range(1, 11)), in_features: int = 3, n: int = 24,
                     bias_first: bool = False, seed: int = 0, rtol: float = 1e-10,
                     x: Optional[torch.Tensor] = None, setting: str = "", first_width: int = 1,
                     expected: bool = True) -> StatementReport:
    """Statement 6: rank J ≤ d_x (+1 with ``bias_first``) of the width-1 ReLU chain for every depth in ``depths``.

    Each depth gets :func:`positive_chain` (seed ``seed``) on the same Gaussian inputs (``n`` samples, or ``x``).
    Holds when every rank is within the bound and the column identity ∂f_X/∂w_l = f_X/w_l holds to ``rtol``.
    Series ``rank``, ``p`` (parameter count) per depth go to the report for the depth figure.

    ``first_width > 1`` is the control: the first layer widened (new units with zero outgoing weights, the
    function unchanged) is no longer a width-1 bottleneck, the rank exceeds d_x and the row must fail.
    The row is ``trivial`` when no chain has more parameters than the bound (then rank ≤ p ≤ bound anyway).
    """
    if not depths or min(depths) < 1:
        raise InputError(f"depths must be a non-empty list of integers >= 1, got {depths!r}")
    if x is None:
        x = torch.randn(n, in_features, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    bound = in_features + (1 if bias_first else 0)
    ranks, ps, idents = [], [], []
    for depth in depths:
        chain = positive_chain(depth, in_features, bias_first, seed=seed + depth)
        if first_width > 1 and depth >= 2:
            chain, _ = widen(chain, first_width, seed=seed + depth, layers=[0])
        J = jacobian(chain, x, dtype=torch.float64)
        ranks.append(ColumnSpace.from_jacobian(J).rank)
        ps.append(J.shape[1])
        idents.append(chain_column_identity(chain, x) if depth >= 2 and first_width == 1 else 0.0)
    q = {"p": max(ps), "nk": int(x.shape[0]), "rank": max(ranks), "bound": bound, "identity_error": max(idents),
         "ranks": ranks}
    holds = max(ranks) <= bound and max(idents) <= rtol
    trivial = max(ps) <= bound
    kind = "width-1 ReLU chain" if first_width == 1 else f"ReLU chain, first layer width {first_width}"
    return StatementReport("6", "depth does not help",
                           setting or f"{kind}, d_x={in_features}, bias={bias_first}, depths "
                           f"{min(depths)}..{max(depths)}, n={x.shape[0]}", q, {"rtol": rtol}, holds, expected,
                           notes="rank J ≤ d_x (+1 with first-layer bias) whatever the depth; ∂f/∂w_l = f/w_l"
                           + ("" if first_width == 1 else "; control: a first layer of width > 1 is no bottleneck"),
                           series={"depths": list(depths), "rank": ranks, "p": ps}, trivial=trivial)


def check_duplicate_unit(model: nn.Module, x, layer: int = -1, unit: int = 0, alpha: float = 0.3,
                         rtol: float = 1e-8, setting: str = "") -> StatementReport:
    """Statement 6, duplicated neurons: f unchanged, p grows, rank J unchanged (new columns are dependent).

    Works on a float64 copy of ``model``.
    """
    model = copy.deepcopy(model).to(torch.float64)
    dup = duplicate_unit(model, layer, unit, alpha)
    J = jacobian(model, x, dtype=torch.float64)
    Jd = jacobian(dup, x, dtype=torch.float64)
    cs, csd = ColumnSpace.from_jacobian(J), ColumnSpace.from_jacobian(Jd)
    q = {"p": J.shape[1], "nk": J.shape[0], "rank": cs.rank, "p_dup": Jd.shape[1], "rank_dup": csd.rank,
         "f_diff": _rel(_forward(dup, x), _forward(model, x)),
         "new_cols_off_colJ": cs.residual(Jd) / max(float(Jd.norm()), 1e-300)}
    holds = q["f_diff"] <= rtol and q["rank_dup"] == q["rank"] and q["new_cols_off_colJ"] <= rtol ** 0.5
    return StatementReport("6", "duplicated neuron", setting or f"{type(model).__name__}, n={J.shape[0]}", q,
                           {"rtol": rtol}, holds, notes="a copied unit with split outgoing weights adds no rank"
                           + ("; TRIVIAL: rank J = nk already" if cs.full_row_rank else ""),
                           trivial=cs.full_row_rank)
