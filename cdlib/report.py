"""The claims table (METHOD.md "The claims to reproduce"): per claim and cell the effect with its
interval, p-values and minimum detectable effect, and a pooled estimate per claim with its verdict
(`effects`); computed from the tables in results/, never typed by hand (the same in sentences:
`sentences`; the README's section: `readme`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import effects
from .config import STUDENT
from .runs import read_table

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
ALPHA = effects.ALPHA
# Claim 3's primary CD arm, fixed before the main table runs: the CD configuration the tuning stage
# chose, "CD" where the tuning chooses the guide too (profile `next`), else "CD-T" (the paper
# profile's CD stage runs teacher-guided)
PRIMARY_CD = ("CD", "CD-T")


# what the primary arm is, in the claim's name: the paper profile's tuning has no guide stage, so
# its CD runs teacher-guided, a default rather than a choice
PRIMARY_NAME = {"CD": "the tuned CD, guide included", "CD-T": "the tuned CD, its guide untuned"}


def primary_cd(table: pd.DataFrame) -> str:
    """The label of the primary CD arm in a main table (`PRIMARY_CD`: the first it has)."""
    return next((label for label in PRIMARY_CD if (table.label == label).any()), PRIMARY_CD[-1])


PER_PROTOCOL = [
    "seeds",
    "effect %",
    "CI low",
    "CI high",
    "p",
    "p Holm",
    "MDE %",
    "held",
    "in paper range",
    "I2",
    "tau2",
    "cells",
    "verdict",
    "paper range is",
    "CI low HK",
    "CI high HK",
    "verdict HK",
    "changes without one cell",
    "pooled",
]
CLAIM_COLUMNS = [
    "claim",
    "dataset",
    "backbone",
    "measured",
    *[f"{c} ({p})" for p in PROTOCOLS for c in PER_PROTOCOL],
    "paper",
]


def _cells(ok: pd.DataFrame, effect) -> list[dict]:
    """One row per dataset x backbone with, per protocol, `effect(cell rows, column suffix)` (a
    `effects.mean_interval` dict, or None where the cell lacks the runs) and its seeds (the two
    protocols may pair different seeds: CD-best's guide is chosen per protocol)."""
    rows = []
    for (d, b), g in ok.groupby(["dataset", "backbone"], sort=False):
        row = {"dataset": d, "backbone": b}
        for proto, sfx in PROTOCOLS.items():
            e = effect(g, proto, sfx)
            if e is not None and e["n"] > 0:
                row[f"seeds ({proto})"] = e["n"]
                row.update(
                    {f"{k} ({proto})": e[k] for k in ("effect", "ci_low", "ci_high", "p", "sd")}
                )
        if any(f"seeds ({proto})" in row for proto in PROTOCOLS):
            rows.append(row)
    return rows


def _paired_effect(better, worse: str, metric: str):
    """effect(cell, proto, sfx): `effects.paired` of label `better` (or {protocol: label}) against
    `worse` over their common seeds."""

    def effect(g, proto, sfx):
        lab = better[proto] if isinstance(better, dict) else better
        a = g[g.label == lab].set_index("seed")[f"{metric}{sfx}"]
        c = g[g.label == worse].set_index("seed")[f"{metric}{sfx}"]
        seeds = a.index.intersection(c.index)
        return effects.paired(a[seeds], c[seeds]) if len(seeds) else None

    return effect


def _gap_effect(method: str, metric: str):
    """effect(cell, proto, sfx): `effects.gap_recovered` of `method` between Student and Teacher."""

    def effect(g, proto, sfx):
        col = {
            lab: g[g.label == lab].set_index("seed")[f"{metric}{sfx}"]
            for lab in (method, "Student", "Teacher")
        }
        seeds = (
            col[method].index.intersection(col["Student"].index).intersection(col["Teacher"].index)
        )
        if not len(seeds):
            return None
        return effects.gap_recovered(*(col[lab][seeds] for lab in (method, "Student", "Teacher")))

    return effect


def _family(claim: str, ok: pd.DataFrame, effect, what: str, paper_range=None) -> list[dict]:
    """The rows of one claim: per cell and protocol the effect with its 95% interval, p, the
    Holm-adjusted p over the claim's cells, the minimum detectable effect at 80% power at Holm's
    strictest level (alpha / tested cells) for that cell's seed variance, and `held` (adjusted
    p < alpha, effect > 0); then one pooled row per protocol (`effects.pooled`, random effects)
    with its verdict, the cells without which that verdict would change (`_changes_without_one`)
    and, for a claim with a range, where the paper's range stands."""
    rows = [{"claim": claim, **r} for r in _cells(ok, effect)]
    if not rows:
        return rows
    lo, hi = paper_range if paper_range else (None, None)
    pool_row = {"claim": claim, "dataset": "pooled", "backbone": ""}
    for proto in PROTOCOLS:
        n = [r.get(f"seeds ({proto})", 0) for r in rows]
        p = [r.get(f"p ({proto})", np.nan) for r in rows]
        adj = holm(p)
        tested = int(np.isfinite(p).sum())
        for r, a, k in zip(rows, adj, n):
            e = r.get(f"effect ({proto})", np.nan)
            r[f"effect % ({proto})"] = e
            r[f"CI low ({proto})"], r[f"CI high ({proto})"] = (
                r.get(f"ci_low ({proto})"),
                r.get(f"ci_high ({proto})"),
            )
            r[f"p Holm ({proto})"] = a
            r[f"MDE % ({proto})"] = effects.mde(
                r.get(f"sd ({proto})", np.nan), k, ALPHA / max(tested, 1)
            )
            r[f"held ({proto})"] = bool(np.isfinite(a) and a < ALPHA and e > 0)
            r[f"in paper range ({proto})"] = (
                bool(lo <= e <= hi) if paper_range and np.isfinite(e) else None
            )
        cell_effects = [r.get(f"effect ({proto})", np.nan) for r in rows]
        cell_variances = [
            r.get(f"sd ({proto})", np.nan) ** 2 / k if k else np.nan for r, k in zip(rows, n)
        ]
        pool = effects.pooled(cell_effects, cell_variances, n)
        for r, used in zip(rows, effects.poolable(cell_effects, cell_variances)):
            r[f"pooled ({proto})"] = bool(used)  # whether the pool of its claim uses this cell
        held = sum(bool(r[f"held ({proto})"]) for r in rows)
        drops = effects.without_each(cell_effects, cell_variances, n)
        pool_row.update(
            {
                f"effect % ({proto})": pool["effect"],
                f"CI low ({proto})": pool["ci_low"],
                f"CI high ({proto})": pool["ci_high"],
                f"p ({proto})": pool["p"],
                f"I2 ({proto})": pool["i2"],
                f"tau2 ({proto})": pool["tau2"],
                f"cells ({proto})": pool["cells"],
                f"verdict ({proto})": effects.verdict(pool, lo, held, tested),
                f"held ({proto})": bool(np.isfinite(pool["ci_low"]) and pool["ci_low"] > 0),
                f"CI low HK ({proto})": pool["ci_low_hk"],
                f"CI high HK ({proto})": pool["ci_high_hk"],
                f"verdict HK ({proto})": effects.verdict(
                    {"ci_low": pool["ci_low_hk"], "ci_high": pool["ci_high_hk"]}, lo
                )
                if pool["cells"] > 1
                else None,
                f"changes without one cell ({proto})": _changes_without_one(pool, drops, rows, lo),
            }
        )
        if paper_range:
            pool_row[f"paper range is ({proto})"] = effects.against_range(pool, paper_range)
    for r in rows:
        r["measured"] = "; ".join(_measured(r, proto) for proto in PROTOCOLS) + f" [{what}]"
    pool_row["measured"] = (
        "; ".join(measured_pool(pool_row, proto) for proto in PROTOCOLS) + f" [{what}]"
    )
    paper = f"{lo}-{hi}%" if paper_range else "better"
    return [{**r, "paper": paper} for r in rows] + [{**pool_row, "paper": paper}]


def _changes_without_one(pool: dict, drops: list, rows: list[dict], lower) -> str | None:
    """The cells without which the pooled verdict's kind changes (`effects.without_each`), each as
    "dataset/backbone: the kind without it", joined by "; "; "no cell" where none does (an empty cell
    would read back from the CSV as missing); None below two cells."""
    if pool["cells"] < 2:
        return None
    kind = effects.verdict_kind(effects.verdict(pool, lower))
    changed = []
    for r, d in zip(rows, drops):
        if d is not None:
            k = effects.verdict_kind(effects.verdict(d, lower))
            if k != kind:
                changed.append(f"{r['dataset']}/{r['backbone']}: {k}")
    return "; ".join(changed) or "no cell"


def interval_text(r, proto: str) -> str:
    """A row's effect and 95% interval on one protocol: "+2.9% [+1.8, +4.0]"."""
    return (
        f"{r[f'effect % ({proto})']:+.1f}% "
        f"[{r[f'CI low ({proto})']:+.1f}, {r[f'CI high ({proto})']:+.1f}]"
    )


def _measured(r: dict, proto: str) -> str:
    e = r.get(f"effect % ({proto})")
    if e is None or not np.isfinite(e):
        return f"{proto}: n/a"
    if not np.isfinite(r.get(f"p ({proto})", np.nan)):
        return f"{proto}: {e:+.1f}% (one seed, no interval)"
    return (
        f"{proto}: {interval_text(r, proto)} "
        f"(p {r[f'p ({proto})']:.2g}, Holm {r[f'p Holm ({proto})']:.2g}, MDE {r[f'MDE % ({proto})']:.1f}%, "
        f"{r[f'seeds ({proto})']} seeds)"
    )


def measured_pool(r: dict, proto: str) -> str:
    """A pooled row on one protocol in words: effect, interval, cells, I² and verdict."""
    if not r.get(f"cells ({proto})"):
        return f"{proto}: no pooled estimate"
    return (
        f"{proto}: pooled {interval_text(r, proto)} over {int(r[f'cells ({proto})'])} cells, I² "
        f"{100 * (r[f'I2 ({proto})'] if np.isfinite(r[f'I2 ({proto})']) else 0):.0f}%: {r[f'verdict ({proto})']}"
    )


def _cell_table(name: str, results, cells) -> pd.DataFrame | None:
    """results/<name>.csv, only its rows of `cells` ((dataset, backbone) pairs; None: every row)."""
    t = read_table(name, results)
    if t is None or cells is None:
        return t
    keep = np.array([(d, b) in cells for d, b in zip(t.dataset, t.backbone)], dtype=bool)
    return t[keep].reset_index(drop=True)


def _ok(table: pd.DataFrame) -> pd.DataFrame:
    """A run table's finished runs, with only the columns the claims read (a cell's runs are
    selected by label thousands of times, and each selection copies every column it keeps)."""
    metrics = [f"{m}{sfx}" for m in ("HR@10", "NDCG@10") for sfx in PROTOCOLS.values()]
    return table.loc[table.status == "ok", ["dataset", "backbone", "label", "seed", *metrics]]


def claims(results=None, close: float = 0.9, cells=None) -> pd.DataFrame:
    """One row per claim and dataset x backbone, the sampled and the full-ranking protocol side by
    side (`_family`): the mean paired relative difference over seeds (a seed is a whole replicate: a
    student and the teacher it was distilled from) with its 95% interval, p, Holm-adjusted p over
    the claim's cells, minimum detectable effect and `held`; and per claim a pooled row (random
    effects across cells) with its verdict. Claim 3's primary comparison is fixed in advance: the
    CD configuration the tuning stage chose (`primary_cd`) against RD; CD-best, the best of three
    guides chosen on each protocol's validation, is a secondary row, a maximum over guides.

    Claim 4 is measured by what discriminates: the fraction of the teacher-student gap that CD and
    RD recover, and CD against the plain student as a paired test; `close` (the CD student's NDCG@10
    at least this fraction of its teacher's, mean of per-seed ratios) [decision] is a description.

    `cells`: the (dataset, backbone) pairs to read (None: every cell of the tables)."""
    rows = []
    main = _cell_table("03_main_runs", results, cells)
    if main is not None and (main.status == "ok").any():
        ok = _ok(main)
        primary = primary_cd(ok)
        for m, key in (("HR@10", "HR"), ("NDCG@10", "NDCG")):
            rows += _family(
                f"3. CD beats RD ({m}), primary: {primary}, {PRIMARY_NAME[primary]}",
                ok,
                _paired_effect(primary, "RD", m),
                f"{primary} vs RD",
                PAPER_GAIN[key],
            )
            rows += _family(
                f"3. CD beats RD ({m}), secondary: CD-best, max over guides",
                ok,
                _paired_effect({"sampled": "CD-best", "full": "CD-best (full)"}, "RD", m),
                "best CD guide vs RD",
                PAPER_GAIN[key],
            )
        for m in ("HR@10", "NDCG@10"):
            rows += _family(
                f"4. CD beats the plain student ({m})",
                ok,
                _paired_effect(primary, "Student", m),
                f"{primary} vs Student",
            )
            for method in (primary, "RD"):
                rows += _family(
                    f"4. gap recovered by {method} (% of teacher - student, {m})",
                    ok,
                    _gap_effect(method, m),
                    f"({method} - Student) / (Teacher - Student)",
                )
        for (d, b), g in ok.groupby(["dataset", "backbone"], sort=False):
            parts, seeds = [], {}
            for proto, sfx in PROTOCOLS.items():
                t = g[g.label == "Teacher"].set_index("seed")[f"NDCG@10{sfx}"]
                c = g[g.label == primary].set_index("seed")[f"NDCG@10{sfx}"]
                common = t.index.intersection(c.index)
                if len(common):
                    seeds[f"seeds ({proto})"] = len(common)
                    parts.append(
                        f"{proto}: {100 * float((c[common] / t[common]).mean()):.1f}% of its "
                        f"teacher ({len(common)} seeds)"
                    )
            if parts:
                rows.append(
                    {
                        "claim": "4. CD student comes close to the teacher (description)",
                        "dataset": d,
                        "backbone": b,
                        **seeds,
                        "measured": "; ".join(parts),
                        "paper": f">= {100 * close:.0f}% [decision]",
                    }
                )
    eff = _cell_table("08_efficiency", results, cells)
    if eff is not None:
        for (d, b, device), g in eff.groupby(["dataset", "backbone", "device"], sort=False):
            t = g[g.label == "Teacher"]
            s = g[(g.label == "Student") & (g["size"] == STUDENT[b])]
            if t.empty or s.empty:
                continue
            t, main_s = t.iloc[0], s.iloc[0]
            speed = t.latency_ms / main_s.latency_ms
            held = bool(main_s.n_params < t.n_params and speed > 1)
            rows.append(
                {
                    "claim": "5. the student is smaller and faster (on the "
                    + ("CPU)" if str(device).startswith("cpu") else "GPU)"),
                    "dataset": d,
                    "backbone": b,
                    "measured": f"{t.n_params / main_s.n_params:.1f}x fewer parameters, {speed:.1f}x faster "
                    f"(size {main_s['size']}, {main_s.device})",
                    "held (sampled)": held,
                    "held (full)": held,
                    "paper": "smaller, faster",
                }
            )
    size = _cell_table("06_size_runs", results, cells)
    if size is not None and (size.status == "ok").any():
        ok = _ok(size)
        for m, key in (("HR@10", "HR"), ("NDCG@10", "NDCG")):
            rows += _family(
                f"6. born-again CD beats the teacher ({m})",
                ok,
                _paired_effect("BACD", "Teacher", m),
                "BACD vs its teacher",
                BACD_GAIN[key],
            )
    samp = _cell_table("04_sampling_runs", results, cells)
    if samp is not None and (samp.status == "ok").any():
        ok = _ok(samp)
        for guide in sorted({lab.split("/")[1] for lab in ok.label}):
            for other in ("uniform", "topk"):
                for m in ("HR@10", "NDCG@10"):
                    rows += _family(
                        f"2. rank-aware sampling beats {other} ({guide}-guided, {m})",
                        ok,
                        _paired_effect(f"rank/{guide}", f"{other}/{guide}", m),
                        f"rank vs {other}",
                    )
    out = pd.DataFrame(rows).reindex(columns=CLAIM_COLUMNS)
    for proto in PROTOCOLS:
        out[f"seeds ({proto})"] = out[f"seeds ({proto})"].astype("Int64")
    return out.sort_values(["claim"], kind="stable", ignore_index=True)
