"""The interface every structured layer rule implements, and the facts about a layer a rule works from.

A rule turns a layer's inputs X and output gradients G (captured once per tile by
:mod:`dynamics.engine.ntk_by_layer`) into that layer's contribution to the kernel, without forming the rows of J
for its parameters. A rule is chosen only when the layer computes exactly what the rule assumes:

* the module's type is exactly one of ``rule.types`` (a subclass may override ``forward``, e.g. BatchNorm
  followed by an activation, and then the gradient at the module output is not the one the rule needs);
* no ``forward`` set on the instance and no forward hooks (module-level or global) that could change the output.

Anything else goes to the autograd fallback, which is exact for every differentiable layer.

Shapes: ``X`` is ``(B, *in)`` and ``G`` is ``(B, k, *out)`` for per-sample functions; in ``bn_mode="batch"``
``X`` is the whole batch ``(n, *in)`` and ``G`` is ``(r, n, *out)``, one row per (sample, output) pair.
A rule's per-sample gradients are ``(B, k, m)`` with the layer's selected parameters concatenated in column
order (weight first, then bias), each flattened row-major, as :func:`dynamics.jacobian` lays them out.
"""

from __future__ import annotations

import abc

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn
from torch.nn.modules import module as module_internals

__all__ = ["LayerInfo", "Dims", "LayerRule", "unchanged_forward", "pair", "gram"]


@dataclass
class LayerInfo:
    """A layer with a structured rule. Shapes are per sample (no batch dimension)."""

    module: str
    rule: "LayerRule"
    weight: Optional[str]  # selected parameter names (None when not selected)
    bias: Optional[str]
    in_shape: tuple
    out_shape: tuple
    # linear: d_in, d_out, positions (sharing the weight); conv2d: P = C_in/groups*kh*kw, C_out, L = H_out*W_out
    d_in: int = 0
    d_out: int = 0
    positions: int = 1
    conv: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.rule.name

    @property
    def names(self) -> list[str]:
        return [n for n in (self.weight, self.bias) if n is not None]

    @property
    def in_numel(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_numel(self) -> int:
        return math.prod(self.out_shape)


@dataclass(frozen=True)
class Dims:
    """The problem a rule is costed for: n1 x n2 samples (n2 = n1 when sym), k outputs, per-sample or batch."""

    n1: int
    n2: int
    k: int
    sym: bool
    per_sample: bool

    @property
    def pairs(self) -> float:
        """Sample pairs whose blocks are computed (half when x2 = x1 and the function is per-sample)."""
        return self.n1 * self.n2 / (2 if self.sym else 1) if self.per_sample else self.n1 * self.n2

    @property
    def ne(self) -> int:
        """Samples whose per-sample quantities are formed (x1, plus x2 when it differs)."""
        return self.n1 + (0 if self.sym else self.n2)

    @property
    def N(self) -> int:
        return max(self.n1, self.n2)


def unchanged_forward(module: nn.Module) -> bool:
    """True when calling ``module`` runs its class's ``forward`` and nothing else (no instance forward, no hooks)."""
    if "forward" in vars(module):
        return False
    if module._forward_hooks or module._forward_pre_hooks:
        return False
    return not (module_internals._global_forward_hooks or module_internals._global_forward_pre_hooks)


def why_not_unchanged(module: nn.Module, rule_types: tuple) -> str:
    """The reason a module of a rule's family gets no rule ("" when it does)."""
    name = type(module).__name__
    if type(module) not in rule_types:
        bases = [t.__name__ for t in rule_types if isinstance(module, t)]
        if bases:
            return (f"{name} subclasses {bases[0]} and may change its forward (a rule needs the exact layer "
                    f"type)")
        return f"{name} has no structured rule"
    if "forward" in vars(module):
        return f"{name} has its forward replaced on the instance"
    if module._forward_hooks or module._forward_pre_hooks:
        return f"{name} has forward hooks that may change its output"
    if module_internals._global_forward_hooks or module_internals._global_forward_pre_hooks:
        return "global forward hooks are registered"
    return ""


def gram(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``A @ B.T`` as one matrix product. (Multiplying only the blocks on and above the diagonal when ``B is A``
    saved 30 % at one thread but was 10x slower at two threads on a shared machine: many small parallel regions.
    Symmetry of the kernel is restored exactly by :func:`dynamics.engine.ntk_contraction.mirror_upper`.)"""
    return A @ B.T


def pair(P1: torch.Tensor, P2: torch.Tensor) -> torch.Tensor:
    """Per-sample gradients (B1, k, m) x (B2, k, m) -> kernel block (B1, k, B2, k)."""
    B1, k, m = P1.shape
    B2 = P2.shape[0]
    A = P1.reshape(B1 * k, m)
    return gram(A, A if P2 is P1 else P2.reshape(B2 * k, m)).reshape(B1, k, B2, k)


class LayerRule(abc.ABC):
    """One layer type's structured kernel. Subclasses set ``name``, ``types`` and the methods below.

    ``variant`` names the algorithm for a problem (what :class:`~dynamics.engine.ntk.NTKInfo` reports);
    ``cost`` counts its multiply-adds and ``memory`` its largest temporary in elements, for tiles of B1 and B2
    samples (per-sample) or row blocks of r1 and r2 rows (batch mode).
    """

    name: str = ""
    types: tuple = ()

    # ---------------------------------------------------------------- choice
    def applies_to(self, module: nn.Module) -> bool:
        """Exact type, the class's own ``forward``, no hooks."""
        return type(module) in self.types and unchanged_forward(module)

    def refusal(self, module: nn.Module, in_shape: tuple, out_shape: tuple) -> str:
        """Why this module instance is outside the rule ("" when it is inside); shapes include the batch."""
        return ""

    def describe(self, layer: LayerInfo, module: nn.Module, in_shape: tuple, out_shape: tuple) -> None:
        """Fill the layer's geometry (d_in, d_out, positions, conv) from the module and batched shapes."""

    # ---------------------------------------------------------------- estimates
    @abc.abstractmethod
    def variant(self, layer: LayerInfo, d: Dims) -> str:
        """Every rule defines it (abstract)."""

    @abc.abstractmethod
    def cost(self, layer: LayerInfo, variant: str, d: Dims) -> float:
        """Every rule defines it (abstract)."""

    @abc.abstractmethod
    def memory(self, layer: LayerInfo, variant: str, B1: int, B2: int, d: Dims) -> float:
        """Every rule defines it (abstract)."""

    # ---------------------------------------------------------------- computation
    def capture_input(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """What the rule keeps of the layer input (the input itself; normalised input for norm layers)."""
        return x

    @abc.abstractmethod
    def per_sample_grads(self, layer: LayerInfo, X: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        """(B, k, m) gradients of each sample's outputs with respect to the layer's selected parameters."""

    def pair_block(self, layer: LayerInfo, variant: str, X1, G1, X2, G2, cache: dict) -> torch.Tensor:
        """The layer's block (B1, k, B2, k); ``cache`` keeps tile 1's per-sample gradients between tiles 2."""
        if layer.module not in cache:
            cache[layer.module] = self.per_sample_grads(layer, X1, G1)
        P1 = cache[layer.module]
        P2 = P1 if X2 is X1 and G2 is G1 else self.per_sample_grads(layer, X2, G2)
        return pair(P1, P2)

    def row_grads(self, layer: LayerInfo, X: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        """Batch mode: (r, m), each row's gradient summed over the samples of the batch. Needed only by the default
        :meth:`batch_block`; a rule that overrides ``batch_block`` (Linear: the kernel trick) does without it."""
        raise NotImplementedError(f"rule {self.name!r} has no row_grads; it must override batch_block")

    def batch_block(self, layer: LayerInfo, variant: str, X1, G1, X2, G2) -> torch.Tensor:
        """Batch mode: the layer's (r1, r2) block of the row-major kernel."""
        return self.row_grads(layer, X1, G1) @ self.row_grads(layer, X2, G2).T


def cat_parts(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
