"""The experiment grids behind the numbered notebooks, and the tables built from their records.

A notebook names a profile and calls one grid function (`teacher_grid`, `main_grid`, ...); each
returns {label: [Config, ...]}. `collect` runs or reads every configuration and returns one row per
run; `summarize` gives mean and standard deviation over seeds; `compare` the gain of one method
over another with a paired t-test (scipy.stats.ttest_rel) over seeds.
"""
from __future__ import annotations

import dataclasses
import itertools
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
TUNE_METRIC = "NDCG@10"        # of the validation item, sampled protocol (the early-stopping metric)


@dataclass
class Profile:
    """What one reproduction runs. `cost` is what `python -m cdlib.reproduce --help` prints.
    Epoch rules default to train.Config's (cap, patience, minimum). `tune_on` maps a dataset to the
    dataset whose tuned settings it uses (default: itself when it is in `tuned`, else `tuned[-1]`);
    tuning=None skips the tuning stage: every method at train.Config's documented defaults."""
    name: str
    datasets: list
    backbones: list = field(default_factory=lambda: ["cdae", "neumf"])
    seeds: list = field(default_factory=lambda: [0])
    epochs: int = Config.epochs
    patience: int = Config.patience
    min_epochs: int = Config.min_epochs
    plateau: float | None = Config.plateau
    subset_users: int | None = None
    device: str | None = None
    tune_seeds: list = field(default_factory=lambda: [0, 1])
    tuned: list = field(default_factory=lambda: ["ml-100k", "ml-1m"])
    tune_on: dict = field(default_factory=dict)
    tuning: dict | None = field(default_factory=lambda: TUNING)
    cost: str = ""

    def config(self, dataset: str, backbone: str, seed: int, **kw) -> Config:
        return Config(dataset=dataset, backbone=backbone, seed=seed, epochs=self.epochs, patience=self.patience,
                      min_epochs=self.min_epochs, plateau=self.plateau, subset_users=self.subset_users,
                      device=self.device, **kw)

    def tuning_dataset(self, dataset: str) -> str:
        if dataset in self.tune_on:
            return self.tune_on[dataset]
        return dataset if dataset in self.tuned or not self.tuned else self.tuned[-1]


PROFILES = {
    "smoke": Profile("smoke", ["ml-100k"], seeds=[0], epochs=2, patience=2, min_epochs=1, subset_users=150,
                     tune_seeds=[0], tuned=["ml-100k"],
                     tuning={"Teacher": {"lr": [3e-3]}, "Student": {"lr": [3e-3]}, "RD": {"lambda_rd": [1.0]},
                             "CD": {"lambda_kd": [0.5]}},
                     cost="150 ml-100k users, 2 epochs, one seed, one configuration per tuning stage: all notebooks "
                          "in a few minutes on 2 cores"),
    "quick": Profile("quick", ["ml-100k"], seeds=[0, 1], tuned=["ml-100k"],
                     cost="ml-100k, both backbones, the tuning stage and seeds 0-1 of every table under the fair "
                          "protocol (cap 1000 epochs, patience 30, at least 50): about 1 h on 2 cores (the paper "
                          "profile's ml-100k, 5 seeds, took 58 min for CDAE and 47 min for NeuMF, one core each)"),
    "paper": Profile("paper", list(data.DATASETS), seeds=[0, 1, 2, 3, 4],
                     cost="six datasets, both backbones, 5 seeds, tuning on ml-100k and ml-1m (the others use "
                          "ml-1m's choice): days on 2 cores. Measured under the fair protocol, one core per backbone: "
                          "ml-100k (tuning, tables 03, 04, 06) 58 min CDAE, 47 min NeuMF; ml-1m runs take 2-10 min "
                          "each (teachers, students), so its tuning stage is several hours per backbone. GPU "
                          "(--device cuda, tools/gpu_window.sh): seconds per epoch on an H200 in "
                          "results/bench/*_cuda.json (python -m cdlib.bench)"),
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
    if p.min_epochs > p.epochs:
        raise ValueError(f"profile {p.name!r}: the epoch cap epochs={p.epochs} is below min_epochs={p.min_epochs}")
    if p.tuning is not None:
        check_tuning(p.tuning)
    return p


@dataclass(frozen=True)
class Pending:
    """A grid entry that cannot be configured yet: its tuning is not recorded (training off)."""
    dataset: str
    backbone: str
    seed: int
    size: int | None
    method: str
    reason: str


# ----------------------------------------------------------------------------- tuning

def check_tuning(tuning: dict) -> None:
    """Refuse a tuning grid with an unknown stage or parameter, or an empty list of values."""
    fields = {f.name for f in dataclasses.fields(Config)}
    for stage, grid in tuning.items():
        if stage not in TUNING:
            raise ValueError(f"tuning: unknown stage {stage!r}; stages are {list(TUNING)}")
        if not grid:
            raise ValueError(f"tuning: the grid of {stage} is empty")
        for name, values in grid.items():
            if name not in fields:
                raise ValueError(f"tuning: {stage} names unknown parameter {name!r} (not a field of train.Config)")
            if not isinstance(values, (list, tuple)) or len(values) == 0:
                raise ValueError(f"tuning: {stage} parameter {name!r} has no values to try")


def _points(grid: dict) -> list[dict]:
    """Every combination of a stage's values, in grid order (the first is the starting point)."""
    return [dict(zip(grid, v)) for v in itertools.product(*grid.values())]


def point_label(stage: str, point: dict) -> str:
    return f"{stage} " + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items())


def tune(p: Profile, dataset: str, backbone: str, results=None, train_missing: bool | None = None,
         progress: bool = True) -> tuple[pd.DataFrame, dict | None]:
    """The tuning stage of one dataset and backbone: every stage's configurations over the tuning
    seeds (trained when missing, unless training is off), and the choice of each stage, the point
    with the best mean validation NDCG@10 (ties: the earlier point). Returns (runs, choice); choice
    is {stage: settings} with every stage, or None while some run is not recorded."""
    tuning = p.tuning
    check_tuning(tuning)
    base = {"Teacher": {}, "Student": {"size": STUDENT[backbone]},
            "RD": {"size": STUDENT[backbone], "method": "rd"},
            "CD": {"size": STUDENT[backbone], "method": "cd", "guide": "teacher"}}
    frames, choice = [], {}
    for stage in TUNING:
        fixed = {}
        if stage in ("RD", "CD"):
            if "Teacher" not in choice or "Student" not in choice:
                break
            fixed = {"teacher_lr": choice["Teacher"].get("lr"), "lr": choice["Student"].get("lr")}
        grid = {point_label(stage, pt): [p.config(dataset, backbone, s, **base[stage], **fixed, **pt)
                                         for s in p.tune_seeds]
                for pt in _points(tuning[stage])}
        df = collect(grid, results, train_missing, progress).assign(stage=stage)
        frames.append(df)
        if (df.status != "ok").any():
            break
        means = df.groupby("label", sort=False)[f"valid {TUNE_METRIC}"].mean()
        best = means.idxmax()
        choice[stage] = {k: v for k, v in _points(tuning[stage])[list(means.index).index(best)].items()}
    runs_df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return runs_df, (choice if len(choice) == len(TUNING) else None)


def tuning_table(runs_df: pd.DataFrame, choices: dict) -> pd.DataFrame:
    """Mean validation and test NDCG@10 per tuning point, and which point each stage chose."""
    ok = runs_df[runs_df.status == "ok"]
    if ok.empty:
        return pd.DataFrame()
    g = ok.groupby(["dataset", "backbone", "stage", "label"], sort=False)
    out = g[[f"valid {TUNE_METRIC}", TUNE_METRIC]].mean().rename(columns={TUNE_METRIC: f"test {TUNE_METRIC}"})
    out["seeds"] = g.size()
    out["chosen"] = [point_label(st, choices.get((d, b), {}).get(st, {})) == lab if (d, b) in choices else False
                     for d, b, st, lab in out.index]
    return out


def settings(p: Profile, dataset: str, backbone: str, results=None, train_missing: bool | None = None,
             progress: bool = True) -> dict | None:
    """Each method's settings for `dataset` from the tuning stage of its tuning dataset:
    {"Teacher": kw, "Student": kw, "RD": kw, "CD": kw} (learning rates included), or None while
    that tuning is not recorded. Without a tuning stage (p.tuning None) every method at its defaults."""
    if p.tuning is None:
        return {k: {} for k in TUNING}
    _, choice = tune(p, p.tuning_dataset(dataset), backbone, results, train_missing, progress)
    if choice is None:
        return None
    t_lr, s_lr = choice["Teacher"].get("lr"), choice["Student"].get("lr")
    student = {"lr": s_lr} if s_lr else {}
    distil = {**student, **({"teacher_lr": t_lr} if t_lr else {})}
    return {"Teacher": dict(choice["Teacher"]), "Student": {**choice["Student"]},
            "RD": {**distil, **choice["RD"]}, "CD": {**distil, **choice["CD"]}}


def _grid(p: Profile, variants: dict, results=None, train_missing=None, progress: bool = True) -> dict:
    """{label: [Config (or Pending) for every dataset x backbone x seed]} from {label: fn(backbone,
    tuned settings) -> kwargs}."""
    out = {label: [] for label in variants}
    for d in p.datasets:
        for b in p.backbones:
            tuned = settings(p, d, b, results, train_missing, progress)
            for label, fn in variants.items():
                for s in p.seeds:
                    if tuned is None:
                        kw = fn(b, {k: {} for k in TUNING})
                        out[label].append(Pending(d, b, s, kw.get("size"), kw.get("method", "none"),
                                                  f"tuning on {p.tuning_dataset(d)}/{b} not recorded"))
                    else:
                        out[label].append(p.config(d, b, s, **fn(b, tuned)))
    return out


def teacher_grid(p: Profile, results=None, train_missing=None) -> dict:
    return _grid(p, {"Teacher": lambda b, t: t["Teacher"]}, results, train_missing)


def main_grid(p: Profile, results=None, train_missing=None) -> dict:
    """Table 3: Teacher, Student (no KD), RD and the three CD guides, at the main student size, each
    method at its tuned settings."""
    s = STUDENT
    return _grid(p, {
        "Teacher": lambda b, t: t["Teacher"],
        "Student": lambda b, t: {"size": s[b], **t["Student"]},
        "RD": lambda b, t: {"size": s[b], "method": "rd", **t["RD"]},
        "CD-T": lambda b, t: {"size": s[b], "method": "cd", "guide": "teacher", **t["CD"]},
        "CD-S": lambda b, t: {"size": s[b], "method": "cd", "guide": "student", **t["CD"]},
        "CD-H": lambda b, t: {"size": s[b], "method": "cd", "guide": "hybrid", **t["CD"]},
    }, results, train_missing)


# RD as this project first ran it (v1): weights renormalised per user, lambda_RD = 0.5, a 5-epoch warm-up,
# exact student ranks once per epoch; beside RD as its authors ran it, to show what the fixes change
RD_V1 = {"rd_renorm": True, "lambda_rd": 0.5, "rd_warmup": 5, "rd_rank": "exact"}


def rd_variant_grid(p: Profile, results=None, train_missing=None) -> dict:
    """RD in its authors' form (the main table's runs) and in the v1 form, same teacher, seeds and
    learning rate."""
    s = STUDENT
    return _grid(p, {"RD": lambda b, t: {"size": s[b], "method": "rd", **t["RD"]},
                     "RD-v1": lambda b, t: {"size": s[b], "method": "rd", **t["RD"], **RD_V1}}, results, train_missing)


def sampling_grid(p: Profile, guides=("teacher", "student"), results=None, train_missing=None) -> dict:
    """Table 4: rank-aware sampling against uniform and top-K selection, per guide (tuned CD settings)."""
    return _grid(p, {f"{samp}/{g}": (lambda b, t, samp=samp, g=g: {"size": STUDENT[b], "method": "cd",
                                                                    **t["CD"], "sampling": samp, "guide": g})
                     for g in guides for samp in ("rank", "uniform", "topk")}, results, train_missing)


def guidance_grid(p: Profile, results=None, train_missing=None) -> dict:
    """Table 5: teacher-, student- and hybrid-guided CD (the same runs as the main table)."""
    g = main_grid(p, results, train_missing)
    return {k: g[k] for k in ("Student", "CD-T", "CD-S", "CD-H")}


def size_grid(p: Profile, guide: str = "teacher", results=None, train_missing=None) -> dict:
    """Table 6: each student size with and without CD, and born-again CD (student = teacher size,
    trained with the teacher's learning rate); other sizes use the main student's tuned settings."""
    out = {}
    for b in p.backbones:
        q = dataclasses.replace(p, backbones=[b])
        for size in STUDENT_SIZES[b]:
            for label, key, kw in (("Student", "Student", {}), ("CD", "CD", {"method": "cd", "guide": guide})):
                g = _grid(q, {label: lambda _b, t, key=key, kw=kw, size=size: {**t[key], "size": size, **kw}},
                          results, train_missing)
                out.setdefault(label, []).extend(g[label])
        out.setdefault("Teacher", []).extend(teacher_grid(q, results, train_missing)["Teacher"])
        bacd = _grid(q, {"BACD": lambda _b, t: {**t["CD"], "lr": t["Teacher"].get("lr"), "size": TEACHER_SIZE[b],
                                                 "method": "cd", "guide": guide}}, results, train_missing)
        out.setdefault("BACD", []).extend(bacd["BACD"])
    return out


def sensitivity_grid(p: Profile, guide: str = "teacher", values=None, results=None, train_missing=None) -> dict:
    """Table 7: one CD parameter varied at a time around the tuned CD settings."""
    values = values or SENSITIVITY
    return _grid(p, {f"{name}={v}": (lambda b, t, name=name, v=v: {"size": STUDENT[b], "method": "cd", **t["CD"],
                                                                  "guide": guide, name: v})
                     for name, vs in values.items() for v in vs}, results, train_missing)


# The parameters of the training notebooks that choose their runs, at the notebooks' defaults (a test
# checks these against the committed notebooks' parameters cells)
NOTEBOOK_DEFAULTS = {"03_main": {"rd_v1_datasets": ["ml-100k"]}, "04_sampling": {"guides": ["teacher", "student"]},
                     "06_student_size": {"guide": "teacher"}, "07_sensitivity": {"guide": "teacher"}}


def notebook_grid(notebook: str, p: Profile, results=None, train_missing=None) -> dict:
    """The runs that training notebook `notebook` (02, 03, 04, 06, 07) trains under profile `p`, at its
    default parameters: what `python -m cdlib.reproduce --no-notebooks` trains without Jupyter."""
    kw = NOTEBOOK_DEFAULTS.get(notebook, {})
    if notebook == "02_teachers":
        return teacher_grid(p, results, train_missing)
    if notebook == "03_main":
        grid = main_grid(p, results, train_missing)
        q = dataclasses.replace(p, datasets=[d for d in p.datasets if d in kw["rd_v1_datasets"]])
        if q.datasets:
            grid["RD-v1"] = rd_variant_grid(q, results, train_missing)["RD-v1"]
        return grid
    if notebook == "04_sampling":
        return sampling_grid(p, kw["guides"], results, train_missing)
    if notebook == "06_student_size":
        return size_grid(p, kw["guide"], results, train_missing)
    if notebook == "07_sensitivity":
        return sensitivity_grid(p, kw["guide"], results=results, train_missing=train_missing)
    raise ValueError(f"{notebook!r} is not a training notebook (02_teachers, 03_main, 04_sampling, "
                     "06_student_size, 07_sensitivity)")


def train_notebook(notebook: str, p: Profile, results=None, progress: bool = True) -> pd.DataFrame:
    """Train (or read) what `notebook` trains under `p`, as its papermill job would, without Jupyter:
    00_tuning runs the tuning stage of each tuning dataset and backbone, the others `notebook_grid`.
    Returns one row per run (`collect`); like the notebooks, nothing is trained when CDLIB_NO_TRAIN=1."""
    if notebook == "00_tuning":
        frames = [tune(p, d, b, results, None, progress)[0]
                  for d in dict.fromkeys(p.tuning_dataset(x) for x in p.datasets) for b in p.backbones]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return collect(notebook_grid(notebook, p, results), results, None, progress)


def collect(grid: dict, results=None, train_missing: bool | None = None, progress: bool = True) -> pd.DataFrame:
    """Run (or read) every configuration of a grid: one row per run, the test metrics of both
    protocols and the validation metrics every choice is made on ('valid NDCG@10', ...). A run that
    is not recorded while training is off shows as status 'missing'; a configuration waiting for its
    tuning as 'untuned'. Runs not recorded are trained first, in groups (`train.run_group`)."""
    try:
        found = {r["key"]: r for r in train.run_group([c for cs in grid.values() for c in cs
                                                      if not isinstance(c, Pending)], results,
                                                     progress=progress, train=train_missing)}
    except train.NotRecorded:        # training off, or the time limit passed: the rest shows as missing
        found = {}
    rows = []
    for label, configs in grid.items():
        for cfg in configs:
            if isinstance(cfg, Pending):
                rows.append({"label": label, "dataset": cfg.dataset, "backbone": cfg.backbone, "size": cfg.size,
                             "seed": cfg.seed, "method": cfg.method, "status": "untuned"})
                continue
            c = cfg.canonical()
            row = {"label": label, "dataset": c.dataset, "backbone": c.backbone, "size": c.size, "seed": c.seed,
                   "method": c.method}
            rec = found.get(c.key()) or runs.read_record(c.key(), results)
            if rec is None:
                rows.append({**row, "status": "missing"})
                continue
            row.update(status="ok", key=rec["key"], n_params=rec["n_params"], best_epoch=rec["best_epoch"],
                       epochs_run=rec["epochs_run"], epochs=c.epochs, train_seconds=rec["timing"]["train_seconds"],
                       device=runs.device_kind(rec["provenance"]["device"]))
            for proto in ("sampled", "full"):
                sfx = "" if proto == "sampled" else " (full)"
                row.update({f"{m}{sfx}": rec[f"test_{proto}"][m] for m in METRICS})
                row.update({f"valid {m}{sfx}": rec[f"valid_{proto}"][m] for m in ("HR@10", "NDCG@10")})
            rows.append(row)
    return pd.DataFrame(rows)


def summarize(df: pd.DataFrame, metrics=("HR@10", "NDCG@10"), by=("dataset", "backbone", "label")) -> pd.DataFrame:
    """Mean and standard deviation over seeds (columns '<metric> mean', '<metric> std', 'seeds')."""
    ok = df[df.status == "ok"] if "status" in df else df
    by = list(by)
    if ok.empty:                        # nothing recorded: an empty table with the same index and columns
        return pd.DataFrame(index=pd.MultiIndex.from_arrays([[]] * len(by), names=by),
                            columns=[f"{m} {s}" for m in metrics for s in ("mean", "std")] + ["seeds"])
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


def best_cd(df: pd.DataFrame, labels=("CD-T", "CD-S", "CD-H")) -> pd.DataFrame:
    """Rows of two new labels, per dataset and backbone: 'CD-best', the CD guide with the best mean
    validation NDCG@10 over seeds (sampled protocol), and 'CD-best (full)', the same chosen on the
    full-ranking validation, for the full-ranking columns. Test numbers are never chosen on.
    The 'best_of' column names the chosen guide (empty on other rows, and on every row of a table
    without CD runs, e.g. a cell whose students have not been trained yet)."""
    df = df.assign(best_of=None)
    ok = df[(df.status == "ok") & df.label.isin(labels)]
    out = []
    for name, metric in (("CD-best", "valid NDCG@10"), ("CD-best (full)", "valid NDCG@10 (full)")):
        for _, g in ok.groupby(["dataset", "backbone"], sort=False):
            best = g.groupby("label")[metric].mean().idxmax()
            out.append(g[g.label == best].assign(label=name, best_of=best))
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
