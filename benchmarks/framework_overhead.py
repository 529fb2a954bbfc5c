"""Time per training step of phase 2 (f̃ = f + g) versus the base model, measured side by side, at a given n.

The small ResNet is first trained for ``--train-epochs`` on the n MNIST training images (so the representation,
and hence the sparsity of the thresholded kernel, is that of a trained network), then switched with the
framework's defaults (``auto``: gaussian). Both models then train with SGD in the same process; blocks of steps
of the two alternate (base, modified, base, ...) so that load from other processes hits both alike, and the
MEDIAN block time is compared. Phase 2 reads Φ's rows from the sparse training cache, as the runner does.
Also printed: the switch time (features, the proven bound, the cache) and the cache's memory.

    OMP_NUM_THREADS=1 DYNAMICS_DATA=/path/to/datasets python benchmarks/framework_overhead.py --n 60000
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

import dynamics.data as dd
import dynamics.models as dm
from dynamics.training.framework import switch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="training points (centres of the kernel)")
    ap.add_argument("--features", default="auto")
    ap.add_argument("--bandwidth", type=float, default=None)
    ap.add_argument("--train-epochs", type=int, default=1)
    ap.add_argument("--blocks", type=int, default=12)
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    x, y = dd.load_dataset("mnist", "train")
    x, y = dd.normalise(x[: args.n], "mnist").float(), y[: args.n].long()
    torch.manual_seed(0)
    base = dm.create("resnet_small", 1, 10, input_size=(28, 28))
    opt = torch.optim.SGD(base.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(args.train_epochs):
        perm = torch.randperm(len(x), generator=g)
        for s in range(0, len(x), 64):
            b = perm[s:s + 64]
            loss = nn.functional.cross_entropy(base(x[b]), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    print(f"n={args.n}: phase 1 ({args.train_epochs} epochs) {time.perf_counter() - t0:.1f} s")
    batches = [torch.randint(0, len(x), (64,), generator=g) for _ in range(args.steps)]

    def block(model, optimiser, indexed):
        t0 = time.perf_counter()
        for idx in batches:
            out = model(x[idx], index=idx) if indexed else model(x[idx])
            loss = nn.functional.cross_entropy(out, y[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        return (time.perf_counter() - t0) / len(batches)

    b = copy.deepcopy(base)
    t0 = time.perf_counter()
    opts = {} if args.bandwidth is None else {"bandwidth": args.bandwidth}
    aug, info = switch(copy.deepcopy(base), x, y, 10, features=args.features, feature_options=opts, lr=0.01,
                       batch_size=64, momentum=0.9)
    t_switch = time.perf_counter() - t0
    rows = aug.training_rows
    cert = info["certificate"]
    print(f"switch {t_switch:.1f} s ({info['features']}, zeta {tuple(aug.zeta.shape)}, cache {rows.nnz} non-zeros "
          f"= {rows.nnz / args.n:.1f} per row, {rows.nnz * 12 / 2**20:.1f} MiB); certificate holds={cert['holds']}: "
          f"{cert['text']}")
    ob = torch.optim.SGD(b.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    oa = torch.optim.SGD([{"params": aug.base.parameters()}, {"params": [aug.zeta], "weight_decay": 0.0}],
                         lr=0.01, momentum=0.9, weight_decay=1e-4)
    block(b, ob, False), block(aug, oa, True)  # warm-up
    tb, ta = [], []
    for _ in range(args.blocks):
        tb.append(block(b, ob, False))
        ta.append(block(aug, oa, True))
    mb, ma = statistics.median(tb), statistics.median(ta)
    print(f"n={args.n}: base {mb * 1e3:.1f} ms/step, phase 2 {ma * 1e3:.1f} ms/step, ratio {ma / mb:.3f} "
          f"(median of {args.blocks} interleaved blocks of {args.steps} steps, threads={torch.get_num_threads()})")


if __name__ == "__main__":
    main()
