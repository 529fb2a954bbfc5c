"""The practical regime trained by SGD: a small CNN with p < n·k on real images (Semeion), square loss,
full-batch SGD with momentum and a cosine learning-rate decay (no L-BFGS), float64.

Derived from the definitions in Kawaguchi et al. (2022). Two demonstrations, each a row of
:class:`~theory.report.StatementReport`:

* :func:`demo_reachable`: (a) a student :class:`PracticalCNN` on targets produced from the real images by a
  *planted* teacher of the same architecture (the student's own initialisation, every tensor moved by a
  Gaussian of relative norm ``planted_rel``): reachable, and far enough that r(θ₀) is clearly positive.
  Statement 3's global-minimum claim (critical ⇒ L = 0) holds only if the run reached a limit
  (‖∇L‖/(σ_max‖Y‖) ≤ ``grad_tol``) with L/(½‖Y‖²) ≤ ``rtol``; r is measured by
  ``dynamics.check_alignment(method="dense")`` at θ₀ and at the end. p < n·k, so J cannot have full row rank
  and the row is not trivial. (b) The control: the same student on targets of a wider, independent teacher
  (not reachable): its limit has r > 0, so the global-minimum claim must fail, and statement 3's identity
  L = ½dist(Y, Col J)² is checked there (holds only at a limit).
* :func:`demo_width_sweep_sgd`: students of widths ``widths`` trained by the same SGD on one wide teacher; per
  width L_T against ½dist(Y, Col J(θ_T))². The row holds only when every run reached a limit and the gap is
  within ``rtol``·½‖Y‖².

A row says "limit" only when the relative gradient is below ``grad_tol``; a run that did not converge fails
visibly (the note says by how much), never passes.

Setup: weights at ``GAIN`` = 2 times PyTorch's default initialisation (so the tanh units work in their
nonlinear range and the targets are O(0.1–1)), full-batch SGD with momentum 0.9, lr 0.2 with a cosine decay to
0.04, 12,000 steps. Measured (``dynamics verify --full``, Semeion n = 100, p = 140 < n·k = 200, one core):
the planted run goes from r(θ₀) = 0.11 to a limit (relative gradient 4.6e-5) with L/(½‖Y‖²) = 1.8e-4 and
r = 0.0041; the control (width-8 teacher) ends at a limit with r = 0.049 > 0, L = ½dist² within 5.5e-4·½‖Y‖²,
and "L = 0" fails as it must; the width sweep (widths 1, 2, 3 on the width-8 teacher) reaches limits with
L_T/(½‖Y‖²) = 0.0624, 0.0158, 0.00293 against ½dist²/(½‖Y‖²) = 0.0620, 0.0154, 0.00238.
What did not work, measured with the first settings (default initialisation, targets of an *independent*
same-width teacher standardised per output, lr 0.3 decayed to 0.003, 8,000 steps): from four of five student
initialisations SGD ended at misaligned critical points (r = 0.031–0.045, L/(½‖Y‖²) = 1.1e-3–2.9e-3), as
statement 3 allows; a student of width 4 on a width-2 teacher did the same (r = 0.053). Reaching the global
minimum needed a start in its basin, which the planted teacher provides.

>>> x = synthetic_images(24, seed=0)
>>> run = train_sgd(PracticalCNN(2, 2, seed=1), x, teacher_targets(x, 2, 2, seed=0), steps=20, lr=0.1, records=2)
>>> len(run.losses), run.steps[-1]
(3, 20)
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dynamics.conditions.alignment import check_alignment
from dynamics.data import load_dataset
from dynamics.errors import InputError
from theory.critical_points import check_sufficiency
from theory.report import StatementReport

__all__ = ["PracticalCNN", "semeion_images", "synthetic_images", "teacher_targets", "planted_teacher",
           "train_sgd", "SGDRun",
           "demo_reachable", "demo_width_sweep_sgd", "demo_practical"]

GRAD_TOL = 1e-4   # a limit: ‖∇L‖/(σ_max‖Y‖) ≤ 1e-4 (SGD in a few thousand steps; L-BFGS rows use 1e-6)
RTOL = 1e-3       # L/(½‖Y‖²) ≤ 1e-3 counts as zero loss; |L − ½dist²|/(½‖Y‖²) ≤ 1e-3 for the identity
GAIN = 2.0        # weights at twice PyTorch's default scale: the tanh units are used in their nonlinear range
STEPS, LR, FINAL_LR = 12000, 0.2, 0.2   # full-batch momentum SGD, cosine decay from LR to FINAL_LR·LR
PLANTED_REL = 0.5  # the planted teacher: every tensor of the student's initialisation moved by 50 % of its norm


class PracticalCNN(nn.Module):
    """conv3x3(1→c) → tanh → conv3x3(c→c) → tanh → average pool to 2×2 → flatten → Linear(4c → k).

    p = 10c + 9c² + c + 4ck + k (c = 3, k = 2: 140). The read-out is ``self.readout`` (the on-model subset).
    ``gain`` multiplies the three weight tensors of PyTorch's default initialisation (biases unchanged).

    >>> m = PracticalCNN(3, 2)
    >>> sum(q.numel() for q in m.parameters()), m(torch.zeros(5, 1, 8, 8, dtype=torch.float64)).shape
    (140, torch.Size([5, 2]))
    """

    def __init__(self, width: int, k: int, seed: int = 0, gain: float = 1.0) -> None:
        super().__init__()
        if not isinstance(width, int) or width < 1 or not isinstance(k, int) or k < 1:
            raise InputError(f"width and k must be positive integers, got width={width!r}, k={k!r}")
        if not gain > 0:
            raise InputError(f"gain must be positive, got {gain!r}")
        with torch.random.fork_rng():  # the initialisation depends on seed only; the caller's RNG is untouched
            torch.manual_seed(seed)
            self.conv1 = nn.Conv2d(1, width, 3, padding=1)
            self.conv2 = nn.Conv2d(width, width, 3, padding=1)
            self.readout = nn.Linear(4 * width, k)
        with torch.no_grad():
            for layer in (self.conv1, self.conv2, self.readout):
                layer.weight.mul_(gain)
        self.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv2(torch.tanh(self.conv1(x))))
        return self.readout(F.adaptive_avg_pool2d(h, 2).flatten(1))


def _standardise(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean()) / x.std()


def semeion_images(n: int, root: Optional[str] = None, seed: int = 0) -> torch.Tensor:
    """``n`` Semeion training digits, 16×16 averaged to 8×8, standardised, float64, shape (n, 1, 8, 8).

    Raises :class:`~dynamics.data.DataMissingError` when the data root (default ``$DYNAMICS_DATA``) lacks them.
    """
    x, _ = load_dataset("semeion", split="train", root=root)
    if not 1 <= n <= x.shape[0]:
        raise InputError(f"n must be between 1 and {x.shape[0]} Semeion training images, got {n}")
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return _standardise(F.avg_pool2d(x[idx].double().reshape(n, 1, 16, 16), 2))


def synthetic_images(n: int, seed: int = 0) -> torch.Tensor:
    """Smooth random 8×8 images (Gaussian noise blurred by a 3×3 mean), standardised: the stand-in when no
    data is available. Shape (n, 1, 8, 8), float64.

    >>> synthetic_images(3).shape
    torch.Size([3, 1, 8, 8])
    """
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, 1, 10, 10, generator=gen, dtype=torch.float64)
    return _standardise(F.avg_pool2d(noise, 3, stride=1))


def teacher_targets(x: torch.Tensor, width: int, k: int, seed: int = 0, gain: float = GAIN) -> torch.Tensor:
    """Targets Y = T(x) of an independent teacher :class:`PracticalCNN` (``width``, ``k``, ``gain``; seed
    1000 + ``seed``). For a student narrower than ``width`` they are not reachable in general.

    >>> teacher_targets(synthetic_images(4), 8, 2).shape
    torch.Size([4, 2])
    """
    with torch.no_grad():
        return PracticalCNN(width, k, seed=1000 + seed, gain=gain)(x)


def planted_teacher(student: nn.Module, rel: float = PLANTED_REL, seed: int = 0) -> nn.Module:
    """A copy of ``student`` with every parameter tensor q moved by ``rel``·‖q‖ in a Gaussian direction
    (generator seed 99 + ``seed``): a teacher of the same architecture, so its outputs are reachable targets.

    >>> s = PracticalCNN(2, 2, seed=1)
    >>> t = planted_teacher(s, 0.5)
    >>> round(float((t.conv1.weight - s.conv1.weight).detach().norm() / s.conv1.weight.detach().norm()), 6)
    0.5
    """
    if not rel > 0:
        raise InputError(f"rel must be positive, got {rel!r}")
    teacher = copy.deepcopy(student)
    gen = torch.Generator().manual_seed(99 + seed)
    with torch.no_grad():
        for q in teacher.parameters():
            d = torch.randn(q.shape, generator=gen, dtype=q.dtype)
            q.add_(rel * float(q.norm()) / float(d.norm()) * d)
    return teacher


@dataclass
class SGDRun:
    """One SGD run: the final model, the loss L = ½‖f − Y‖² (sum), ½dist(Y, Col J)² and ‖∇L‖ at the
    recorded steps, the CPU seconds of the training (excluding the measurements)."""

    model: nn.Module
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    half_dist2: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0
    settings: dict = field(default_factory=dict)


def _loss_and_grad_norm(model: nn.Module, x, y) -> tuple[float, float]:
    model.zero_grad()
    loss = 0.5 * ((model(x) - y) ** 2).sum()
    loss.backward()
    g = torch.sqrt(sum((q.grad ** 2).sum() for q in model.parameters()))
    model.zero_grad()
    return float(loss.detach()), float(g)


def train_sgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = STEPS, lr: float = LR,
              momentum: float = 0.9, records: int = 10, final_lr: float = FINAL_LR) -> SGDRun:
    """Full-batch SGD with (heavy-ball) momentum on the mean loss ½‖f − Y‖²/n, cosine decay to ``final_lr``·lr
    (1.0: constant).

    At ``records`` evenly spaced steps (and step 0) records L, ½dist(Y, Col J)² (dense J, float64) and ‖∇L‖
    of the summed loss. ``model`` is trained in place and returned in the run.
    """
    if not isinstance(steps, int) or steps < 1 or not lr > 0 or not 0 <= momentum < 1 or not 0 < final_lr <= 1:
        raise InputError(f"need steps ≥ 1, lr > 0, 0 ≤ momentum < 1, 0 < final_lr ≤ 1; got {steps!r}, {lr!r}, "
                         f"{momentum!r}, {final_lr!r}")
    n = x.shape[0]
    run = SGDRun(model, settings={"steps": steps, "lr": lr, "momentum": momentum,
                                  "schedule": f"cosine to {final_lr:g}·lr"})
    marks = sorted({0, steps, *[round(steps * i / max(records, 1)) for i in range(1, records)]})
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * final_lr)

    def record(step: int) -> None:
        loss, g = _loss_and_grad_norm(model, x, y)
        r = check_alignment(model, x, y, method="dense", dtype=torch.float64).residual
        run.steps.append(step)
        run.losses.append(loss)
        run.grad_norms.append(g)
        run.half_dist2.append(0.5 * r * r * float((y ** 2).sum()))

    record(0)
    cpu = 0.0
    for step in range(1, steps + 1):
        start = time.process_time()
        opt.zero_grad()
        (0.5 * ((model(x) - y) ** 2).sum() / n).backward()
        opt.step()
        sched.step()
        cpu += time.process_time() - start
        if step in marks:
            record(step)
    run.cpu_seconds = cpu
    return run


def _quantities(rep: StatementReport, run: SGDRun, alignment, y: torch.Tensor) -> dict:
    q = dict(rep.quantities)
    half_y2 = 0.5 * float((y ** 2).sum())
    q.update(r_dense=alignment.residual, r_upper=alignment.residual_upper,
             r_init=(run.half_dist2[0] / half_y2) ** 0.5, L_init_rel=run.losses[0] / half_y2,
             cpu_s=round(run.cpu_seconds, 1), steps=run.settings["steps"])
    return q


def _limit_note(rep: StatementReport, grad_tol: float) -> str:
    rel = rep.quantities["rel_grad"]
    return ("limit reached" if rel <= grad_tol else
            f"NOT CONVERGED: ‖∇L‖/(σ_max‖Y‖) = {rel:.3g} > grad_tol {grad_tol:g}, so this is not a limit")


def _sgd_setting(steps: int, lr: float, final_lr: float) -> str:
    return f"full-batch SGD momentum 0.9 lr {lr:g} cosine to {final_lr * lr:g}, {steps} steps, gain {GAIN:g}"


def demo_reachable(x: torch.Tensor, data: str, k: int = 2, width: int = 3, control_width: int = 8,
                   steps: int = STEPS, lr: float = LR, final_lr: float = FINAL_LR, planted_rel: float = PLANTED_REL,
                   seed: int = 0, grad_tol: float = GRAD_TOL, rtol: float = RTOL
                   ) -> tuple[list[StatementReport], dict[str, SGDRun]]:
    """(a) The planted (reachable) run and the control (module docstring). Returns the rows (global minimum on
    reachable targets, identity at the control's limit, global-minimum control) and the runs by name."""
    n = x.shape[0]
    if width * (10 + 9 * width + 1 + 4 * k) + k >= n * k:
        raise InputError(f"width {width} has p ≥ n·k = {n * k}: not the practical regime; use more images")
    rows, runs = [], {}
    for kind in ("reachable", "control"):
        student = PracticalCNN(width, k, seed=seed + 1, gain=GAIN)
        if kind == "reachable":
            with torch.no_grad():
                y = planted_teacher(student, planted_rel, seed)(x)
            teacher = (f"planted teacher: the student's initialisation moved by {planted_rel:g} of each tensor's "
                       f"norm (same architecture: reachable)")
        else:
            y = teacher_targets(x, control_width, k, seed=seed)
            teacher = f"independent teacher of width {control_width} (wider: not reachable)"
        run = train_sgd(student, x, y, steps=steps, lr=lr, final_lr=final_lr)
        runs[kind] = run
        align = check_alignment(run.model, x, y, method="dense", dtype=torch.float64, rtol=rtol,
                                expected=kind == "reachable", control=kind == "control")
        setting = (f"{data} n={n}, CNN 1-{width}-{width} tanh + pool + linear k={k}, {teacher}, "
                   f"{_sgd_setting(steps, lr, final_lr)}")
        claims = ("global_minimum",) if kind == "reachable" else ("identity", "global_minimum")
        for claim in claims:
            expected = not (kind == "control" and claim == "global_minimum")
            rep = check_sufficiency(run.model, x, y, grad_tol=grad_tol, rtol=rtol, claim=claim, setting=setting,
                                    expected=expected)
            rep.name += " (SGD, practical)"
            rep.quantities = _quantities(rep, run, align, y)
            rep.notes = (f"{_limit_note(rep, grad_tol)}; r at θ₀ {rep.quantities['r_init']:.3g} → "
                         f"{rep.quantities['r']:.3g} at the end; {rep.notes}")
            if not expected:
                rep.notes = "control: targets not reachable, r > 0 at the limit, so L = 0 must fail; " + rep.notes
            rep.series = {"steps": run.steps, "losses": run.losses, "half_dist2": run.half_dist2,
                          "grad_norms": run.grad_norms}
            rows.append(rep)
    return rows, runs


def demo_width_sweep_sgd(x: torch.Tensor, data: str, k: int = 2, teacher_width: int = 8,
                         widths: Sequence[int] = (1, 2, 3), steps: int = STEPS, lr: float = LR,
                         final_lr: float = FINAL_LR, seed: int = 0, grad_tol: float = GRAD_TOL,
                         rtol: float = RTOL) -> StatementReport:
    """(b) Per width: L_T vs ½dist(Y, Col J(θ_T))² after the same SGD; holds when every run is a limit and
    every gap is within ``rtol``·½‖Y‖² (the residual at convergence predicts the final loss)."""
    y = teacher_targets(x, teacher_width, k, seed=seed)
    half_y2 = 0.5 * float((y ** 2).sum())
    series: dict[str, list] = {"widths": [], "p": [], "L_T": [], "half_dist2": [], "rel_grad": [], "rank": [],
                               "cpu_s": [], "losses": [], "half_dist2_steps": [], "steps": []}
    ok, trivial = True, False
    for w in widths:
        run = train_sgd(PracticalCNN(w, k, seed=seed + 1, gain=GAIN), x, y, steps=steps, lr=lr,
                        final_lr=final_lr)
        rep = check_sufficiency(run.model, x, y, grad_tol=grad_tol, rtol=rtol, claim="identity")
        q = rep.quantities
        ok = ok and rep.holds
        trivial = trivial or q["rank"] == q["nk"]
        for key, val in (("widths", w), ("p", q["p"]), ("L_T", q["L"]), ("half_dist2", q["half_dist2"]),
                         ("rel_grad", q["rel_grad"]), ("rank", q["rank"]), ("cpu_s", round(run.cpu_seconds, 1)),
                         ("losses", run.losses), ("half_dist2_steps", run.half_dist2), ("steps", run.steps)):
            series[key].append(val)
    gaps = [abs(a - b) / half_y2 for a, b in zip(series["L_T"], series["half_dist2"])]
    worst = max(series["rel_grad"])
    q = {"p": series["p"], "nk": x.shape[0] * k, "rank": series["rank"], "L_T_rel": [v / half_y2 for v in
         series["L_T"]], "half_dist2_rel": [v / half_y2 for v in series["half_dist2"]], "gap_rel": gaps,
         "rel_grad": series["rel_grad"], "max_gap_rel": max(gaps), "max_rel_grad": worst}
    note = ("every width at a limit" if worst <= grad_tol else
            f"NOT CONVERGED: largest ‖∇L‖/(σ_max‖Y‖) = {worst:.3g} > grad_tol {grad_tol:g}")
    return StatementReport("5", "width sweep (SGD, practical)",
                           f"{data} n={x.shape[0]}, CNN widths {list(widths)} on an independent width-{teacher_width} "
                           f"teacher, k={k}, {_sgd_setting(steps, lr, final_lr)}", q,
                           {"grad_tol": grad_tol, "rtol": rtol}, ok,
                           notes=note + "; L_T vs ½dist(Y, Col J(θ_T))² per width, relative to ½‖Y‖²",
                           series=series, trivial=trivial)


def demo_practical(root: Optional[str] = None, n: int = 100, seed: int = 0, quick: bool = False
                   ) -> list[StatementReport]:
    """All practical rows on ``n`` Semeion images (raises DataMissingError when absent); ``quick``: fewer
    steps (same checks, same tolerances)."""
    x = semeion_images(n, root, seed)
    steps = 1500 if quick else STEPS
    rows, _ = demo_reachable(x, "Semeion", steps=steps, seed=seed)
    rows.append(demo_width_sweep_sgd(x, "Semeion", teacher_width=8, steps=steps, seed=seed))
    return rows
