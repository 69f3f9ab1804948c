"""From configurations to tables: `collect` runs or reads every configuration of a grid and returns
one row per run; `summarize` gives mean and standard deviation over seeds; `compare` the gain of
one method over another with a paired t-test (scipy.stats.ttest_rel) over seeds; `best_cd` the CD
guide chosen on validation, and `compare_best` / `gain_over` it against another method on both
protocols; `save_table` writes a table to results/."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from . import runs, train
from .config import Execution

METRICS = ["HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@20", "NDCG@20", "MRR"]


@dataclass(frozen=True)
class Pending:
    """A grid entry that cannot be configured yet: its tuning is not recorded (training off)."""

    dataset: str
    backbone: str
    seed: int
    size: int | None
    method: str
    reason: str


COLLECTED = ["label", "dataset", "backbone", "size", "seed", "method"]  # every row's first columns


def collect(
    grid: dict, results=None, execution: Execution | None = None, progress: bool = True
) -> pd.DataFrame:
    """Run (or read) every configuration of a grid: one row per run, the test metrics of both
    protocols and the validation metrics every choice is made on ('valid NDCG@10', ...). A run that
    is not recorded while training is off shows as status 'missing'; a configuration waiting for its
    tuning as 'untuned'. Runs not recorded are trained first, in groups (`train.run_group`), as
    `execution` says (default: trained, one at a time)."""
    try:
        found = {
            r["key"]: r
            for r in train.run_group(
                [c for cs in grid.values() for c in cs if not isinstance(c, Pending)],
                results,
                progress=progress,
                execution=execution,
            )
        }
    except train.NotRecorded:  # training off, or the time limit passed: the rest shows as missing
        found = {}
    rows = []
    for label, configs in grid.items():
        for cfg in configs:
            if isinstance(cfg, Pending):
                rows.append(
                    {
                        "label": label,
                        "dataset": cfg.dataset,
                        "backbone": cfg.backbone,
                        "size": cfg.size,
                        "seed": cfg.seed,
                        "method": cfg.method,
                        "status": "untuned",
                    }
                )
                continue
            c = cfg.canonical()
            row = {
                "label": label,
                "dataset": c.dataset,
                "backbone": c.backbone,
                "size": c.size,
                "seed": c.seed,
                "method": c.method,
            }
            rec = found.get(c.key()) or runs.read_record(c.key(), results)
            if rec is None:
                rows.append({**row, "status": "missing"})
                continue
            row.update(
                status="ok",
                key=rec["key"],
                n_params=rec["n_params"],
                best_epoch=rec["best_epoch"],
                epochs_run=rec["epochs_run"],
                epochs=c.epochs,
                train_seconds=rec["timing"]["train_seconds"],
                device=runs.device_kind(rec["provenance"]["device"]),
            )
            rows.append({**row, **record_metrics(rec)})
    # an empty grid (a table a profile's scope leaves out here) still has the columns callers read
    return pd.DataFrame(rows, columns=None if rows else [*COLLECTED, "status"])


def own_runs(t: pd.DataFrame) -> pd.DataFrame:
    """The rows of a table that are runs of their own: not "CD-best" (the best guide's runs again)
    nor "CD" (the chosen guide's runs again, profile next)."""
    label = t.label.astype(str)
    return t[~label.str.startswith("CD-best") & (label != "CD")]


def record_metrics(rec: dict) -> dict:
    """A record's columns in a table row: the test metrics of both protocols ('NDCG@10',
    'NDCG@10 (full)', ...) and the validation metrics every choice is made on ('valid NDCG@10', ...)."""
    out = {}
    for proto, sfx in (("sampled", ""), ("full", " (full)")):
        out.update({f"{m}{sfx}": rec[f"test_{proto}"][m] for m in METRICS})
        out.update({f"valid {m}{sfx}": rec[f"valid_{proto}"][m] for m in ("HR@10", "NDCG@10")})
    return out


def summarize(
    df: pd.DataFrame, metrics=("HR@10", "NDCG@10"), by=("dataset", "backbone", "label")
) -> pd.DataFrame:
    """Mean and standard deviation over seeds (columns '<metric> mean', '<metric> std', 'seeds')."""
    ok = df[df.status == "ok"] if "status" in df else df
    by = list(by)
    if ok.empty:  # nothing recorded: an empty table with the same index and columns
        return pd.DataFrame(
            index=pd.MultiIndex.from_arrays([[]] * len(by), names=by),
            columns=[f"{m} {s}" for m in metrics for s in ("mean", "std")] + ["seeds"],
        )
    g = ok.groupby(by, sort=False)
    out = g[list(metrics)].agg(["mean", "std"])
    out.columns = [f"{m} {s}" for m, s in out.columns]
    out["seeds"] = g.size()
    if "n_params" in ok:
        out["params"] = g["n_params"].first()
    return out.sort_index(level=[0, 1], sort_remaining=False)


def compare(
    df: pd.DataFrame, better: str, worse: str, metrics=("HR@10", "NDCG@10")
) -> pd.DataFrame:
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
            row[f"{m} p"] = (
                stats.ttest_rel(x, y).pvalue if len(seeds) >= 2 and np.any(x != y) else np.nan
            )
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
            out[m] = [
                f"{a:.{digits}f}" + (f" ± {s:.{digits}f}" if s == s and s is not None else "")
                for a, s in zip(table[c], sd if sd is not None else [np.nan] * len(table))
            ]
        elif not c.endswith(" std"):
            out[c] = table[c]
    return out


def markdown(df: pd.DataFrame) -> str:
    """A DataFrame as a GitHub markdown table (no extra dependency)."""
    df = df.reset_index() if not isinstance(df.index, pd.RangeIndex) else df
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "---|" * len(df.columns)
    body = [
        "| "
        + " | ".join("" if (isinstance(v, float) and np.isnan(v)) else str(v) for v in row)
        + " |"
        for row in df.itertuples(index=False)
    ]
    return "\n".join([head, sep, *body])


def save_table(df: pd.DataFrame, name: str, results=None) -> str:
    """Write a table to results/<name>.csv atomically; returns the path."""
    path = runs.results_dir(results) / f"{name}.csv"
    runs.write_atomic(path, df.to_csv(float_format="%.6g"))
    return str(path)


def compare_best(ok: pd.DataFrame, worse: str, metric: str) -> pd.DataFrame:
    """`compare` of the best CD guide against `worse` on both protocols, each protocol's best guide
    chosen on its own validation metric (rows 'CD-best' and 'CD-best (full)' of tables.best_cd)."""
    s = compare(ok, "CD-best", worse, metrics=(metric,))
    f = compare(ok, "CD-best (full)", worse, metrics=(f"{metric} (full)",))
    if s.empty or f.empty:
        return s if f.empty else f
    return s.merge(
        f.drop(columns=["better", "worse", "seeds"]), on=["dataset", "backbone"], how="outer"
    )


def gain_over(ok: pd.DataFrame, worse: str) -> pd.DataFrame:
    """`compare_best` on HR@10 and NDCG@10 side by side, per dataset and backbone; empty while no
    cell has both the CD guides and `worse` recorded (a cell with its teachers only, say)."""
    hr, ndcg = compare_best(ok, worse, "HR@10"), compare_best(ok, worse, "NDCG@10")
    if hr.empty or ndcg.empty:
        return pd.DataFrame()
    return hr.merge(ndcg.drop(columns=["better", "worse", "seeds"]), on=["dataset", "backbone"])
