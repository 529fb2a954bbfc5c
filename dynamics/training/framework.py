"""The modified framework A(base): at the switch τ, f becomes f̃ = f + g with g(x; ζ) = ζᵀφ(h_τ(x)), ζ = 0.

* ``h_τ`` is a frozen copy (eval mode, no gradients) of the model's hidden representation at τ — the read-out's
  input ``model.features(x)``, or for a plain ``nn.Module`` the input of its last ``nn.Linear`` — optionally
  concatenated with the flattened input when the representation merges training points (``source``).
* φ is a feature construction of :mod:`dynamics.training.features`, fitted on the training set at τ.
* ζ ∈ R^{m×k} starts at zero, so f̃ = f at the switch; afterwards the base algorithm trains (θ, ζ) together.

Because φ does not depend on θ, the Jacobian of f̃ always contains the columns Φ ⊗ I_k of g; once Φ has rank n on
the training set (the certificate), vec(Y) ∈ Col J_f̃(θ) for every θ — alignment holds along all of phase 2.

Scale of φ. For SGD the step that g takes on a batch is lr·c²/B·K_B·r (K_B: the batch kernel of the unscaled φ,
r: the residual), and momentum β multiplies the effective step by 1/(1 − β); c² = (1 − β)·B / (2·lr·λ_max(K_B)),
with λ_max estimated on a random training batch at τ, makes the effective step remove half of the batch residual
along the top direction: fast, and far inside the stable region.
Adaptive optimisers (Adam, AdamW, RMSprop) are invariant to this scale, so c = 1 for them.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
>>> x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
>>> aug, info = switch(net, x, y, num_classes=2, features="gaussian", lr=0.1, batch_size=4, adaptive=False)
>>> torch.equal(aug(x), net(x)), info["certificate"]["holds"]
(True, True)
"""

from __future__ import annotations

import contextlib
import copy
import logging
from typing import Any, Iterator

import torch
from torch import nn

from dynamics.errors import InputError
from dynamics.training.features import FeatureMap, group_duplicates, make_features

__all__ = ["FrozenRepresentation", "AugmentedModel", "GOnTrainingSet", "switch", "rebuild", "representation_of",
           "SOURCES"]

log = logging.getLogger(__name__)
SOURCES = ("features", "features+input")
#: ``features="auto"`` uses the Gaussian kernel while n² ≤ this (its training cache), else nearest-label features
AUTO_GAUSSIAN_MAX = 200_000_000


def _last_linear(model: nn.Module) -> nn.Linear:
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        raise InputError(f"{type(model).__name__} has no `features` method and no nn.Linear read-out; the framework "
                         "needs a hidden representation to freeze")
    return last


def representation_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The read-out's input (N, d): ``model.features(x)`` or the input of the last ``nn.Linear``."""
    if hasattr(model, "features") and callable(model.features):
        return model.features(x).flatten(1)
    captured: list[torch.Tensor] = []
    handle = _last_linear(model).register_forward_pre_hook(lambda mod, args: captured.append(args[0]))
    try:
        model(x)
    finally:
        handle.remove()
    return captured[-1].flatten(1)


class FrozenRepresentation(nn.Module):
    """A frozen copy of a model's representation at τ: always in eval mode, no parameter requires grad.

    ``source="features+input"`` concatenates the flattened input; both parts are divided by their mean norm on the
    training set (buffers ``h_norm``, ``x_norm``) so that neither dominates distances.
    """

    def __init__(self, model: nn.Module, source: str = "features") -> None:
        super().__init__()
        if source not in SOURCES:
            raise InputError(f"unknown representation source {source!r}; valid: {', '.join(SOURCES)}")
        self.source = source
        self.net = copy.deepcopy(model)
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.net.eval()
        self.register_buffer("h_norm", torch.ones(()))
        self.register_buffer("x_norm", torch.ones(()))

    def train(self, mode: bool = True) -> "FrozenRepresentation":
        super().train(mode)
        self.net.eval()  # the frozen function is the eval-mode function at τ, whatever the outer mode
        return self

    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return representation_of(self.net, x)

    def fit_norms(self, x: torch.Tensor, chunk: int = 512) -> "FrozenRepresentation":
        """Set the normalisers from the training inputs (only used by ``features+input``)."""
        if self.source == "features+input":
            h = torch.cat([self._raw(x[s:s + chunk]) for s in range(0, len(x), chunk)])
            self.h_norm = h.norm(dim=1).mean().clamp_min(1e-12)
            self.x_norm = x.flatten(1).norm(dim=1).mean().clamp_min(1e-12)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._raw(x)
        if self.source == "features+input":
            h = torch.cat([h / self.h_norm, x.flatten(1) / self.x_norm], 1)
        return h.detach()

    def embed(self, x: torch.Tensor, chunk: int = 512) -> torch.Tensor:
        """``forward`` over ``x`` in chunks (N, d)."""
        return torch.cat([self(x[s:s + chunk]) for s in range(0, len(x), chunk)])


class AugmentedModel(nn.Module):
    """f̃(x) = base(x) + φ(h_τ(x)) ζ, with ζ (m, k) a parameter initialised at zero.

    ``forward(x, index=None)``: during training the runner passes the training-set ``index`` of each sample (no
    augmentation) so the features come from a cache computed once by :meth:`cache_training_features` — the same
    numbers as recomputing them, only cheaper. Everywhere else (test time, checks) φ is computed from x.
    """

    def __init__(self, base: nn.Module, rep: FrozenRepresentation, feature_map: FeatureMap, num_classes: int) -> None:
        super().__init__()
        self.base, self.rep, self.feature_map = base, rep, feature_map
        self.zeta = nn.Parameter(torch.zeros(feature_map.out_dim, num_classes))
        self._phi_cache: torch.Tensor | None = None  # φ on the training set (n, m)
        self._h_cache: torch.Tensor | None = None  # or, when that is too large, h_τ on the training set (n, d)

    @property
    def has_training_cache(self) -> bool:
        return self._phi_cache is not None or self._h_cache is not None

    @contextlib.contextmanager
    def without_cache(self) -> Iterator[None]:
        """Drop the training caches temporarily (e.g. while a check deep-copies the model)."""
        saved = self._phi_cache, self._h_cache
        self._phi_cache = self._h_cache = None
        try:
            yield
        finally:
            self._phi_cache, self._h_cache = saved

    @property
    def readout(self) -> nn.Module:
        return self.base.readout

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        """Features φ(h_τ(x)) (N, m), no gradient."""
        with torch.no_grad():
            return self.feature_map(self.rep(x))

    def cache_training_features(self, x_train: torch.Tensor, chunk: int = 512,
                                max_elements: int = 200_000_000) -> str:
        """Cache φ on the training set if n·m ≤ ``max_elements`` (returns ``"phi"``), else the frozen representation
        h_τ (n, d) so that only φ(h) is computed per batch (``"h"``)."""
        n, m = len(x_train), self.feature_map.out_dim
        h = self.rep.embed(x_train, chunk)
        self._phi_cache = self._h_cache = None
        if n * m <= max_elements:
            with torch.no_grad():
                self._phi_cache = torch.cat([self.feature_map(h[s:s + chunk]) for s in range(0, n, chunk)])
            return "phi"
        self._h_cache = h
        return "h"

    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        out = self.base(x)
        if index is not None and self._phi_cache is not None:
            phi = self._phi_cache[index.to(self._phi_cache.device)]
        elif index is not None and self._h_cache is not None:
            with torch.no_grad():
                phi = self.feature_map(self._h_cache[index.to(self._h_cache.device)])
        else:
            phi = self.phi(x)
        return out + phi.to(out.dtype) @ self.zeta

    def spec(self) -> dict[str, Any]:
        """What :func:`rebuild` needs besides the state dict."""
        return {"source": self.rep.source, "features": self.feature_map.name,
                "options": self.feature_map.options(), "num_classes": self.zeta.shape[1]}


class GOnTrainingSet(nn.Module):
    """g restricted to the training set, as a function of the training INDEX: ``forward(i) = Φ[i] ζ``.

    Its Jacobian in ζ over all n indices is exactly the ζ-block J_ζ = Φ ⊗ I_k of f̃'s Jacobian on the training
    set (sample-major), so :func:`dynamics.check_alignment` on it (matrix-free LSQR) checks vec(Y) ∈ Col J_ζ ⊆
    Col J_f̃ on the WHOLE training set at the cost of a matrix product per iteration, without network passes.
    """

    def __init__(self, model: AugmentedModel, phi_train: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("phi", phi_train, persistent=False)
        self.zeta = model.zeta

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.phi[index] @ self.zeta


def rebuild(base: nn.Module, template: nn.Module, spec: dict[str, Any],
            state: dict[str, torch.Tensor]) -> AugmentedModel:
    """An :class:`AugmentedModel` from a checkpoint: ``base`` and ``template`` are fresh models of the architecture."""
    rep = FrozenRepresentation(template, spec["source"])
    fm = make_features(spec["features"], **spec["options"])
    for name, _ in list(fm.named_buffers()):
        fm._buffers[name] = state[f"feature_map.{name}"].clone()
    model = AugmentedModel(base, rep, fm, spec["num_classes"])
    model.zeta = nn.Parameter(torch.zeros_like(state["zeta"]))
    model.load_state_dict(state)
    return model


def _feature_scale(fm: FeatureMap, h: torch.Tensor, lr: float, batch_size: int, adaptive: bool, seed: int,
                   momentum: float = 0.0) -> float:
    if adaptive:
        return 1.0
    g = torch.Generator().manual_seed(seed + 2)
    idx = torch.randperm(len(h), generator=g)[: min(batch_size, len(h))]
    with torch.no_grad():
        phi = fm._phi(h[idx]).double()
    lam = float(torch.linalg.eigvalsh(phi @ phi.T)[-1])
    return (0.5 * (1.0 - momentum) * len(idx) / (lr * max(lam, 1e-12))) ** 0.5


def switch(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, num_classes: int,
           features: str = "auto", feature_options: dict[str, Any] | None = None, lr: float = 0.01,
           batch_size: int = 64, adaptive: bool = False, momentum: float = 0.0, seed: int = 0,
           ) -> tuple[AugmentedModel, dict[str, Any]]:
    """Build f̃ = f + g from ``model`` at τ; return it and a JSON-ready record of what was chosen and why.

    Args:
        model: the network after phase 1 (its parameters are shared with f̃, not copied).
        x_train (n, ...), y_train (n,) int64: the training set (un-augmented) the features are fitted on.
        features: a name of ``FEATURES`` or ``"auto"``: ``gaussian`` when its n × n training-feature cache has at
            most ``AUTO_GAUSSIAN_MAX`` entries (n ≤ 14 142), else ``nnlabel`` (whose per-step cost does not grow
            with n); measured in docs/framework.md.
        lr, batch_size, adaptive, momentum: the optimiser facts that set the scale of φ (module docstring).

    The representation source is chosen automatically: the frozen read-out input if it separates all training
    points that carry different labels, else that representation concatenated with the input. The certificate is
    recorded, never assumed; when it fails the run goes on but the record says so.
    """
    n = len(x_train)
    if features == "auto":
        name = "gaussian" if n * n <= AUTO_GAUSSIAN_MAX else "nnlabel"
        features_reason = (f"auto: n={n}, so the n x n gaussian feature cache "
                           f"{'fits' if name == 'gaussian' else 'does not fit'} in {AUTO_GAUSSIAN_MAX:.0e} entries")
    else:
        name, features_reason = features, "given"
    was_training = model.training
    reason = "the frozen representation separates every pair of training points with different labels"
    for source in SOURCES:
        rep = FrozenRepresentation(model, source).fit_norms(x_train)
        h = rep.embed(x_train)
        n_distinct, conflicting = group_duplicates(h, y_train)
        if conflicting == 0 and n_distinct == len(h):
            break
        reason = (f"the frozen representation merges {len(h) - n_distinct} training points "
                  f"({conflicting} groups with different labels); using it together with the input")
    model.train(was_training)
    fm = make_features(name, seed=seed, **(feature_options or {})).fit(h, y_train, num_classes)
    fm.scale = torch.tensor(_feature_scale(fm, h, lr, batch_size, adaptive, seed, momentum), dtype=torch.float32)
    cert = fm.certify(h, y_train)
    aug = AugmentedModel(model, rep, fm, num_classes).to(next(model.parameters()).device)
    info = {"features": name, "features_reason": features_reason, "source": rep.source, "source_reason": reason, "feature_dim": fm.out_dim,
            "zeta_shape": list(aug.zeta.shape), "scale": float(fm.scale), "certificate": cert.to_dict(),
            "scale_rule": "1 (adaptive optimiser)" if adaptive
            else "c^2 = (1 - momentum) B / (2 lr lambda_max(K_batch))"}
    log.info("switch: %s on %s (m=%d, scale=%.3g); %s", name, rep.source, fm.out_dim, float(fm.scale), cert)
    return aug, info
