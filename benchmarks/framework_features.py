"""Feature constructions of the modified framework, measured against each other and against the base algorithm.

For each dataset (MNIST on a seeded training subset, Semeion 1000/593) it trains the small ResNet
(``resnet_small``: ResNet-8, widths 8/16/32, BatchNorm) with the base algorithm (SGD, momentum 0.9, weight
decay 1e-4, batch 64, cross-entropy) and with A(base) for each feature construction (same budget, switch at
τ = epochs/2), and reports test accuracy, final training loss (whole training set, eval mode), the training
time per epoch of phase 2 relative to the same epochs of the base run (measured in the same process, runs
interleaved), and how alignment was certified.

Run (CPU, one thread; about 10 minutes; Semeion runs also check alignment of g on the whole training set
through the matrix-free LSQR path):

    OMP_NUM_THREADS=1 DYNAMICS_DATA=/path/to/datasets python benchmarks/framework_features.py --out runs/bench

Timings on a shared machine are noisy; the ratio compares epochs of runs executed back to back.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import dynamics.data as dd
from dynamics.training import TrainConfig, read_metrics, train

VARIANTS = [
    ("base", None, {}),
    ("gaussian(bw=0.5)", "gaussian", {"bandwidth": 0.5}),
    ("gaussian(bw=0.25)", "gaussian", {"bandwidth": 0.25}),
    ("nnlabel", "nnlabel", {}),
    ("random", "random", {}),
]


def load(name: str, n_train: int | None, n_test: int | None, seed: int = 0):
    x, y = dd.load_dataset(name, "train")
    xt, yt = dd.load_dataset(name, "test")
    g = torch.Generator().manual_seed(seed)
    if n_train and n_train < len(x):
        i = torch.randperm(len(x), generator=g)[:n_train].sort().values
        x, y = x[i], y[i]
    if n_test and n_test < len(xt):
        i = torch.randperm(len(xt), generator=g)[:n_test].sort().values
        xt, yt = xt[i], yt[i]
    return dd.normalise(x, name), y, dd.normalise(xt, name), yt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench_framework")
    ap.add_argument("--epochs", type=int, default=12, help="MNIST epochs (Semeion: --semeion-epochs)")
    ap.add_argument("--semeion-epochs", type=int, default=30)
    ap.add_argument("--mnist-train", type=int, default=3000)
    ap.add_argument("--mnist-test", type=int, default=2000)
    ap.add_argument("--datasets", nargs="*", default=["semeion", "mnist"])
    args = ap.parse_args()
    out = Path(args.out)
    results = []
    for ds in args.datasets:
        data = load(ds, args.mnist_train if ds == "mnist" else None, args.mnist_test if ds == "mnist" else None)
        epochs = args.semeion_epochs if ds == "semeion" else args.epochs
        for label, feat, opts in VARIANTS:
            cfg = TrainConfig(dataset=ds, model="resnet_small", optimizer="sgd", lr=0.01, momentum=0.9,
                              weight_decay=1e-4, batch_size=64, epochs=epochs, schedule="none", loss="ce",
                              modified=feat is not None, tau=epochs // 2 if feat else None,
                              features=feat or "auto", feature_options=opts, eval_every=epochs,
                              full_check=ds == "semeion")
            t0 = time.perf_counter()
            s = train(cfg, out / ds / label, overwrite=True, data=data, progress=False)
            recs = [r for r in read_metrics(out / ds / label / "metrics.jsonl") if r["type"] == "epoch"]
            late = [r["epoch_time_s"] for r in recs if r["epoch"] > epochs // 2]
            row = {"dataset": ds, "variant": label, "n_train": len(data[0]), "n_test": len(data[2]),
                   "test_acc": s["final"]["test_acc"], "train_loss": s["final"]["train_loss"],
                   "train_acc": s["final"]["train_acc"], "phase2_epoch_s": sum(late) / len(late),
                   "wall_s": time.perf_counter() - t0}
            if feat:
                c_tau, c_end = s["conditions"]["tau"], s["conditions"]["end"]
                row.update(certificate=c_end["certificate"], certificate_method=c_end["certificate_method"],
                           full_set_certified=c_end["full_set_certified"],
                           subset_residual_tau=c_tau["alignment_residual"],
                           subset_residual_end=c_end["alignment_residual"], on_model_end=c_end["on_model_holds"],
                           check_time_s=c_tau["time_s"] + c_end["time_s"], zeta=s["framework"]["zeta_shape"],
                           scale=s["framework"]["scale"], source=s["framework"]["source"],
                           full_set_lsqr=c_end.get("full_set_lsqr"))
            results.append(row)
            print(json.dumps(row), flush=True)
        base = next(r for r in results if r["dataset"] == ds and r["variant"] == "base")
        for r in results:
            if r["dataset"] == ds:
                r["epoch_time_ratio"] = r["phase2_epoch_s"] / base["phase2_epoch_s"]
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"{'dataset':8} {'variant':18} {'test acc':>8} {'train loss':>10} {'t/epoch x':>9}  certified")
    for r in results:
        print(f"{r['dataset']:8} {r['variant']:18} {r['test_acc']:8.4f} {r['train_loss']:10.3e} "
              f"{r['epoch_time_ratio']:9.3f}  {r.get('certificate_method', '-')}/{r.get('full_set_certified', '-')}")


if __name__ == "__main__":
    main()
