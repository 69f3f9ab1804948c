"""A profile's plan, priced: every run it trains before any is recorded (`profile_runs`), their CPU
hours per table and cell (`profile_estimate`, each run priced by `costs.pricer`), that estimate set
beside the hours complete tables took (`estimate_check`), and the hours still to go (`hours_to_go`)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd

from . import costs, runs

# the training notebooks whose grids `profile_runs` lists (`experiments.notebook_grid`)
TRAINING_NOTEBOOKS = ("03_main", "02_teachers", "04_sampling", "06_student_size", "07_sensitivity")


def profile_runs(p) -> pd.DataFrame:
    """Every distinct run (of the backbones; iALS's, minutes in all, aside) that profile `p` trains,
    before any is recorded: its tuning stage (each stage's points x tuning seeds on each tuning
    dataset and backbone) and its training notebooks' grids, a run that two of them name counted
    once, where it first appears. Every stage is enumerated as if it chose its first grid point
    (`tuning.first_choice`), the settings the grids are enumerated at: a run that the tuning
    stage trains at its chosen point (the main table's runs at the tuning seeds, the sensitivity
    figure's points that are tuning points, ...) is then the same configuration whichever point it
    chooses. One row per run:
    table, label, dataset, backbone, size, method, seed."""
    from . import experiments, tuning
    from .config import Execution

    seen, rows = set(), []

    def add(table, label, c):
        c = c.canonical()
        if c.key() not in seen:
            seen.add(c.key())
            rows.append((table, label, c.dataset, c.backbone, c.size, c.method, c.seed))

    stage_label = {"Teacher": "Teacher", "Student": "Student", "RD": "RD", "CD": "CD-T"}
    first = tuning.first_choice(p) if p.tuning else None
    for d in p.tuning_datasets():
        for b in p.backbones:
            for stage in tuning.tuning_stages(p):
                for cfgs in tuning.stage_grid(p, d, b, stage, first).values():
                    for c in cfgs:  # the guide stage's runs priced as their guide's
                        add("00_tuning", stage_label.get(stage, f"CD-{c.guide[0].upper()}"), c)
    q = dataclasses.replace(p, presume=first, execution=Execution(train=False))
    for nb in TRAINING_NOTEBOOKS:
        for label, cfgs in experiments.notebook_grid(nb, q).items():
            for c in cfgs:
                add(nb, label, c)
    return pd.DataFrame(
        rows, columns=["table", "label", "dataset", "backbone", "size", "method", "seed"]
    )


def profile_estimate(
    p, bench_records: list[dict], results=None, step: str = "deferred", digits: int | None = 1
) -> pd.DataFrame:
    """The CPU hours of profile `p`'s whole grid (`profile_runs`), per table, dataset and backbone,
    with the dense step and with `step`: every run priced as `compute` estimates a run to go (the
    recorded runs of the same kind, on the same dataset or the nearest in work, at no fewer epochs
    than the minimum `p` trains its cell for: `Profile.min_epochs_for`) and divided by its kind's
    benched ratio (`costs.pricer`), rounded to `digits` (None: not rounded). Empty without bench
    records or recorded runs."""
    price = costs.pricer(bench_records, costs.grid_runs(results), results, step)
    if price is None:
        return pd.DataFrame()
    t = profile_runs(p)
    priced = [
        price(
            r.dataset,
            r.backbone,
            r.size,
            r.method,
            r.label,
            min_epochs=p.min_epochs_of(r.dataset, r.backbone),
        )[:2]
        for r in t.itertuples()
    ]
    t["dense"], t["stepped"] = np.array(priced, dtype=float).reshape(-1, 2).T
    g = t.groupby(["table", "dataset", "backbone"], sort=False)
    out = g.size().rename("runs").to_frame()
    # a run without an estimate leaves its cell without one
    out["CPU hours, dense step"] = g.dense.apply(lambda x: x.sum(skipna=False)) / 3600
    out[f"CPU hours, {step} step (est.)"] = g.stepped.apply(lambda x: x.sum(skipna=False)) / 3600
    out = out.reset_index()
    return costs.with_total(out, list(out.columns[-2:]), ("table", "dataset", "backbone"), digits)


def estimate_check(estimate: pd.DataFrame, coverage: pd.DataFrame) -> pd.DataFrame:
    """`profile_estimate` against what was recorded (`audit.profile_coverage`), per dataset and
    backbone, over its tables whose every planned run is recorded: runs, the estimated CPU hours (the
    last column of `estimate`: the stepped one) and the recorded ones, and recorded / estimated. A
    table with a run still to go is left out (its recorded hours price only part of it), and so is a
    cell with no complete table."""
    keys = ["table", "dataset", "backbone"]
    col = estimate.columns[-1]
    est = estimate[estimate.table != "all"].set_index(keys)[col]
    cov = coverage[coverage.table != "all"].set_index(keys)
    done = cov[(cov.recorded == cov.runs) & (cov.runs > 0)]
    out = pd.DataFrame(
        {
            "runs": done.runs,
            "CPU hours, estimated": est.reindex(done.index),
            "CPU hours, recorded": done["CPU hours"],
        }
    )
    out = out.groupby(level=["dataset", "backbone"], sort=False).sum(min_count=1)
    out["recorded / estimated"] = out["CPU hours, recorded"] / out["CPU hours, estimated"]
    return out.reset_index()


def hours_to_go(estimate: pd.DataFrame, coverage: pd.DataFrame, by=("backbone",)) -> pd.DataFrame:
    """What `coverage` (`audit.profile_coverage`) has not recorded of `estimate` (`profile_estimate`),
    per backbone (or per `by`: ("dataset", "backbone") gives a row per cell): the runs to go, the
    estimated CPU hours to go (each table and cell's estimate, the last column, times its share of
    runs not recorded), the recorded / estimated ratio of the backbone's complete tables
    (`estimate_check`, pooled over them; NaN where none is complete), and the hours to go at that
    ratio. A last row "all" sums them."""
    keys, by = ["table", "dataset", "backbone"], list(by)
    est = estimate[estimate.table != "all"].set_index(keys)[estimate.columns[-1]]
    cov = coverage[coverage.table != "all"].set_index(keys)
    left = cov.runs - cov.recorded
    rows = pd.DataFrame({"runs to go": left, "hours": est.reindex(cov.index) * left / cov.runs})
    grouped = rows.groupby(level=by, sort=False).agg(lambda x: x.sum(skipna=False))
    done = estimate_check(estimate, coverage).groupby("backbone", sort=False).sum(numeric_only=True)
    by_backbone = done["CPU hours, recorded"] / done["CPU hours, estimated"]
    ratio = grouped.index.to_frame().backbone.map(by_backbone).to_numpy()
    out = pd.DataFrame(
        {
            "runs to go": grouped["runs to go"].astype(int),
            "CPU hours to go, estimated": grouped.hours,
            "recorded / estimated": ratio,
            "CPU hours to go, at that ratio": grouped.hours * ratio,
        }
    ).reset_index()
    total = out.sum(numeric_only=True, skipna=False)
    total["recorded / estimated"] = (
        total["CPU hours to go, at that ratio"] / total["CPU hours to go, estimated"]
    )
    first = {by[0]: "all", **{k: "" for k in by[1:]}}
    out = pd.concat([out, pd.DataFrame([{**first, **total}])], ignore_index=True)
    return out.astype({"runs to go": int})


def bench_steps(results=None) -> list[dict]:
    """The step bench's records (results/bench/steps_*_cpu.json, `python -m cdlib.bench --steps`),
    from which `profile_estimate` prices a grid."""
    paths = sorted(runs.results_dir(results).glob("bench/steps_*_cpu.json"))
    return [json.loads(p.read_text()) for p in paths]
