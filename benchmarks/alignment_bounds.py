"""Alignment of a trained network on its own training set, at scale: subset bounds and the exact residual.

What it measures (issue 11): a ``resnet_small`` (ResNet-8, widths 8/16/32, p = 19,810) trained by SGD with
momentum on ``--n`` MNIST training images, then, on that training set in float64 with the model in eval mode:

* ``--route subset``: :func:`dynamics.check_alignment` with ``method="subset"``: a rigorous lower bound
  r ≥ r_S·‖Y_S‖/‖Y‖ from |S| samples (|S|·k > p) and the upper bound ‖Y − J z_S‖/‖Y‖ on all n samples;
* ``--route gram``: the exact residual from JᵀJ (p × p) accumulated over sample blocks, J never formed.

Each phase is timed (Jacobian blocks + Gram accumulation, eigendecomposition, upper-bound products); the result
(bounds, conclusive, rank, times, threads, machine) is appended as one JSON line to ``--out``.

Hardware and threads matter. The subset route costs 2|S|kp² − ⅔p³ flops for the QR factorisation of [J_S, Y_S]
plus the Jacobian rows of S and one forward-mode pass over all n for the upper bound; the exact route n·k·p² for
JᵀJ plus ~9p³ for its eigendecomposition (≈ 40 min at p = 19,810 on one core of the development machine).

Measured (results/alignment_bounds.jsonl; 2-core development machine shared with other jobs, load ≈ 6, one
thread): n = 5,000, 3 epochs of SGD (train accuracy 0.774), |S| = 2,200 (J_S 22,000 × 19,811). Run 1: J_S 122 s,
QR 611 s, total 870 s, r ∈ [0.0629, 1.0]. Run 2 (with the read-out upper bound): J_S 83 s, QR 789 s, total 978 s,
r ∈ [0.0629, 0.4998]. Both conclusive (alignment fails); the target is ≤ 15 min (900 s).
Run 3 (2026-12-01, the other core training, no other load): J_S 46 s, QR 356 s, check 448 s (7.5 min, target met),
peak RSS 6.8 GiB, r ∈ [0.0629, 0.4998].
Exact route, n = 20,000 (2026-12-01, one thread, the other core training): 3 epochs (train accuracy 0.960),
JᵀJ (19,810 × 19,810) over 200,000 rows in 1,716 s, eigendecomposition 1,214 s, check 3,056 s (51 min; target
≤ 1 h), peak RSS 13.0 GiB. rank 19,482 of 19,810; r = 0.2926 from the Gram formula and from the explicit fit
‖Y − Jz‖/‖Y‖ alike; stated bounds r ∈ [0.158, 0.293] (the lower side pays the eigenvector accuracy
max(m, p)·eps·(σ_max/σ_r)² = 0.061 in r²). Conclusive: this trained network is not aligned on its training set.

    OMP_NUM_THREADS=1 python benchmarks/alignment_bounds.py --n 5000 --route subset
    OMP_NUM_THREADS=1 python benchmarks/alignment_bounds.py --n 20000 --route gram
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time

import torch
import torch.nn.functional as F

import dynamics
from dynamics.data import load_dataset
from dynamics.models import create


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> float:
    """SGD (lr 0.05, momentum 0.9, batch 64) with cross-entropy, float32; returns seconds."""
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = order[i:i + 64]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--route", choices=["subset", "gram"], default="subset")
    ap.add_argument("--subset-size", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--memory-gib", type=float, default=12.0)
    ap.add_argument("--data-root", default=os.environ.get("DYNAMICS_DATA"))
    ap.add_argument("--out", default="benchmarks/results/alignment_bounds.jsonl")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    x, labels = load_dataset("mnist", split="train", root=args.data_root)
    gen = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(x), generator=gen)[: args.n]
    x, labels = x[idx].float(), labels[idx].long()
    torch.manual_seed(args.seed)
    model = create("resnet_small", in_channels=1, num_classes=10)
    p = sum(q.numel() for q in model.parameters())
    train_s = train(model, x, labels, args.epochs, args.seed)
    logging.info("trained in %.0f s; checking alignment (%s) on n = %d", train_s, args.route, args.n)
    with torch.no_grad():
        acc = float((model(x).argmax(1) == labels).float().mean())
    start = time.perf_counter()
    rep = dynamics.check_alignment(model, x, labels, method=args.route, subset_size=args.subset_size,
                                   memory_budget=int(args.memory_gib * 2**30))
    seconds = time.perf_counter() - start
    row = {"n": args.n, "route": args.route, "p": p, "nk": args.n * 10, "train_s": round(train_s, 1),
           "train_accuracy": acc, "check_s": round(seconds, 1), "residual_lower": rep.residual_lower,
           "residual_upper": rep.residual_upper, "conclusive": rep.conclusive, "holds": rep.holds,
           "trivial": rep.trivial, "rank": rep.rank, "subset_size": rep.subset_size, "accuracy": rep.accuracy,
           "notes": rep.notes, "torch_threads": torch.get_num_threads(),
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "machine": platform.processor() or platform.machine(),
           "cpus": os.cpu_count(), "torch": torch.__version__}
    print(rep)
    print(json.dumps(row))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "a") as fh:
        fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
