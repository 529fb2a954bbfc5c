"""The modified framework A(base): at the switch τ, f becomes f̃ = f + g with g(x; ζ) = ζᵀφ(h_τ(x)), ζ = 0.

* ``h_τ`` is a frozen copy (eval mode, no gradients) of the model's hidden representation at τ — the read-out's
  input ``model.features(x)``, or for a plain ``nn.Module`` the input of its last ``nn.Linear`` — optionally
  concatenated with the flattened input when the representation merges training points (``source``).
* φ is a feature construction of :mod:`dynamics.training.features`, fitted on the training set at τ.
* ζ ∈ R^{m×k} starts at zero, so f̃ = f at the switch; afterwards the base algorithm trains (θ, ζ) together.

Because φ does not depend on θ, the Jacobian of f̃ always contains the columns Φ ⊗ I_k of g; once Φ has rank n on
the training set (the certificate), vec(Y) ∈ Col J_f̃(θ) for every θ — alignment holds along all of phase 2.

Scale of φ. For SGD the step that g takes on a batch is lr·c²/B·K_B·r (K_B: the batch kernel of the unscaled φ,
r: the residual), and momentum β multiplies the effective step by 1/(1 − β); c² = s·(1 − β)·B / (lr·λ_max(K_B)),
with λ_max estimated on a random training batch at τ, makes the effective step remove the fraction s =
``zeta_step`` (ζ's step, its own hyper-parameter, recorded; default ½) of the batch residual along the top
direction.
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
import warnings
from typing import Any, Iterator

import torch
from torch import nn

from dynamics.errors import InputError
from dynamics.models.base import readout_of
from dynamics.training.features import (FEATURES, LABEL_LEAKAGE, FeatureCertificate, FeatureMap,
                                        conflicting_duplicates, group_duplicates, make_features)
from dynamics.training.sparse_rows import SparseRows

__all__ = ["FrozenRepresentation", "AugmentedModel", "GOnTrainingSet", "switch", "rebuild", "representation_of",
           "is_augmented", "on_model_subset", "feature_scale", "zeta_lr", "SOURCES", "AUTO_FEATURES"]

log = logging.getLogger(__name__)
SOURCES = ("features", "features+input")
#: what ``features="auto"`` resolves to, at every n (label-free; ``nnlabel`` is only a named control)
AUTO_FEATURES = "gaussian"


def representation_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The read-out's input (N, d): ``model.features(x)`` or the input of the last ``nn.Linear``."""
    if hasattr(model, "features") and callable(model.features):
        return model.features(x).flatten(1)
    captured: list[torch.Tensor] = []
    handle = readout_of(model).register_forward_pre_hook(lambda mod, args: captured.append(args[0]))
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
    """f̃(x) = base(x) + g(x), g(x) = φ(h_τ(x)) ζ, with ζ (m, k) a parameter initialised at zero.

    ``forward(x, index=None)``: during training the runner passes the training-set ``index`` of each sample, and g
    reads Φ's rows from the training cache (:class:`~dynamics.training.sparse_rows.SparseRows`, set by
    :func:`switch` or :meth:`cache_training_features`) at a cost proportional to its non-zeros. Everywhere else
    (test time, checks) φ is computed from x. Public read-outs: :meth:`training_features` (Φ's rows as used in
    training), :attr:`training_rows`, :meth:`decompose` (f and g separately).
    """

    def __init__(self, base: nn.Module, rep: FrozenRepresentation, feature_map: FeatureMap, num_classes: int) -> None:
        super().__init__()
        self.base, self.rep, self.feature_map = base, rep, feature_map
        self.zeta = nn.Parameter(torch.zeros(feature_map.out_dim, num_classes))
        self._rows: SparseRows | None = None  # unscaled Φ on the training set

    @property
    def has_training_cache(self) -> bool:
        return self._rows is not None

    @property
    def training_rows(self) -> SparseRows | None:
        """Unscaled Φ on the training set as training reads it (None before caching)."""
        return self._rows

    def set_training_rows(self, rows: SparseRows) -> None:
        """Install Φ's training rows (unscaled), e.g. those :meth:`FeatureMap.certify_and_rows` returned."""
        if rows.n_cols != self.feature_map.out_dim:
            raise InputError(f"training rows have {rows.n_cols} columns, the feature map {self.feature_map.out_dim}")
        self._rows = rows.to(self.zeta.device)

    @contextlib.contextmanager
    def without_cache(self) -> Iterator[None]:
        """Drop the training cache temporarily (e.g. while a check deep-copies the model)."""
        saved, self._rows = self._rows, None
        try:
            yield
        finally:
            self._rows = saved

    @property
    def readout(self) -> nn.Linear:
        """The read-out of the base network (:func:`dynamics.models.base.readout_of`)."""
        return readout_of(self.base)

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        """Features φ(h_τ(x)) (N, m), scaled, no gradient."""
        with torch.no_grad():
            return self.feature_map(self.rep(x))

    def training_features(self, index: torch.Tensor) -> torch.Tensor:
        """Φ's rows (B, m), scaled, for training indices ``index``, exactly as training uses them."""
        if self._rows is None:
            raise InputError("no training cache: call cache_training_features(x_train) first")
        return self._rows.dense(index) * self.feature_map.scale

    def cache_training_features(self, x_train: torch.Tensor, chunk: int = 512) -> str:
        """Compute Φ's training rows from ``x_train`` unless a cache for ``len(x_train)`` points is present;
        returns ``"rows"``."""
        if self._rows is None or self._rows.n != len(x_train):
            h = self.rep.embed(x_train, chunk)
            with torch.no_grad():
                self.set_training_rows(self.feature_map.training_rows(h.cpu()))
        return "rows"

    def g(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """g(x) = φ(h_τ(x)) ζ (N, k); from the training cache when ``index`` is given and a cache is present."""
        if index is not None and self._rows is not None:
            return self._rows.matmul(index, self.zeta) * self.feature_map.scale
        return self.phi(x).to(self.zeta.dtype) @ self.zeta

    def decompose(self, x: torch.Tensor, index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(x), g(x)), each (N, k); f̃ = their sum."""
        return self.base(x), self.g(x, index)

    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        out = self.base(x)
        return out + self.g(x, index).to(out.dtype)

    def spec(self) -> dict[str, Any]:
        """What :func:`rebuild` needs besides the state dict."""
        return {"source": self.rep.source, "features": self.feature_map.name,
                "options": self.feature_map.options(), "num_classes": self.zeta.shape[1]}


def is_augmented(model: nn.Module) -> bool:
    """Whether ``model`` is f̃ = f + g (the one test of "modified" at the model level; the run's phase is
    :class:`~dynamics.training.config.Phases`). Unwraps DDP's ``.module``.

    >>> is_augmented(nn.Linear(2, 2))
    False
    """
    return isinstance(getattr(model, "module", model), AugmentedModel)


def on_model_subset(model: nn.Module) -> list[str] | str:
    """S for the on-model check: ``"auto"`` for a plain model; for f̃ = f + g the read-out of f together with ζ
    (f is 1-homogeneous in its read-out and g in ζ, so f̃ is in their union; no single group covers both).

    >>> on_model_subset(nn.Linear(2, 2))
    'auto'
    """
    if not is_augmented(model):
        return "auto"
    model = getattr(model, "module", model)
    ids = {id(p) for p in readout_of(model.base).parameters()}
    return [n for n, p in model.named_parameters() if id(p) in ids or n == "zeta"]


class GOnTrainingSet(nn.Module):
    """g restricted to the training set, as a function of the training INDEX: ``forward(i) = Φ[i] ζ``.

    Its Jacobian in ζ over all n indices is exactly the ζ-block J_ζ = Φ ⊗ I_k of f̃'s Jacobian on the training
    set (sample-major), so :func:`dynamics.check_alignment` on it (matrix-free LSQR) checks vec(Y) ∈ Col J_ζ ⊆
    Col J_f̃ on the WHOLE training set at the cost of a sparse product per iteration, without network passes.
    """

    def __init__(self, model: AugmentedModel) -> None:
        super().__init__()
        if model.training_rows is None:
            raise InputError("GOnTrainingSet needs the model's training cache (cache_training_features)")
        self.rows, self.scale = model.training_rows, model.feature_map.scale
        self.zeta = model.zeta

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.rows.matmul(index, self.zeta) * self.scale


def rebuild(base: nn.Module, template: nn.Module, spec: dict[str, Any],
            state: dict[str, torch.Tensor]) -> AugmentedModel:
    """An :class:`AugmentedModel` from a checkpoint: ``base`` and ``template`` are fresh models of the architecture.

    The training cache is not part of the checkpoint: call :meth:`AugmentedModel.cache_training_features`."""
    rep = FrozenRepresentation(template, spec["source"])
    fm = make_features(spec["features"], **spec["options"])
    for name, _ in list(fm.named_buffers()):
        fm.register_buffer(name, state[f"feature_map.{name}"].clone())
    model = AugmentedModel(base, rep, fm, spec["num_classes"])
    model.zeta = nn.Parameter(torch.zeros_like(state["zeta"]))
    model.load_state_dict(state)
    return model


def feature_scale(fm: FeatureMap, h: torch.Tensor, lr: float, batch_size: int, adaptive: bool, seed: int,
                  momentum: float = 0.0, zeta_step: float = 0.5) -> float:
    """The scale c of φ: for SGD, c² = zeta_step·(1 − β)·B / (lr·λ_max(K_B)), K_B the unscaled kernel of a random
    training batch, so that one effective step removes the fraction ``zeta_step`` of a batch's residual along
    its top direction; 1 for adaptive optimisers (invariant to c)."""
    if not zeta_step > 0:
        raise InputError(f"zeta_step must be > 0, got {zeta_step!r}")
    if adaptive:
        return 1.0
    g = torch.Generator().manual_seed(seed + 2)
    idx = torch.randperm(len(h), generator=g)[: min(batch_size, len(h))]
    with torch.no_grad():
        phi = fm.raw(h[idx]).double()
    lam = float(torch.linalg.eigvalsh(phi @ phi.T)[-1])
    return (zeta_step * (1.0 - momentum) * len(idx) / (lr * max(lam, 1e-12))) ** 0.5


def zeta_lr(lr: float, epoch: int, tau: int, epochs: int, zeta_step: float, zeta_step_final: float) -> float:
    """ζ's learning rate in 0-based ``epoch`` of phase 2 (τ ≤ epoch < epochs): the epoch's scheduled ``lr``
    times (zeta_step_final / zeta_step)^((epoch − τ)/(epochs − 1 − τ)), so ζ's step grows geometrically from
    ``zeta_step`` (the one the scale c was set for) at τ to ``zeta_step_final`` in the last epoch.

    Why: cross-entropy's gradient decays like e^{−margin}, so a constant step either stalls (margins grow like
    log t) or overshoots at the first visit; a geometrically growing step lets the margins track log(step), and
    reach the ≈ ln(2n/σ_min) that the run certificate needs within the budget, while g stays small in the first
    epochs of phase 2 and f keeps learning (docs/framework.md, "Phase 2").

    >>> zeta_lr(0.01, 10, 10, 13, 1e-4, 1.0), zeta_lr(0.01, 12, 10, 13, 1e-4, 1.0)
    (0.01, 100.0)
    """
    if not (zeta_step > 0 and zeta_step_final >= zeta_step) or not tau <= epoch < epochs:
        raise InputError(f"zeta_lr needs 0 < zeta_step <= zeta_step_final and tau <= epoch < epochs, got "
                         f"zeta_step={zeta_step}, zeta_step_final={zeta_step_final}, epoch={epoch}, tau={tau}, "
                         f"epochs={epochs}")
    span = max(1, epochs - 1 - tau)
    return lr * (zeta_step_final / zeta_step) ** ((epoch - tau) / span)


def _resolve(features: str) -> tuple[str, str]:
    if features == "auto":
        return AUTO_FEATURES, f"auto: {AUTO_FEATURES} at every n (label-free)"
    if features not in FEATURES:
        raise InputError(f"unknown feature construction {features!r}; valid: auto, {', '.join(sorted(FEATURES))}")
    if features == "nnlabel":
        msg = (f"features='nnlabel' is a control: {LABEL_LEAKAGE}. Φ = onehot(Y) on the training set for ANY "
               "network, so its certificate says nothing about the network; use 'auto' for the framework")
        warnings.warn(msg, UserWarning, stacklevel=3)
        log.warning(msg)
        return features, f"given: {LABEL_LEAKAGE} (control)"
    return features, "given"


def switch(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, num_classes: int,
           features: str = "auto", feature_options: dict[str, Any] | None = None, lr: float = 0.01,
           batch_size: int = 64, adaptive: bool = False, momentum: float = 0.0, seed: int = 0,
           zeta_step: float = 0.5) -> tuple[AugmentedModel, dict[str, Any]]:
    """Build f̃ = f + g from ``model`` at τ (with its training cache); return it and a JSON-ready record.

    Args:
        model: the network after phase 1 (its parameters are shared with f̃, not copied).
        x_train (n, ...), y_train (n,) int64: the training set (un-augmented) the features are fitted on.
        features: a name of ``FEATURES`` or ``"auto"`` (= ``gaussian`` at every n); ``nnlabel`` is allowed as a
            named control, with a warning (alignment by label leakage).
        lr, batch_size, adaptive, momentum, zeta_step: set the scale c of φ (:func:`feature_scale`); ζ's
            effective step is recorded as ``zeta_step`` and ``zeta_lr_times_scale_sq`` (= lr·c²).

    Raises:
        InputError: identical training inputs with different labels (their indices; no function fits them), a
            representation with NaN/inf, an unknown construction, bad options (e.g. bandwidth ≤ 0).
        MemoryBudgetError: the thresholded Gaussian kernel would keep more entries than
            ``feature_options['memory_budget']`` (default 2 GiB) allows; raised before it is built (the message
            says which option to change).

    The representation source is the frozen read-out input if it separates all training points, else that
    representation concatenated with the input. The certificate is recorded, never assumed.
    """
    name, features_reason = _resolve(features)
    clash = conflicting_duplicates(x_train.cpu(), y_train.cpu())
    if clash:
        raise InputError(f"identical training inputs carry different labels (index groups {clash}); no function "
                         "can fit them: remove or relabel these samples")
    fm = make_features(name, seed=seed, **(feature_options or {}))
    was_training = model.training
    reason = "the frozen representation separates every pair of training points"
    for source in SOURCES:
        rep = FrozenRepresentation(model, source).fit_norms(x_train)
        h = rep.embed(x_train).cpu()
        if not torch.isfinite(h).all():
            fm.check_inputs(h, y_train.cpu())  # raises, naming the points
        n_distinct, _ = group_duplicates(h, y_train.cpu())
        if n_distinct == group_duplicates(x_train.cpu(), y_train.cpu())[0]:
            break
        reason = (f"the frozen representation merges {len(h) - n_distinct} distinct training inputs; using it "
                  "together with the input")
    model.train(was_training)
    y_cpu = y_train.long().cpu()
    fm.fit(h, y_cpu, num_classes)
    scale = feature_scale(fm, h, lr, batch_size, adaptive, seed, momentum, zeta_step)
    fm.scale = torch.tensor(scale, dtype=torch.float32)
    cert, rows = fm.certify_and_rows(h, y_cpu)
    aug = AugmentedModel(model, rep, fm, num_classes).to(next(model.parameters()).device)
    aug.set_training_rows(rows)
    info = {"features": name, "features_reason": features_reason, "source": rep.source, "source_reason": reason,
            "feature_dim": fm.out_dim, "zeta_shape": list(aug.zeta.shape), "scale": scale,
            "zeta_step": zeta_step if not adaptive else None, "zeta_lr_times_scale_sq": lr * scale ** 2,
            "training_rows_nnz": rows.nnz, "options": fm.options(), "certificate": cert.to_dict(),
            "scale_rule": "1 (adaptive optimiser)" if adaptive
            else "c^2 = zeta_step (1 - momentum) B / (lr lambda_max(K_batch))"}
    if isinstance(cert, FeatureCertificate) and not cert.holds:
        log.warning("switch: the feature certificate does NOT hold: %s", cert.text)
    log.info("switch: %s on %s (m=%d, scale=%.3g); %s", name, rep.source, fm.out_dim, scale, cert)
    return aug, info
