"""The claims table (METHOD.md "The claims to reproduce"), the verdicts the notebooks print, what
each table rests on (`coverage`) and the runs that break the fair protocol (`violations`), all
computed from the tables in results/, never typed by hand (the README's section: `readme`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import metrics, runs
from .config import STUDENT, Config, dataset_for
from .costs import RUN_TABLES
from .runs import read_table
from .tables import compare

PAPER_GAIN = {"HR": (2.7, 33.2), "NDCG": (2.7, 29.1)}  # CD over RD, arXiv v1 abstract [paper]
BACD_GAIN = {"HR": (3.5, 12.0), "NDCG": (4.9, 13.3)}  # journal extension [paper]


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment (Holm 1979) of a family of p-values: the i-th smallest of m is
    multiplied by (m - i + 1), made non-decreasing, capped at 1. NaN p-values (no test) stay NaN
    and do not count in m."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = len(idx)
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    adj = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adj
    return out


PROTOCOLS = {"sampled": "", "full": " (full)"}


def _claim_rows(
    claim: str, gains: pd.DataFrame, metric: str, what: str, paper_range=None
) -> list[dict]:
    """Rows of one claim from a `compare` table whose metrics carry both protocols: per cell the
    gain, the paired t-test and, per protocol, the Holm-adjusted p over the claim's cells."""
    rows = []
    for g in gains.to_dict("records"):
        row = {
            "claim": claim,
            "dataset": g["dataset"],
            "backbone": g["backbone"],
            "seeds": g["seeds"],
        }
        for proto, sfx in PROTOCOLS.items():
            row[f"gain % ({proto})"] = g.get(f"{metric}{sfx} gain %")
            row[f"p ({proto})"] = g.get(f"{metric}{sfx} p")
        rows.append(row)
    if not rows:
        return rows
    lo, hi = paper_range if paper_range else (None, None)
    for proto in PROTOCOLS:
        adj = holm([r[f"p ({proto})"] for r in rows])
        for r, a in zip(rows, adj):
            gain = r[f"gain % ({proto})"]
            r[f"p Holm ({proto})"] = a
            r[f"held ({proto})"] = bool(
                gain is not None and gain > 0 and not np.isnan(a) and a < ALPHA
            )
            r[f"in paper range ({proto})"] = (
                bool(lo <= gain <= hi) if paper_range and gain == gain else None
            )
    for r in rows:
        r["measured"] = (
            "; ".join(_measured(r, proto) for proto in PROTOCOLS) + f" [{what}, {r['seeds']} seeds]"
        )
        r["paper"] = f"{lo}-{hi}%" if paper_range else "better"
    return rows


def _measured(r: dict, proto: str) -> str:
    gain, p = r[f"gain % ({proto})"], r[f"p ({proto})"]
    if gain is None or np.isnan(gain):
        return f"{proto}: n/a"
    test = (
        "no test" if p is None or np.isnan(p) else f"p {p:.3g}, Holm {r[f'p Holm ({proto})']:.3g}"
    )
    return f"{proto}: {gain:+.1f}% ({test})"


ALPHA = 0.05
CLAIM_COLUMNS = [
    "claim",
    "dataset",
    "backbone",
    "seeds",
    "measured",
    *[f"{c} ({p})" for p in PROTOCOLS for c in ("gain %", "p", "p Holm", "held", "in paper range")],
    "paper",
]


def claims(results=None, close: float = 0.9) -> pd.DataFrame:
    """One row per claim and dataset x backbone, the sampled and the full-ranking result side by side:
    the gain, its paired t-test over seeds (a seed is a whole replicate: a student and the teacher it
    was distilled from), the Holm-adjusted p over the claim's cells (per protocol), and `held`:
    significant after adjustment (alpha = 0.05) and in the claimed direction. "CD-best" is the CD guide
    with the best validation NDCG@10 of the same protocol.

    close: the CD student 'comes close to the teacher' when its NDCG@10 is at least this fraction
    of its own teacher's (the mean over seeds of the per-seed ratio) [decision]."""
    rows = []
    main = read_table("03_main_runs", results)
    if main is not None and (main.status == "ok").any():
        ok = main[main.status == "ok"]
        for m, key in (("HR@10", "HR"), ("NDCG@10", "NDCG")):
            g = compare_best(ok, "RD", m)
            rows += _claim_rows(
                f"3. CD beats RD ({m})", g, m, "best CD guide vs RD", PAPER_GAIN[key]
            )
        for (d, b), g in ok.groupby(["dataset", "backbone"], sort=False):
            row = {
                "claim": "4. CD student comes close to the teacher (NDCG@10)",
                "dataset": d,
                "backbone": b,
                "paper": f">= {100 * close:.0f}% [decision]",
            }
            parts = []
            for proto, sfx in PROTOCOLS.items():
                t = g[g.label == "Teacher"].set_index("seed")[f"NDCG@10{sfx}"]
                c = g[g.label == _best_label(proto)].set_index("seed")[f"NDCG@10{sfx}"]
                seeds = t.index.intersection(c.index)
                if len(seeds) == 0:
                    continue
                r = float((c[seeds] / t[seeds]).mean())
                row.update(
                    {
                        "seeds": len(seeds),
                        f"gain % ({proto})": 100 * (r - 1),
                        f"held ({proto})": bool(r >= close),
                    }
                )
                parts.append(f"{proto}: {100 * r:.1f}% of its teacher")
            if parts:
                rows.append({**row, "measured": "; ".join(parts)})
    eff = read_table("08_efficiency", results)
    if eff is not None:
        for (d, b, _), g in eff.groupby(["dataset", "backbone", "device"], sort=False):
            t = g[g.label == "Teacher"]
            s = g[(g.label == "Student") & (g["size"] == STUDENT[b])]
            if t.empty or s.empty:
                continue
            t, main_s = t.iloc[0], s.iloc[0]
            speed = t.latency_ms / main_s.latency_ms
            held = bool(main_s.n_params < t.n_params and speed > 1)
            rows.append(
                {
                    "claim": "5. the student is smaller and faster",
                    "dataset": d,
                    "backbone": b,
                    "measured": f"{t.n_params / main_s.n_params:.1f}x fewer parameters, {speed:.1f}x faster "
                    f"(size {main_s['size']}, {main_s.device})",
                    "held (sampled)": held,
                    "held (full)": held,
                    "paper": "smaller, faster",
                }
            )
    size = read_table("06_size_runs", results)
    if size is not None and (size.status == "ok").any():
        for m, key in (("HR@10", "HR"), ("NDCG@10", "NDCG")):
            g = compare(size, "BACD", "Teacher", metrics=(m, f"{m} (full)"))
            rows += _claim_rows(
                f"6. born-again CD beats the teacher ({m})",
                g,
                m,
                "BACD vs its teacher",
                BACD_GAIN[key],
            )
    samp = read_table("04_sampling_runs", results)
    if samp is not None and (samp.status == "ok").any():
        ok = samp[samp.status == "ok"]
        for guide in sorted({lab.split("/")[1] for lab in ok.label}):
            for other in ("uniform", "topk"):
                g = compare(
                    ok, f"rank/{guide}", f"{other}/{guide}", metrics=("NDCG@10", "NDCG@10 (full)")
                )
                rows += _claim_rows(
                    f"2. rank-aware sampling beats {other} ({guide}-guided, NDCG@10)",
                    g,
                    "NDCG@10",
                    f"rank vs {other}",
                )
    out = pd.DataFrame(rows).reindex(columns=CLAIM_COLUMNS)
    return out.sort_values(["claim", "dataset", "backbone"], kind="stable", ignore_index=True)


def _best_label(protocol: str) -> str:
    return "CD-best" if protocol == "sampled" else "CD-best (full)"


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


def verdict_gain(gain: pd.DataFrame, metric: str = "NDCG@10") -> str:
    """One sentence: does the best CD guide beat RD, and inside the paper's range?"""
    if gain.empty:
        return "No dataset has both CD and RD runs recorded yet."
    g = gain[f"{metric} gain %"]
    lo, hi = PAPER_GAIN[metric.split("@")[0]]
    inside = ((g >= lo) & (g <= hi)).sum()
    return (
        f"The best CD guide beats RD in {metric} on {(g > 0).sum()} of {len(g)} dataset x backbone cells "
        f"(gains {g.min():+.1f}% to {g.max():+.1f}%; {inside} inside the paper's {lo}-{hi}%), so the claim "
        f"{'holds' if (g > 0).all() else 'does not hold everywhere'} in our runs."
    )


def verdict_best(runs_df: pd.DataFrame, labels, what: str, metric: str = "NDCG@10") -> str:
    """One sentence: in how many dataset x backbone cells is the best label (mean `metric`) one of `labels`?"""
    ok = runs_df[runs_df.status == "ok"]
    if ok.empty:
        return "No runs recorded yet."
    best = (
        ok.groupby(["dataset", "backbone", "label"])[metric]
        .mean()
        .groupby(["dataset", "backbone"])
        .idxmax()
    )
    wins = sum(b[2] in labels for b in best)
    names = ", ".join(f"{b[0]}/{b[1]}: {b[2]}" for b in best)
    return f"{what.capitalize()} is best in {wins} of {len(best)} dataset x backbone cells by {metric} ({names})."


def verdict_pairs(
    runs_df: pd.DataFrame, a: str, b: str, keys, what: str, metric: str = "NDCG@10"
) -> str:
    """One sentence: in how many cells (dataset x backbone x keys) is label a better than label b?"""
    ok = runs_df[runs_df.status == "ok"]
    if ok.empty:
        return "No runs recorded yet."
    m = ok.groupby(["dataset", "backbone", *keys, "label"])[metric].mean().unstack("label")
    if a not in m or b not in m:
        return "No paired runs recorded yet."
    m = m.dropna(subset=[a, b])
    return f"{what.capitalize()}: better by {metric} in {(m[a] > m[b]).sum()} of {len(m)} cells."


def coverage(results=None) -> pd.DataFrame:
    """What each table rests on: per table, dataset and backbone, the runs recorded and not (missing,
    or waiting for their tuning), the seeds and the device that trained them."""
    rows = []
    for name, what in RUN_TABLES.items():
        t = read_table(name, results)
        if t is None or t.empty:
            continue
        t = t[~t.label.astype(str).str.startswith("CD-best")]
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


def violations(results=None, stall: float = 1.05, last: float = 0.1) -> pd.DataFrame:
    """Every recorded run a table uses that breaks the fair protocol (METHOD.md "A fair comparison"):
    'capped', its best validation epoch in the last `last` fraction of its epoch cap (still improving
    when cut off), or 'stalled', its best validation NDCG@10 at most `stall` x that of the most-popular
    ranking (never left the initial plateau). One row per table and run."""
    rows = []
    for name, what in RUN_TABLES.items():
        t = read_table(name, results)
        if t is None or "key" not in t:
            continue
        t = t[(t.status == "ok") & ~t.label.astype(str).str.startswith("CD-best")]
        for r in t.itertuples():
            rec = runs.read_record(r.key, results)
            if rec is None:
                continue
            c = rec["config"]
            best_valid = rec["valid_sampled"]["NDCG@10"]
            pop = rec.get("popularity_valid_NDCG@10") or popularity_valid_ndcg(c)
            problems = []
            if rec["best_epoch"] > (1 - last) * c["epochs"]:
                problems.append(f"capped (best epoch {rec['best_epoch']} of cap {c['epochs']})")
            if best_valid <= stall * pop:
                problems.append(f"stalled (valid NDCG@10 {best_valid:.4f}, popularity {pop:.4f})")
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
                    }
                )
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
    ]
    return pd.DataFrame(rows, columns=cols)
