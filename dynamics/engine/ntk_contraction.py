"""Two generic NTK algorithms that work for any differentiable network: Jacobian contraction and NTK-vector products.

Both fill ``Kf`` of shape ``(n1, k, n2, k)`` in place (``Kf[i, a, j, b] = <∂f_a(x1_i)/∂θ, ∂f_b(x2_j)/∂θ>``) tile by
tile, following a :class:`~dynamics.engine.ntk_plan.Plan`:

* :func:`ntk_jacobian`: for one parameter group at a time (the selected parameters of one module), the rows of
  J restricted to that group for a block of x1 samples x outputs and a block of x2 samples x outputs, contracted
  with a matrix product and accumulated. Never more than one group's rows are held.
* :func:`ntk_ntvp`: columns K·e_j = J(x1) (J(x2)ᵀ e_j): a batch of one-hot cotangents through a VJP of the x2
  block gives J(x2)ᵀ e_j, a vmapped JVP over the x1 block turns each into a column block of K.

In ``bn_mode="batch"`` the network is a function of the whole batch: rows come from VJPs of the whole-batch
function with one-hot cotangents (vmapped over cotangents, never over samples).

>>> import torch, torch.nn as nn
>>> from dynamics.engine.stacked import StackedFunction
>>> sf = StackedFunction(nn.Linear(3, 2), torch.randn(4, 3))
>>> group_rows(sf, ["weight", "bias"], slice(0, 4), slice(0, 2)).shape   # (samples, outputs, m)
torch.Size([4, 2, 8])
"""

from __future__ import annotations

import logging
import math

import torch
from torch.func import jacrev, jvp, vjp, vmap

from dynamics.engine.rules.base import gram
from dynamics.engine.stacked import StackedFunction

__all__ = ["group_rows", "ntk_jacobian", "ntk_ntvp", "row_blocks", "mirror_upper", "sample_tiles"]

log = logging.getLogger(__name__)


def sample_tiles(n: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` samples covering 0..n."""
    return [slice(i, min(i + size, n)) for i in range(0, n, max(size, 1))]


def row_blocks(n: int, size: int, k: int, chunk: int) -> list[tuple[int, slice, slice]]:
    """``(tile index, sample slice, output slice)`` for every sample tile x output chunk."""
    return [(t, s, slice(o, min(o + chunk, k))) for t, s in enumerate(sample_tiles(n, size))
            for o in range(0, k, chunk)]


def mirror_upper(Kf: torch.Tensor, tiles: list[slice], chunk: int = 0) -> None:
    """Fill the blocks below the diagonal of a symmetric ``(n, k, n, k)`` kernel from those above it.

    Diagonal blocks are replaced by their symmetric part (a rounding-level change), so K is exactly symmetric.
    The symmetrisation runs over chunks of ``chunk`` samples (default 1024 // k: temporaries of at most
    2·1024² numbers, few and large operations), so it adds little to the memory the tiles were sized for.
    """
    chunk = chunk or max(1, 1024 // Kf.shape[1])
    for t1, s1 in enumerate(tiles):
        rows = [slice(i, min(i + chunk, s1.stop)) for i in range(s1.start, s1.stop, chunk)]
        for a, r in enumerate(rows):
            for c in rows[a:]:
                avg = (Kf[r, :, c, :] + Kf[c, :, r, :].permute(2, 3, 0, 1)) / 2
                Kf[r, :, c, :] = avg
                Kf[c, :, r, :] = avg.permute(2, 3, 0, 1)
        for s2 in tiles[t1 + 1:]:
            Kf[s2, :, s1, :] = Kf[s1, :, s2, :].permute(2, 3, 0, 1)


def _split(sf: StackedFunction, names: list[str]):
    chosen = set(names)
    rest = {n: t for n, t in sf.theta.items() if n not in chosen}
    sub = {n: sf.theta[n] for n in names}
    return rest, sub


def _one_hot_rows(samples: slice, outs: slice, k: int, offset: int, size: int, like: torch.Tensor) -> torch.Tensor:
    """Cotangents (r, size): one row per (sample, output) of the block, rows sample-major."""
    idx = torch.tensor([(i - offset) * k + c for i in range(samples.start, samples.stop)
                        for c in range(outs.start, outs.stop)], device=like.device)
    cot = torch.zeros(len(idx), size, dtype=like.dtype, device=like.device)
    cot[torch.arange(len(idx), device=like.device), idx] = 1
    return cot


def group_rows(sf: StackedFunction, names: list[str], samples: slice, outs: slice) -> torch.Tensor:
    """Rows of J restricted to the parameters ``names``, shape ``(B, c, m)`` for B samples and c outputs.

    Per-sample functions: ``vmap`` over samples of ``jacrev`` of the outputs in ``outs`` (falling back to VJPs of
    the block if an operation has no batching rule). ``bn_mode="batch"``: VJPs of the whole-batch function.
    """
    rest, sub = _split(sf, names)
    B, c = samples.stop - samples.start, outs.stop - outs.start
    if sf.per_sample:
        def f_single(s, xi):
            return sf.evaluate({**rest, **s}, xi.unsqueeze(0))[outs]

        try:
            jac = vmap(jacrev(f_single), in_dims=(None, 0))(sub, sf.x[samples])
            return torch.cat([jac[n].reshape(B, c, -1) for n in names], dim=-1)
        except (RuntimeError, NotImplementedError) as exc:
            log.debug("vmap over samples failed (%s); computing rows by vjp", exc)
        block, offset = samples, samples.start
    else:
        block, offset = slice(0, sf.n), 0
    fb = sf.block_function(block)
    out, vjp_fn = vjp(lambda s: fb({**rest, **s}), sub)
    cot = _one_hot_rows(samples, outs, sf.k, offset, out.numel(), out)
    (grads,) = vmap(vjp_fn)(cot)
    return torch.cat([grads[n].reshape(B, c, -1) for n in names], dim=-1)


def _contract(J1: torch.Tensor, J2: torch.Tensor) -> torch.Tensor:
    """(B1, c1, m) x (B2, c2, m) -> (B1, c1, B2, c2)."""
    B1, c1, m = J1.shape
    B2, c2, _ = J2.shape
    A = J1.reshape(B1 * c1, m)
    return gram(A, A if J2 is J1 else J2.reshape(B2 * c2, m)).reshape(B1, c1, B2, c2)


def ntk_jacobian(sf1: StackedFunction, sf2: StackedFunction, sym: bool, plan, Kf: torch.Tensor) -> None:
    """Accumulate K by per-group Jacobian contraction (see the module docstring)."""
    k, B, c = sf1.k, plan.tile1, plan.out_chunk
    blocks1 = row_blocks(sf1.n, B, k, c)
    blocks2 = blocks1 if sym else row_blocks(sf2.n, B, k, c)
    for names in plan.param_chunks:
        cache2 = None
        if plan.cache:
            cache1 = [group_rows(sf1, names, s, o) for _, s, o in blocks1]
            cache2 = cache1 if sym else [group_rows(sf2, names, s, o) for _, s, o in blocks2]
        for i, (t1, s1, o1) in enumerate(blocks1):
            J1 = cache1[i] if plan.cache else group_rows(sf1, names, s1, o1)
            for j, (t2, s2, o2) in enumerate(blocks2):
                if sym and t2 < t1:
                    continue
                if cache2 is not None:
                    J2 = cache2[j]
                elif sym and i == j:
                    J2 = J1
                else:
                    J2 = group_rows(sf2, names, s2, o2)
                Kf[s1, o1, s2, o2] += _contract(J1, J2)
    if sym:
        mirror_upper(Kf, sample_tiles(sf1.n, B))


def ntk_ntvp(sf1: StackedFunction, sf2: StackedFunction, sym: bool, plan, Kf: torch.Tensor) -> None:
    """Accumulate K column block by column block from VJPs (over x2) and vmapped JVPs (over x1)."""
    k = sf1.k
    ps = sf1.per_sample
    tiles1 = sample_tiles(sf1.n, plan.tile1) if ps else [slice(0, sf1.n)]
    blocks2 = row_blocks(sf2.n, plan.tile2, k, plan.out_chunk)
    for names in plan.param_chunks:
        rest, sub = _split(sf1, names)
        for t2, s2, o2 in blocks2:
            block2 = s2 if ps else slice(0, sf2.n)
            fb2 = sf2.block_function(block2)
            out, vjp_fn = vjp(lambda s, fb2=fb2: fb2({**rest, **s}), sub)
            cot = _one_hot_rows(s2, o2, k, block2.start, out.numel(), out)
            (u,) = vmap(vjp_fn)(cot)  # name -> (r, *shape): rows of J(x2) for this block
            B2, c = s2.stop - s2.start, o2.stop - o2.start
            for t1, s1 in enumerate(tiles1):
                if sym and ps and t1 > t2:
                    continue
                fb1 = sf1.block_function(s1)

                def column(t, fb1=fb1):
                    return jvp(lambda s: fb1({**rest, **s}), (sub,), (t,))[1]

                res = vmap(column)(u)  # (r, B1*k)
                B1 = s1.stop - s1.start
                Kf[s1, :, s2, o2] += res.reshape(B2, c, B1, k).permute(2, 3, 0, 1)
    if sym:
        mirror_upper(Kf, tiles1)


def n_blocks(n: int, size: int, k: int, chunk: int) -> int:
    return math.ceil(n / max(size, 1)) * math.ceil(k / max(chunk, 1))
