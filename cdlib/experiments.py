"""The experiment grids behind the numbered notebooks, and the tables built from their records.

A notebook names a profile and calls one grid function (`teacher_grid`, `main_grid`, ...); each
returns {label: [Config, ...]}. `collect` runs or reads every configuration and returns one row per
run; `summarize` gives mean and standard deviation over seeds; `compare` the gain of one method
over another with a paired t-test (scipy.stats.ttest_rel) over seeds.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from . import data, runs, train
from .train import Config, STUDENT_SIZES, TEACHER_SIZE

# main-table student sizes [decision]: CDAE H = 20, NeuMF d = 8 (METHOD.md lists the ranges)
STUDENT = {"cdae": 20, "neumf": 8}
METRICS = ["HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@20", "NDCG@20", "MRR"]
PAPER_GAIN = {"HR": (2.7, 33.2), "NDCG": (2.7, 29.1)}   # CD over RD, arXiv v1 abstract [paper]
SENSITIVITY = {"lambda_kd": [0.1, 0.5, 1.0, 2.0], "mu": [1.0, 5.0, 10.0, 50.0],
               "temperature": [0.5, 1.0, 2.0, 5.0], "n_distill": [5, 10, 20, 50]}


@dataclass
class Profile:
    """What one reproduction runs. `cost` is what `python -m cdlib.reproduce --help` prints."""
    name: str
    datasets: list
    backbones: list = field(default_factory=lambda: ["cdae", "neumf"])
    seeds: list = field(default_factory=lambda: [0])
    epochs: int = 200
    patience: int = 20
    subset_users: int | None = None
    device: str | None = None
    cost: str = ""

    def config(self, dataset: str, backbone: str, seed: int, **kw) -> Config:
        return Config(dataset=dataset, backbone=backbone, seed=seed, epochs=self.epochs, patience=self.patience,
                      subset_users=self.subset_users, device=self.device, **kw)


PROFILES = {
    "smoke": Profile("smoke", ["ml-100k"], seeds=[0], epochs=2, patience=2, subset_users=150,
                     cost="150 ml-100k users, 2 epochs, one seed: all notebooks in about 2-4 minutes on 2 cores"),
    "quick": Profile("quick", ["ml-100k"], seeds=[0],
                     cost="ml-100k, both backbones, one seed, full budgets, every ablation: about 30 min of "
                          "training on one core (measured: 1822 s summed over the 56 runs), 15-20 min with 2 jobs"),
    "paper": Profile("paper", list(data.DATASETS), seeds=[0, 1, 2, 3, 4],
                     cost="six datasets, both backbones, 5 seeds, full budgets: days on 2 cores. Measured on one "
                          "core per seed, main table: ml-1m 50-58 min, amazon-music 48-58 min; citeulike-t about 1.5 h "
                          "per backbone (measured per run, two jobs side by side: CDAE 6-20 min, NeuMF 4-28 min, "
                          "the longest RD and student-guided CD); foursquare CDAE about 42 min per seed (4-9 min "
                          "per run, two seeds side by side). GPU (--device cuda): whole runs not timed; seconds "
                          "per epoch on an H200 in results/bench/*_cuda.json (python -m cdlib.bench)"),
}


def profile(name: str, datasets=None, backbones=None, seeds=None, device=None, **overrides) -> Profile:
    """A profile, with a notebook's parameters overriding its datasets, backbones, seeds, device."""
    if name not in PROFILES:
        raise ValueError(f"profile must be one of {list(PROFILES)}, got {name!r}")
    p = dataclasses.replace(PROFILES[name], **overrides)
    if datasets:
        p.datasets = list(datasets)
    if backbones:
        p.backbones = list(backbones)
    if seeds is not None:
        p.seeds = list(seeds)
    if device:
        p.device = device
    return p


def _grid(p: Profile, variants: dict) -> dict:
    """{label: [Config for every dataset x backbone x seed]} from {label: fn(backbone) -> kwargs}."""
    return {label: [p.config(d, b, s, **fn(b)) for d in p.datasets for b in p.backbones for s in p.seeds]
            for label, fn in variants.items()}


def teacher_grid(p: Profile) -> dict:
    return _grid(p, {"Teacher": lambda b: {}})


def main_grid(p: Profile) -> dict:
    """Table 3: Teacher, Student (no KD), RD and the three CD guides, at the main student size."""
    s = STUDENT
    return _grid(p, {
        "Teacher": lambda b: {},
        "Student": lambda b: {"size": s[b]},
        "RD": lambda b: {"size": s[b], "method": "rd"},
        "CD-T": lambda b: {"size": s[b], "method": "cd", "guide": "teacher"},
        "CD-S": lambda b: {"size": s[b], "method": "cd", "guide": "student"},
        "CD-H": lambda b: {"size": s[b], "method": "cd", "guide": "hybrid"},
    })


def sampling_grid(p: Profile, guides=("teacher", "student")) -> dict:
    """Table 4: rank-aware sampling against uniform and top-K selection, per guide."""
    return _grid(p, {f"{samp}/{g}": (lambda b, samp=samp, g=g: {"size": STUDENT[b], "method": "cd",
                                                                 "sampling": samp, "guide": g})
                     for g in guides for samp in ("rank", "uniform", "topk")})


def guidance_grid(p: Profile) -> dict:
    """Table 5: teacher-, student- and hybrid-guided CD (the same runs as the main table)."""
    g = main_grid(p)
    return {k: g[k] for k in ("Student", "CD-T", "CD-S", "CD-H")}


def size_grid(p: Profile, guide: str = "teacher") -> dict:
    """Table 6: each student size with and without CD, and born-again CD (student = teacher size)."""
    out = {}
    for b in p.backbones:
        q = dataclasses.replace(p, backbones=[b])
        for size in STUDENT_SIZES[b]:
            for label, kw in (("Student", {}), ("CD", {"method": "cd", "guide": guide})):
                out.setdefault(label, []).extend(_grid(q, {label: lambda _b, kw=kw, size=size: {"size": size, **kw}})[label])
        out.setdefault("Teacher", []).extend(teacher_grid(q)["Teacher"])
        out.setdefault("BACD", []).extend(_grid(q, {"BACD": lambda _b: {"size": TEACHER_SIZE[b], "method": "cd",
                                                                        "guide": guide}})["BACD"])
    return out


def sensitivity_grid(p: Profile, guide: str = "teacher", values=None) -> dict:
    """Table 7: one CD parameter varied at a time, the others at their defaults."""
    values = values or SENSITIVITY
    return _grid(p, {f"{name}={v}": (lambda b, name=name, v=v: {"size": STUDENT[b], "method": "cd", "guide": guide,
                                                               name: v})
                     for name, vs in values.items() for v in vs})


def collect(grid: dict, results=None, train_missing: bool | None = None, progress: bool = True) -> pd.DataFrame:
    """Run (or read) every configuration of a grid: one row per run, test metrics of both
    protocols. A run that is not recorded while training is off shows as status 'missing'."""
    rows = []
    for label, configs in grid.items():
        for cfg in configs:
            c = cfg.canonical()
            row = {"label": label, "dataset": c.dataset, "backbone": c.backbone, "size": c.size, "seed": c.seed,
                   "method": c.method}
            try:
                rec = train.run(cfg, results, progress=progress, train=train_missing)
            except train.NotRecorded:
                rows.append({**row, "status": "missing"})
                continue
            row.update(status="ok", key=rec["key"], n_params=rec["n_params"], best_epoch=rec["best_epoch"],
                       train_seconds=rec["timing"]["train_seconds"])
            for proto in ("sampled", "full"):
                row.update({(f"{m}" if proto == "sampled" else f"{m} (full)"): rec[f"test_{proto}"][m] for m in METRICS})
            rows.append(row)
    return pd.DataFrame(rows)


def summarize(df: pd.DataFrame, metrics=("HR@10", "NDCG@10"), by=("dataset", "backbone", "label")) -> pd.DataFrame:
    """Mean and standard deviation over seeds (columns '<metric> mean', '<metric> std', 'seeds')."""
    ok = df[df.status == "ok"] if "status" in df else df
    by = list(by)
    if ok.empty:
        return pd.DataFrame(columns=by)
    g = ok.groupby(by, sort=False)
    out = g[list(metrics)].agg(["mean", "std"])
    out.columns = [f"{m} {s}" for m, s in out.columns]
    out["seeds"] = g.size()
    if "n_params" in ok:
        out["params"] = g["n_params"].first()
    return out.sort_index(level=[0, 1], sort_remaining=False)


def compare(df: pd.DataFrame, better: str, worse: str, metrics=("HR@10", "NDCG@10")) -> pd.DataFrame:
    """Relative gain (%) of `better` over `worse` per dataset and backbone, with the paired t-test
    p-value over seeds (NaN with fewer than two paired seeds)."""
    ok = df[df.status == "ok"]
    rows = []
    for (d, b), g in ok.groupby(["dataset", "backbone"], sort=False):
        a = g[g.label == better].set_index("seed")
        c = g[g.label == worse].set_index("seed")
        seeds = a.index.intersection(c.index)
        if len(seeds) == 0:
            continue
        row = {"dataset": d, "backbone": b, "better": better, "worse": worse, "seeds": len(seeds)}
        for m in metrics:
            x, y = a.loc[seeds, m].to_numpy(float), c.loc[seeds, m].to_numpy(float)
            row[f"{m} gain %"] = 100 * (x.mean() - y.mean()) / y.mean() if y.mean() > 0 else np.nan
            row[f"{m} p"] = stats.ttest_rel(x, y).pvalue if len(seeds) >= 2 and np.any(x != y) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def best_cd(df: pd.DataFrame, labels=("CD-T", "CD-S", "CD-H"), metric: str = "NDCG@10") -> pd.DataFrame:
    """Rows of a new label 'CD-best': per dataset and backbone, the CD guide with the best mean
    `metric` over seeds (chosen on test means, as the paper's tables report the best variant)."""
    ok = df[(df.status == "ok") & df.label.isin(labels)]
    out = []
    for _, g in ok.groupby(["dataset", "backbone"], sort=False):
        best = g.groupby("label")[metric].mean().idxmax()
        out.append(g[g.label == best].assign(label="CD-best", best_of=best))
    return pd.concat([df, *out], ignore_index=True) if out else df


def fmt(table: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """'mean ± std' strings, rounded so that a printed table is stable (nbval compares it)."""
    out = pd.DataFrame(index=table.index)
    for c in table.columns:
        if c.endswith(" mean"):
            m = c[:-5]
            sd = table.get(f"{m} std")
            out[m] = [f"{a:.{digits}f}" + (f" ± {s:.{digits}f}" if s == s and s is not None else "")
                      for a, s in zip(table[c], sd if sd is not None else [np.nan] * len(table))]
        elif not c.endswith(" std"):
            out[c] = table[c]
    return out


def save_table(df: pd.DataFrame, name: str, results=None) -> str:
    """Write a table to results/<name>.csv atomically; returns the path."""
    path = runs.results_dir(results) / f"{name}.csv"
    runs.write_atomic(path, df.to_csv(float_format="%.6g"))
    return str(path)
