"""``dynamics ntk``: the empirical NTK of a small default network on synthetic data, with self-checks.

    dynamics ntk --model cnn --n 32 --method auto --dtype float64 --seed 0

Builds the network from :mod:`dynamics.models` (``mlp``, ``cnn``, ``resnet`` = ``resnet_small``) on Gaussian
1x16x16 inputs (nothing is downloaded; BatchNorm running statistics come from three training-mode passes over
them), computes K with :func:`dynamics.ntk` and prints: shapes, the method and per-layer rules, the time, the
eigenvalue range and effective rank of the nk x nk Gram matrix, and two self-checks -- exact symmetry, and trace
of K on the first few samples against ‖J‖²_F of the same rows computed independently by
:class:`dynamics.JacobianOperator`. ``--bn-mode`` is refused for a network without BatchNorm.
Exit status 0 when the checks pass, 1 otherwise.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from dynamics import models
from dynamics.cli.validate import arg, bn_mode, positive_int, seed
from dynamics.engine.jacobian import JacobianOperator
from dynamics.engine.memory import parse_memory_budget
from dynamics.engine.ntk import ntk
from dynamics.errors import InputError

__all__ = ["HELP", "add_arguments", "run", "build_model"]

HELP = "compute the empirical NTK of a small default network on synthetic data and check it"

_MODELS = ("mlp", "cnn", "resnet")
_METHODS = ("auto", "jacobian", "ntvp", "structured")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=_MODELS, default="mlp", help="default network (default: mlp)")
    parser.add_argument("--n", type=arg(positive_int, "--n"), default=32, help="number of samples (default: 32)")
    parser.add_argument("--k", type=arg(positive_int, "--k"), default=10, help="outputs per sample (default: 10)")
    parser.add_argument("--method", choices=_METHODS, default="auto", help="NTK algorithm (default: auto)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64",
                        help="compute dtype (default: float64)")
    parser.add_argument("--bn-mode", choices=("eval", "batch", "frozen"), default=None,
                        help="BatchNorm semantics, only for a network with BatchNorm (--model resnet; default: eval); "
                        "refused for a network without BatchNorm")
    parser.add_argument("--memory-budget", type=arg(parse_memory_budget, "--memory-budget"), default=None,
                        help="total bytes the call may allocate, K included (e.g. 2e9, 256MiB); "
                        "default: K plus 1 GiB")
    parser.add_argument("--seed", type=arg(seed, "--seed"), default=0,
                        help="seed of the weights and the data (default: 0)")
    parser.add_argument("--check-samples", type=arg(positive_int, "--check-samples"), default=4,
                        help="samples whose Jacobian rows are recomputed for the trace check (default: 4)")


def build_model(name: str, k: int) -> nn.Module:
    """The default network ``name`` (``mlp``, ``cnn`` or ``resnet``) for 1x16x16 inputs and k outputs.

    >>> sum(p.numel() for p in build_model("mlp", 3).parameters())
    20803
    """
    if name == "mlp":
        return models.create("mlp", 1, k, input_size=16, depth=2, width=64)
    if name == "cnn":
        return models.create("cnn", 1, k, input_size=16, channels=(8, 16))
    if name == "resnet":
        return models.create("resnet_small", 1, k)
    raise InputError(f"unknown default network {name!r}; choose from {list(_MODELS)}")


def run(args: argparse.Namespace) -> int:
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    torch.manual_seed(args.seed)
    model = build_model(args.model, args.k)
    bn = bn_mode(model, args.bn_mode)  # before any computation: --bn-mode on a net without BatchNorm is refused
    x = torch.randn(args.n, 1, 16, 16, generator=torch.Generator().manual_seed(args.seed + 1))
    if bn is not None:  # running statistics of the synthetic data rather than the initial (0, 1)
        with torch.no_grad():
            model.train()
            for _ in range(3):
                model(x)
    budget = args.memory_budget

    start = time.perf_counter()
    K, info = ntk(model, x, bn_mode=bn, method=args.method, dtype=dtype, memory_budget=budget,
                           return_info=True)
    elapsed = time.perf_counter() - start
    n, k = args.n, K.shape[2]
    M = K.permute(0, 2, 1, 3).reshape(n * k, n * k).double()
    eig = torch.linalg.eigvalsh((M + M.T) / 2)
    lam_max = float(eig.max())
    tol = lam_max * n * k * torch.finfo(dtype).eps
    rank = int((eig > tol).sum())
    eff_rank = float(eig.clamp(min=0).sum() ** 2 / (eig ** 2).sum()) if lam_max > 0 else 0.0

    asym = float((M - M.T).abs().max())
    m = min(args.check_samples, n)
    op = JacobianOperator(model, x, bn_mode=bn, dtype=dtype)
    E = torch.zeros(n * k, m * k, dtype=dtype)
    E[torch.arange(m * k), torch.arange(m * k)] = 1
    fro = float((op.T @ E).double().pow(2).sum())
    trace = float(M[: m * k, : m * k].trace())
    trace_rel = abs(trace - fro) / max(fro, 1e-300)
    trace_tol = 1e-10 if dtype == torch.float64 else 1e-4

    print(f"dynamics ntk: model={args.model} n={n} k={k} p={info.p} dtype={args.dtype} bn_mode={bn}")
    print(f"K shape {tuple(K.shape)} (Gram matrix {n * k} x {n * k}); computed in {elapsed:.3f} s")
    print(info)
    print(f"eigenvalues: min {float(eig.min()):.4g}, max {lam_max:.4g}; numerical rank {rank} of {n * k} "
          f"(tolerance {tol:.3g}); effective rank (Σλ)²/Σλ² = {eff_rank:.2f}")
    ok_sym, ok_trace = asym == 0.0, trace_rel <= trace_tol
    print(f"check symmetry: max |K - Kᵀ| = {asym:.3g} -> {'ok' if ok_sym else 'FAILED'}")
    print(f"check trace: trace of K on the first {m} samples = {trace:.10g}, ‖J‖²_F of their rows by "
          f"JacobianOperator = {fro:.10g}, relative difference {trace_rel:.3g} (tolerance {trace_tol:g}) -> "
          f"{'ok' if ok_trace else 'FAILED'}")
    return 0 if ok_sym and ok_trace else 1
