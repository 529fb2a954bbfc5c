"""Exact algebra (sympy) behind statements 1, 4 and 6: each proof returns the simplified difference, 0.

* :func:`euler_identity`: for a symbolic one-hidden-layer network with a generic activation σ and a linear head,
  f = Σ_j a_j σ(w_jᵀx + b_j) + c, the on-model identity f = Σ_{θ∈S} θ ∂f/∂θ with S = {a, c}
  (and for a bias-free two-layer ReLU net in the region of positive pre-activations, S = the first layer).
* :func:`decomposition_identity`: for a symbolic J (m × q, full column rank, generic entries), f = J c and any Y,
  ½‖f − Y‖² − ½‖P(f − Y)‖² − ½‖(I − P)Y‖² with P = J(JᵀJ)⁻¹Jᵀ.
* :func:`chain_rank_identity`: for the width-1 ReLU chain of depth L with positive scalar weights on inputs
  with positive pre-activations, ∂f_X/∂w_l − f_X/w_l (l ≥ 2) and J − J_1 M, where J_1 holds the first-layer
  columns and M = [I, w_1/w_2, …, w_1/w_L]: the factorisation that gives rank J ≤ d_x.

>>> euler_identity().holds
True
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from dynamics.errors import InputError

__all__ = ["SymbolicProof", "euler_identity", "relu_layer_homogeneity", "decomposition_identity",
           "chain_rank_identity", "all_proofs"]


@dataclass
class SymbolicProof:
    """One exact identity: what it says, the simplified difference of its two sides, and the verdict."""

    statement: str
    name: str
    setting: str
    difference: str
    holds: bool

    def __str__(self) -> str:
        return f"[{self.statement}] {self.name} ({self.setting}): simplified difference = {self.difference}"

    def to_dict(self) -> dict:
        return {"statement": self.statement, "name": self.name, "setting": self.setting,
                "difference": self.difference, "holds": self.holds}


def _zero(expr) -> tuple[str, bool]:
    if isinstance(expr, sp.MatrixBase):
        simplified = expr.applyfunc(lambda e: sp.simplify(sp.cancel(sp.together(e))))
        return str(simplified if any(e != 0 for e in simplified) else 0), all(e == 0 for e in simplified)
    simplified = sp.simplify(sp.cancel(sp.together(sp.expand(expr))))
    return str(simplified), simplified == 0


def euler_identity(width: int = 2, in_features: int = 2, head: str = "linear") -> SymbolicProof:
    """f − Σ_{θ∈{a,c}} θ ∂f/∂θ for f = Σ_j a_j σ(w_jᵀx + b_j) + c, σ an undefined sympy function.

    ``head="sigmoid"`` wraps the output, f = sigmoid(...): the on-model structure fails and the difference
    is not zero (the control).

    >>> p = euler_identity(2, 2)
    >>> p.difference, p.holds
    ('0', True)
    >>> euler_identity(1, 1, head="sigmoid").holds
    False
    """
    if width < 1 or in_features < 1:
        raise InputError("width and in_features must be >= 1")
    if head not in ("linear", "sigmoid"):
        raise InputError(f"head must be 'linear' or 'sigmoid', got {head!r}")
    sigma = sp.Function("sigma")
    x = sp.symbols(f"x0:{in_features}", real=True)
    a = sp.symbols(f"a0:{width}", real=True)
    b = sp.symbols(f"b0:{width}", real=True)
    w = sp.Matrix(width, in_features, lambda j, i: sp.Symbol(f"w{j}{i}", real=True))
    c = sp.Symbol("c", real=True)
    f = sum(a[j] * sigma(sum(w[j, i] * x[i] for i in range(in_features)) + b[j]) for j in range(width)) + c
    if head == "sigmoid":
        f = 1 / (1 + sp.exp(-f))
    euler = sum(t * sp.diff(f, t) for t in (*a, c))
    diff, ok = _zero(f - euler)
    return SymbolicProof("1", f"Euler identity, {head} head", f"σ generic, width {width}, d_x {in_features}, "
                         "S = read-out weights and bias", diff, ok)


def relu_layer_homogeneity(width: int = 2, in_features: int = 2) -> SymbolicProof:
    """f − Σ_{θ∈W1} θ ∂f/∂θ for the bias-free ReLU net f = vᵀ relu(W_1 x) with all pre-activations positive.

    Positive symbols put the computation in the region where every ReLU is active (sympy then simplifies
    Max(0, z) = z); there the net is 1-homogeneous in the first layer, so S = W_1 also works.

    >>> relu_layer_homogeneity().holds
    True
    """
    x = sp.symbols(f"x0:{in_features}", positive=True)
    v = sp.symbols(f"v0:{width}", real=True)
    w = sp.Matrix(width, in_features, lambda j, i: sp.Symbol(f"w{j}{i}", positive=True))
    f = sum(v[j] * sp.Max(0, sum(w[j, i] * x[i] for i in range(in_features))) for j in range(width))
    euler = sum(t * sp.diff(f, t) for t in w)
    diff, ok = _zero(f - euler)
    return SymbolicProof("1", "Euler identity, first layer of a bias-free ReLU net",
                         f"width {width}, d_x {in_features}, positive pre-activations, S = W_1", diff, ok)


def decomposition_identity(m: int = 3, q: int = 2) -> SymbolicProof:
    """½‖f − Y‖² − ½‖P(f − Y)‖² − ½‖(I − P)Y‖² for symbolic J (m × q), f = J c ∈ Col J, P = J(JᵀJ)⁻¹Jᵀ.

    >>> decomposition_identity(3, 1).holds
    True
    """
    if not 1 <= q <= m:
        raise InputError(f"need 1 <= q <= m for a full-column-rank J, got m={m}, q={q}")
    J = sp.Matrix(m, q, lambda i, j: sp.Symbol(f"J{i}{j}", real=True))
    c = sp.Matrix(q, 1, lambda i, _: sp.Symbol(f"c{i}", real=True))
    Y = sp.Matrix(m, 1, lambda i, _: sp.Symbol(f"Y{i}", real=True))
    G = J.T * J
    adj, det = G.adjugate(), G.det()
    P = J * adj * J.T / det
    f = J * c
    r = f - Y
    pr, qy = P * r, (sp.eye(m) - P) * Y
    expr = (r.T * r)[0] / 2 - (pr.T * pr)[0] / 2 - (qy.T * qy)[0] / 2
    diff, ok = _zero(sp.together(expr))
    return SymbolicProof("1", "loss decomposition", f"symbolic J {m}x{q}, f = J c, P = J(JᵀJ)⁻¹Jᵀ", diff, ok)


def chain_rank_identity(depth: int = 3, in_features: int = 2, n: int = 3) -> SymbolicProof:
    """The column identity and the rank factorisation of the width-1 ReLU chain, exactly.

    f_i = w_L relu(w_{L-1} ... relu(w_1ᵀ x_i)) with positive symbols; returns the simplified differences
    ∂f_X/∂w_l − f_X/w_l (all l ≥ 2) and J − J_1 M stacked (zero means rank J ≤ d_x).

    >>> chain_rank_identity(3, 2, 3).holds
    True
    """
    if depth < 2 or in_features < 1 or n < 1:
        raise InputError("need depth >= 2 (a scalar layer), in_features >= 1, n >= 1")
    w1 = sp.symbols(f"u0:{in_features}", positive=True)
    ws = sp.symbols(f"w2:{depth + 1}", positive=True)
    X = sp.Matrix(n, in_features, lambda i, j: sp.Symbol(f"x{i}{j}", positive=True))
    fs = []
    for i in range(n):
        h = sp.Max(0, sum(w1[j] * X[i, j] for j in range(in_features)))
        for layer, wl in enumerate(ws):
            h = wl * h if layer == len(ws) - 1 else sp.Max(0, wl * h)
        fs.append(h)
    fX = sp.Matrix(fs)
    J1 = fX.jacobian(sp.Matrix(w1))
    Js = fX.jacobian(sp.Matrix(ws))
    column = Js - sp.Matrix.hstack(*[fX / wl for wl in ws])
    M = sp.Matrix.hstack(sp.eye(in_features), *[sp.Matrix(w1) / wl for wl in ws])
    J = J1.row_join(Js)
    fact = J - J1 * M
    diff, ok = _zero(column.row_join(fact))
    return SymbolicProof("6", "width-1 ReLU chain: ∂f/∂w_l = f/w_l and J = J_1 M",
                         f"depth {depth}, d_x {in_features}, n {n}, positive weights and inputs", diff, ok)


def all_proofs(quick: bool = False) -> list[SymbolicProof]:
    """Every proof above at small sizes (``quick``: the smallest ones)."""
    proofs = [euler_identity(2, 2), relu_layer_homogeneity(2, 2), decomposition_identity(3, 1 if quick else 2)]
    depths = (2, 3) if quick else (2, 3, 4, 5)
    proofs += [chain_rank_identity(d, 2, 3) for d in depths]
    return proofs
