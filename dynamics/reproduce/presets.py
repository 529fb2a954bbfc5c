"""The reproduction presets: the paper's protocol (``paper``) and a CPU-sized reduction of it (``cpu``).

``paper`` follows the protocol described for the paper's experiments (THEORY.md, "Experiments the paper
reports"): PreActResNet-18; SGD with lr 0.01, momentum 0.9, weight decay 1e-4, batch 64, cross-entropy;
50 epochs without augmentation and 200 with it; 5 seeds (0-4); both with and without augmentation; Semeion
on its fixed seeded 1000 / 593 split. Choices the protocol leaves open, fixed here and stated in every table
caption:

* step schedule, lr ×0.1 at 50 % and 75 % of the epochs: epochs 25 and 37 of 50, 100 and 150 of 200;
* the modified runs switch at τ = 60 % of the epochs (τ = 30 of 50, 120 of 200): the base algorithm has gone
  through its first lr decay and learned a representation, and phase 2 keeps 40 % of the same total budget;
* the feature construction of the modified framework is ``"auto"``; probes every 10 % of the epochs on 64
  fixed training points; test metrics every epoch (for the curves; no model selection on the test set).

``cpu`` keeps everything above except (the exact reductions, also listed in :attr:`Preset.reductions` and in
the table caption):

* model ``resnet_small`` (CIFAR ResNet-8, stage widths 8/16/32, BatchNorm, 19 810 parameters on MNIST) instead
  of PreActResNet-18 (11.2 M);
* 15 epochs instead of 50 (lr ×0.1 at epochs 7 and 11, τ = 9), except Semeion, which is cheap and keeps the
  paper's 50 epochs (lr ×0.1 at 25 and 37, τ = 30);
* without augmentation only;
* 3 seeds (0, 1, 2) instead of 5;
* datasets MNIST and Semeion by default; MNIST trains on a seeded subset of 10 000 of its 60 000
  training images, drawn from the run's seed and shared by the base and modified runs of that seed (tested on
  the full 10 000 test images), Semeion on its full 1000 / 593 split; probes every
  3 epochs (Semeion: 10).

Why the MNIST subset: with the full training set a 15-epoch MNIST run took about 20 min (base) and 35 min
(modified) per seed on this 2-core machine under load, about 2.5-3 h for the preset. With 10 000 images the
whole preset (12 runs) fits in well under an hour, and the modified runs keep the feature construction with an
exact certificate (a Gaussian kernel centred at every training point, strictly positive definite on distinct
points; "auto" switches to nearest-label features above about 14 000 points, see docs/framework.md). The
measured wall time of every run is stored in its summary and in ``results/``. Semeion epochs take about 0.2 s.

>>> [name for name, _ in preset_config_dicts("cpu", ["semeion"])][:2]
['semeion-noaug-base-seed0', 'semeion-noaug-modified-seed0']
>>> d = dict(preset_config_dicts("paper", ["mnist"], augment=[True], seeds=[0]))["mnist-aug-modified-seed0"]
>>> d["epochs"], d["milestones"], d["tau"], d["model"]
(200, [100, 150], 120, 'preact_resnet18')
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from dynamics.data.catalogue import PAPER_ORDER
from dynamics.errors import ConfigError
from dynamics.training.config import TrainConfig

__all__ = ["Preset", "PRESETS", "CPU_MODEL", "PAPER_MODEL", "preset_configs",
           "preset_config_dicts", "get_preset", "run_name"]

#: The paper's architecture and the CPU preset's small ResNet (names in :func:`dynamics.models.available`).
PAPER_MODEL = "preact_resnet18"
CPU_MODEL = "resnet_small"


@dataclass(frozen=True)
class Preset:
    """A reproduction protocol: which runs to make and with which ``TrainConfig`` fields.

    ``epochs`` / ``epochs_augmented`` are the budgets without / with augmentation (``dataset_epochs``
    overrides the former per dataset); milestones and τ are the
    fractions ``milestone_fractions`` / ``tau_fraction`` of that budget (floored, at least 1). ``reductions``
    lists, in words, how the preset departs from the paper protocol (empty for ``paper``); they go into the
    table caption.
    """

    name: str
    description: str
    model: str
    model_options: dict[str, Any] = field(default_factory=dict)
    epochs: int = 50
    epochs_augmented: int = 200
    augment: tuple[bool, ...] = (False, True)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    datasets: tuple[str, ...] = PAPER_ORDER
    milestone_fractions: tuple[float, ...] = (0.5, 0.75)
    tau_fraction: float = 0.6
    probe_fraction: float = 0.1
    fixed: dict[str, Any] = field(default_factory=dict)
    train_subset: dict[str, int] = field(default_factory=dict)
    dataset_epochs: dict[str, int] = field(default_factory=dict)
    device: str = "cpu"
    reductions: tuple[str, ...] = ()

    def budget(self, augment: bool, dataset: str | None = None) -> int:
        """Total epochs with or without augmentation (``dataset_epochs`` overrides the no-augmentation budget)."""
        if augment:
            return self.epochs_augmented
        return self.dataset_epochs.get(dataset, self.epochs) if dataset is not None else self.epochs

    def milestones(self, epochs: int) -> list[int]:
        """Epochs at whose end the lr is multiplied by 0.1, e.g. ``[25, 37]`` for 50 epochs."""
        return sorted({max(1, int(f * epochs)) for f in self.milestone_fractions})

    def tau(self, epochs: int) -> int:
        """The switch epoch τ of the modified runs, e.g. 30 for 50 epochs (never the last epoch)."""
        return min(max(1, int(self.tau_fraction * epochs)), epochs - 1)

    def probe_every(self, epochs: int) -> int:
        return max(1, int(round(self.probe_fraction * epochs)))

    def caption(self) -> str:
        """What the preset runs, in one paragraph, for the table caption."""
        text = (f"Preset '{self.name}': {self.description}. Base and modified runs share the budget; the "
                f"modified runs switch at tau = {int(self.tau_fraction * 100)}% of the epochs; "
                f"lr x0.1 at {', '.join(f'{int(f * 100)}%' for f in self.milestone_fractions)} of the epochs.")
        if self.reductions:
            text += " Reductions from the paper protocol: " + "; ".join(self.reductions) + "."
        return text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return self.caption()


_BASE_FIELDS: dict[str, Any] = {
    "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4, "batch_size": 64,
    "schedule": "step", "gamma": 0.1, "loss": "ce", "features": "auto", "probe_size": 64, "eval_every": 1,
}

PRESETS: dict[str, Preset] = {
    "paper": Preset(
        name="paper",
        description=("PreActResNet-18, SGD lr 0.01, momentum 0.9, weight decay 1e-4, batch 64, 50 epochs "
                     "without augmentation and 200 with it, 5 seeds"),
        model=PAPER_MODEL,
        fixed=dict(_BASE_FIELDS),
        device="cuda",
    ),
    "cpu": Preset(
        name="cpu",
        description=("CIFAR ResNet-8 with widths 8/16/32 (resnet_small), SGD lr 0.01, momentum 0.9, weight decay "
                     "1e-4, batch 64, without augmentation, 15 epochs (Semeion: the paper's 50), 3 seeds"),
        model=CPU_MODEL,
        epochs=15,
        epochs_augmented=15,
        dataset_epochs={"semeion": 50},
        augment=(False,),
        seeds=(0, 1, 2),
        datasets=("mnist", "semeion"),
        probe_fraction=0.2,
        fixed=dict(_BASE_FIELDS),
        device="cpu",
        train_subset={"mnist": 10000},
        reductions=("resnet_small (ResNet-8, widths 8/16/32) instead of PreActResNet-18",
                    "MNIST: a seeded subset of 10,000 of the 60,000 training images per seed (full test set)",
                    "15 epochs instead of 50 (except Semeion, which keeps 50)", "no augmentation runs",
                    "3 seeds instead of 5",
                    "MNIST and Semeion by default"),
    ),
}


def get_preset(preset: str | Preset) -> Preset:
    """The :class:`Preset` named ``preset`` (or ``preset`` itself); :class:`ConfigError` if unknown."""
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}") from None


def run_name(dataset: str, augment: bool, modified: bool, seed: int) -> str:
    """The run directory name, e.g. ``mnist-noaug-modified-seed3``."""
    return f"{dataset}-{'aug' if augment else 'noaug'}-{'modified' if modified else 'base'}-seed{seed}"


def preset_config_dicts(preset: str | Preset, datasets: Sequence[str] | None = None,
                        augment: Sequence[bool] | None = None, seeds: Sequence[int] | None = None,
                        device: str | None = None, data_root: str | None = None) -> list[tuple[str, dict]]:
    """The preset's runs as ``(run_name, TrainConfig field dict)`` pairs, without importing training.

    Order: dataset, augmentation (without first), seed, then base before modified, so an interrupted
    reproduction has complete base/modified pairs for the first seeds.

    Args:
        preset: a name in :data:`PRESETS` or a :class:`Preset`.
        datasets: subset of datasets (default: the preset's); unknown names raise :class:`ConfigError`.
        augment: which augmentation conditions, e.g. ``[False]`` (default: the preset's).
        seeds: which seeds (default: the preset's).
        device, data_root: written into every config (default: the preset's device, no root).
    """
    p = get_preset(preset)
    datasets = list(p.datasets if datasets is None else datasets)
    if isinstance(preset, str) or preset.name in PRESETS:
        unknown = [d for d in datasets if d not in PAPER_ORDER]
        if unknown:
            raise ConfigError(f"unknown dataset(s) {unknown} for preset {p.name!r}; "
                              f"choose from {', '.join(PAPER_ORDER)}")
    if not datasets:
        raise ConfigError("no datasets selected; pass at least one, e.g. --datasets mnist")
    augment = list(p.augment if augment is None else augment)
    seeds = list(p.seeds if seeds is None else seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be a non-empty list of distinct integers, got {seeds}")
    out: list[tuple[str, dict]] = []
    for dataset in dict.fromkeys(datasets):
        for aug in dict.fromkeys(bool(a) for a in augment):
            epochs = p.budget(aug, dataset)
            for seed in seeds:
                for modified in (False, True):
                    cfg = copy.deepcopy(p.fixed)
                    cfg.update(dataset=dataset, model=p.model, model_options=copy.deepcopy(p.model_options),
                               epochs=epochs, milestones=p.milestones(epochs), augment=aug, modified=modified,
                               tau=p.tau(epochs) if modified else None, probe_every=p.probe_every(epochs),
                               seed=int(seed), device=device or p.device, data_root=data_root,
                               train_subset=p.train_subset.get(dataset))
                    out.append((run_name(dataset, aug, modified, int(seed)), cfg))
    return out


def preset_configs(preset: str | Preset, datasets: Sequence[str] | None = None,
                   augment: Sequence[bool] | None = None, seeds: Sequence[int] | None = None,
                   device: str | None = None, data_root: str | None = None) -> list[tuple[str, TrainConfig]]:
    """The preset's runs as validated ``(run_name, TrainConfig)`` pairs (see :func:`preset_config_dicts`).

    >>> [(n, c.epochs, c.tau) for n, c in preset_configs("cpu", ["semeion"], seeds=[0])]
    [('semeion-noaug-base-seed0', 50, None), ('semeion-noaug-modified-seed0', 50, 30)]
    """
    return [(name, TrainConfig.from_dict(d).validate())
            for name, d in preset_config_dicts(preset, datasets, augment, seeds, device, data_root)]
