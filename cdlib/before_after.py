"""Two sets of records side by side, the paper profile's (before) and issue 23's `next` (after): each
claim's pooled verdict on the cells both tested it in (`verdict_change`) and the main table's test
metrics per cell and method (`main_change`), the primary CD arm matched by its role (`by_role`: CD-T
in the paper profile, whose tuning has no guide stage; CD in `next`). Read only: nothing trains."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from . import report
from .effects import verdict_kind
from .report import PROTOCOLS
from .runs import read_table

# `verdict_change`'s columns per protocol
VERDICT_CHANGE_COLUMNS = ("before", "verdict before", "after", "verdict after", "changed")


def by_role(claim: str) -> str:
    """A claim's name with its primary CD arm named by its role rather than its label ("CD-T" in the
    paper profile, "CD" in `next`, `PRIMARY_CD`): the same claim under either profile."""
    claim = re.sub(r", primary: CD(-T)?, .*$", ", primary CD arm", claim)
    return re.sub(r"gap recovered by CD(-T)? \(", "gap recovered by the primary CD arm (", claim)


def _tested_cells(table: pd.DataFrame) -> dict[str, set]:
    """{claim by role: its cells with an effect on either protocol}, for the claims with a pooled row."""
    pooled = set(table.claim[table.dataset == "pooled"])
    cells = table[table.claim.isin(pooled) & (table.dataset != "pooled")]
    cells = cells[cells[[f"seeds ({p})" for p in PROTOCOLS]].notna().any(axis=1)]
    out: dict[str, set] = {}
    for claim, d, b in zip(cells.claim, cells.dataset, cells.backbone):
        out.setdefault(by_role(claim), set()).add((d, b))
    return out


def verdict_change(before=None, after=None) -> pd.DataFrame:
    """Each claim's pooled verdict under two sets of records (`before`, `after`: results folders,
    the paper profile's and `next`'s, `claim_tables.save_recorded_tables`), on the cells both tested
    it in (the claims recomputed on those cells alone, `report.claims(cells=...)`, so that a change comes
    from the protocol and its runs, not from the cells pooled): per protocol the pooled effect and
    95% interval and the verdict's kind (`verdict_kind`) before and after, and whether the
    kind changed. Claims are matched by role (`by_role`): the primary CD arm is CD-T before and CD
    after where the profiles name them so ("arm before", "arm after")."""
    tables = [report.claims(before), report.claims(after)]
    tested = [_tested_cells(t) for t in tables]
    arms = [
        report.primary_cd(m[m.status == "ok"])
        if m is not None and (m.status == "ok").any()
        else None
        for m in (read_table("03_main_runs", r) for r in (before, after))
    ]
    common = {c: tested[0][c] & tested[1][c] for c in tested[0] if c in tested[1]}
    rows = []
    for cells in {frozenset(s) for s in common.values() if s}:
        pooled = [
            {by_role(r["claim"]): r for _, r in t[t.dataset == "pooled"].iterrows()}
            for t in (report.claims(before, cells=cells), report.claims(after, cells=cells))
        ]
        for claim in (c for c, s in common.items() if s == cells):
            row = {"claim": claim, "cells": len(cells)}
            row["cell list"] = ", ".join(f"{d}/{b}" for d, b in sorted(cells))
            if "primary CD arm" in claim:
                row["arm before"], row["arm after"] = arms
            for proto in PROTOCOLS:
                kinds = []
                for when, r in zip(("before", "after"), (p[claim] for p in pooled)):
                    ok = r.get(f"cells ({proto})") and np.isfinite(r[f"effect % ({proto})"])
                    row[f"{proto}: {when}"] = (
                        f"{r[f'effect % ({proto})']:+.1f}% [{r[f'CI low ({proto})']:+.1f}, "
                        f"{r[f'CI high ({proto})']:+.1f}]"
                        if ok
                        else "no pooled estimate"
                    )
                    kinds.append(verdict_kind(r[f"verdict ({proto})"]) if ok else None)
                    row[f"{proto}: verdict {when}"] = kinds[-1]
                row[f"{proto}: changed"] = None if None in kinds else kinds[0] != kinds[1]
            rows.append(row)
    columns = ["claim", "cells", "cell list", "arm before", "arm after"]
    columns += [f"{p}: {c}" for p in PROTOCOLS for c in VERDICT_CHANGE_COLUMNS]
    out = pd.DataFrame(rows, columns=columns)
    return out.sort_values("claim", kind="stable", ignore_index=True)


PRIMARY = "primary CD arm"  # the role of claim 3's primary arm, whatever its label (`by_role`)
MAIN_ROLES = ("Teacher", "Student", "RD", PRIMARY, "CD-best")


def _main_means(results, metric: str) -> pd.DataFrame | None:
    """Notebook 03's recorded runs (results/03_main_runs.csv) by dataset, backbone and role (the
    primary CD arm's label read as `PRIMARY`; CD-best per protocol): the mean test `metric` on each
    protocol over the seeds, and their number."""
    m = read_table("03_main_runs", results)
    if m is None or not (m.status == "ok").any():
        return None
    ok = m[m.status == "ok"].copy()
    primary = report.primary_cd(ok)
    parts = []
    for proto, sfx in PROTOCOLS.items():
        t = ok.copy()
        if proto == "full":  # CD-best's guide is chosen on each protocol's validation
            t = t[t.label != "CD-best"].replace({"label": {"CD-best (full)": "CD-best"}})
        t["role"] = t.label.replace({primary: PRIMARY})
        t = t[t.role.isin(MAIN_ROLES)]
        g = t.groupby(["dataset", "backbone", "role"], sort=False)[f"{metric}{sfx}"]
        parts.append(g.agg(["mean", "count"]).add_suffix(f" ({proto})"))
    return pd.concat(parts, axis=1)


def main_change(before=None, after=None, metric: str = "NDCG@10") -> pd.DataFrame:
    """Notebook 03's test `metric` before and after, per cell both main tables have and role
    (`MAIN_ROLES`): on each protocol the mean over each one's seeds, their numbers of seeds, and the
    relative change % of the means (the two sets of runs are not paired: different tunings and
    validation negatives, the same test split)."""
    means = [_main_means(r, metric) for r in (before, after)]
    columns = ["dataset", "backbone", "role"]
    for proto in PROTOCOLS:
        columns += [f"{metric} before ({proto})", f"{metric} after ({proto})"]
        columns += [f"change % ({proto})", f"seeds before ({proto})", f"seeds after ({proto})"]
    if any(m is None for m in means):
        return pd.DataFrame(columns=columns)
    both = means[0].merge(
        means[1], left_index=True, right_index=True, suffixes=(" before", " after")
    )
    out = pd.DataFrame(index=both.index)
    for proto in PROTOCOLS:
        b, a = both[f"mean ({proto}) before"], both[f"mean ({proto}) after"]
        out[f"{metric} before ({proto})"], out[f"{metric} after ({proto})"] = b, a
        out[f"change % ({proto})"] = 100 * (a / b - 1)
        out[f"seeds before ({proto})"] = both[f"count ({proto}) before"].astype("Int64")
        out[f"seeds after ({proto})"] = both[f"count ({proto}) after"].astype("Int64")
    out = out.reset_index()
    out["order"] = out.role.map({r: i for i, r in enumerate(MAIN_ROLES)})
    out = out.sort_values(["dataset", "backbone", "order"], kind="stable")
    return out.reindex(columns=columns).reset_index(drop=True)


def main_glance(change: pd.DataFrame, protocol: str = "sampled") -> pd.DataFrame:
    """`main_change` on one protocol, a row per cell and a column per role: "0.388 → 0.392 (+1.0%)"."""
    metric = next(c for c in change.columns if c.endswith(f" before ({protocol})")).split(
        " before"
    )[0]
    rows = []
    for (d, b), g in change.groupby(["dataset", "backbone"], sort=False):
        row = {"dataset": d, "backbone": b}
        for _, r in g.iterrows():
            row[r.role] = (
                f"{r[f'{metric} before ({protocol})']:.4f} → {r[f'{metric} after ({protocol})']:.4f} "
                f"({r[f'change % ({protocol})']:+.1f}%)"
            )
        rows.append(row)
    roles = [r for r in MAIN_ROLES if r in set(change.role)]
    return pd.DataFrame(rows, columns=["dataset", "backbone", *roles])
