"""Write the theory notebooks 01–07 (one per statement of THEORY.md) and 08 (the practical regime under SGD),
outputs empty, from the cells below.

Usage: ``python notebooks/build.py`` (rewrites ``notebooks/0*_*.ipynb``). The notebooks only call
:mod:`theory` and :mod:`figures`; they hold no numerics of their own. ``tests/test_notebooks.py`` executes them.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

PREAMBLE = """%matplotlib inline
QUICK = True  # the smaller runs of theory.demos (same checks, same tolerances); False for the full ones"""

SOURCE = "*Statements derived from the definitions in Kawaguchi, Zhang & Deng (2022); see `THEORY.md`.*"

TRIVIAL = ("**Reading the rows.** Each row says whether it could have failed: `trivial` is yes when the verdict "
           "is implied without the hypothesis (rank J = n·k, so P = I and every target lies in Col J; or an identity "
           "true by construction), and a *control* is a case built so that the statement must fail. A trustworthy "
           "check has a non-trivial row that holds and a control that fails.")

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    "01_loss_decomposition": [
        ("md", "# Statement 1: the loss decomposition\n\n" + SOURCE + "\n\n"
               "**Statement.** Let P(θ) be the orthogonal projector onto Col J(θ). If the model has the on-model "
               "structure, f_X(θ) = J_S θ_S ∈ Col J(θ), so f_X − Y = P(f_X − Y) − (I − P)Y with orthogonal "
               "parts, and for every θ\n\n"
               "$$L(\\theta) = \\tfrac12\\|P(f_X - Y)\\|^2 + \\tfrac12\\|(I-P)Y\\|^2 .$$\n\n"
               "The second term does not depend on how well the model fits inside Col J: it is the part of the "
               "loss no movement along Col J(θ) can remove."),
        ("md", "**Setup.** (a) Random θ on a small ResNet with BatchNorm in eval mode: with J over all 19,579 "
               "parameters on 6 images (rank J = nk = 18: trivial, and the table says so), and with J over the "
               "read-out on 60 images (p = 99 < nk = 180: non-trivial). "
               "(b) Every 150 steps of full-batch gradient descent on an MLP 3-4-4-2 (tanh) with n = 40 teacher "
               "targets (nk = 80 > p = 46, so the second term is not zero). (c) A control: a sigmoid head breaks "
               "the assumption (f_X ∉ Col J), and the identity must fail. (d) The exact identity in sympy.\n\n"
               + TRIVIAL),
        ("code", PREAMBLE),
        ("code", "from theory.report import format_table\n"
                 "from theory.demos import demo_controls, demo_random_points, demo_trajectory\n"
                 "from theory.symbolic import decomposition_identity, euler_identity\n\n"
                 "print(format_table(demo_random_points()))"),
        ("code", "trajectory = demo_trajectory(quick=QUICK)\nprint(trajectory[0])"),
        ("code", "control = demo_controls()[0]\nprint(control)"),
        ("code", "for proof in (euler_identity(), euler_identity(1, 1, head='sigmoid'), decomposition_identity()):\n"
                 "    print(proof)"),
        ("code", "from figures.loss_decomposition import plot\nplot(trajectory[0])"),
    ],
    "02_gradient_bound": [
        ("md", "# Statement 2: the gradient bound\n\n" + SOURCE + "\n\n"
               "**Statement.** With σ₊ the smallest non-zero singular value of J(θ), under the on-model structure\n\n"
               "$$\\tfrac12\\|(I-P)Y\\|^2 \\le L(\\theta) \\le \\tfrac12\\|(I-P)Y\\|^2 + "
               "\\frac{\\|\\nabla L(\\theta)\\|^2}{2\\sigma_+^2}.$$\n\n"
               "The lower side is statement 1; the upper side holds because ∇L = JᵀP(f_X − Y) and ‖Jᵀu‖ ≥ σ₊‖u‖ "
               "on Col J. Along any dynamics with ‖∇L‖ → 0, L approaches ½ dist(Y, Col J(θ_t))²."),
        ("md", "**Setup.** The gradient-descent run of notebook 01, checked at every recorded step. Control: a "
               "sigmoid head with targets Y := f_X(θ): L = 0 but ½‖(I − P)Y‖² > 0, so the lower side fails. The "
               "gradient in the bound, Jᵀ(f_X − Y), is checked against an independent autograd gradient of L "
               "(a sign error there is caught).\n\n" + TRIVIAL),
        ("code", PREAMBLE),
        ("code", "from theory.demos import demo_controls, demo_trajectory\n"
                 "bound = demo_trajectory(quick=QUICK)[1]\nprint(bound)"),
        ("code", "print(demo_controls()[1])"),
        ("code", "from figures.gradient_bound import plot\nplot(bound)"),
    ],
    "03_sufficiency": [
        ("md", "# Statement 3: sufficiency — the loss at critical points\n\n" + SOURCE + "\n\n"
               "**Statement.** At a critical point θ̄, Jᵀ(f_X − Y) = 0, so f_X − Y ⊥ Col J(θ̄); with f_X ∈ Col J "
               "this forces f_X = PY and\n\n"
               "$$L(\\bar\\theta) = \\tfrac12\\,\\mathrm{dist}(Y, \\mathrm{Col}\\,J(\\bar\\theta))^2 .$$\n\n"
               "If alignment holds there (Y ∈ Col J(θ̄), r = 0) the critical point is a global minimum, L = 0; "
               "if it fails, training stalls on a plateau at exactly that height."),
        ("md", "**Setup.** L-BFGS in float64 to a numerical critical point (‖∇L‖/(σ_max‖Y‖) ≤ 1e-6), all in the "
               "practical regime p < nk. A teacher-student MLP 3-3-1 (p = 16) on n = 30: from one initialisation "
               "it reaches the teacher (aligned although rank J = 16 < 30, L = 0); from another the *same* "
               "optimiser stops at a critical point with r > 0, where L = ½dist² > 0: sufficiency without its "
               "hypothesis, the control. A width-1 tanh bottleneck and the width-1 ReLU chain on n = 30 "
               "(rank J ≤ 6 < nk): plateaus at exactly ½dist².\n\n" + TRIVIAL),
        ("code", PREAMBLE),
        ("code", "from theory.demos_critical import demo_plateau, demo_sufficiency\n"
                 "from theory.report import format_table\n"
                 "aligned, control = demo_sufficiency(quick=QUICK)\nplateaus = demo_plateau(quick=QUICK)\n"
                 "print(format_table([aligned] + plateaus + [control]))"),
        ("code", "from figures.plateau import plot\nplot([aligned] + plateaus)"),
    ],
    "04_necessity": [
        ("md", "# Statement 4: necessity — zero loss implies alignment\n\n" + SOURCE + "\n\n"
               "**Statement.** Under the on-model structure, any θ with f_X(θ) = Y has Y = J_S θ_S ∈ Col J(θ): "
               "every zero-loss solution is aligned (r(θ) = 0)."),
        ("md", "**Setup.** Five teacher-student data sets (MLP 3-3-1, p = 16 < nk = 30) trained by L-BFGS to zero "
               "loss; r at each solution, against the bound r ≤ ‖f_X − Y‖/‖Y‖ that the statement gives (the "
               "tolerance follows the fit that was reached). rank J < nk, so alignment is not implied by the rank. "
               "Control: a sigmoid-head MLP with Y := f_X(θ) fits exactly but is not aligned.\n\n" + TRIVIAL),
        ("code", PREAMBLE),
        ("code", "from theory.demos import demo_controls\nfrom theory.demos_critical import demo_necessity\n"
                 "solutions = demo_necessity(quick=QUICK)\ncontrol = demo_controls()[2]\n"
                 "print(solutions)\nprint(control)"),
        ("code", "from figures.necessity import plot\nplot([solutions, control])"),
    ],
    "05_width_helps": [
        ("md", "# Statement 5: when a wider network helps\n\n" + SOURCE + "\n\n"
               "**Statement.** Embed a network in a wider one by new hidden units with zero outgoing weights "
               "(arbitrary incoming weights). The function is the same, the old Jacobian columns are unchanged "
               "and new ones are added: Col J ⊆ Col J̃. So r and the lower bound ½ dist(Y, Col J)² can only "
               "fall, and so can the loss at the next critical point reached from there."),
        ("md", "**Setup.** MLP 3-w-1 (tanh), n = 20. Train width 1 to a critical point, embed in width 2, "
               "measure, train on, embed in width 3, … up to 8 (rank J reaches nk = 20). While rank J < nk a generic "
               "widening must add rank. Control: widening the second layer of a width-1 ReLU chain adds only "
               "dependent columns (every later unit sees the scalar relu(w_1ᵀx) and is 1-homogeneous in it), so "
               "that claim must fail.\n\n" + TRIVIAL),
        ("code", PREAMBLE),
        ("code", "from theory.demos import demo_width_sweep\nfrom theory.report import format_table\n"
                 "embedding, sweep, control = demo_width_sweep(quick=QUICK)\n"
                 "print(format_table([embedding, sweep, control]))"),
        ("code", "from figures.width_sweep import plot\nplot(sweep)"),
    ],
    "06_depth_does_not_help": [
        ("md", "# Statement 6: when a deeper network does not help\n\n" + SOURCE + "\n\n"
               "**Statement.** The width-1 bias-free ReLU chain f = w_L relu(w_{L−1} ⋯ relu(w_1ᵀx)) is "
               "1-homogeneous in each scalar weight, so ∂f_X/∂w_l = f_X/w_l for l ≥ 2, and f_X lies in the span "
               "of the d_x first-layer columns: rank J ≤ d_x for every depth (d_x + 1 with a first-layer bias). "
               "Duplicated neurons add parameters and dependent columns. The measure is dim Col J, not p."),
        ("md", "**Setup.** Chains of depth 1–10 on n = 24 Gaussian inputs for d_x ∈ {2, 3, 5} (and 3 with a "
               "bias); an MLP with one hidden unit duplicated; the exact identities in sympy. Control: the chain with "
               "its first layer widened to 2 units is no bottleneck, and its rank exceeds d_x.\n\n" + TRIVIAL),
        ("code", PREAMBLE),
        ("code", "from theory.demos import demo_depth\nfrom theory.report import format_table\n"
                 "reports = demo_depth()\nprint(format_table(reports))"),
        ("code", "from theory.symbolic import chain_rank_identity\n"
                 "for depth in (2, 3, 4):\n    print(chain_rank_identity(depth, 2, 3))"),
        ("code", "from figures.depth_rank import plot\nplot([r for r in reports if r.name == 'depth does not help'])"),
    ],
    "07_beyond_ntk": [
        ("md", "# Statement 7: beyond the NTK regime\n\n" + SOURCE + "\n\n"
               "**Statement.** Nothing in statements 1–4 assumes that J(θ_t) stays at J(θ_0). Along real "
               "training the empirical NTK Θ = J Jᵀ moves (kernel distance "
               "1 − ⟨Θ_0, Θ_t⟩/(‖Θ_0‖‖Θ_t‖) clearly above 0), r(θ_t) changes, and statements 1–2 still hold "
               "at every step."),
        ("md", "**Setup.** The gradient-descent run of notebook 01 (MLP 3-4-4-2 tanh, lr = 0.5/λ_max(Θ_0)); "
               "the kernel on the training inputs. Then two runs to their limit (momentum gradient descent, then "
               "L-BFGS from where it stopped) whose kernel moves by ≥ 0.1: a student on a realisable teacher, whose "
               "limit is aligned (r ≈ 0, loss ≈ 0), and one on a noisy teacher, whose limit is not (loss = "
               "½dist(Y, Col J(θ_T))² > 0): the limit's own r decides the final loss. Control: the frozen-kernel "
               "(NTK) prediction ½dist(Y, Col J(θ_0))² misses the final loss.\n\n" + TRIVIAL),
        ("code", PREAMBLE),
        ("code", "from theory.demos import demo_trajectory\nbeyond = demo_trajectory(quick=QUICK)[2]\nprint(beyond)"),
        ("code", "from theory.demos_limits import demo_limits\nfrom theory.report import format_table\n"
                 "print(format_table(demo_limits(quick=QUICK)))"),
        ("code", "from figures.beyond_ntk import plot\nplot(beyond)"),
    ],
    "08_practical_regime": [
        ("md", "# The practical regime under SGD: a small CNN on real images, p < n·k\n\n" + SOURCE + "\n\n"
               "**Question.** Statements 3 and 5 on a real architecture trained by SGD (not L-BFGS), where J "
               "cannot have full row rank. (a) A student on targets that a teacher of the *same* architecture "
               "produces from the images (reachable): if training reaches a limit with L ≈ 0, alignment holds there "
               "(r ≈ 0) although rank J ≤ p < n·k, and r had to fall from its clearly positive value at θ₀. The "
               "control: the same student on a wider teacher's targets (not reachable) ends at a limit with r > 0 "
               "and L = ½dist(Y, Col J(θ_T))² > 0. (b) A width sweep: at convergence the residual predicts the "
               "final loss, L_T = ½dist(Y, Col J(θ_T))², width by width."),
        ("md", "**Setup.** `theory.practical.PracticalCNN`: conv3×3(1→c) → tanh → conv3×3(c→c) → tanh → average "
               "pool to 2×2 → Linear(4c → k), float64, weights at twice PyTorch's default scale; c = 3, k = 2: "
               "p = 140 < n·k = 200 with n = 100 Semeion digits (16×16 averaged to 8×8, standardised; from "
               "`$DYNAMICS_DATA`, synthetic smooth images when it is unset). The reachable targets come from a "
               "*planted* teacher: the student's initialisation with every tensor moved by half its norm in a "
               "random direction. With an independent same-width teacher, SGD ended at misaligned critical points "
               "from four of five initialisations (measured; `theory/practical.py` says how): statement 3 allows "
               "that, and the planted teacher starts the student in the global minimum's basin instead. "
               "Full-batch SGD, momentum 0.9, lr 0.2, cosine decay to 0.04, 12,000 steps. r by "
               "`dynamics.check_alignment(method='dense')`. A row calls the end a *limit* only when "
               "‖∇L‖/(σ_max‖Y‖) ≤ 1e-4; L ≈ 0 means L/(½‖Y‖²) ≤ 1e-3. A run that did not get there says "
               "NOT CONVERGED and its row fails (NO): with `QUICK = True` (1,500 steps) the runs stop short and "
               "say so; set `QUICK = False` for the measured rows (about 90 s on one core).\n\n"
               + TRIVIAL),
        ("code", PREAMBLE + "\nfrom theory.practical import STEPS as FULL_STEPS\nSTEPS = 1500 if QUICK else FULL_STEPS"),
        ("code", "import os\nfrom dynamics.data import DataMissingError\n"
                 "from theory.practical import demo_reachable, demo_width_sweep_sgd, semeion_images, "
                 "synthetic_images\nfrom theory.report import format_table\n\n"
                 "try:\n    x, data = semeion_images(100, os.environ.get('DYNAMICS_DATA')), 'Semeion'\n"
                 "except DataMissingError as exc:\n"
                 "    print(f'Semeion not available ({exc}); synthetic images instead')\n"
                 "    x, data = synthetic_images(100), 'synthetic'\n"
                 "rows, runs = demo_reachable(x, data, steps=STEPS)\nprint(format_table(rows))"),
        ("code", "sweep = demo_width_sweep_sgd(x, data, steps=STEPS)\nprint(sweep)"),
        ("code", "import matplotlib.pyplot as plt\n"
                 "fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))\n"
                 "for (name, run), c in zip(runs.items(), ['tab:blue', 'tab:orange']):\n"
                 "    axes[0].plot(run.steps, run.losses, '-', color=c, label=f'{name}: L')\n"
                 "    axes[0].plot(run.steps, run.half_dist2, '--', color=c, label=f'{name}: ½dist²')\n"
                 "    axes[1].plot(run.steps, run.grad_norms, '-', color=c, label=name)\n"
                 "axes[0].set(yscale='log', xlabel='SGD step', title='L and ½dist(Y, Col J(θ_t))²')\n"
                 "axes[1].set(yscale='log', xlabel='SGD step', title='‖∇L‖')\n"
                 "s = sweep.series\n"
                 "axes[2].loglog(s['half_dist2'], s['L_T'], 'o')\n"
                 "for w, a, b in zip(s['widths'], s['half_dist2'], s['L_T']):\n"
                 "    axes[2].annotate(f'c={w}', (a, b))\n"
                 "lo, hi = min(s['half_dist2'] + s['L_T']), max(s['half_dist2'] + s['L_T'])\n"
                 "axes[2].plot([lo, hi], [lo, hi], 'k:', lw=1)\n"
                 "axes[2].set(xlabel='½dist(Y, Col J(θ_T))²', ylabel='L_T', title='width sweep: L_T vs ½dist²')\n"
                 "for ax in axes[:2]:\n    ax.legend(fontsize=7)\nfig.tight_layout()"),
    ],
}


def build(folder: Path = HERE) -> list[Path]:
    """Write every notebook into ``folder``; returns the paths."""
    paths = []
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=[new_markdown_cell(src) if kind == "md" else new_code_cell(src)
                                 for kind, src in cells])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        path = folder / f"{name}.ipynb"
        nbformat.write(nb, path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in build():
        print(p)
