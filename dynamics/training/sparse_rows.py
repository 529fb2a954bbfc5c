"""The feature matrix Φ of the training set as the framework uses it in training: sparse rows, one per point.

``SparseRows`` holds Φ (n × m) in compressed-row form over the DISTINCT training representations (n_u rows) and a
map ``row_of`` (n,) from training index to its row (identical representations share a row). The framework reads
Φ's rows for a batch of training indices from here instead of recomputing φ, at a cost proportional to the
number of non-zero entries (a thresholded Gaussian kernel is local: tens of entries per row, not n).

>>> dense = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]])
>>> rows = SparseRows.from_dense(dense, row_of=torch.tensor([0, 1, 0]))
>>> rows.dense(torch.tensor([2, 1])).tolist()
[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]
>>> rows.matmul(torch.tensor([2, 1]), torch.eye(3)).tolist()
[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]
>>> rows.transpose_matmul(torch.ones(3, 1, dtype=torch.float64)).flatten().tolist()
[2.0, 1.0, 1.0]
"""

from __future__ import annotations

import torch

from dynamics.errors import InputError

__all__ = ["SparseRows"]


class SparseRows:
    """Φ on the training set: CSR (``crow`` (n_u + 1,), ``col`` (nnz,), ``val`` (nnz,) float32) plus ``row_of`` (n,).

    Memory: 12 bytes per non-zero plus 8 per training point; never an n × n dense matrix.
    """

    def __init__(self, crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, n_cols: int,
                 row_of: torch.Tensor) -> None:
        if crow.dim() != 1 or col.shape != val.shape or int(crow[-1]) != len(col):
            raise InputError("SparseRows needs crow (n_u + 1,), col and val of equal length nnz = crow[-1]")
        self.crow, self.col, self.val = crow.long(), col.long(), val.float()
        self.n_cols, self.row_of = int(n_cols), row_of.long()

    @classmethod
    def from_coo(cls, i: torch.Tensor, j: torch.Tensor, v: torch.Tensor, n_rows: int, n_cols: int,
                 row_of: torch.Tensor) -> "SparseRows":
        """From coordinate lists (row i, column j, value v), in any order, without repeated (i, j)."""
        order = torch.argsort(i.long() * n_cols + j.long())  # int64 key: i·n_cols overflows int32 at n ≈ 46,341
        j, v = j[order], v[order]
        crow = torch.zeros(n_rows + 1, dtype=torch.long)
        crow[1:] = torch.cumsum(torch.bincount(i.long(), minlength=n_rows), 0)
        del order
        return cls(crow, j, v, n_cols, row_of)

    @classmethod
    def from_dense(cls, phi: torch.Tensor, row_of: torch.Tensor | None = None) -> "SparseRows":
        """From a dense (n_u, m) matrix (its zero entries dropped)."""
        i, j = phi.nonzero(as_tuple=True)
        row_of = torch.arange(len(phi)) if row_of is None else row_of
        return cls.from_coo(i, j, phi[i, j], len(phi), phi.shape[1], row_of)

    @property
    def n(self) -> int:
        return len(self.row_of)

    @property
    def nnz(self) -> int:
        return len(self.col)

    def to(self, device: torch.device | str) -> "SparseRows":
        return SparseRows(self.crow.to(device), self.col.to(device), self.val.to(device), self.n_cols,
                          self.row_of.to(device))

    def _gather(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = self.row_of[index.to(self.row_of.device)]
        start, count = self.crow[rows], self.crow[rows + 1] - self.crow[rows]
        owner = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), count)
        offset = torch.arange(len(owner), device=rows.device) - torch.repeat_interleave(torch.cumsum(count, 0)
                                                                                         - count, count)
        pos = torch.repeat_interleave(start, count) + offset
        return owner, self.col[pos], self.val[pos]

    def dense(self, index: torch.Tensor) -> torch.Tensor:
        """Rows Φ[index] as a dense (B, m) float32 tensor."""
        owner, col, val = self._gather(index)
        out = torch.zeros(len(index), self.n_cols, device=val.device)
        out[owner, col] = val
        return out

    def matmul(self, index: torch.Tensor, zeta: torch.Tensor) -> torch.Tensor:
        """Φ[index] @ ζ (B, k), differentiable in ``zeta`` (m, k), touching only the non-zero entries."""
        owner, col, val = self._gather(index)
        contrib = val.to(zeta.dtype)[:, None] * zeta[col]
        return torch.zeros(len(index), zeta.shape[1], dtype=zeta.dtype, device=zeta.device).index_add(
            0, owner, contrib)

    def transpose_matmul(self, r: torch.Tensor) -> torch.Tensor:
        """Φᵀ R (m, k) for R (n, k) over ALL n training points, in R's dtype (float64 for certificates)."""
        if len(r) != self.n:
            raise InputError(f"R must have one row per training point ({self.n}), got {tuple(r.shape)}")
        owner, col, val = self._gather(torch.arange(self.n, device=self.row_of.device))
        return torch.zeros(self.n_cols, r.shape[1], dtype=r.dtype, device=r.device).index_add(
            0, col, val.to(r.dtype)[:, None] * r[owner])
