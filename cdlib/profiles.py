"""What a reproduction runs: the profiles (`smoke`, `quick`, `paper`: datasets, backbones, seeds,
epoch rules, the tuning stage's grid) and `profile`, the notebooks' entry point, which also reads
how runs execute here from the environment (`config.Execution`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from . import data
from .config import Config, Execution

# The tuning stage (METHOD.md "A fair comparison"): equal budgets, choices on validation NDCG@10.
# CD and RD get 6 configurations each (the weight of the distillation term x how many items it
# distils), RD's grid starting at its authors' defaults (lambda_RD = 1, K = 10); the teacher and the
# plain student get their learning rate tuned over 4 values. Stages run in order: the teacher's
# choice fixes the teacher of every student, the student's learning rate is that of RD and CD.
LEARNING_RATES = [3e-4, 1e-3, 3e-3, 1e-2]


TUNING = {
    "Teacher": {"lr": LEARNING_RATES},
    "Student": {"lr": LEARNING_RATES},
    "RD": {"lambda_rd": [1.0, 0.3, 0.1], "rd_k": [10, 20]},
    "CD": {"lambda_kd": [0.5, 0.1, 1.0], "n_distill": [10, 20]},
}


# Issue 23's tuning stage: the CD guide is chosen in tuning too (a stage after CD's, its three guides
# at CD's chosen settings: 2 configurations more, the teacher-guided one is CD's own), so that each
# cell has one CD configuration fixed before its main table runs, the primary CD arm. RD's grid gets
# a fourth weight so that CD and RD keep equal budgets: 8 configurations each [decision]. The
# learning rates reach one value further each way (1e-4, 3e-2; after the first four, so that the
# grid's first point stays): under `next`, 3 of ml-100k's 4 learning-rate choices were at an edge of
# 3e-4 ... 1e-2 (`tuning.at_edge`) [decision].
LEARNING_RATES_NEXT = LEARNING_RATES + [1e-4, 3e-2]
TUNING_NEXT = {
    **TUNING,
    "Teacher": {"lr": LEARNING_RATES_NEXT},
    "Student": {"lr": LEARNING_RATES_NEXT},
    "RD": {"lambda_rd": [1.0, 0.3, 0.1, 0.03], "rd_k": [10, 20]},
    "CD guide": {"guide": ["teacher", "student", "hybrid"]},
}
# iALS, the reference rows of the main table (`cdlib.ials`), tuned with CD's and RD's budget [decision]:
# 6 configurations in the paper profile, 8 in `next`. Its first grid's regularization (0.01, 0.1, 1)
# gave the same validation NDCG@10 to 2-3 decimals at every value, on every dataset and budget; 1, 10
# and 100 were each chosen somewhere, 100 at the teacher's budget on ml-1m and yelp, so `next` adds
# 1000 (issue 24).
IALS_GRID = {"regularization": [1.0, 10.0, 100.0], "alpha": [1.0, 10.0]}
IALS_GRID_NEXT = {"regularization": [1.0, 10.0, 100.0, 1000.0], "alpha": [1.0, 10.0]}
STAGES = ("Teacher", "Student", "RD", "CD", "CD guide")  # the order stages run in; the first four
# are every tuning's, "CD guide" is optional


TUNE_METRIC = "NDCG@10"  # of the validation item, sampled protocol (the early-stopping metric)


@dataclass
class Profile:
    """What one reproduction runs. `cost` is what `python -m cdlib.reproduce --help` prints.
    Epoch rules default to train.Config's (cap, patience, minimum). `tune_on` maps a dataset to the
    dataset whose tuned settings it uses (default: itself when it is in `tuned`, else `tuned[-1]`);
    tuning=None skips the tuning stage: every method at train.Config's documented defaults.
    `execution` is how its runs are trained here (`config.Execution`: whether missing runs are trained,
    group size, time limit), read from the environment by `profile`, the notebooks' entry point."""

    name: str
    datasets: list
    backbones: list = field(default_factory=lambda: ["cdae", "neumf"])
    seeds: list = field(default_factory=lambda: [0])
    epochs: int = Config.epochs
    patience: int = Config.patience
    min_epochs: int = Config.min_epochs
    # a longer minimum for some cells, {(dataset, backbone): min_epochs}: every run of the cell
    # (each method and stage alike, so that its arms keep equal epoch rules)
    min_epochs_for: dict = field(default_factory=dict)
    # Config.defer of some cells' every run, {(dataset, backbone): defer}: the deferred step's tables
    defer_for: dict = field(default_factory=dict)
    plateau: float | None = Config.plateau
    subset_users: int | None = None
    device: str | None = None
    step: str | None = None  # Config.step of every run (None: the default, dense)
    refresh_tower: str | None = None  # Config.refresh_tower of every run (NeuMF students' refresh)
    mlp_init: str | None = None  # Config.mlp_init of every run (NeuMF; None: PyTorch's defaults)
    valid_negatives: str = Config.valid_negatives  # Config.valid_negatives of every run
    tune_seeds: list = field(default_factory=lambda: [0, 1])
    tuned: list = field(default_factory=lambda: ["ml-100k", "ml-1m"])
    tune_on: dict = field(default_factory=dict)
    tuning: dict | None = field(default_factory=lambda: TUNING)
    ials_grid: dict = field(default_factory=lambda: IALS_GRID)  # iALS's tuning grid (`cdlib.ials`)
    # planning only (`plan.profile_runs`): the tuning stage's choice taken as given, {stage:
    # settings}, its runs neither read nor trained; None: the tuning stage decides
    presume: dict | None = None
    # narrower grids for some tables: {"size" | "sensitivity": {"datasets": [...], "seeds": [...]}}
    # (each optional), applied by `scoped`; the other tables use the profile's datasets and seeds
    scope: dict = field(default_factory=dict)
    cost: str = ""
    execution: Execution = field(default_factory=Execution)

    def min_epochs_of(self, dataset: str, backbone: str) -> int:
        """The minimum of epochs of a cell's every run: `min_epochs_for`'s, else `min_epochs`."""
        return self.min_epochs_for.get((dataset, backbone), self.min_epochs)

    def config(self, dataset: str, backbone: str, seed: int, **kw) -> Config:
        return Config(
            dataset=dataset,
            backbone=backbone,
            seed=seed,
            epochs=self.epochs,
            patience=self.patience,
            min_epochs=self.min_epochs_of(dataset, backbone),
            plateau=self.plateau,
            subset_users=self.subset_users,
            device=self.device,
            step=self.step,
            defer=self.defer_for.get((dataset, backbone)),
            refresh_tower=self.refresh_tower,
            mlp_init=self.mlp_init,
            valid_negatives=self.valid_negatives,
            **kw,
        )

    def scoped(self, table: str) -> Profile:
        """The profile that table `table` ("size", "sensitivity") runs: the profile's datasets and
        seeds that `scope[table]` names (all of them where it names none)."""
        s = self.scope.get(table, {})
        return dataclasses.replace(
            self,
            datasets=[d for d in self.datasets if d in s.get("datasets", self.datasets)],
            seeds=[x for x in self.seeds if x in s.get("seeds", self.seeds)],
        )

    def tuning_dataset(self, dataset: str) -> str:
        """The dataset whose tuning stage chooses `dataset`'s settings."""
        if dataset in self.tune_on:
            return self.tune_on[dataset]
        return dataset if dataset in self.tuned or not self.tuned else self.tuned[-1]

    def tuning_datasets(self, datasets=None) -> list:
        """The datasets whose tuning stage runs for `datasets` (default: the profile's), each once;
        none without a tuning stage."""
        if self.tuning is None:
            return []
        datasets = self.datasets if datasets is None else datasets
        return list(dict.fromkeys(self.tuning_dataset(d) for d in datasets))


PROFILES = {
    "smoke": Profile(
        "smoke",
        ["ml-100k"],
        seeds=[0],
        epochs=2,
        patience=2,
        min_epochs=1,
        subset_users=150,
        tune_seeds=[0],
        tuned=["ml-100k"],
        tuning={
            "Teacher": {"lr": [3e-3]},
            "Student": {"lr": [3e-3]},
            "RD": {"lambda_rd": [1.0]},
            "CD": {"lambda_kd": [0.5]},
        },
        cost="150 ml-100k users, 2 epochs, one seed, one configuration per tuning stage: all notebooks "
        "in a few minutes on 2 cores",
    ),
    "quick": Profile(
        "quick",
        ["ml-100k"],
        seeds=[0, 1],
        tuned=["ml-100k"],
        cost="ml-100k, both backbones, the tuning stage and seeds 0-1 of every table under the fair "
        "protocol (cap 1000 epochs, patience 30, at least 50): about 1 h on 2 cores (the paper "
        "profile's ml-100k, 5 seeds, took 58 min for CDAE and 47 min for NeuMF, one core each)",
    ),
    "paper": Profile(
        "paper",
        list(data.DATASETS),
        seeds=[0, 1, 2, 3, 4],
        cost="six datasets, both backbones, 5 seeds, tuning on ml-100k and ml-1m (the others use "
        "ml-1m's choice): days on 2 cores. Measured under the fair protocol, one core per backbone: "
        "ml-100k (tuning, tables 03, 04, 06) 58 min CDAE, 47 min NeuMF; ml-1m runs take 2-10 min "
        "each (teachers, students), so its tuning stage is several hours per backbone. GPU "
        "(--device cuda, tools/gpu_window.sh): seconds per epoch on an H200 in "
        "results/bench/*_cuda.json (python -m cdlib.bench)",
    ),
    # Issue 23's protocol, until its grid is recorded and it becomes `paper`: validation negatives
    # disjoint from the test's, every dataset tuned on its own, the CD guide chosen in tuning
    "next": Profile(
        "next",
        list(data.DATASETS),
        seeds=[0, 1, 2, 3, 4],
        valid_negatives="disjoint",
        # the deferred step (Adam's own training at the cost of the rows a step reads; the dense
        # step's up to rounding, `tests/test_sparse.py`), chosen on the pooled equivalence test of
        # ml-100k and ml-1m and on the grid's estimated cost (README "The sparse steps against the
        # dense one", `plan.profile_estimate`) [decision]
        step="deferred",
        # a NeuMF student's ranking refreshed with the feature-major tower: the same scores up to
        # rounding, the same top-100 lists but for items whose scores lie within rounding, a
        # refresh 2-4x faster where it was most of a guided run's training, and equivalent test
        # NDCG@10 on ml-100k (README "The feature-major refresh", from
        # results/bench/refresh_tower_cpu.json and the paired runs) [decision]
        refresh_tower="feature-major",
        # NeuMF's tower and prediction layer initialised as NCF's code does (Glorot-uniform kernels,
        # zero biases, a LeCun-uniform prediction layer): under PyTorch's defaults (random biases) a
        # d = 8 tower lost every unit in its first epoch on 9 of ml-100k's 12 tuning students and on
        # yelp's seed 1, leaving GMF-only students whose collapse differs by arm and seed; under
        # NCF's, none did (notebook 00's collapse table, README Known issues). Voids next's NeuMF
        # records made before it (they stay in results/runs for the results/v2 move) [decision]
        mlp_init="ncf",
        # yelp NeuMF learns in two phases: an early peak, a dip, then a climb past the peak over
        # hundreds of epochs, which patience at the minimum of 50 cut. Its teacher at lr 3e-4 (seed
        # 0), stopped at epoch 50 (best epoch 16), trained on to 200 epochs passed its first peak at
        # epoch 74, 1% past it by 81, and was still rising at 200, +6.3% on validation NDCG@10,
        # above the lr its stage had chosen, each best within patience of the last from epoch 74 on.
        # Its sibling at lr 1e-4 (best epoch 43, stopped at 73), trained on to 200, never climbed
        # again. Of the 45 other runs of next stopped at the minimum and trained on (every dataset
        # and backbone, the main table's among them) one climbed 1%: amazon-music NeuMF's teacher
        # at lr 1e-2, +2.4% by epoch 179 after 150 flat epochs, still 24% below the lr its stage
        # chose (README "Runs early stopping ended at its minimum", tools/stop_probe.py). So yelp
        # NeuMF's runs, every method alike, stop no earlier than epoch 100: past the one second
        # climb seen, which a minimum of 100 keeps whole (200, chosen first, would double the
        # cell's cost for no run probed); voids its 6 runs before it [decision]
        min_epochs_for={("yelp", "neumf"): 100},
        # yelp NeuMF's deferred step defers every table, its students' small ones too: the same
        # training up to rounding (tests/test_sparse.py), and a student's epoch about 30% shorter
        # with the row kernels than with its tables stepped whole (README "Deferring every table",
        # tools/defer_probe.py). Only a cell none of whose runs was recorded takes it, so that each
        # cell's runs share one arithmetic [decision]
        defer_for={("yelp", "neumf"): "all"},
        tuned=list(data.DATASETS),
        tuning=TUNING_NEXT,
        ials_grid=IALS_GRID_NEXT,
        # issue 23's grid: the size table on every cell with 3 seeds; the sensitivity figure (not a
        # claim) on ml-1m and citeulike-t with 3 seeds
        scope={
            "size": {"seeds": [0, 1, 2]},
            "sensitivity": {"datasets": ["ml-1m", "citeulike-t"], "seeds": [0, 1, 2]},
        },
        cost="the paper profile under issue 23's protocol (validation negatives disjoint from the "
        "test's, each dataset tuned on its own, the CD guide chosen in tuning, the deferred step): "
        "weeks on 2 cores "
        "(`plan.profile_estimate` prices it: README, notebook 09); what tools/gpu_window.sh trains",
    ),
}


def profile(
    name: str,
    datasets=None,
    backbones=None,
    seeds=None,
    device=None,
    train_missing: bool | None = None,
    **overrides,
) -> Profile:
    """A profile, with a notebook's parameters overriding its datasets, backbones, seeds, device, and
    its execution read from the environment (`Execution.from_environment`: CDLIB_NO_TRAIN,
    CDLIB_GROUP_SIZE, CDLIB_DEADLINE, ...); train_missing=False (or True) overrides CDLIB_NO_TRAIN."""
    if name not in PROFILES:
        raise ValueError(f"profile must be one of {list(PROFILES)}, got {name!r}")
    execution = Execution.from_environment()
    if train_missing is not None:
        execution = dataclasses.replace(execution, train=bool(train_missing))
    p = dataclasses.replace(PROFILES[name], **{"execution": execution, **overrides})
    if datasets:
        p.datasets = list(datasets)
    if backbones:
        p.backbones = list(backbones)
    if seeds is not None:
        p.seeds = list(seeds)
    if device:
        p.device = device
    for cell, least in {"all cells": p.min_epochs, **p.min_epochs_for}.items():
        if least > p.epochs:
            raise ValueError(
                f"profile {p.name!r}: the epoch cap epochs={p.epochs} is below min_epochs={least} "
                f"({cell})"
            )
    if p.tuning is not None:
        check_tuning(p.tuning)
    return p


# what each stage fixes itself (`tuning.stage_grid`): its size and method, and the choices of the
# stages before it; a grid may not vary them
FIXED = {
    "Teacher": ("size", "method"),
    "Student": ("size", "method"),
    "RD": ("size", "method", "teacher_lr", "lr"),
    "CD": ("size", "method", "teacher_lr", "lr", "guide"),
    "CD guide": ("size", "method", "teacher_lr", "lr"),
}


def check_tuning(tuning: dict) -> None:
    """Refuse a tuning grid with an unknown stage or parameter, a parameter its stage fixes (`FIXED`),
    or an empty list of values."""
    fields = {f.name for f in dataclasses.fields(Config)}
    for stage, grid in tuning.items():
        if stage not in STAGES:
            raise ValueError(f"tuning: unknown stage {stage!r}; stages are {list(STAGES)}")
        if not grid:
            raise ValueError(f"tuning: the grid of {stage} is empty")
        for name, values in grid.items():
            if name not in fields:
                raise ValueError(
                    f"tuning: {stage} names unknown parameter {name!r} (not a field of train.Config)"
                )
            if name in FIXED[stage] or (stage == "CD guide" and name in tuning.get("CD", {})):
                raise ValueError(
                    f"tuning: {stage} may not vary {name!r}: the stage fixes it (the stages before it "
                    "choose it, or it is what the stage trains)"
                )
            if not isinstance(values, (list, tuple)) or len(values) == 0:
                raise ValueError(f"tuning: {stage} parameter {name!r} has no values to try")
