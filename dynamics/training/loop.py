"""The training loop: any torch optimiser and schedule, base or modified (A(base)), resumable, DDP-ready.

``train(config, out_dir)`` validates everything first (configuration, dataset, ``train_subset``, device, the
output folder), loads the data (so missing data leaves no folder behind), takes the folder's lock, then writes the run folder (:mod:`dynamics.training.run_folder`):
``config.json``, one :class:`~dynamics.training.records.EpochRecord` per epoch (and probe records) in ``metrics.jsonl``,
``checkpoints/last.pt`` (verified, bound to the configuration) after every epoch, and the
:class:`~dynamics.training.records.RunSummary` in ``summary.json``.

Determinism: python/numpy/torch are seeded, the loader's shuffles and augmentations are functions of
(seed, epoch, batch), and ``torch.use_deterministic_algorithms(True)`` is on during CPU runs (restored after). A
run killed at any moment and resumed reaches bit-identical parameters and metrics on CPU.

>>> import torch, tempfile
>>> from dynamics.training.config import TrainConfig
>>> g = torch.Generator().manual_seed(0)
>>> x, y = torch.randn(32, 5, generator=g), torch.randint(0, 2, (32,), generator=g)
>>> cfg = TrainConfig(dataset="toy", model="mlp", model_options={"width": 16}, epochs=2, batch_size=8,
...                   schedule="none", weight_decay=0.0)
>>> s = train(cfg, tempfile.mkdtemp(), data=(x, y, x, y), progress=False)
>>> s.status, s.epochs_completed
('completed', 2)
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dynamics.data.train_test import TrainTestData, check_request, load_train_test
from dynamics.errors import ConfigError, NonFiniteError
from dynamics.training.records import EpochRecord, RunSummary
from dynamics.training.checkpoint import load_checkpoint, save_checkpoint
from dynamics.training.config import TrainConfig
from dynamics.training.determinism import deterministic_algorithms
from dynamics.training.threads import resolve_threads
from dynamics.training.distributed import DistContext, setup, teardown
from dynamics.training.determinism import rng_untouched
from dynamics.training.evaluation import evaluate, loss_fn
from dynamics.training.optimizers import PER_STEP_SCHEDULES, set_step_lr
from dynamics.training.run_certificate import predictions, run_certificate
from dynamics.training.run_folder import RunFolder, check_out_folder, load_run
from dynamics.training.run_lock import RunLock
from dynamics.training.run_state import RunState
from dynamics.training.summary import build_summary

__all__ = ["train", "check_runnable"]

log = logging.getLogger(__name__)

#: test hook: exit the process (os._exit) right after the checkpoint of this epoch is written
KILL_ENV = "DYNAMICS_TEST_EXIT_AFTER_EPOCH"


def check_runnable(cfg: TrainConfig, out_dir: str | os.PathLike | None = None, with_data: bool = False) -> None:
    """Every check that needs no data and writes nothing: the configuration, the dataset name and
    ``train_subset`` against the catalogue, the device, and the output folder. Raises ConfigError/RunStateError."""
    cfg.validate()
    if not with_data:
        check_request(cfg.dataset, cfg.train_subset)
    if cfg.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {cfg.device}, but this torch ({torch.__version__}) sees no CUDA device; pass "
                              "--device cpu, or install a CUDA build of torch on a machine with a GPU")
        index = int(cfg.device.split(":")[1]) if ":" in cfg.device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"--device {cfg.device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    if out_dir is not None:
        check_out_folder(out_dir)


def train(config: TrainConfig | dict, out_dir: str | os.PathLike, resume: bool = False, overwrite: bool = False,
          progress: bool | None = None, data: tuple | None = None,
          on_epoch: Callable[[EpochRecord], None] | None = None) -> RunSummary | None:
    """Train according to ``config`` into the run folder ``out_dir``; return the :class:`RunSummary`.

    Args:
        config: a :class:`TrainConfig` (or its dict).
        out_dir: the run folder. A folder holding another run is refused unless ``resume`` / ``overwrite``.
        resume: continue the run in ``out_dir`` from its checkpoint (same configuration required).
        overwrite: replace the run in ``out_dir``.
        progress: tqdm bar: None = only on a terminal, True/False = force.
        data: ``(x_train, y_train, x_test, y_test)`` tensors instead of loading ``config.dataset`` (used as given).
        on_epoch: called with each epoch's record on the main process (e.g. to print one line per epoch);
            without it, each epoch is logged at INFO when no bar is shown.

    Returns:
        the summary (``None`` on the non-main processes of a DDP run).

    Raises:
        ConfigError (bad configuration, unknown optimiser/model/dataset, device not available), DataError (missing
        data), RunStateError (the folder holds another run, is locked by another training, its checkpoint is
        missing, corrupt or of another configuration), NonFiniteError (the loss became NaN/inf: the summary says
        which step and the last good checkpoint is kept).
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    check_runnable(cfg, out_dir, with_data=data is not None)
    t_start = time.perf_counter()
    tensors = load_train_test(cfg.dataset, cfg.data_root, cfg.train_subset, cfg.seed, data)  # before any folder
    n_threads, reason = resolve_threads(cfg.threads)
    threads = {"threads": n_threads, "reason": reason}
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    log.info("torch threads: %d (%s)", n_threads, reason)
    ctx = setup(cfg.device)
    try:
        with deterministic_algorithms(cfg.device):
            args = (ctx, resume, overwrite, progress, tensors, on_epoch, t_start, threads)
            if not ctx.is_main:
                return _train(cfg, RunFolder(out_dir), *args)
            with RunLock(out_dir):
                return _train(cfg, RunFolder(out_dir), *args)
    finally:
        teardown(ctx)
        torch.set_num_threads(previous_threads)


def _train(cfg: TrainConfig, folder: RunFolder, ctx: DistContext, resume: bool, overwrite: bool,
           progress: bool | None, data: TrainTestData, on_epoch: Callable[[EpochRecord], None] | None,
           t_start: float, threads: dict) -> RunSummary | None:
    do_resume = folder.prepare(cfg, resume, overwrite) if ctx.is_main else False
    do_resume = ctx.broadcast_object(do_resume)
    run = RunState(cfg, data, ctx)
    if do_resume:
        state = load_checkpoint(folder.last, cfg.digest())
        run.restore(state)
        if ctx.is_main:
            folder.restore_metrics(run.epoch, state.get("records", []))
        log.info("resumed %s at epoch %d (%s phase)", folder.root, run.epoch, run.phase)
        if run.epoch >= cfg.epochs and folder.summary.is_file():
            return load_run(folder.root).summary
    elif ctx.is_main:
        folder.write_config(cfg)
        _append_probe(run, folder)
    phases = cfg.phases
    status, error = "completed", None
    while run.epoch < cfg.epochs:
        if phases.switch_at(run.epoch) and run.switch is None:
            run.do_switch()
        try:
            rec = run_epoch(run, folder, progress)
        except NonFiniteError as exc:
            status, error = "nonfinite", str(exc)
            break
        if ctx.is_main and _epsilon_due(run):
            _record_epsilon(run, rec)
        probe = run.probe_record()
        if ctx.is_main:  # the checkpoint first, with this epoch's records: a crash between the two loses nothing
            save_checkpoint(folder.last, {**run.state(), "records": [r.to_dict() for r in (rec, probe) if r]},
                            cfg.digest())
            folder.append(rec)
            if probe is not None:
                folder.append(probe)
            if on_epoch is not None:
                on_epoch(rec)
            elif not _show_bar(progress):
                log.info("%s", rec)
        ctx.barrier()
        if os.environ.get(KILL_ENV) == str(run.epoch):
            os._exit(17)
    summary = build_summary(run, status, error, time.perf_counter() - t_start, threads) if ctx.is_main else None
    if summary is not None:
        if status == "completed":
            folder.write_test_predictions(predictions(run.model, run.data.x_test))
        folder.write_summary(summary)
    ctx.barrier()
    if error is not None:
        raise NonFiniteError(error)
    return summary


def _epsilon_due(run: RunState) -> bool:
    """Whether this phase-2 epoch records ε (every ``epsilon_every`` epochs after τ; not the last epoch, whose
    run certificate is the summary's)."""
    every = run.cfg.epsilon_every
    if not every or run.switch is None or run.epoch >= run.cfg.epochs:
        return False
    return (run.epoch - run.switch.tau_effective) % every == 0


def _record_epsilon(run: RunState, rec: EpochRecord) -> None:
    """The run certificate's ε and eval-mode training accuracy on the whole training set, into ``rec``."""
    model, d = run.model, run.data
    if model.training_rows is None:  # g read augmented images: no training cache to certify with
        return
    t0 = time.perf_counter()
    with rng_untouched():
        cert = run_certificate(model, d.x_train, d.y_train, None, None, run.switch.certificate, "end", loss=run.loss)
    rec.epsilon_ce, rec.eval_train_acc = cert.epsilon_ce, cert.train_acc
    rec.epsilon_time_s = time.perf_counter() - t0


def _append_probe(run: RunState, folder: RunFolder) -> None:
    rec = run.probe_record()
    if rec is not None:
        folder.append(rec)


def _show_bar(progress: bool | None) -> bool:
    return bool(progress) if progress is not None else tqdm_is_tty()


def tqdm_is_tty() -> bool:
    """Whether tqdm's stream (stderr) is a terminal."""
    try:
        return os.isatty(2)
    except OSError:
        return False


def run_epoch(run: RunState, folder: RunFolder, progress: bool | None) -> EpochRecord:
    """Train one epoch; return its record (test metrics on evaluation epochs, main process)."""
    cfg, ctx = run.cfg, run.ctx
    lr, zeta_lr = run.set_epoch_lr()
    loss_kind = run.loss
    run.loader.set_epoch(run.epoch)
    run.net.train()
    indexed = run.indexed
    sums = torch.zeros(3, dtype=torch.float64, device=run.device)  # loss, correct, count
    bar = tqdm(total=len(run.loader), desc=f"epoch {run.epoch + 1}/{cfg.epochs}", leave=False,
               disable=(not ctx.is_main) or not _show_bar(progress))
    t0 = time.perf_counter()
    per_step = cfg.schedule in PER_STEP_SCHEDULES
    steps = len(run.loader)
    network_groups = len(run.opt.param_groups) - (run.switch is not None)  # zeta's group keeps its epoch step
    for b, (xb, ib) in enumerate(run.loader):
        if per_step:
            set_step_lr(run.opt, cfg, run.epoch, b, steps, network_groups)
        if cfg.channels_last and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        yb = run.data.y_train[ib]
        n_global = len(ib)
        xb, yb, ib = ctx.shard(xb, yb, ib)
        out = run.net(xb, index=ib) if indexed else run.net(xb)
        per = loss_fn(loss_kind, out, yb)
        loss = per.sum() * (ctx.world_size / n_global)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        stats = torch.stack([per.detach().double().sum(), (out.argmax(1) == yb).double().sum(),
                             torch.tensor(float(len(yb)), dtype=torch.float64, device=run.device)])
        ctx.all_reduce_sum(stats)
        if not torch.isfinite(stats[0]):
            bar.close()
            step = run.epoch * len(run.loader) + b + 1
            raise NonFiniteError(f"the training loss became {float(stats[0] / stats[2])} at epoch {run.epoch + 1}, "
                                 f"step {step} (batch {b + 1} of {len(run.loader)}); the last good checkpoint is "
                                 f"{folder.last} (epoch {run.epoch}); lower the learning rate or check the data")
        run.opt.step()
        sums += stats
        bar.update(1)
        bar.set_postfix(loss=f"{float(sums[0] / sums[2]):.4f}", acc=f"{float(sums[1] / sums[2]):.3f}",
                        sps=f"{float(sums[2]) / (time.perf_counter() - t0):.0f}")
    elapsed = time.perf_counter() - t0
    bar.close()
    run.train_time_s += elapsed
    phase = run.phase
    run.epoch += 1
    rec = EpochRecord(epoch=run.epoch, phase=phase, running_train_loss=float(sums[0] / sums[2]),
                      running_train_acc=float(sums[1] / sums[2]), lr=lr, zeta_lr=zeta_lr, loss=loss_kind,
                      epoch_time_s=elapsed, samples_per_s=float(sums[2]) / elapsed)
    if ctx.is_main and (run.epoch % cfg.eval_every == 0 or run.epoch == cfg.epochs):
        rec.test_loss, rec.test_acc = evaluate(run.model, run.data.x_test, run.data.y_test, loss_kind)
    return rec
