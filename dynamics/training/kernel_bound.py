"""A proven lower bound on the smallest singular value of the thresholded Gaussian kernel matrix Φ the framework
uses, on ALL distinct training points, computed block by block (never an n × n matrix in memory).

The matrix. z_1..z_n (float32, distinct) are the standardised representations, σ > 0 and the threshold t ∈ (0, 1)
are float32/float64 numbers, K_ij = exp(−‖z_i − z_j‖²/(2σ²)) the exact kernel. Any evaluation Φ̂ of the kernel
that the framework performs (float32 or float64, any summation order, any batch) sets entries below t to 0. We
build one concrete symmetric float64 matrix A (entries ≥ t kept, diagonal 1) and prove

    σ_min(Φ̂) ≥ λ_min(A) − ‖Φ̂ − A‖₂ ≥ min_b λ_lower(A_bb) − ρ_upper(E) − π =: ``lambda_lower``,

* blocks: the points are split into blocks of at most ``max_block`` (by label, then at the median of the top
  principal direction); A = D + E with D = the diagonal blocks A_bb and E ≥ 0 the rest; Weyl gives
  λ_min(A) ≥ λ_min(D) − ‖E‖₂.
* λ_lower(A_bb): with s just below LAPACK's estimate of λ_min(A_bb), the float64 Cholesky factor L of A_bb − sI
  is a real matrix, so A_bb − sI = LLᵀ − F with LLᵀ ⪰ 0, hence λ_min(A_bb) ≥ s − ‖F‖_F. ‖F‖_F is bounded from the
  computed residual plus the standard rounding bound γ_{b+2}|L||L|ᵀ of the product (Higham, ch. 3), whose
  Frobenius norm is at most γ_{b+2}‖L‖_F².
* ρ_upper(E): E is symmetric and non-negative, so ‖E‖₂ = ρ(E) ≤ max_i (Ev)_i / v_i for any v > 0
  (Collatz–Wielandt; v from a few power iterations; v = 1 gives Gershgorin's row sum).
* π: every computed entry satisfies |log(Φ̂_ij / K_ij)| ≤ η (squared distance with error γ_{d+3}(‖z_i‖+‖z_j‖)²,
  the division, and exp accurate to 4 ulp), so |Φ̂_ij − A_ij| ≤ (e^{2η} − 1)A_ij where both are non-zero, and
  ≤ t·e^{2η} where only one is (then A_ij lies in the band [t e^{−2η}, t e^{2η}]); π bounds the row sums of these,
  with η_ij computed from the pair's own norms (``eta`` reports the global maximum).
  A non-symmetric Φ̂ is covered too: ‖Φ̂ − A‖₂ ≤ √(‖·‖₁‖·‖_∞) and the entry bounds are symmetric.

The bound fails (``holds=False``) on near-coincident points (then λ_min(A) is below the float error π) and on a
bandwidth so wide that the blocks' coupling exceeds their smallest eigenvalue; it never reports a subset's value.

>>> z = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
>>> b, rows = gaussian_kernel_bound(z, sigma=1.0, threshold=1e-6)
>>> b.holds, 0.98 < b.lambda_lower < 1.0, rows.nnz
(True, True, 9)
"""

from __future__ import annotations

import ctypes
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import scipy.linalg
import torch

from dynamics.errors import InputError, MemoryBudgetError
from dynamics.training.sparse_rows import SparseRows

__all__ = ["KernelBound", "gaussian_kernel_bound", "rigorous_lambda_min", "partition", "entry_error",
           "max_nnz_for", "BYTES_PER_NNZ", "DEFAULT_MEMORY_BUDGET"]

U32, U64 = 2.0 ** -24, 2.0 ** -53

#: peak bytes per kept kernel entry over the whole computation: 12 while streaming (int32 row, int32 column,
#: float32 value) + 6 for the certificate's off-diagonal triangle, 12 for their concatenation, and the CSR
#: assembly (an int64 sort key, the int64 permutation and the sort's workspace: ≤ 32), rounded up
#: (measured in tests/test_framework_memory.py)
BYTES_PER_NNZ = 64
#: bytes of float64 temporaries per entry of one block pair (distances, kernel, error factors, masks)
BLOCK_PAIR_BYTES = 80
#: default memory budget of the kernel pass (bytes)
DEFAULT_MEMORY_BUDGET = 2 * 2**30


#: glibc's malloc_trim (None elsewhere). glibc raises its mmap threshold to the size of a freed block (up to
#: 32 MiB), after which each block pair's float64 temporaries come from the heap and are not returned: RSS grew by
#: ~65 MB per block pair (2.6 GiB after 36 pairs at n = 16,000; 22.7 GiB and an out-of-memory kill at 60,000).
#: Trimming after each pair returns the freed pages (measured: 0.6 GiB peak at 16,000).
_MALLOC_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None)


def _release_freed_memory() -> None:
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def max_nnz_for(memory_budget: int, max_block: int) -> int:
    """The number of kernel entries :func:`gaussian_kernel_bound` may keep within ``memory_budget`` bytes.

    >>> max_nnz_for(2 * 2**30, 2048)
    28311552
    """
    room = int(memory_budget) - BLOCK_PAIR_BYTES * int(max_block) ** 2
    if room <= 0:
        raise MemoryBudgetError(f"memory_budget={memory_budget} bytes is below one block pair's temporaries "
                                f"({BLOCK_PAIR_BYTES * max_block ** 2} bytes at max_block={max_block}): lower "
                                "max_block or raise memory_budget")
    return room // BYTES_PER_NNZ


def _gamma(m: int, u: float) -> float:
    return m * u / (1.0 - m * u)


@dataclass
class KernelBound:
    """The proven lower bound and its parts (all on the n distinct points)."""

    holds: bool
    lambda_lower: float  # proven: σ_min of every evaluation of Φ on the training set is at least this
    block_lambda_lower: float  # min over blocks of the proven λ_min(A_bb)
    coupling_upper: float  # proven upper bound on ‖E‖₂
    perturbation_upper: float  # π: float32/float64 evaluation and threshold band
    eta: float  # the entry-wise log-ratio bound
    n: int
    n_blocks: int
    max_block: int
    nnz_per_row: float
    time_s: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "KernelBound":
        return cls(**d)


def entry_error(d: int, max_sq_norm: float, sigma: float, threshold: float) -> float:
    """η: a bound on |log(Φ̂_ij / K_ij)| for any float32 or float64 evaluation of an entry that can reach ``threshold``.

    Float32: the squared distance (expanded or direct, any order, FMA or not) has absolute error at most
    γ_{d+3}·(‖z_i‖+‖z_j‖)² ≤ γ_{d+3}·4·max‖z‖²; the exponent −D/(2σ²) two more roundings (relative 3u on an
    argument ≤ ln(1/t) + 1); exp is assumed accurate to 4 ulp (SLEEF/glibc/CUDA expf are ≤ 2). Float64 likewise.

    >>> 1e-5 < entry_error(32, 100.0, 2.0, 1e-5) < 1e-3
    True
    """
    arg = math.log(1.0 / threshold) + 1.0
    err = 0.0
    for u in (U32, U64):
        err += _gamma(d + 3, u) * 4.0 * max_sq_norm / (2.0 * sigma * sigma) + 3.0 * u * arg + 5.0 * u
    return err * (1.0 + 1e-6)


def partition(z: torch.Tensor, max_block: int, labels: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Index blocks of at most ``max_block`` points: by label, then split at the median of the top principal
    direction until small enough (deterministic).

    >>> [len(b) for b in partition(torch.arange(10.0)[:, None], 4)]
    [2, 3, 2, 3]
    """
    if max_block < 1:
        raise InputError(f"max_block must be >= 1, got {max_block}")
    if len(z) <= max_block:
        return [torch.arange(len(z))]
    groups = ([torch.nonzero(labels == c).flatten() for c in torch.unique(labels)] if labels is not None
              else [torch.arange(len(z))])
    out: list[torch.Tensor] = []
    while groups:
        g = groups.pop()
        if len(g) <= max_block:
            if len(g):
                out.append(g)
            continue
        x = z[g].double()
        x = x - x.mean(0)
        direction = torch.linalg.svd(x, full_matrices=False).Vh[0]
        order = torch.argsort(x @ direction, stable=True)
        half = len(g) // 2
        groups += [g[order[half:]], g[order[:half]]]
    return sorted(out, key=lambda b: int(b[0]))


def rigorous_lambda_min(a: np.ndarray) -> tuple[float, float]:
    """(proven lower bound, LAPACK estimate) of λ_min of the symmetric float64 matrix ``a`` (see module doc).

    The lower bound is -inf when no shift below the estimate admits a Cholesky factorisation.

    >>> lo, est = rigorous_lambda_min(np.array([[2.0, 1.0], [1.0, 2.0]]))
    >>> bool(0.99999 < lo <= 1.0 and abs(est - 1.0) < 1e-12)
    True
    """
    n = len(a)
    est = float(scipy.linalg.eigh(a, eigvals_only=True, subset_by_index=[0, 0])[0])
    best = -math.inf
    if not est > 0:
        return best, est
    for frac in (1e-6, 1e-3, 0.1, 0.5):
        s = est * (1.0 - frac)
        m = a - s * np.eye(n)
        try:
            chol = scipy.linalg.cholesky(m, lower=True)
        except np.linalg.LinAlgError:
            continue
        resid = chol @ chol.T - m
        # rounding of the product and the two subtractions: ‖γ|L||L|ᵀ‖_F ≤ γ‖L‖_F² (no second product needed)
        slack = (_gamma(n + 2, U64) * np.linalg.norm(chol) ** 2 + U64 * np.linalg.norm(m)
                 + U64 * np.linalg.norm(resid))
        f_norm = (np.linalg.norm(resid) + slack) * (1.0 + _gamma(n * n + 2, U64))
        best = max(best, s - f_norm)
        if best > 0:
            break
    return best, est


def _sq_dist64(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a * a).sum(1, keepdim=True) - 2.0 * a @ b.T + (b * b).sum(1)[None]).clamp_min_(0.0)


def _round_up32(v: torch.Tensor) -> torch.Tensor:
    v32 = v.float()
    return torch.where(v32.double() < v, torch.nextafter(v32, torch.tensor(math.inf)), v32)


def gaussian_kernel_bound(z: torch.Tensor, sigma: float, threshold: float, max_block: int = 2048,
                          labels: torch.Tensor | None = None, certify: bool = True, power_iterations: int = 30,
                          max_nnz: int | None = None,
                          memory_budget: int = DEFAULT_MEMORY_BUDGET) -> tuple[KernelBound | None, SparseRows]:
    """Stream over block pairs of the distinct rows ``z`` (n, d) float32: the rows of the thresholded kernel (for
    the training cache) and, with ``certify``, the proven bound (module docstring).

    Memory is bounded by construction: the kept entries may number at most ``max_nnz`` (default
    ``memory_budget`` // :data:`BYTES_PER_NNZ`, 2 GiB → 33.5 million), checked BEFORE each block pair's entries
    are stored, plus the per-pair temporaries (:data:`BLOCK_PAIR_BYTES` × ``max_block``²; 0.3 GiB at 2048).
    A kernel with more entries raises :class:`MemoryBudgetError` (never an out-of-memory kill): a bandwidth that
    wide makes Φ nearly dense, and the per-step cost grows with it.

    Returns (bound or None, rows) where rows is the float32 CSR of A over the n points (``row_of`` = identity).
    """
    t0 = time.perf_counter()
    if z.dim() != 2 or not torch.isfinite(z).all():
        raise InputError(f"z must be a finite (n, d) tensor, got shape {tuple(z.shape)}")
    if not sigma > 0 or not 0 < threshold < 1:
        raise InputError(f"need sigma > 0 and 0 < threshold < 1, got sigma={sigma}, threshold={threshold}")
    n, d = z.shape
    limit = max_nnz_for(memory_budget, max_block) if max_nnz is None else int(max_nnz)
    zd = z.double()
    blocks = partition(zd, max_block, labels)
    two_s2 = 2.0 * float(sigma) ** 2
    norm = (zd * zd).sum(1).sqrt() * (1 + 1e-12)
    eta = entry_error(d, float(norm.max()) ** 2, float(sigma), threshold)  # the global bound (reported)
    # per entry: η_ij = c1·(‖z_i‖ + ‖z_j‖)² + c0 (entry_error with the pair's own norms instead of the maximum)
    c0 = entry_error(d, 0.0, float(sigma), threshold)
    c1 = (entry_error(d, 1.0, float(sigma), threshold) - c0) / 4.0
    rows_i, rows_j, rows_v, off_i, off_j, off_v = [], [], [], [], [], []
    pert = torch.zeros(n, dtype=torch.float64)  # row sums of the bound on |Φ̂ − A|
    band = torch.zeros(n, dtype=torch.float64)
    block_lower, block_est = math.inf, math.inf
    nnz, pairs = 0, 0
    for a, ia in enumerate(blocks):
        for ib in blocks[a:]:
            same = ib is ia
            raw = torch.exp(-_sq_dist64(zd[ia], zd[ib]) / two_s2)
            if same:
                raw = 0.5 * (raw + raw.T)
                raw.fill_diagonal_(1.0)
            grow = torch.exp(2.0 * (c1 * (norm[ia][:, None] + norm[ib][None]) ** 2 + c0))  # e^{2η_ij}
            in_band = (raw >= threshold / grow) & (raw <= threshold * grow)
            kept = raw.masked_fill(raw < threshold, 0.0)
            err = (grow - 1.0) * kept + torch.where(in_band, threshold * grow, 0.0)
            pert.index_add_(0, ia, err.sum(1))
            band.index_add_(0, ia, in_band.double().sum(1))
            li, lj = kept.nonzero(as_tuple=True)
            nnz, pairs = nnz + len(li) * (1 if same else 2), pairs + 1
            if nnz > limit:  # checked before this pair's entries are stored
                raise MemoryBudgetError(
                    f"the thresholded kernel keeps more than max_nnz={limit} entries ({nnz} after "
                    f"{pairs} block pairs, n={n}, at most {BYTES_PER_NNZ} bytes each, memory_budget="
                    f"{memory_budget / 2**30:.2f} GiB): Φ is nearly dense at σ={sigma:.4g}; use a narrower kernel "
                    "(feature_options 'max_row_nnz' or 'kernel_mass' lower, or 'bandwidth' smaller), a larger "
                    "'threshold', or raise memory_budget if the machine has the memory")
            gi, gj, gv = ia[li].int(), ib[lj].int(), kept[li, lj].float()  # 12 bytes per stored entry
            del raw, grow
            rows_i.append(gi), rows_j.append(gj), rows_v.append(gv)
            if same:
                if certify:
                    lo, est = rigorous_lambda_min(kept.numpy())
                    block_lower, block_est = min(block_lower, lo), min(block_est, est)
                del kept, err, in_band
                _release_freed_memory()
                continue
            pert.index_add_(0, ib, err.sum(0))
            band.index_add_(0, ib, in_band.double().sum(0))
            del err, in_band
            rows_i.append(gj), rows_j.append(gi), rows_v.append(gv)
            if certify:
                off_i.append(gi), off_j.append(gj), off_v.append(_round_up32(kept[li, lj]))
            del kept
            _release_freed_memory()
    i, j, v = torch.cat(rows_i), torch.cat(rows_j), torch.cat(rows_v)
    del rows_i, rows_j, rows_v
    rows = SparseRows.from_coo(i, j, v, n, n, torch.arange(n))
    del i, j, v
    if not certify:
        return None, rows
    coupling = _collatz_wielandt(off_i, off_j, off_v, n, power_iterations)
    pert = float(pert.max()) * (1 + 1e-9)
    lower = block_lower - coupling - pert
    bound = KernelBound(holds=bool(lower > 0), lambda_lower=float(lower), block_lambda_lower=float(block_lower),
                        coupling_upper=float(coupling), perturbation_upper=pert, eta=eta, n=n,
                        n_blocks=len(blocks), max_block=max(len(b) for b in blocks), nnz_per_row=rows.nnz / n,
                        time_s=time.perf_counter() - t0,
                        details={"block_lambda_estimate": float(block_est), "threshold": threshold,
                                 "sigma": float(sigma), "band_entries": int(band.sum())})
    return bound, rows


def _collatz_wielandt(i: list, j: list, v: list, n: int, iterations: int) -> float:
    """A proven upper bound on ρ(E) = ‖E‖₂ for the symmetric non-negative E given by its entries (both triangles)."""
    if not i:
        return 0.0
    # one triangle only (E = U + Uᵀ): (Ev)_r = Σ_{(r,c)∈U} u v_c + Σ_{(c,r)∈U} u v_c, two index_adds in chunks
    # (no coalesced n × n copy); every row sums at most max_row terms, in any order, plus one addition
    ii, jj, vv = torch.cat(i).long(), torch.cat(j).long(), torch.cat(v)
    max_row = int((torch.bincount(ii, minlength=n) + torch.bincount(jj, minlength=n)).max())
    chunk = 1 << 22
    vec = torch.ones(n, dtype=torch.float64)
    best = math.inf
    for _ in range(iterations + 1):
        ev = torch.zeros(n, dtype=torch.float64)
        for s in range(0, len(vv), chunk):
            a, b, w = ii[s:s + chunk], jj[s:s + chunk], vv[s:s + chunk].double()
            ev.index_add_(0, a, w * vec[b]).index_add_(0, b, w * vec[a])
        best = min(best, float((ev / vec).max()) * (1.0 + _gamma(max_row + 3, U64)) * (1 + 1e-12))
        top = float(ev.max())
        if top <= 0:
            return 0.0
        vec = (ev / top).clamp_min(1e-12)
    return best
