"""What the tables rest on (`coverage`: per table, dataset and backbone, the runs recorded and not,
their seeds and device; `profile_coverage`: how much of a profile's grid is recorded, before its
tables are) and the runs that break the fair protocol (`violations`: capped, stalled
on the initial plateau, stopped while still rising, or a teacher below its own plain student), from
the tables in results/."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import pandas as pd

from . import metrics, runs
from .analyses import retrained_towers
from .config import STUDENT, TEACHER_SIZE, Config, dataset_for
from .costs import RUN_TABLES
from .loop import rising, still_rising
from .plan import TRAINING_NOTEBOOKS, profile_runs
from .runs import read_table
from .tables import collect, own_runs


def coverage(results=None) -> pd.DataFrame:
    """What each table rests on: per table, dataset and backbone, the runs recorded and not (missing,
    or waiting for their tuning), the seeds and the device that trained them."""
    rows = []
    for name, what in RUN_TABLES.items():
        t = read_table(name, results)
        if t is None or t.empty:
            continue
        t = own_runs(t)
        for (d, b), g in t.groupby(["dataset", "backbone"], sort=False):
            ok = g[g.status == "ok"]
            devices = sorted(set(ok["device"].dropna())) if "device" in ok else []
            rows.append(
                {
                    "table": what,
                    "dataset": d,
                    "backbone": b,
                    "runs": len(ok),
                    "not recorded": int((g.status != "ok").sum()),
                    "seeds": ", ".join(map(str, sorted(ok.seed.unique()))) or "-",
                    "device": ", ".join(devices) or "-",
                }
            )
    return pd.DataFrame(rows)


def profile_coverage(p, results=None) -> pd.DataFrame:
    """How much of profile `p`'s grid is recorded, before its tables are: per table (the tuning
    stage, then each training notebook), dataset and backbone, the runs it plans
    (`plan.profile_runs`), those recorded, and the share. Runs are counted as `profile_runs`
    counts them, a run that two tables name in the first: the tuning stage's at its real choices,
    the tables' at the settings tuned so far (a cell whose tuning is not recorded has none of its
    tables' runs yet); "CPU hours": the recorded runs' cost (`runs.run_seconds`: CPU time, else
    wall time less paused epochs; 0 where a record has neither). Reads the records; trains nothing."""
    from . import experiments, tuning
    from .config import Execution

    off = Execution(train=False)
    look = dataclasses.replace(p, execution=off)
    seen, done, seconds = set(), Counter(), Counter()

    def count(table: str, df: pd.DataFrame) -> None:
        for r in df[df.status == "ok"].itertuples():
            if r.key not in seen:
                seen.add(r.key)
                done[(table, r.dataset, r.backbone)] += 1
                cost = runs.run_seconds(runs.read_record(r.key, results) or {})
                seconds[(table, r.dataset, r.backbone)] += 0.0 if math.isnan(cost) else cost

    with tuning.read_once():  # each cell's tuning read once, not once per table
        for d in p.tuning_datasets():
            for b in p.backbones:
                count("00_tuning", tuning.tune(look, d, b, results, progress=False)[0])
        for nb in TRAINING_NOTEBOOKS:
            count(nb, collect(experiments.notebook_grid(nb, look, results), results, off, False))
    plan = profile_runs(p).groupby(["table", "dataset", "backbone"], sort=False).size()
    out = plan.rename("runs").reset_index()
    out["recorded"] = [done[k] for k in plan.index]
    out["CPU hours"] = [seconds[k] / 3600 for k in plan.index]
    total = {
        "table": "all",
        "runs": int(out.runs.sum()),
        "recorded": int(out.recorded.sum()),
        "CPU hours": out["CPU hours"].sum(),
    }
    out = pd.concat([out, pd.DataFrame([total])], ignore_index=True)
    out["recorded %"] = (100 * out.recorded / out.runs).round(1)
    return out


def coverage_grid(cov: pd.DataFrame) -> pd.DataFrame:
    """`profile_coverage` as a grid: a row per dataset and backbone, a column per table, each cell
    "recorded / planned"."""
    cells = cov[cov.table != "all"].assign(
        cell=lambda x: x.recorded.astype(str) + " / " + x.runs.astype(str)
    )
    grid = cells.pivot_table(
        index=["dataset", "backbone"], columns="table", values="cell", aggfunc="first", sort=False
    )
    return grid.fillna("").reset_index().rename_axis(columns=None)


_POPULARITY: dict = {}


def popularity_valid_ndcg(config: dict) -> float:
    """Validation NDCG@10 (sampled) of the most-popular ranking on a run's data: the initial plateau."""
    key = (
        config["dataset"],
        config.get("data_sha256"),
        config["data_seed"],
        config.get("subset_users"),
        config.get("valid_negatives", "test"),
    )
    if key not in _POPULARITY:
        c = Config(
            dataset=config["dataset"],
            data_seed=config["data_seed"],
            subset_users=config.get("subset_users"),
            device="cpu",
        ).canonical()
        ds = dataset_for(c)
        _POPULARITY[key] = metrics.evaluate(
            metrics.Popularity(ds), ds, "valid", "sampled", valid_negatives=key[-1]
        )["NDCG@10"]
    return _POPULARITY[key]


def record_popularity(rec: dict) -> float:
    """The most-popular ranking's validation NDCG@10 on a record's data: the one the record keeps,
    else `popularity_valid_ndcg` (records made before they kept it)."""
    return rec.get("popularity_valid_NDCG@10") or popularity_valid_ndcg(rec["config"])


def _table_runs(results=None, folder: str | None = None):
    """The run tables (`RUN_TABLES`, results/<folder>/'s where `folder` is given) that name their
    runs: (table name, whole table, its runs of their own with status ok, `own_runs`)."""
    for name in RUN_TABLES:
        t = read_table(name if folder is None else f"{folder}/{name}", results)
        if t is not None and "key" in t:
            yield name, t, own_runs(t[t.status == "ok"])


def _recorded(rows: pd.DataFrame, results=None):
    """(row, record) of each row of a run table whose record is there."""
    for r in rows.itertuples():
        rec = runs.read_record(r.key, results)
        if rec is not None:
            yield r, rec


# A teacher below its own plain student that was mended: (dataset, backbone) -> the fix applied
# (issue 23); `violations` lists it beside the problem
FIXES: dict = {
    ("yelp", "neumf"): (
        "profile next tunes yelp's learning rates on yelp (the paper profile borrowed ml-1m's), "
        "waits for rising curves (Config.rise) and initialises NeuMF's tower as NCF's code does "
        "(mlp_init='ncf'): under PyTorch's defaults its chosen teacher stayed below its plain "
        "student on tuning seed 1, whose student had lost its MLP tower in its first epoch (README "
        "Known issues)"
    )
}


# `stopped_rising`'s thresholds, early stopping's own (`Config.rise`, `Config.rise_t`) [decision]: on
# the 1,340 records of 2026-12-03 they flagged one run, the yelp NeuMF teacher at lr 1e-3, seed 0 (+4.2%,
# t = 7.0; best epoch 4, stopped at 50, while its seed 1 climbed to 0.4267 at epoch 422), which was
# then re-run under the rule; the next largest rise was +1.9% (t = 2.9), on ml-100k
RISE, RISE_T = Config.rise, Config.rise_t


def stopped_rising(curve, patience: int | None, rise: float = RISE, t: float = RISE_T) -> str:
    """Why early stopping ended a run while its validation NDCG@10 was still rising, or "": the
    least-squares line through its last `patience` epochs (those without a new best that ended it)
    rising by more than `rise` x its best, with a slope `t` standard errors above 0 or more
    (`loop.still_rising`: since `Config.rise`, the rule keeps such a run going). A run whose curve or
    patience is not recorded, or is shorter, is not judged."""
    if not still_rising(curve, patience, rise, t):
        return ""
    up, tt = rising(curve, patience)
    return (
        f"stopped rising (valid NDCG@10 +{up:.1%} of its best over its last {patience} epochs, "
        f"slope t = {tt:.1f})"
    )


def violations(
    results=None, stall: float = 1.05, last: float = 0.1, folder: str | None = None
) -> pd.DataFrame:
    """Every recorded run a table uses that breaks the fair protocol (METHOD.md "A fair comparison"):
    'capped', its best validation epoch in the last `last` fraction of its epoch cap (still improving
    when cut off), 'stalled', its best validation NDCG@10 at most `stall` x that of the most-popular
    ranking (never left the initial plateau), 'stopped rising', ended by early stopping while its
    validation still rose (`stopped_rising`), or a teacher 'below its plain student' of the same
    seed on validation NDCG@10 (a weak teacher makes every distillation look worse than it is), with
    the fix applied where there is one (`FIXES`; for a run of the tuning stage, whether its stage
    chose its point, `_tuning_point`). One row per table, run and kind of problem. The
    tables are results/<folder>/'s where `folder` is given (a profile's tables from its records,
    `claim_tables.save_recorded_tables`), the records results/runs/ either way."""
    rows = []
    for name, whole, own in _table_runs(results, folder):
        what = RUN_TABLES[name]
        for r, rec in _recorded(own, results):
            c = rec["config"]
            best_valid = rec["valid_sampled"]["NDCG@10"]
            pop = record_popularity(rec)
            problems = []
            if rec["best_epoch"] > (1 - last) * c["epochs"]:
                problems.append(f"capped (best epoch {rec['best_epoch']} of cap {c['epochs']})")
            if best_valid <= stall * pop:
                problems.append(f"stalled (valid NDCG@10 {best_valid:.4f}, popularity {pop:.4f})")
            early = rec["epochs_run"] < c["epochs"]  # (a run its cap ended is not early-stopped)
            if early and (why := stopped_rising(rec.get("curve"), c.get("patience"))):
                problems.append(why)
            if problems:
                rows.append(
                    {
                        "table": what,
                        "dataset": r.dataset,
                        "backbone": r.backbone,
                        "label": r.label,
                        "size": c["size"],
                        "seed": r.seed,
                        "best epoch": rec["best_epoch"],
                        "epochs run": rec["epochs_run"],
                        "cap": c["epochs"],
                        "problem": "; ".join(problems),
                        "fix": _tuning_point(whole, r) if name == "00_tuning_runs" else "",
                    }
                )
        rows += _weak_teachers(own, what, results)
    cols = [
        "table",
        "dataset",
        "backbone",
        "label",
        "size",
        "seed",
        "best epoch",
        "epochs run",
        "cap",
        "problem",
        "fix",
    ]
    return pd.DataFrame(rows, columns=cols)


def _tuning_point(runs_table: pd.DataFrame, r) -> str:
    """What became of tuning run `r`'s point (a row of the tuning stage's run table `runs_table`):
    the point its stage chose by mean validation NDCG@10 (`tuning.chosen_point`'s rule), or that
    the stage is not recorded whole yet."""
    col = "valid NDCG@10"
    g = runs_table[
        (runs_table.dataset == r.dataset)
        & (runs_table.backbone == r.backbone)
        & (runs_table.stage == r.stage)
    ]
    if (g.status != "ok").any():
        return "its stage is not recorded whole yet"
    means = g.groupby("label", sort=False)[col].mean()
    best = means.idxmax()  # (ties: the earlier point)
    if best == r.label:
        return "its stage chose this point"
    return (
        f"not chosen: its stage chose {best} (mean {col} {means[best]:.4f} against "
        f"{means[r.label]:.4f})"
    )


def _weak_teachers(t: pd.DataFrame, what: str, results=None) -> list[dict]:
    """Rows of `violations` for the teachers of table `t` whose validation NDCG@10 (sampled) is below
    that of the plain student (of the main size, `STUDENT`) of their dataset, backbone and seed."""
    col = "valid NDCG@10"
    if col not in t or not {"Teacher", "Student"} <= set(t.label):
        return []
    rows = []
    own = (t.label == "Teacher") | ((t.label == "Student") & (t["size"] == t.backbone.map(STUDENT)))
    pair = t[own].pivot_table(index=["dataset", "backbone", "seed"], columns="label", values=col)
    for (d, b, seed), r in pair[pair.Teacher < pair.Student].iterrows():
        key = t[(t.label == "Teacher") & (t.dataset == d) & (t.backbone == b) & (t.seed == seed)]
        rec = runs.read_record(key.key.iloc[0], results) or {}
        rows.append(
            {
                "table": what,
                "dataset": d,
                "backbone": b,
                "label": "Teacher",
                "size": rec.get("config", {}).get("size"),
                "seed": seed,
                "best epoch": rec.get("best_epoch"),
                "epochs run": rec.get("epochs_run"),
                "cap": rec.get("config", {}).get("epochs"),
                "problem": f"below its plain student (valid NDCG@10 {r.Teacher:.4f} < {r.Student:.4f})",
                "fix": FIXES.get((d, b), ""),
            }
        )
    return rows


def first_epoch_drops(results=None, folder: str | None = None, below: float = 0.5) -> pd.DataFrame:
    """NeuMF students (any size but the teacher's) of the run tables whose first epoch scores below
    `below` x the most-popular ranking's validation NDCG@10: the mark of a tower that lost its last
    live unit in that epoch (of the runs `analyses.first_epochs` retrained, next's ml-100k and yelp
    plain students of the tuning stage under PyTorch's initialisation, those with the mark are those
    with no live unit; a proxy still, which a slow first epoch at a small learning rate sets too:
    `NeuMF.tower_units` of the weights is the proof). Per dataset and method: the distinct runs
    recorded, those that dropped, their seeds, and of the dropped runs those `first_epochs`
    retrained ("retrained") and whose tower it found dead ("tower dead",
    `analyses.retrained_towers`). The tables as `violations` reads them (`_table_runs`,
    `folder`)."""
    towers = retrained_towers(results)
    seen, rows = set(), []
    for *_, own in _table_runs(results, folder):
        fresh = own[(own.backbone == "neumf") & ~own.key.isin(seen)].drop_duplicates("key")
        seen.update(fresh.key)
        for _, rec in _recorded(fresh, results):
            c = rec["config"]
            if c["size"] == TEACHER_SIZE["neumf"] or not rec.get("curve"):
                continue
            pop = record_popularity(rec)
            first = rec["curve"][0]["valid_NDCG@10"]
            rows.append(
                {
                    "dataset": c["dataset"],
                    "method": c["method"],
                    "seed": c["seed"],
                    "dropped": first < below * pop,
                    "units": towers.get(rec["key"]),
                }
            )
    cols = ["dataset", "method", "runs", "dropped", "seeds dropped", "retrained", "tower dead"]
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows)
    df["seeds dropped"] = df.seed.where(df.dropped)
    df["retrained"] = df.dropped & df.units.notna()
    df["tower dead"] = df.retrained & df.units.eq(0)
    return (
        df.groupby(["dataset", "method"], sort=False)
        .agg(
            runs=("dropped", "size"),
            dropped=("dropped", "sum"),
            retrained=("retrained", "sum"),
            **{"tower dead": ("tower dead", "sum")},
            **{
                "seeds dropped": (
                    "seeds dropped",
                    lambda s: ", ".join(f"{x:g}" for x in sorted(set(s.dropna()))),
                )
            },
        )
        .reset_index()[cols]
    )
