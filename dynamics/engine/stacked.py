"""The stacked-output function f_X(θ_S) that every Jacobian and kernel in the toolkit differentiates.

``StackedFunction(model, x, params, bn_mode, dtype)`` fixes everything but θ_S (the selected parameters):
the BatchNorm semantics (:mod:`dynamics.engine.batchnorm`), the compute dtype, and the data x. It evaluates

    f_X(θ_S) = vec(f(x_1, θ), ..., f(x_n, θ)) ∈ R^{n·k}     (sample-major: all k outputs of x_1 first)

where f(x_i, θ) is the model output for sample i flattened to k numbers. The parameter vector θ_S is the
concatenation of the selected tensors in ``named_parameters()`` order, each flattened row-major.

>>> import torch, torch.nn as nn
>>> torch.manual_seed(0) and None
>>> net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
>>> sf = StackedFunction(net, torch.randn(4, 3))
>>> sf.n, sf.k, sf.p, sf.names
(4, 2, 32, ['0.weight', '0.bias', '2.weight', '2.bias'])
>>> torch.allclose(sf.evaluate(sf.theta).reshape(4, 2), net(sf.x))
True
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn
from torch.func import functional_call

from dynamics.engine.attention import differentiable_attention
from dynamics.engine.batchnorm import freeze_batch_statistics, prepare_module, resolve_bn_mode
from dynamics.engine.parameters import ParamSpec, select_parameters
from dynamics.engine.randomness import check_deterministic
from dynamics.errors import BatchNormModeError, InputError, StochasticModelError
from dynamics.inputs import as_batch, compute_dtype

__all__ = ["StackedFunction"]


class StackedFunction:
    """f_X(θ_S) for fixed data, BatchNorm semantics and dtype; the user's model is copied, never changed.

    Attributes:
        names: selected parameter names (column blocks of J, in order).
        shapes, numels, offsets: layout of θ_S; block ``i`` is ``θ_S[offsets[i]:offsets[i]+numels[i]]``.
        theta: dict name -> tensor, the selected parameters at which everything is evaluated.
        x: the (validated) inputs, (n, ...).
        n, k, p: samples, outputs per sample, selected parameters.
        outputs: f(x, θ) as an (n, k) tensor.
        bn_mode: the BatchNorm semantics in force (None when the model has none).
        per_sample: True unless ``bn_mode == "batch"``: output i depends on x_i only, so sample blocks
            can be processed independently.
        activation_numel: elements of all module outputs in one forward pass over x (for memory estimates).
        private_bytes: bytes this object allocated: the private copy of the model, x when it was converted,
            the outputs (counted against ``memory_budget``, see :mod:`dynamics.engine.memory`).
    """

    def __init__(self, model: nn.Module, x, params: ParamSpec = None, bn_mode: Optional[str] = None,
                 dtype: Optional[torch.dtype] = None):
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        selected = select_parameters(model, params)
        self.bn_mode = resolve_bn_mode(model, bn_mode)
        self.dtype = compute_dtype(model, dtype)
        first = next(model.parameters())
        self.device = first.device
        self.x = as_batch(x, self.dtype, self.device)
        self.module = prepare_module(model, self.bn_mode, self.dtype if dtype is not None else None)
        if self.bn_mode == "frozen":
            try:  # the user's random generators are not advanced by this private pass
                with torch.random.fork_rng(devices=self._cuda_devices()), differentiable_attention():
                    freeze_batch_statistics(self.module, self.x)
            except Exception as exc:  # report a shape problem before the statistics are the issue
                raise _forward_error(self.x, exc, self.bn_mode) from exc
        own = dict(self.module.named_parameters())
        self.names = [name for name, _ in selected]
        self.theta = {name: own[name].detach() for name in self.names}
        for name, t in self.theta.items():
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise InputError(f"parameter {name!r} contains non-finite values (NaN or inf)")
            if not t.is_floating_point():
                raise InputError(f"parameter {name!r} has dtype {t.dtype}; only floating parameters can be "
                                 f"differentiated")
        self.shapes = [tuple(self.theta[n].shape) for n in self.names]
        self.numels = [math.prod(s) for s in self.shapes]
        self.offsets = [0]
        for m in self.numels[:-1]:
            self.offsets.append(self.offsets[-1] + m)
        self.p = sum(self.numels)
        self.n = self.x.shape[0]
        self.activation_numel = 0
        out = self._probe_forward()
        self.k = out.shape[1]
        self.outputs = out
        copied = [t for t in list(self.module.parameters()) + list(self.module.buffers())]
        self.private_bytes = (sum(t.numel() * t.element_size() for t in copied) + out.numel() * out.element_size()
                              + (0 if isinstance(x, torch.Tensor) and self.x.data_ptr() == x.data_ptr()
                                  else self.x.numel() * self.x.element_size()))

    def _cuda_devices(self) -> list[int]:
        return [self.device.index or 0] if self.device.type == "cuda" else []

    # ------------------------------------------------------------------ evaluation
    def _probe_forward(self) -> torch.Tensor:
        """One forward pass that sizes the activations, refuses random networks and checks the output."""
        count, passes = [0], [0]

        def hook(mod, inp, out):
            if isinstance(out, torch.Tensor) and passes[0] == 1:
                count[0] += out.numel()

        def forward():
            passes[0] += 1
            return self.call(self.theta, raw=True)

        handles = [m.register_forward_hook(hook) for m in self.module.modules()]
        try:
            with torch.no_grad():
                again = (lambda: self.call(self.theta, self.x[:2], raw=True)) if self.per_sample else None
                raw = check_deterministic(self.module, forward, again)
        except StochasticModelError:
            raise
        except Exception as exc:
            raise _forward_error(self.x, exc, self.bn_mode) from exc
        finally:
            for h in handles:
                h.remove()
        self.activation_numel = count[0]
        if not isinstance(raw, torch.Tensor):
            raise InputError(f"the model returned {type(raw).__name__}; the toolkit needs a tensor of outputs "
                             f"with samples along dimension 0 (wrap the model to return one)")
        if raw.dim() == 0 or raw.shape[0] != self.n:
            raise InputError(f"the model output has shape {tuple(raw.shape)} for {self.n} samples; the first "
                             f"dimension must index the samples")
        out = raw.reshape(self.n, -1)
        if not torch.isfinite(out).all():
            raise InputError("the model output at the given parameters contains NaN or inf")
        return out.detach()

    def call(self, theta: dict[str, torch.Tensor], x: Optional[torch.Tensor] = None, *,
             raw: bool = False) -> torch.Tensor:
        """Outputs (B, k) at parameters ``theta`` (selected names only) on ``x`` (default: all of self.x).

        A pure function of ``theta``, safe under ``torch.func`` transforms; attention runs through its
        differentiable kernels (:mod:`dynamics.engine.attention`). In ``"batch"`` mode ``x`` must be the full
        batch (the function of a sub-batch would be a different function). ``raw``: the model's output as is.
        """
        if x is None:
            x = self.x
        elif not self.per_sample and x is not self.x:
            raise InputError("bn_mode='batch' defines a function of the whole batch; it cannot be evaluated "
                             "on a sub-batch")
        with differentiable_attention():
            out = functional_call(self.module, theta, (x,))
        return out if raw else out.reshape(out.shape[0], -1)

    def evaluate(self, theta: dict[str, torch.Tensor], x: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The stacked outputs f_X as a flat (B·k,) vector, sample-major."""
        return self.call(theta, x).reshape(-1)

    @property
    def per_sample(self) -> bool:
        return self.bn_mode != "batch"

    # ------------------------------------------------------------------ layout of θ_S
    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate per-parameter tensors ``(*lead, *shape)`` into ``(*lead, p)`` in column order."""
        first = tensors[self.names[0]]
        lead = first.shape[: first.dim() - len(self.shapes[0])]
        return torch.cat([tensors[n].reshape(*lead, m) for n, m in zip(self.names, self.numels)], dim=-1)

    def unflatten(self, vec: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split ``(*lead, p)`` into per-parameter tensors ``(*lead, *shape)`` (views where possible)."""
        lead = vec.shape[:-1]
        return {n: vec[..., o:o + m].reshape(*lead, *s)
                for n, o, m, s in zip(self.names, self.offsets, self.numels, self.shapes)}

    @property
    def theta_flat(self) -> torch.Tensor:
        return self.flatten(self.theta)

    def sample_blocks(self, block: int) -> list[slice]:
        """Slices of at most ``block`` samples covering 0..n (one slice of everything in batch mode)."""
        if not self.per_sample or block >= self.n:
            return [slice(0, self.n)]
        return [slice(i, min(i + block, self.n)) for i in range(0, self.n, block)]

    def block_function(self, sl: slice) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
        """θ -> flat outputs of the samples in ``sl`` (the whole batch in batch mode)."""
        if sl == slice(0, self.n):
            return lambda theta: self.evaluate(theta)
        xb = self.x[sl]
        return lambda theta: self.evaluate(theta, xb)

    @property
    def itemsize(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()


def _forward_error(x: torch.Tensor, exc: Exception, bn_mode: Optional[str]) -> InputError:
    if bn_mode in ("batch", "frozen") and x.shape[0] == 1 and "more than 1 value per channel" in str(exc):
        return BatchNormModeError(
            f"bn_mode={bn_mode!r} normalises with the statistics of the batch x, and batch statistics need at "
            f"least 2 samples per channel; x has 1 sample. Pass n >= 2 samples, or bn_mode='eval' (running "
            f"statistics)")
    if not x.is_floating_point():
        return InputError(
            f"model(x) failed for x of dtype {x.dtype} (integer inputs are kept as integers, for embedding "
            f"layers): {type(exc).__name__}: {exc}. If the model expects real features, pass x.float()")
    return InputError(f"model(x) failed for x of shape {tuple(x.shape)} and dtype {x.dtype}: "
                      f"{type(exc).__name__}: {exc}. Check that x is a batch (samples along dimension 0) with the "
                      f"feature shape the model expects")
