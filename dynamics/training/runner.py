"""The training runner: any torch optimiser and schedule, base or modified (A(base)), resumable, DDP-ready.

``train(config, out_dir)`` writes the run directory (see :mod:`dynamics.training.rundir`):

* ``config.json`` — ``TrainConfig.to_dict()``;
* ``metrics.jsonl`` — one ``{"type": "epoch", ...}`` record per epoch (train loss/acc = the mean over the epoch's
  samples of the loss/accuracy at the parameters of each step, in train mode, as the steps saw them; test
  loss/acc in eval mode) and ``{"type": "probe", ...}`` records (:mod:`dynamics.training.probes`);
* ``summary.json`` — config, provenance, final metrics (train AND test evaluated in eval mode on the whole sets
  at the final parameters), the conditions at τ and at the end, wall time, status;
* ``checkpoints/last.pt`` — written atomically after every epoch.

Determinism: python/numpy/torch are seeded, the loader's shuffles and augmentations are functions of
(seed, epoch, batch), and ``torch.use_deterministic_algorithms(True)`` is on during CPU runs (restored after). A
run killed after any epoch and resumed reaches bit-identical parameters and metrics on CPU.

>>> import torch, tempfile
>>> from dynamics.training.config import TrainConfig
>>> g = torch.Generator().manual_seed(0)
>>> x, y = torch.randn(32, 5, generator=g), torch.randint(0, 2, (32,), generator=g)
>>> cfg = TrainConfig(dataset="toy", model="mlp", model_options={"width": 16}, epochs=2, batch_size=8,
...                   schedule="none", weight_decay=0.0)
>>> s = train(cfg, tempfile.mkdtemp(), data=(x, y, x, y), progress=False)
>>> s["status"], s["epochs_completed"]
('completed', 2)
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from dynamics.atomic import write_json
from dynamics.errors import ConfigError, InputError, NonFiniteError
from dynamics.training import checkpoint as ckpt
from dynamics.training.config import TrainConfig
from dynamics.training.distributed import DistContext, setup, teardown
from dynamics.training.optimizers import ADAPTIVE, add_param_group, build_optimizer, set_epoch_lr
from dynamics.training.rundir import RunDir

__all__ = ["train", "evaluate", "loss_fn"]

log = logging.getLogger(__name__)

#: test hook: exit the process (os._exit) right after the checkpoint of this epoch is written
KILL_ENV = "DYNAMICS_TEST_EXIT_AFTER_EPOCH"


def loss_fn(kind: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample losses (B,): cross-entropy, or ½‖logits − onehot(y)‖² summed over classes."""
    if kind == "ce":
        return nn.functional.cross_entropy(logits, y, reduction="none")
    onehot = nn.functional.one_hot(y, logits.shape[1]).to(logits.dtype)
    return 0.5 * (logits - onehot).square().sum(1)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str, batch_size: int = 512,
             indexed: bool = False) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` in eval mode over (x, y); ``indexed`` passes training indices to f̃."""
    was = model.training
    model.eval()
    total, correct = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            xb, yb = x[s:s + batch_size], y[s:s + batch_size]
            out = model(xb, index=torch.arange(s, s + len(xb))) if indexed else model(xb)
            total += float(loss_fn(loss, out, yb).double().sum())
            correct += int((out.argmax(1) == yb).sum())
    model.train(was)
    n = max(len(x), 1)
    return total / n, correct / n


@contextlib.contextmanager
def _deterministic(device: str) -> Iterator[None]:
    prev = torch.are_deterministic_algorithms_enabled()
    if device == "cpu":
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev)


@contextlib.contextmanager
def _rng_untouched() -> Iterator[None]:
    state = ckpt.rng_state()
    try:
        yield
    finally:
        ckpt.set_rng_state(state)


def _load_data(cfg: TrainConfig, data: tuple | None) -> tuple[torch.Tensor, ...]:
    if data is not None:
        if len(data) != 4:
            raise InputError("data= must be (x_train, y_train, x_test, y_test)")
        x_tr, y_tr, x_te, y_te = (torch.as_tensor(t) for t in data)
        num_classes = int(max(int(y_tr.max()), int(y_te.max()) if len(y_te) else 0)) + 1
        x_tr, x_te = x_tr.float(), x_te.float()
        y_tr, y_te = y_tr.long(), y_te.long()
    else:
        import dynamics.data as dd

        if cfg.dataset not in dd.available_datasets():
            raise ConfigError(f"unknown dataset {cfg.dataset!r}; valid: {', '.join(dd.available_datasets())}")
        x_tr, y_tr = dd.load_dataset(cfg.dataset, "train", cfg.data_root)
        x_te, y_te = dd.load_dataset(cfg.dataset, "test", cfg.data_root)
        x_tr, x_te = dd.normalise(x_tr, cfg.dataset), dd.normalise(x_te, cfg.dataset)
        num_classes = dd.DATASETS[cfg.dataset].num_classes
    if cfg.train_subset is not None and cfg.train_subset < len(x_tr):
        g = torch.Generator().manual_seed(cfg.seed + 3)
        idx = torch.randperm(len(x_tr), generator=g)[: cfg.train_subset].sort().values
        x_tr, y_tr = x_tr[idx], y_tr[idx]
    return x_tr, y_tr, x_te, y_te, num_classes


def _build_model(cfg: TrainConfig, x: torch.Tensor, num_classes: int) -> nn.Module:
    import dynamics.models as dm

    if cfg.model not in dm.available():
        raise ConfigError(f"unknown model {cfg.model!r}; valid: {', '.join(dm.available())}")
    options = dict(cfg.model_options)
    in_channels = x.shape[1]
    if x.dim() == 4 and "input_size" not in options:
        try:
            return dm.create(cfg.model, in_channels, num_classes, input_size=tuple(x.shape[2:]), **options)
        except InputError as exc:
            if "input_size" not in str(exc):
                raise
    return dm.create(cfg.model, in_channels, num_classes, **options)


class _Run:
    """The mutable state of one run (kept together so that checkpointing is one dict)."""

    def __init__(self, cfg: TrainConfig, out: Path, ctx: DistContext, data: tuple | None,
                 progress: bool | None) -> None:
        self.cfg, self.ctx, self.progress = cfg, ctx, progress
        self.rd = RunDir(out)
        self.device = torch.device(cfg.device)
        x_tr, y_tr, x_te, y_te, self.k = _load_data(cfg, data)
        self.x_tr, self.y_tr = x_tr.to(self.device), y_tr.to(self.device)
        self.x_te, self.y_te = x_te.to(self.device), y_te.to(self.device)
        ckpt.seed_everything(cfg.seed)
        self.model = _build_model(cfg, self.x_tr, self.k).to(self.device)
        self.template = None  # a fresh copy of the architecture for rebuilding f̃'s frozen part on resume
        self.opt = build_optimizer(cfg, [{"params": [p for p in self.model.parameters() if p.requires_grad]}])
        import dynamics.data as dd

        transform = dd.Augment(crop_padding=max(1, x_tr.shape[-1] // 8), flip=False) if cfg.augment else None
        if transform is not None and x_tr.dim() != 4:
            raise ConfigError("--augment needs image data (N, C, H, W)")
        self.loader = dd.TensorLoader(self.x_tr, torch.arange(len(self.x_tr), device=self.device),
                                      batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed, transform=transform)
        self.epoch, self.phase = 0, "base"
        self.switch_info: dict[str, Any] | None = None
        self.conditions_tau: dict[str, Any] | None = None
        self.train_time_s = 0.0
        self.probe = None
        if cfg.probe_every:
            from dynamics.training.probes import Probe

            self.probe = Probe(self.x_tr, self.y_tr, self.k, cfg.probe_every, cfg.probe_size, cfg.seed)
        self.net = ctx.wrap(self.model)

    # -- the switch -------------------------------------------------------------------------------------------
    def do_switch(self) -> None:
        from dynamics.training.certification import check_conditions
        from dynamics.training.framework import switch

        cfg = self.cfg
        lr = set_epoch_lr(self.opt, cfg, self.epoch)
        with _rng_untouched():
            aug, info = switch(self.model, self.x_tr, self.y_tr, self.k, cfg.features, cfg.feature_options,
                               lr=lr, batch_size=cfg.batch_size, adaptive=cfg.optimizer in ADAPTIVE,
                               momentum=cfg.momentum if cfg.optimizer == "sgd" else 0.0, seed=cfg.seed)
        self._install(aug)
        add_param_group(self.opt, [aug.zeta], weight_decay=cfg.zeta_weight_decay, lr=cfg.lr)
        self.opt.param_groups[-1]["initial_lr"] = cfg.lr
        self.switch_info, self.phase = info, "modified"
        if self.ctx.is_main:
            with _rng_untouched():
                self.conditions_tau = check_conditions(aug, self.x_tr, self.y_tr, self.k, cfg.check_size,
                                                       cfg.seed, info["certificate"], cfg.full_check)
            c = self.conditions_tau
            log.info("conditions at tau=%d on %d points: on-model %s (residual %.1e), alignment %s (residual %.1e)",
                     self.epoch, c["n_checked"], "holds" if c["on_model_holds"] else "FAILS", c["on_model_residual"],
                     "holds" if c["alignment_holds"] else "FAILS", c["alignment_residual"])

    def _install(self, aug: nn.Module) -> None:
        self.model = aug
        if self._g_uses_cache:
            aug.cache_training_features(self.x_tr)
        self.net = self.ctx.wrap(aug)

    @property
    def _g_uses_cache(self) -> bool:
        """g reads the cached clean training features (no augmentation, or ``g_input="clean"``)."""
        return not self.cfg.augment or self.cfg.g_input == "clean"

    # -- one epoch --------------------------------------------------------------------------------------------
    def run_epoch(self) -> dict[str, Any]:
        cfg, ctx = self.cfg, self.ctx
        lr = set_epoch_lr(self.opt, cfg, self.epoch)
        self.loader.set_epoch(self.epoch)
        self.net.train()
        indexed = self.phase == "modified" and self._g_uses_cache
        loss_sum = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss, correct, count
        from tqdm.auto import tqdm

        bar = tqdm(total=len(self.loader), desc=f"epoch {self.epoch + 1}/{cfg.epochs}", leave=False,
                   disable=(not ctx.is_main) or (None if self.progress is None else not self.progress))
        t0 = time.perf_counter()
        for b, (xb, ib) in enumerate(self.loader):
            yb = self.y_tr[ib]
            n_global = len(ib)
            xb, yb, ib = ctx.shard(xb, yb, ib)
            out = self.net(xb, index=ib) if indexed else self.net(xb)
            per = loss_fn(cfg.loss, out, yb)
            loss = per.sum() * (ctx.world_size / n_global)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            stats = torch.stack([per.detach().double().sum(), (out.argmax(1) == yb).double().sum(),
                                 torch.tensor(float(len(yb)), dtype=torch.float64, device=self.device)])
            ctx.all_reduce_sum(stats)
            batch_loss = float(stats[0] / stats[2])
            if not torch.isfinite(stats[0]):
                bar.close()
                step = self.epoch * len(self.loader) + b + 1
                raise NonFiniteError(f"the training loss became {batch_loss} at epoch {self.epoch + 1}, step {step} "
                                     f"(batch {b + 1} of {len(self.loader)}); the last good checkpoint is "
                                     f"{self.rd.last} (epoch {self.epoch}); lower the learning rate or check the "
                                     "data")
            self.opt.step()
            loss_sum += stats
            bar.update(1)
            el = time.perf_counter() - t0
            bar.set_postfix(loss=f"{float(loss_sum[0] / loss_sum[2]):.4f}",
                            acc=f"{float(loss_sum[1] / loss_sum[2]):.3f}", sps=f"{float(loss_sum[2]) / el:.0f}")
        elapsed = time.perf_counter() - t0
        bar.close()
        self.train_time_s += elapsed
        self.epoch += 1
        rec: dict[str, Any] = {"type": "epoch", "epoch": self.epoch, "phase": self.phase,
                               "train_loss": float(loss_sum[0] / loss_sum[2]),
                               "train_acc": float(loss_sum[1] / loss_sum[2]), "test_loss": None, "test_acc": None,
                               "lr": lr, "epoch_time_s": elapsed, "samples_per_s": float(loss_sum[2]) / elapsed}
        if ctx.is_main and (self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs):
            rec["test_loss"], rec["test_acc"] = evaluate(self.model, self.x_te, self.y_te, cfg.loss)
        return rec

    # -- checkpoints ------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "epoch": self.epoch, "phase": self.phase,
                "model": self.model.state_dict(), "framework": self.model.spec() if self.phase == "modified" else None,
                "switch_info": self.switch_info, "optimizer": self.opt.state_dict(),
                "loader": self.loader.state_dict(), "rng": ckpt.rng_state(),
                "probe": self.probe.state_dict() if self.probe else None, "conditions_tau": self.conditions_tau,
                "train_time_s": self.train_time_s}

    def restore(self, state: dict[str, Any]) -> None:
        if state["phase"] == "modified":
            from dynamics.training.framework import rebuild

            template = _build_model(self.cfg, self.x_tr, self.k)
            sd = {k: v.to(self.device) for k, v in state["model"].items()}
            aug = rebuild(self.model, template, state["framework"], sd).to(self.device)
            self._install(aug)
            add_param_group(self.opt, [aug.zeta], weight_decay=self.cfg.zeta_weight_decay, lr=self.cfg.lr)
        else:
            self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.loader.load_state_dict(state["loader"])
        if self.probe and state["probe"]:
            self.probe.load_state_dict(state["probe"])
        self.epoch, self.phase = int(state["epoch"]), state["phase"]
        self.switch_info, self.conditions_tau = state["switch_info"], state["conditions_tau"]
        self.train_time_s = float(state["train_time_s"])
        ckpt.set_rng_state(state["rng"])

    def save(self) -> None:
        if self.ctx.is_main:
            ckpt.save_checkpoint(self.rd.last, self.state())

    def run_probe(self) -> None:
        if self.probe is not None and self.ctx.is_main and self.probe.due(self.epoch, self.cfg.epochs):
            model = self.model
            # without the training caches, the engine's private copies of the model stay small
            nocache = model.without_cache() if hasattr(model, "without_cache") else contextlib.nullcontext()
            with _rng_untouched(), nocache:
                self.rd.append(self.probe(model, self.epoch))


def train(config: TrainConfig | dict, out_dir: str | os.PathLike, resume: bool = False, overwrite: bool = False,
          progress: bool | None = None, data: tuple | None = None) -> dict[str, Any]:
    """Train according to ``config``; write the run directory ``out_dir``; return the summary dict.

    Args:
        config: a :class:`TrainConfig` (or its dict).
        out_dir: the run directory. A folder holding another run is refused unless ``resume`` / ``overwrite``.
        resume: continue from ``out_dir/checkpoints/last.pt`` (same configuration required).
        overwrite: replace the run in ``out_dir``.
        progress: tqdm bar: None = only on a terminal, True/False = force.
        data: ``(x_train, y_train, x_test, y_test)`` tensors instead of loading ``config.dataset`` (used as given:
            no normalisation).

    Raises:
        ConfigError (bad configuration, unknown optimiser/model/dataset), DataError (missing data), RunStateError
        (folder holds another run), NonFiniteError (the loss became NaN/inf: the summary says which step and the
        last good checkpoint is kept).
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    cfg.validate()
    t_start = time.perf_counter()
    ctx = setup(cfg.device)
    try:
        with _deterministic(cfg.device):
            return _train(cfg, Path(out_dir), ctx, resume, overwrite, progress, data, t_start)
    finally:
        teardown(ctx)


def _train(cfg: TrainConfig, out: Path, ctx: DistContext, resume: bool, overwrite: bool, progress: bool | None,
           data: tuple | None, t_start: float) -> dict[str, Any]:
    import json

    rd = RunDir(out)
    cfg_dict = json.loads(json.dumps(cfg.to_dict()))
    do_resume = False
    if ctx.is_main:
        do_resume = rd.prepare(cfg_dict, resume, overwrite)
    do_resume = ctx.broadcast_object(do_resume)
    run = _Run(cfg, out, ctx, data, progress)
    if do_resume:
        state = ckpt.load_checkpoint(rd.last)
        run.restore(state)
        if ctx.is_main:
            rd.truncate_metrics(run.epoch)
        log.info("resumed %s at epoch %d (%s phase)", out, run.epoch, run.phase)
        if run.epoch >= cfg.epochs and rd.summary.is_file():
            return json.loads(rd.summary.read_text())
    elif ctx.is_main:
        write_json(rd.config, cfg_dict)
        run.run_probe()
    tau = cfg.tau_effective
    status, error = "completed", None
    while run.epoch < cfg.epochs:
        if tau is not None and run.epoch == tau and run.phase == "base":
            run.do_switch()
        try:
            rec = run.run_epoch()
        except NonFiniteError as exc:
            status, error = "nonfinite", str(exc)
            break
        if ctx.is_main:
            rd.append(rec)
        run.run_probe()
        run.save()
        ctx.barrier()
        if os.environ.get(KILL_ENV) == str(run.epoch):
            os._exit(17)
    summary = _summary(run, cfg, status, error, time.perf_counter() - t_start) if ctx.is_main else {}
    if ctx.is_main:
        write_json(rd.summary, summary)
    ctx.barrier()
    if error is not None:
        raise NonFiniteError(error)
    return summary


def _summary(run: _Run, cfg: TrainConfig, status: str, error: str | None, wall: float) -> dict[str, Any]:
    from dynamics.provenance import provenance
    from dynamics.training.certification import check_conditions

    final: dict[str, Any] = dict.fromkeys(("train_loss", "train_acc", "test_loss", "test_acc", "test_error"))
    conditions_end = None
    if status == "completed":
        indexed = run.phase == "modified" and run.model.has_training_cache
        final["train_loss"], final["train_acc"] = evaluate(run.model, run.x_tr, run.y_tr, cfg.loss, indexed=indexed)
        final["test_loss"], final["test_acc"] = evaluate(run.model, run.x_te, run.y_te, cfg.loss)
        final["test_error"] = 1.0 - final["test_acc"]
        cert = None
        if run.phase == "modified":
            with _rng_untouched():
                h = run.model.rep.embed(run.x_tr)
                cert = run.model.feature_map.certify(h, run.y_tr).to_dict()
        with _rng_untouched():
            conditions_end = check_conditions(run.model, run.x_tr, run.y_tr, run.k, cfg.check_size, cfg.seed,
                                              cert, cfg.full_check)
    probe_time = run.probe.total_time_s if run.probe else 0.0
    return {
        "config": cfg.to_dict(),
        "provenance": provenance(seed=cfg.seed, world_size=run.ctx.world_size,
                                 deterministic=cfg.device == "cpu"),
        "final": final,
        "conditions": {"tau": run.conditions_tau, "end": conditions_end},
        "framework": run.switch_info,
        "zeta": {"lr": cfg.lr, "weight_decay": cfg.zeta_weight_decay} if run.phase == "modified" else None,
        "wall_time_s": wall,
        "train_time_s": run.train_time_s,
        "probe_time_s": probe_time,
        "probe_fraction": probe_time / wall if wall > 0 else 0.0,
        "epochs_completed": run.epoch,
        "status": status,
        "error": error,
        "loss_definition": "mean over samples of " + ("cross-entropy" if cfg.loss == "ce" else
                                                      "½‖f(x) − onehot(y)‖² (summed over classes)"),
    }
