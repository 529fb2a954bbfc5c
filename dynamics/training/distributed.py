"""Multi-process data-parallel training (torch.distributed DDP), launched with ``torchrun``.

Every process builds the same loader (same seed), so all see the same GLOBAL batch of ``batch_size`` samples;
process ``rank`` keeps the rows ``rank::world_size``. Each computes ``world_size · Σ_local loss / B`` so that
DDP's gradient average equals the gradient of the global batch mean: the result is the single-process run up to
floating-point reduction order. BatchNorm layers use their local batch statistics (no SyncBatchNorm), so runs
with BatchNorm match single-process runs only approximately. Process 0 alone writes files.

``torchrun --nproc_per_node 2 -m dynamics train ...`` sets RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT, which
:func:`setup` reads (backend ``gloo`` on CPU, ``nccl`` on CUDA).

>>> ctx = setup("cpu")   # no WORLD_SIZE in the environment: a single process
>>> ctx.world_size, ctx.is_main
(1, True)
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from dynamics.errors import ConfigError

__all__ = ["DistContext", "setup", "teardown", "free_port", "spawn"]


@dataclass
class DistContext:
    """Rank facts of this process; all collectives are no-ops for a single process."""

    rank: int = 0
    world_size: int = 1
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.active:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def broadcast_object(self, obj: Any) -> Any:
        """``obj`` from rank 0 on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def shard(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """This process's rows ``rank::world_size`` of each global-batch tensor."""
        if not self.active:
            return tensors
        return tuple(t[self.rank::self.world_size] for t in tensors)

    def wrap(self, model: nn.Module) -> nn.Module:
        """``DistributedDataParallel(model)`` when running distributed, else ``model``."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [model_device(model).index] if model_device(model).type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def setup(device: str) -> DistContext:
    """Join the process group described by the environment (``WORLD_SIZE`` > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), False)
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise ConfigError(f"WORLD_SIZE={world} but {var} is not set; launch with torchrun --nproc_per_node N")
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return DistContext(dist.get_rank(), dist.get_world_size(), True)


def teardown(ctx: DistContext) -> None:
    """Leave the process group if :func:`setup` created it."""
    if ctx.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(rank: int, world: int, port: int, fn: Callable, args: tuple) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    fn(*args)


def spawn(fn: Callable, world_size: int, args: tuple = ()) -> None:
    """Run ``fn(*args)`` in ``world_size`` processes joined over gloo on 127.0.0.1 (what ``torchrun`` does).

    ``fn`` must be importable (a module-level function)."""
    import torch.multiprocessing as mp

    mp.spawn(_entry, args=(world_size, free_port(), fn, args), nprocs=world_size, join=True)
