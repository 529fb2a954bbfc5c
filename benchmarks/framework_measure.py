"""Base vs modified (A(base)) on one dataset, same seed and budget: test error, the run certificate at τ and at the
end, ‖g‖/‖f‖ on train and test, the fraction of test predictions that differ, and phase-2 vs base epoch time.

A self-contained loop with the runner's semantics (SGD with momentum and weight decay, batch 64, per-epoch seeded
shuffles, mean loss per batch, eval-mode evaluation), so that it measures the framework while the runner is
being refactored; it uses only the framework's public API (``switch``, ``run_certificate``, ``predictions``).

    OMP_NUM_THREADS=1 DYNAMICS_DATA=/path/to/datasets python benchmarks/framework_measure.py --dataset semeion \\
        --epochs 30 --variants base auto

Variants: ``base``; ``auto`` (gaussian, defaults); ``KEY=VALUE,...`` over bandwidth, kernel_mass,
zeta_step, wd2 (θ's weight decay in phase 2), loss2 (ce | mse), growth (ζ's learning rate is multiplied by
growth^(epoch − τ) in phase 2), final (ζ's step grows geometrically from zeta_step to this over phase 2,
``framework.zeta_lr``), zmom (ζ's momentum), features, max_block. Writes one JSON line per variant to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn

import dynamics.data as dd
import dynamics.models as dm
from dynamics.training.framework import switch, zeta_lr
from dynamics.training.run_certificate import prediction_change, predictions, run_certificate


def load(dataset: str, n: int | None, seed: int) -> tuple[torch.Tensor, ...]:
    x, y = dd.load_dataset(dataset, "train")
    xt, yt = dd.load_dataset(dataset, "test")
    x, xt = dd.normalise(x, dataset), dd.normalise(xt, dataset)
    if n is not None and n < len(x):
        g = torch.Generator().manual_seed(seed + 3)
        idx = torch.randperm(len(x), generator=g)[:n].sort().values
        x, y = x[idx], y[idx]
    return x.float(), y.long(), xt.float(), yt.long()


def batch_loss(kind: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if kind == "ce":
        return nn.functional.cross_entropy(out, y)
    return 0.5 * (out - nn.functional.one_hot(y, out.shape[1]).float()).square().sum(1).mean()


def run(args: argparse.Namespace, data: tuple, variant: dict) -> dict:
    x, y, xt, yt = data
    torch.manual_seed(args.seed)
    model = dm.create("resnet_small", x.shape[1], 10, input_size=tuple(x.shape[2:]))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.wd)
    rec: dict = {"variant": variant, "dataset": args.dataset, "n": len(x), "epochs": args.epochs,
                 "tau": args.tau, "seed": args.seed}
    net, loss_kind, indexed, times = model, "ce", False, []
    for epoch in range(args.epochs):
        if variant.get("modified") and epoch == args.tau:
            t0 = time.perf_counter()
            opts = {k: variant[k] for k in ("bandwidth", "kernel_mass", "max_block", "threshold") if k in variant}
            net, info = switch(model, x, y, 10, features=variant.get("features", "auto"), feature_options=opts,
                               lr=args.lr, batch_size=64, momentum=0.9, seed=args.seed,
                               zeta_step=float(variant.get("zeta_step", 0.5)))
            rec["switch_time_s"] = time.perf_counter() - t0
            rec["switch"] = {k: info[k] for k in ("features", "scale", "zeta_step", "zeta_lr_times_scale_sq",
                                                    "training_rows_nnz", "feature_dim", "source")}
            rec["feature_certificate"] = info["certificate"]
            opt.add_param_group({"params": [net.zeta], "weight_decay": 0.0, "lr": args.lr,
                                 "momentum": float(variant.get("zmom", 0.9))})
            if "wd2" in variant:
                opt.param_groups[0]["weight_decay"] = float(variant["wd2"])
            loss_kind, indexed = variant.get("loss2", "ce"), True
            if info["certificate"]["holds"]:
                rec["cert_tau"] = run_certificate(net, x, y, None, None, info["certificate"], "tau").to_dict()
        if variant.get("modified") and epoch >= args.tau and "growth" in variant:
            opt.param_groups[-1]["lr"] = args.lr * float(variant["growth"]) ** (epoch - args.tau)
        if variant.get("modified") and epoch >= args.tau and "final" in variant:
            opt.param_groups[-1]["lr"] = zeta_lr(args.lr, epoch, args.tau, args.epochs,
                                                 float(variant.get("zeta_step", 0.5)), float(variant["final"]))
        net.train()
        g = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        perm = torch.randperm(len(x), generator=g)
        t0 = time.perf_counter()
        for s in range(0, len(x), 64):
            b = perm[s:s + 64]
            out = net(x[b], index=b) if indexed else net(x[b])
            loss = batch_loss(loss_kind, out, y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    rec["epoch_time_phase2_s"] = float(np.median(times[args.tau:]))
    rec["epoch_time_phase1_s"] = float(np.median(times[:args.tau]))
    pred = predictions(net, xt)
    rec["test_error"] = float((pred != yt.numpy()).mean())
    rec["_pred"] = pred
    if variant.get("modified"):
        rec["test_error_f_alone"] = float((predictions(net.base, xt) != yt.numpy()).mean())
    if variant.get("modified") and rec["feature_certificate"]["holds"]:
        c = run_certificate(net, x, y, xt, yt, rec["feature_certificate"], "end")
        rec["cert_end"] = c.to_dict()
        print(c, flush=True)
    return rec


def parse_variant(text: str) -> dict:
    if text == "base":
        return {"name": "base"}
    v: dict = {"name": text, "modified": True}
    if text != "auto":
        for kv in text.split(","):
            k, val = kv.split("=")
            v[k] = val if k in ("loss2", "features") else float(val)
        if "max_block" in v:
            v["max_block"] = int(v["max_block"])
    return v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="semeion")
    ap.add_argument("--n", type=int, default=None, help="seeded training subset")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--tau", type=int, default=None, help="switch epoch (default epochs // 2)")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--wd", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", nargs="+", default=["base", "auto"])
    ap.add_argument("--out", default=None, help="append one JSON line per variant")
    ap.add_argument("--base-predictions", default=None,
                    help="a .npy file: written by the 'base' variant, read when 'base' is not among the variants")
    args = ap.parse_args()
    args.tau = args.epochs // 2 if args.tau is None else args.tau
    data = load(args.dataset, args.n, args.seed)
    base_pred = None
    if args.base_predictions and "base" not in args.variants:
        base_pred = np.load(args.base_predictions)
    for text in args.variants:
        rec = run(args, data, parse_variant(text))
        pred = rec.pop("_pred")
        if text == "base":
            base_pred = pred
            if args.base_predictions:
                np.save(args.base_predictions, pred)
        elif base_pred is not None:
            rec["test_predictions_changed"] = prediction_change(pred, base_pred)
        line = json.dumps(rec)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(line + "\n")


if __name__ == "__main__":
    main()
