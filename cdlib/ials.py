"""A strong small model that is not distilled, as reference rows of the main table: iALS (Hu, Koren
and Volinsky 2008; the `implicit` package's conjugate-gradient ALS) at the teacher's and at the
student's parameter budget, on the same split, negatives and metrics as every other arm, tuned on
validation NDCG@10 (sampled) over the tuning seeds with the same budget as CD and RD (the
profile's `ials_grid`: 6 configurations in the paper profile, 8 in `next`, `profiles.IALS_GRID`).
Not part of claim 3: it answers whether a well-tuned small model of another family already does as
well (Rendle et al. 2019, 2020).

A run is recorded like every other, beside them (`results/ials/<key>.json`, keyed by its
`IALSConfig`, with provenance), and read, not trained again, when it is.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from . import data, metrics, models, runs
from .config import STUDENT, TEACHER_SIZE, Execution
from .dataset import Dataset
from .profiles import IALS_GRID
from .tables import record_metrics

ITERATIONS = 15  # ALS sweeps [decision]: implicit's default, converged on ml-1m
BUDGETS = {"iALS (teacher budget)": "teacher", "iALS (student budget)": "student"}
# results/ials/: records of another kind than results/runs/' Configs
FOLDER = runs.RECORD_FOLDERS[1]


@dataclass(frozen=True)
class IALSConfig:
    """Every parameter of one iALS run: what its record is keyed by."""

    dataset: str
    factors: int
    regularization: float
    alpha: float
    seed: int = 0
    iterations: int = ITERATIONS
    data_seed: int = 0
    subset_users: int | None = None
    valid_negatives: str = "own"

    def __post_init__(self):  # a NumPy integer would name another record (its key is a string)
        for name in ("factors", "seed", "iterations", "data_seed"):
            object.__setattr__(self, name, int(getattr(self, name)))

    def key(self) -> str:
        return runs.config_key({"model": "ials", **dataclasses.asdict(self)})


class Factors:
    """A factor model in the scoring interface of `metrics.evaluate`: score(u, i) = <p_u, q_i>."""

    def __init__(self, user_factors: np.ndarray, item_factors: np.ndarray):
        self.users = torch.from_numpy(np.ascontiguousarray(user_factors, dtype=np.float32))
        self.items = torch.from_numpy(np.ascontiguousarray(item_factors, dtype=np.float32))
        self.device, self.size = torch.device("cpu"), self.users.shape[1]

    def n_params(self) -> int:
        return self.users.numel() + self.items.numel()

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.users[users] @ self.items.T

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.users[users][:, None, :] * self.items[items]).sum(-1)


def dataset_for(cfg: IALSConfig) -> Dataset:
    ds = data.load(cfg.dataset, seed=cfg.data_seed)
    return ds.subset(cfg.subset_users, seed=cfg.data_seed) if cfg.subset_users else ds


def fit(cfg: IALSConfig, ds: Dataset, threads: int = 1) -> Factors:
    """iALS on the training interactions (confidence 1 + alpha for each), seeded."""
    # imported here, not with the module: a machine without `implicit` (the lent GPU's has none)
    # still trains every other run, through the modules that import this one (backlog, experiments)
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(
        factors=cfg.factors,
        regularization=cfg.regularization,
        alpha=cfg.alpha,
        iterations=cfg.iterations,
        random_state=cfg.seed,
        num_threads=threads,
    )
    with threadpool_limits(1, "blas"):  # implicit's advice: its own threads, BLAS on one
        model.fit(ds.train.tocsr().astype(np.float32), show_progress=False)
    return Factors(model.user_factors, model.item_factors)


def run(cfg: IALSConfig, results=None, execution: Execution | None = None) -> dict:
    """The record of `cfg`: read when recorded, else fitted, evaluated on both splits and both
    protocols, and written atomically with its provenance. Execution(train=False) never fits."""
    rec = runs.read_record(cfg.key(), results, FOLDER)
    if rec is not None:
        return rec
    if not (execution or Execution()).train:
        raise LookupError(f"iALS run {cfg.key()} is not recorded")
    t0, cpu0 = time.time(), time.process_time()
    ds = dataset_for(cfg)
    model = fit(cfg, ds, torch.get_num_threads())
    fitted = time.time() - t0
    rec = {
        "key": cfg.key(),
        "model": "ials",
        "config": dataclasses.asdict(cfg),
        **metrics.evaluate_all(model, ds, cfg.valid_negatives),
        "n_params": model.n_params(),
        "epochs_run": cfg.iterations,
        "timing": {
            "train_seconds": fitted,
            "wall_seconds": time.time() - t0,
            "cpu_seconds": time.process_time() - cpu0,
        },
        "dataset": runs.dataset_info(ds),
        "provenance": runs.provenance("cpu"),
    }
    runs.write_record(rec, results, FOLDER)
    return rec


def budget(ds: Dataset, backbone: str, role: str) -> int:
    """Factors k such that iALS's (users + items) x k parameters match the backbone's teacher's or
    main student's count on this dataset (at least 1)."""
    size = TEACHER_SIZE[backbone] if role == "teacher" else STUDENT[backbone]
    n = models.build(backbone, ds.train, size, 0.5, "cpu").n_params()
    return max(1, round(n / (ds.n_users + ds.n_items)))


def configurations(
    dataset: str,
    factors: int,
    seed: int,
    subset_users=None,
    valid_negatives: str = "own",
    grid: dict = IALS_GRID,
) -> list[IALSConfig]:
    """The grid's configurations (regularization x alpha, in that order) at `factors` for one seed."""
    return [
        IALSConfig(
            dataset,
            factors,
            reg,
            alpha,
            seed,
            subset_users=subset_users,
            valid_negatives=valid_negatives,
        )
        for reg, alpha in itertools.product(grid["regularization"], grid["alpha"])
    ]


def main_rows(
    p, results=None, execution: Execution | None = None, labels=tuple(BUDGETS)
) -> pd.DataFrame:
    """The iALS rows of the main table under profile `p`: per dataset, backbone and budget, the
    configuration with the best mean validation NDCG@10 (sampled) over `p.tune_seeds` (ties: the
    earlier one in the order of `p.ials_grid`), run on every seed of `p.seeds` (validated on the profile's
    validation negatives); rows in `tables.collect`'s format ('missing' where a run is not recorded
    and training is off)."""
    rows, scope = [], (p.subset_users, p.valid_negatives, p.ials_grid)
    for d in p.datasets:
        ds = data.load(d, draw=False)  # its shapes, for the budgets
        ds = ds.subset(p.subset_users, seed=0) if p.subset_users else ds
        for b in p.backbones:
            for label, role in ((lab, BUDGETS[lab]) for lab in labels):
                k = budget(ds, b, role)
                try:
                    tuned = [
                        np.mean(
                            [run(c, results, execution)["valid_sampled"]["NDCG@10"] for c in cs]
                        )
                        for cs in zip(*(configurations(d, k, s, *scope) for s in p.tune_seeds))
                    ]
                except LookupError:
                    tuned = None
                for s in p.seeds:
                    row = {
                        "label": label,
                        "dataset": d,
                        "backbone": b,
                        "size": k,
                        "seed": s,
                        "method": "ials",
                    }
                    if tuned is None:
                        rows.append({**row, "status": "untuned"})
                        continue
                    cfg = configurations(d, k, s, *scope)[int(np.argmax(tuned))]
                    try:
                        rec = run(cfg, results, execution)
                    except LookupError:
                        rows.append({**row, "status": "missing"})
                        continue
                    row.update(
                        status="ok",
                        key=rec["key"],
                        n_params=rec["n_params"],
                        epochs_run=rec["epochs_run"],
                        train_seconds=rec["timing"]["train_seconds"],
                        device="cpu",
                        regularization=cfg.regularization,
                        alpha=cfg.alpha,
                    )
                    rows.append({**row, **record_metrics(rec)})
    return pd.DataFrame(rows)
