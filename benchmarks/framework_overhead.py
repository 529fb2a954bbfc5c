"""Time per training step of the modified framework f̃ = f + g versus the base model, measured side by side.

Both models (the small ResNet on MNIST-shaped batches) train with SGD in the same process; blocks of steps of
the two alternate (base, modified, base, ...) so that load from other processes hits both alike, and the
MEDIAN block time is compared. Phase 2 uses the training-set feature cache (no augmentation), as the runner
does; ``--no-cache`` measures the on-the-fly path (a cache too large to keep, or ``g_input="augmented"``).
``--augment`` applies the runner's augmentation (random crop, padding H/8) to every batch of both models; with
the cache on, g reads the clean sample's cached features (``g_input="clean"``, the runner's default).

    OMP_NUM_THREADS=1 DYNAMICS_DATA=/path/to/datasets python benchmarks/framework_overhead.py
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

import dynamics.data as dd
import dynamics.models as dm
from dynamics.training.framework import switch
from dynamics.training.runner import loss_fn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="training points (centres of the kernel)")
    ap.add_argument("--features", nargs="*", default=["gaussian", "nnlabel", "random"])
    ap.add_argument("--blocks", type=int, default=12)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--augment", action="store_true", help="augment every batch, as `dynamics train --augment`")
    args = ap.parse_args()
    x, y = dd.load_dataset("mnist", "train")
    x, y = dd.normalise(x[: args.n], "mnist"), y[: args.n]
    torch.manual_seed(0)
    base = dm.create("resnet_small", 1, 10, input_size=(28, 28))
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, len(x), (64,), generator=g) for _ in range(args.steps)]
    augment = dd.Augment(crop_padding=max(1, x.shape[-1] // 8), flip=False) if args.augment else None

    def block(model, opt, indexed):
        gen = torch.Generator().manual_seed(1)
        t0 = time.perf_counter()
        for idx in batches:
            xb = augment(x[idx], gen) if augment is not None else x[idx]
            out = model(xb, index=idx) if indexed else model(xb)
            loss = loss_fn("ce", out, y[idx]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return (time.perf_counter() - t0) / len(batches)

    print(f"n={args.n}, batch 64, {args.blocks} blocks of {args.steps} steps, threads={torch.get_num_threads()}, "
          f"cache={'off' if args.no_cache else 'on'}, augment={'on' if args.augment else 'off'}")
    for name in args.features:
        b = copy.deepcopy(base)
        aug, info = switch(copy.deepcopy(base), x, y, 10, features=name, lr=0.01, batch_size=64, momentum=0.9)
        kind = "none" if args.no_cache else aug.cache_training_features(x)
        ob = torch.optim.SGD(b.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        oa = torch.optim.SGD([{"params": aug.base.parameters()}, {"params": [aug.zeta], "weight_decay": 0.0}],
                             lr=0.01, momentum=0.9, weight_decay=1e-4)
        tb, ta = [], []
        block(b, ob, False), block(aug, oa, not args.no_cache)  # warm-up
        for _ in range(args.blocks):
            tb.append(block(b, ob, False))
            ta.append(block(aug, oa, not args.no_cache))
        mb, ma = statistics.median(tb), statistics.median(ta)
        print(f"{name:9} cache {kind:4} zeta {tuple(aug.zeta.shape)}: base {mb * 1e3:.1f} ms/step, modified {ma * 1e3:.1f} ms/step, "
              f"ratio {ma / mb:.3f} (median of {args.blocks} interleaved blocks)")


if __name__ == "__main__":
    main()
