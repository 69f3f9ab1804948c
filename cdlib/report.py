"""The claims table (METHOD.md "The claims to reproduce") and the README's results section,
both computed from the tables in results/, never typed by hand."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from . import runs
from .experiments import PAPER_GAIN, SENSITIVITY, STUDENT, compare

BACD_GAIN = {"HR": (3.5, 12.0), "NDCG": (4.9, 13.3)}   # journal extension [paper]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def read_table(name: str, results=None) -> pd.DataFrame | None:
    p = runs.results_dir(results) / f"{name}.csv"
    return pd.read_csv(p) if p.is_file() else None


def _mean(runs_df, label, metric):
    g = runs_df[(runs_df.label == label) & (runs_df.status == "ok")]
    return g.groupby(["dataset", "backbone"])[metric].mean()


def _gain_row(claim: str, g: dict, metric: str, alpha: float, paper_range=None, what: str = "") -> dict:
    """A claims row from a `compare` row: held when the mean gain is positive and, with two or more
    paired seeds, the paired t-test rejects equality at `alpha`."""
    gain, p = g[f"{metric} gain %"], g.get(f"{metric} p")
    sig = "" if p is None or pd.isna(p) else f", p = {p:.3g}"
    lo, hi = paper_range if paper_range else (None, None)
    return {"claim": claim, "dataset": g["dataset"], "backbone": g["backbone"],
            "measured": f"{gain:+.1f}% ({what}, {g['seeds']} seeds{sig})",
            "held": bool(gain > 0 and (p is None or pd.isna(p) or p < alpha)),
            "in paper range": bool(lo <= gain <= hi) if paper_range else None,
            "paper": f"{lo}-{hi}%" if paper_range else "better"}


def claims(results=None, close: float = 0.9, alpha: float = 0.05) -> pd.DataFrame:
    """One row per claim and dataset x backbone: the measured figure and whether it held.

    close: the CD student 'comes close to the teacher' when its NDCG@10 is at least this
    fraction of the teacher's [decision]. alpha: significance level of the paired t-tests."""
    rows = []
    main = read_table("03_main_runs", results)
    gains = read_table("03_gain_cd_over_rd", results)
    if gains is not None:
        for g in gains.to_dict("records"):
            for m, key in (("HR@10", "HR"), ("NDCG@10", "NDCG")):
                rows.append(_gain_row(f"3. CD beats RD ({m})", g, m, alpha, paper_range=PAPER_GAIN[key],
                                      what="best CD guide vs RD"))
    if main is not None:
        t, c = _mean(main, "Teacher", "NDCG@10"), _mean(main, "CD-best", "NDCG@10")
        for (d, b), tv in t.items():
            if (d, b) in c.index:
                r = c[(d, b)] / tv
                rows.append({"claim": "4. CD student comes close to the teacher (NDCG@10)", "dataset": d,
                             "backbone": b, "measured": f"{100 * r:.1f}% of the teacher",
                             "held": bool(r >= close), "in paper range": None, "paper": f">= {100 * close:.0f}% [decision]"})
    eff = read_table("08_efficiency", results)
    if eff is not None:
        for (d, b, _), g in eff.groupby(["dataset", "backbone", "device"], sort=False):
            t = g[g.label == "Teacher"]
            s = g[(g.label == "Student") & (g["size"] == STUDENT[b])]
            if t.empty or s.empty:
                continue
            t = t.iloc[0]
            main_s = s.iloc[0]
            speed = t.latency_ms / main_s.latency_ms
            rows.append({"claim": "5. the student is smaller and faster", "dataset": d, "backbone": b,
                         "measured": f"{t.n_params / main_s.n_params:.1f}x fewer parameters, {speed:.1f}x faster "
                                     f"(size {main_s['size']}, {main_s.device})",
                         "held": bool(main_s.n_params < t.n_params and speed > 1), "in paper range": None,
                         "paper": "smaller, faster"})
    size = read_table("06_size_runs", results)
    if size is not None:
        for g in compare(size, "BACD", "Teacher").to_dict("records"):
            for m, key in (("HR@10", "HR"), ("NDCG@10", "NDCG")):
                rows.append(_gain_row(f"6. born-again CD beats the teacher ({m})", g, m, alpha,
                                      paper_range=BACD_GAIN[key], what="BACD vs teacher"))
    samp = read_table("04_sampling_runs", results)
    if samp is not None:
        ok = samp[samp.status == "ok"]
        for guide in sorted({lab.split("/")[1] for lab in ok.label}):
            for other in ("uniform", "topk"):
                for g in compare(ok, f"rank/{guide}", f"{other}/{guide}", metrics=("NDCG@10",)).to_dict("records"):
                    rows.append(_gain_row(f"2. rank-aware sampling beats {other} ({guide}-guided, NDCG@10)", g,
                                          "NDCG@10", alpha, what=f"rank vs {other}"))
    cols = ["claim", "dataset", "backbone", "measured", "held", "in paper range", "paper"]
    return pd.DataFrame(rows, columns=cols).sort_values(["claim", "dataset", "backbone"], kind="stable")


def verdict_gain(gain: pd.DataFrame, metric: str = "NDCG@10") -> str:
    """One sentence: does the best CD guide beat RD, and inside the paper's range?"""
    if gain.empty:
        return "No dataset has both CD and RD runs recorded yet."
    g = gain[f"{metric} gain %"]
    lo, hi = PAPER_GAIN[metric.split("@")[0]]
    inside = ((g >= lo) & (g <= hi)).sum()
    return (f"The best CD guide beats RD in {metric} on {(g > 0).sum()} of {len(g)} dataset x backbone cells "
            f"(gains {g.min():+.1f}% to {g.max():+.1f}%; {inside} inside the paper's {lo}-{hi}%), so the claim "
            f"{'holds' if (g > 0).all() else 'does not hold everywhere'} in our runs.")


def verdict_best(runs_df: pd.DataFrame, labels, what: str, metric: str = "NDCG@10") -> str:
    """One sentence: in how many dataset x backbone cells is the best label (mean `metric`) one of `labels`?"""
    ok = runs_df[runs_df.status == "ok"]
    if ok.empty:
        return "No runs recorded yet."
    best = ok.groupby(["dataset", "backbone", "label"])[metric].mean().groupby(["dataset", "backbone"]).idxmax()
    wins = sum(b[2] in labels for b in best)
    names = ", ".join(f"{b[0]}/{b[1]}: {b[2]}" for b in best)
    return f"{what.capitalize()} is best in {wins} of {len(best)} dataset x backbone cells by {metric} ({names})."


def verdict_pairs(runs_df: pd.DataFrame, a: str, b: str, keys, what: str, metric: str = "NDCG@10") -> str:
    """One sentence: in how many cells (dataset x backbone x keys) is label a better than label b?"""
    ok = runs_df[runs_df.status == "ok"]
    m = ok.groupby(["dataset", "backbone", *keys, "label"])[metric].mean().unstack("label")
    if a not in m or b not in m:
        return "No paired runs recorded yet."
    m = m.dropna(subset=[a, b])
    return f"{what.capitalize()}: better by {metric} in {(m[a] > m[b]).sum()} of {len(m)} cells."


def coverage(results=None) -> pd.DataFrame:
    """Which dataset x backbone cells of the main table hold how many seeds, per method (cells whose
    runs are all missing show 0), and which seeds."""
    main = read_table("03_main_runs", results)
    if main is None or main.empty:
        return pd.DataFrame()
    ok = main[main.status == "ok"]
    t = ok.groupby(["dataset", "backbone", "label"]).seed.nunique().unstack("label")
    cells = pd.MultiIndex.from_frame(main[["dataset", "backbone"]].drop_duplicates())   # missing cells show 0
    t = t.reindex(index=cells, columns=[c for c in LABELS[:-1] if c in set(main.label)]).fillna(0).astype(int)
    t["seeds"] = (ok.groupby(["dataset", "backbone"]).seed.agg(lambda s: ", ".join(map(str, sorted(s.unique()))))
                  .reindex(cells).fillna("-"))
    return t


def early_stops(results=None) -> pd.DataFrame:
    """Runs whose best validation epoch lies within the first `patience` epochs, so that early
    stopping ended them soon: models that peak early (and then overfit), and models stuck on their
    initial plateau, barely trained (tell them apart by `best valid NDCG@10` and `test HR@10`
    against the same cell's other runs). One row per such record in results/runs/."""
    keep = ("size", "method", "guide", "sampling", *SENSITIVITY)
    rows = []
    for r in runs.all_records(results):
        c = r["config"]
        if r["best_epoch"] <= c["patience"] and r["epochs_run"] < c["epochs"]:
            rows.append({"dataset": c["dataset"], "backbone": c["backbone"], "seed": c["seed"],
                         **{k: c.get(k) for k in keep}, "best epoch": r["best_epoch"],
                         "epochs run": r["epochs_run"],
                         "best valid NDCG@10": round(max(e["valid_NDCG@10"] for e in r["curve"]), 4),
                         "test HR@10": round(r["test_sampled"]["HR@10"], 4)})
    cols = ["dataset", "backbone", "seed", *keep, "best epoch", "epochs run", "best valid NDCG@10", "test HR@10"]
    return pd.DataFrame(rows, columns=cols).sort_values(["dataset", "backbone", "size", "method", "seed"],
                                                        ignore_index=True)


def _md(df: pd.DataFrame) -> str:
    """A DataFrame as a GitHub markdown table (no extra dependency)."""
    df = df.reset_index() if not isinstance(df.index, pd.RangeIndex) else df
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join("" if (isinstance(v, float) and np.isnan(v)) else str(v) for v in row) + " |"
            for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


LABELS = ["Teacher", "Student", "RD", "CD-T", "CD-S", "CD-H", "CD-best"]


def main_markdown(main: pd.DataFrame, metrics=("HR@10", "NDCG@10")) -> pd.DataFrame:
    """The main table as one row per dataset x backbone x metric and one column per method,
    'mean ± std (seeds)'."""
    rows = []
    for (d, b), g in main.groupby(["dataset", "backbone"], sort=False):
        g = g.set_index("label")
        for m in metrics:
            row = {"dataset": d, "backbone": b, "metric": m}
            for lab in [x for x in LABELS if x in g.index]:
                mean, sd, n = g.loc[lab, f"{m} mean"], g.loc[lab, f"{m} std"], int(g.loc[lab, "seeds"])
                row[lab] = f"{mean:.4f}" + ("" if pd.isna(sd) else f" ± {sd:.4f}") + f" ({n})"
            rows.append(row)
    out = pd.DataFrame(rows)
    return out[["dataset", "backbone", "metric", *[x for x in LABELS if x in out.columns]]]


def readme_section(results=None) -> str:
    parts = [START, "", "_Generated by `notebooks/09_summary.ipynb` from `results/`; do not edit by hand._", ""]
    main = read_table("03_main", results)
    if main is not None:
        parts += ["### Main table (test, sampled protocol; mean ± std over (seeds))", "",
                  "Students: CDAE H = 20, NeuMF d = 8. CD-T/S/H: teacher-, student-, hybrid-guided CD; "
                  "CD-best: per dataset and backbone, the CD guide with the best mean test NDCG@10, "
                  "shown for both metrics.", "", _md(main_markdown(main)), ""]
    cl = read_table("claims", results)
    if cl is not None:
        parts += ["### Claims", "", _md(cl), ""]
    cov = coverage(results)
    if not cov.empty:
        parts += ["### Coverage (seeds recorded per dataset, backbone and method)", "", _md(cov), ""]
    stops = early_stops(results)
    if not stops.empty:
        parts += ["### Runs stopped early (best validation epoch within the first `patience` epochs)", "",
                  "See [Known issues](#known-issues).", "", _md(stops.astype(object).fillna("")), ""]
    parts.append(END)
    return "\n".join(parts)


def update_readme(results=None, readme=None) -> bool:
    """Replace the README's results section; returns whether it changed."""
    path = readme or runs.REPO / "README.md"
    text = path.read_text()
    new = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: readme_section(results), text, flags=re.S)
    if new != text:
        runs.write_atomic(path, new)
    return new != text
