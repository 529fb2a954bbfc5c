"""``dynamics train``: one training run (base or modified) into a run directory.

    dynamics train --dataset mnist --model resnet_small --optimizer sgd --lr 0.01 --momentum 0.9 \\
        --weight-decay 1e-4 --batch-size 64 --epochs 50 [--augment] [--modified --tau 25] [--probe-every 5] \\
        [--device cpu|cuda] [--seed 0] --out DIR [--resume | --overwrite]

Multi-process: ``torchrun --nproc_per_node 2 -m dynamics train ...`` (data parallel, see
:mod:`dynamics.training.distributed`).
"""

from __future__ import annotations

import argparse
import json

HELP = "train a model (optionally with the modified framework that enforces alignment) into a run directory"


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"width\": 2}'")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    from dynamics.training.config import TrainConfig

    d = TrainConfig()
    p.add_argument("--dataset", default=d.dataset, help="dataset name (mnist, semeion, ...)")
    p.add_argument("--model", default=d.model, help="model name (dynamics.models.available())")
    p.add_argument("--model-options", type=_json_dict, default={}, help="JSON options for the model, e.g. "
                   "'{\"width\": 2}'")
    p.add_argument("--optimizer", default=d.optimizer, help="sgd | adam | adamw | rmsprop")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global mini-batch size")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--schedule", default=None, help="none | step | cosine (default: step if --milestones else none)")
    p.add_argument("--milestones", type=int, nargs="*", default=[], help="epochs at which step multiplies lr by gamma")
    p.add_argument("--gamma", type=float, default=d.gamma)
    p.add_argument("--loss", default=d.loss, help="ce | mse")
    p.add_argument("--augment", action="store_true", help="random crop (padding H/8) during training")
    p.add_argument("--modified", action="store_true", help="the modified framework A(base)")
    p.add_argument("--tau", type=int, default=None, help="switch epoch of --modified (default: epochs // 2)")
    p.add_argument("--features", default="auto", help="feature construction of g: auto | gaussian | random | nnlabel")
    p.add_argument("--feature-options", type=_json_dict, default={}, help="JSON options of the feature construction")
    p.add_argument("--g-input", choices=("clean", "augmented"), default="clean",
                   help="with --augment: g sees the clean training sample (cached, no extra cost; default) or the "
                   "augmented image (the frozen network re-runs every step)")
    p.add_argument("--probe-every", type=int, default=0, help="probe the conditions every N epochs (0 = never)")
    p.add_argument("--probe-size", type=int, default=d.probe_size)
    p.add_argument("--check-size", type=int, default=d.check_size, help="training points on which the conditions "
                   "are checked exactly at tau and at the end")
    p.add_argument("--full-check", action="store_true", help="also check alignment of g on the whole training set "
                   "(matrix-free LSQR)")
    p.add_argument("--train-subset", type=int, default=None, help="train on a seeded subset of this many samples")
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default=None, help="data root (default $DYNAMICS_DATA, then ~/.cache/dynamics)")
    p.add_argument("--out", required=True, help="run directory")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    g.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace):
    """The :class:`TrainConfig` the arguments describe."""
    from dynamics.training.config import TrainConfig

    schedule = args.schedule or ("step" if args.milestones else "none")
    return TrainConfig(
        dataset=args.dataset, model=args.model, model_options=args.model_options, optimizer=args.optimizer,
        lr=args.lr, momentum=args.momentum, nesterov=args.nesterov, weight_decay=args.weight_decay,
        batch_size=args.batch_size, epochs=args.epochs, schedule=schedule, milestones=list(args.milestones),
        gamma=args.gamma, loss=args.loss, augment=args.augment, modified=args.modified, tau=args.tau,
        features=args.features, feature_options=args.feature_options, probe_every=args.probe_every,
        probe_size=args.probe_size, check_size=args.check_size, full_check=args.full_check, seed=args.seed,
        g_input=args.g_input,
        device=args.device, data_root=args.data_root,
        train_subset=args.train_subset, eval_every=args.eval_every)


def run(args: argparse.Namespace) -> int:
    from dynamics.training.runner import train

    cfg = config_from_args(args)
    summary = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite,
                    progress=False if args.no_progress else None)
    if not summary:  # a non-zero rank under torchrun
        return 0
    f = summary["final"]
    print(f"{args.out}: {summary['status']} after {summary['epochs_completed']} epochs in "
          f"{summary['wall_time_s']:.1f} s; train loss {f['train_loss']:.4g} acc {f['train_acc']:.4f}, "
          f"test loss {f['test_loss']:.4g} acc {f['test_acc']:.4f}")
    for when in ("tau", "end"):
        c = summary["conditions"][when]
        if c:
            print(f"  conditions at {when}: on-model residual {c['on_model_residual']:.2e} "
                  f"({'holds' if c['on_model_holds'] else 'fails'}), alignment residual "
                  f"{c['alignment_residual']:.2e} on {c['n_checked']} points "
                  f"({'holds' if c['alignment_holds'] else 'fails'}); {c['certificate']}")
    return 0
