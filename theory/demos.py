"""Demonstrations on real (small) training: every statement on a default network, seeded, seconds on a CPU.

Each ``demo_*`` function builds its data (seeded :mod:`dynamics.data.synthetic`), its model, trains in float64
(:mod:`theory.descent`) and returns :class:`~theory.report.StatementReport` s whose ``series`` feed the figures.
``quick=True`` shrinks the runs (tests, notebooks); the verdicts are the same.

Statements 3 and 4 are in :mod:`theory.demos_critical`, statement 7's limits in :mod:`theory.demos_limits`.

>>> [(r.statement, r.trivial, r.holds) for r in demo_random_points()]
[('1', True, True), ('1', False, True)]
"""

from __future__ import annotations

import logging

import torch

from dynamics.data.synthetic import teacher_regression
from dynamics.models import MLP, NonlinearHeadMLP, create
from theory.beyond_ntk import check_beyond_ntk, evaluate_trajectory
from theory.critical_points import check_necessity
from theory.decomposition import GRADIENT_RTOL, check_gradient_bound, check_loss_decomposition
from theory.descent import Trajectory, gradient_descent, minimise
from theory.embedding import widen
from theory.geometry import loss_geometry
from theory.network_size import check_chain_rank, check_duplicate_unit, check_width_helps, positive_chain
from theory.report import StatementReport

__all__ = ["regression_data", "training_trajectory", "demo_trajectory", "demo_width_sweep", "demo_controls",
           "demo_random_points", "demo_depth"]

log = logging.getLogger(__name__)


def regression_data(n: int, dim: int = 3, out_dim: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded teacher-network regression data in float64: x (n, dim), y (n, out_dim), targets scaled to unit RMS."""
    x, y = teacher_regression(n, dim=dim, out_dim=out_dim, width=16, seed=seed)
    y = y.double()
    return x.double(), y / y.pow(2).mean().sqrt().clamp_min(1e-12)


def training_trajectory(seed: int = 0, quick: bool = False) -> tuple[Trajectory, torch.Tensor, torch.Tensor]:
    """The run that statements 1, 2 and 7 are checked along: MLP 3-4-4-2 (tanh) on n=40 teacher data (nk=80 >
    p=46, so ½dist(Y, Col J)² > 0), full-batch GD with lr = 0.5/λ_max(Θ(θ_0)), 3000 steps (1000 quick), 21 points."""
    x, y = regression_data(40, 3, 2, seed)
    torch.manual_seed(seed)
    model = MLP(3, 2, depth=2, width=4, activation="tanh").double()
    lam = loss_geometry(model, x, y).space.sigma_max ** 2
    steps = 1000 if quick else 3000
    traj = gradient_descent(model, x, y, lr=0.5 / lam, steps=steps, record=list(range(0, steps + 1, steps // 20)))
    return traj, x, y


def demo_trajectory(seed: int = 0, quick: bool = False, rtol: float = 1e-8,
                    min_distance: float = 1e-2) -> list[StatementReport]:
    """Statements 1, 2 (at every recorded step) and 7 (kernel distance) on :func:`training_trajectory`."""
    traj, x, y = training_trajectory(seed, quick)
    ev = evaluate_trajectory(traj, x, y, rtol=rtol)
    setting = f"MLP 3-4-4-2 tanh, n=40, GD lr=0.5/λmax, {traj.steps[-1]} steps, {len(traj.steps)} points"
    s = ev.to_dict()
    p, nk = sum(t.numel() for t in traj.model.parameters()), y.numel()
    trivial = min(ev.rank) == nk
    one = StatementReport("1", "loss decomposition", setting,
                          {"p": p, "nk": nk, "rank": max(ev.rank), "max_rel_gap": max(ev.rel_gap), "L_0": ev.loss[0],
                           "L_T": ev.loss[-1], "dist_term_T": ev.dist_term[-1]},
                          {"rtol": rtol}, max(ev.rel_gap) <= rtol, notes="checked at every recorded θ_t", series=s,
                          trivial=trivial)
    slack_lo = min(L - d for L, d in zip(ev.loss, ev.dist_term))
    two = StatementReport("2", "gradient bound", setting,
                          {"p": p, "nk": nk, "rank": max(ev.rank),
                           "holds_at": f"{sum(ev.bound_holds)}/{len(ev.bound_holds)} points",
                           "min_L_minus_lower": slack_lo, "upper_over_L_T": ev.upper[-1] / ev.loss[-1]},
                          {"rtol": rtol, "grad_rtol": GRADIENT_RTOL}, all(ev.bound_holds),
                          notes="checked at every recorded θ_t (∇L checked against autograd)", series=s,
                          trivial=trivial)
    seven = check_beyond_ntk(traj, x, y, rtol=rtol, min_distance=min_distance, setting=setting, evaluation=ev)
    return [one, two, seven]


def demo_width_sweep(seed: int = 0, quick: bool = False, widths=(1, 2, 3, 4, 6, 8),
                     rtol: float = 1e-8) -> list[StatementReport]:
    """Statement 5 on nested trained models: train width w_1 to a critical point, embed it in width w_2 (zero
    outgoing weights), measure r and ½dist² there, train on from the embedded point, and so on.

    Guaranteed by the statement: at each embedding r and ½dist² do not increase; the critical loss of the
    next width starts from the embedded point, so it does not increase either (L-BFGS descends). The sweep
    widens until rank J reaches nk.
    """
    x, y = regression_data(20, 3, 1, seed)
    torch.manual_seed(seed)
    model = MLP(3, 1, depth=1, width=widths[0], activation="tanh").double()
    it = 200 if quick else 600
    crit, r_crit, r_emb, d_emb, rank_emb, ranks, embeds, stationary = [], [], [], [], [], [], [], []
    fit = minimise(model, x, y, gtol=1e-10, max_iter=it)
    g = loss_geometry(fit.model, x, y)
    crit.append(fit.loss), r_crit.append(g.alignment_residual), ranks.append(g.space.rank)
    stationary.append(g.relative_grad_norm <= 1e-6)
    r_emb.append(g.alignment_residual), d_emb.append(g.dist2_half), rank_emb.append(g.space.rank)
    for w in widths[1:]:
        embeds.append(check_width_helps(fit.model, x, y, width=w, seed=seed + w, rtol=rtol, strict=True))
        wide, _ = widen(fit.model, w, seed=seed + w)
        ge = loss_geometry(wide, x, y)
        r_emb.append(ge.alignment_residual), d_emb.append(ge.dist2_half), rank_emb.append(ge.space.rank)
        fit = minimise(wide, x, y, gtol=1e-10, max_iter=it)
        g = loss_geometry(fit.model, x, y)
        crit.append(fit.loss), r_crit.append(g.alignment_residual), ranks.append(g.space.rank)
        stationary.append(g.relative_grad_norm <= 1e-6)
    scale = 0.5 * float(y.pow(2).sum())
    mono = all(b <= a + rtol * scale for a, b in zip(crit, crit[1:]))
    emb_ok = all(e.holds for e in embeds)
    q = {"p": [e.quantities["p"] for e in embeds] + [embeds[-1].quantities["p_wide"]], "nk": y.numel(),
         "rank": rank_emb, "widths": list(widths), "embeddings_hold": f"{sum(e.holds for e in embeds)}/{len(embeds)}",
         "rank_at_embedding": rank_emb, "r_at_embedding": [round(v, 4) for v in r_emb],
         "critical_L": [float(f"{v:.3g}") for v in crit], "stationary": f"{sum(stationary)}/{len(stationary)}",
         "final_rank": ranks[-1]}
    series = {"widths": list(widths), "r_embedded": r_emb, "half_dist2_embedded": d_emb, "rank_embedded": rank_emb,
              "critical_loss": crit, "r_critical": r_crit, "rank_critical": ranks, "stationary": stationary}
    sweep = StatementReport("5", "width sweep", "MLP 3-w-1 tanh, n=20, nested widths, L-BFGS at each width", q,
                            {"rtol": rtol}, emb_ok and mono and ranks[-1] == y.numel(),
                            notes="embeddings hold and add rank while rank < nk, loss after training from each "
                                  "embedding non-increasing (critical_L; 'stationary' counts ‖∇L‖/(σ_max‖Y‖) ≤ "
                                  "1e-6), rank reaches nk", series=series, trivial=rank_emb[0] == y.numel())
    bad = [e for e in embeds if not e.holds]
    if bad:
        log.warning("width sweep: embedding check failed: %s", bad[0])
    return [embeds[0], sweep, chain_widening_control(seed)]


def chain_widening_control(seed: int = 0, n: int = 20) -> StatementReport:
    """Statement 5's control: a widening that does not help. The second layer of a width-1 bias-free ReLU chain
    of depth 4 is widened to 3 units (zero outgoing weights): every unit after the first layer sees the scalar
    h = relu(w_1ᵀx) ≥ 0 and is 1-homogeneous in it, so the new columns are multiples of old ones; rank and r
    stay, and the generic claim (rank J̃ > rank J) must fail."""
    gen = torch.Generator().manual_seed(seed + 5)
    x = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    rep = check_width_helps(positive_chain(4, 3, seed=seed), x, y, width=3, seed=seed, layers=[1], strict=True,
                            expected=False, setting=f"width-1 ReLU chain depth 4, second layer widened to 3, n={n}")
    rep.notes = "control: dependent new columns, the widening cannot help; " + rep.notes
    return rep


def demo_controls(seed: int = 0) -> list[StatementReport]:
    """Checks that must fail: a sigmoid head violates the on-model structure (f_X ∉ Col J), so

    * statement 1 shows a gap at a random θ;
    * at a zero-loss point (targets Y := f_X(θ)) L = 0 < ½‖(I−P)Y‖²: statement 2's lower side and
      statement 4 (r > 0) fail.
    """
    x, _ = regression_data(40, 3, 2, seed)
    gen = torch.Generator().manual_seed(seed)
    y = torch.randn(40, 2, generator=gen, dtype=torch.float64)
    torch.manual_seed(seed)
    model = NonlinearHeadMLP(3, 2, head="sigmoid", depth=1, width=3).double()
    with torch.no_grad():
        model.readout.weight.mul_(4.0)  # leave sigmoid's near-linear range: a visible gap
    setting = "sigmoid-head MLP 3-3-2, n=40 (assumption violated)"
    one = check_loss_decomposition(model, x, y, setting=setting, expected=False)
    with torch.no_grad():
        y_fit = model(x)
    two = check_gradient_bound(model, x, y_fit, setting=setting + ", Y := f_X(θ)", expected=False)
    four = check_necessity(model, x, y_fit, setting=setting + ", Y := f_X(θ)", expected=False)
    for rep in (one, two, four):
        rep.notes = "control: must fail when f_X ∉ Col J; " + rep.notes
    return [one, two, four]


def demo_depth(seed: int = 0) -> list[StatementReport]:
    """Statement 6: chain ranks over depths 1..10 for d_x ∈ {2, 3, 5} (and 3 with a first-layer bias), a
    duplicated hidden unit in an MLP 3-3-3-2, and the control: the chain with its first layer widened to 2 units
    (no longer a width-1 bottleneck: the rank exceeds d_x, the row must fail)."""
    reps = [check_chain_rank(in_features=d, seed=seed) for d in (2, 3, 5)]
    reps.append(check_chain_rank(in_features=3, bias_first=True, seed=seed))
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.randn(20, 3, generator=gen, dtype=torch.float64)
    reps.append(check_duplicate_unit(MLP(3, 2, depth=2, width=3, activation="tanh"), x,
                                     setting="MLP 3-3-3-2 tanh, n=20, unit 0 of the last hidden layer copied"))
    control = check_chain_rank(in_features=3, seed=seed, first_width=2, expected=False)
    control.notes = "control: " + control.notes
    return reps + [control]


def demo_random_points(seed: int = 0) -> list[StatementReport]:
    """Statement 1 at random θ on a small ResNet with BatchNorm (eval mode), twice: with J over all parameters
    on 6 images (p = 19,586 ≥ nk = 18: rank J = nk, the row is trivial and says so), and with J over the
    read-out only on 60 images (p = 99 < nk = 180: Col J is a proper subspace, non-trivial; the read-out is the
    set S of the on-model structure, so f_X ∈ Col J_S and the decomposition must hold)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    imgs = torch.randn(60, 1, 8, 8, generator=gen)
    labels = torch.arange(60) % 3
    resnet = create("resnet_small", in_channels=1, num_classes=3)
    readout = [n for n, _ in resnet.named_parameters() if n.startswith("readout.")]
    return [check_loss_decomposition(resnet, imgs[:6], labels[:6], bn_mode="eval",
                                     setting="resnet_small (BatchNorm, eval), 6 images 8x8, k=3, random θ"),
            check_loss_decomposition(resnet, imgs, labels, params=readout, bn_mode="eval",
                                     setting="resnet_small (BatchNorm, eval), 60 images 8x8, k=3, random θ, "
                                             "J over the read-out")]
