"""Two sets of records side by side, the paper profile's (before) and issue 23's `next` (after): each
claim's pooled verdict on the cells both pool it on (`verdict_change`) and the main table's test
metrics per cell and method (`main_change`), the primary CD arm matched by its role (`by_role`: CD-T
in the paper profile, whose tuning has no guide stage; CD in `next`). Read only: nothing trains."""

from __future__ import annotations

import re

import pandas as pd

from . import report
from .effects import verdict_kind
from .report import PROTOCOLS
from .runs import read_table

EFFECT = ("effect %", "CI low", "CI high")  # a claims row's effect and interval, per protocol
PRIMARY = "primary CD arm"  # the role of claim 3's primary arm, whatever its label (`by_role`)
# `verdict_change`'s columns per protocol
VERDICT_CHANGE_COLUMNS = ("cells", "cell list")
VERDICT_CHANGE_COLUMNS += tuple(
    f"{c} {when}"
    for when in ("before", "after")
    for c in ("pooled", "verdict", "verdict HK", *EFFECT)
)
VERDICT_CHANGE_COLUMNS += ("changed",)


def by_role(claim: str) -> str:
    """A claim's name with its primary CD arm named by its role rather than its label ("CD-T" in the
    paper profile, "CD" in `next`, `report.PRIMARY_CD`): the same claim under either profile."""
    claim = re.sub(r", primary: CD(-T)?, .*$", f", {PRIMARY}", claim)
    claim = re.sub(
        r"^4\. CD beats the plain student", f"4. the {PRIMARY} beats the plain student", claim
    )
    return re.sub(r"gap recovered by CD(-T)? \(", f"gap recovered by the {PRIMARY} (", claim)


def _pooled_cells(table: pd.DataFrame) -> dict[tuple[str, str], set]:
    """{(claim by role, protocol): the cells its pool uses on that protocol} (the claims table's
    "pooled" column, `effects.poolable`: a cell of one seed, or whose gap recovered is undefined,
    is not pooled)."""
    cells = table[table.dataset != "pooled"]
    out: dict[tuple[str, str], set] = {}
    for proto in PROTOCOLS:
        used = cells[f"pooled ({proto})"].eq(True).to_numpy()
        for claim, d, b in zip(cells.claim[used], cells.dataset[used], cells.backbone[used]):
            out.setdefault((by_role(claim), proto), set()).add((d, b))
    return out


def verdict_change(before=None, after=None) -> pd.DataFrame:
    """Each claim's pooled verdict under two sets of records (`before`, `after`: results folders,
    the paper profile's and `next`'s, `claim_tables.save_recorded_tables`), per protocol on the cells
    both profiles' pools of it use there (`_pooled_cells`), the claims recomputed on those cells
    alone (`report.claims(cells=...)`): the pooled effect and 95% interval (as text, "pooled", and
    as numbers, "effect %", "CI low", "CI high"), the verdict's kind
    (`verdict_kind`) and its kind under the Hartung-Knapp interval ("verdict HK"; None below two
    cells), before and after, and whether the kind changed. The same cells, not the same runs: the
    profiles differ in tuning, validation negatives and seeds (3 or 5 per cell), so a kind that
    changes is not a test that the two estimates differ, and part of a change can be power. Claims
    are matched by role (`by_role`); "arm before" and "arm after" name the primary CD arm of the
    claims that use it (CD-T before, CD after)."""
    tested = [_pooled_cells(report.claims(r)) for r in (before, after)]
    arms = [
        report.primary_cd(m[m.status == "ok"])
        if m is not None and (m.status == "ok").any()
        else None
        for m in (read_table("03_main_runs", r) for r in (before, after))
    ]
    common = {k: tested[0][k] & tested[1][k] for k in tested[0] if k in tested[1]}
    pools = {}  # cells: ({claim by role: pooled row} before, after)
    for cells in {frozenset(s) for s in common.values() if s}:
        pools[cells] = [
            {by_role(r["claim"]): r for _, r in t[t.dataset == "pooled"].iterrows()}
            for t in (report.claims(before, cells=cells), report.claims(after, cells=cells))
        ]
    rows = []
    for claim in sorted({c for c, _ in common}):
        row = {"claim": claim}
        if PRIMARY in claim:
            row["arm before"], row["arm after"] = arms
        for proto in PROTOCOLS:
            cells = frozenset(common.get((claim, proto), ()))
            row[f"{proto}: cells"] = len(cells)
            row[f"{proto}: cell list"] = ", ".join(f"{d}/{b}" for d, b in sorted(cells))
            if not cells:  # no cell both pool on this protocol
                row[f"{proto}: changed"] = None
                continue
            kinds = []
            for when, r in zip(("before", "after"), (p[claim] for p in pools[cells])):
                hk = r[f"verdict HK ({proto})"]
                for k in EFFECT:
                    row[f"{proto}: {k} {when}"] = r[f"{k} ({proto})"]
                row[f"{proto}: pooled {when}"] = report.interval_text(r, proto)
                row[f"{proto}: verdict {when}"] = verdict_kind(r[f"verdict ({proto})"])
                row[f"{proto}: verdict HK {when}"] = (
                    verdict_kind(hk) if isinstance(hk, str) else None
                )
                kinds.append(row[f"{proto}: verdict {when}"])
            row[f"{proto}: changed"] = kinds[0] != kinds[1]
        rows.append(row)
    columns = ["claim", "arm before", "arm after"]
    columns += [f"{p}: {c}" for p in PROTOCOLS for c in VERDICT_CHANGE_COLUMNS]
    return pd.DataFrame(rows, columns=columns)


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


def main_glance(
    change: pd.DataFrame, protocol: str = "sampled", metric: str = "NDCG@10"
) -> pd.DataFrame:
    """`main_change` on one protocol, a row per cell and a column per role: "0.388 → 0.392 (+1.0%)"."""
    rows = []
    for (d, b), g in change.groupby(["dataset", "backbone"], sort=False):
        row = {"dataset": d, "backbone": b}
        for _, r in g.iterrows():
            if pd.isna(r[f"{metric} before ({protocol})"]) or pd.isna(
                r[f"{metric} after ({protocol})"]
            ):
                continue  # no seed on this protocol in one of them
            row[r.role] = (
                f"{r[f'{metric} before ({protocol})']:.4f} → {r[f'{metric} after ({protocol})']:.4f} "
                f"({r[f'change % ({protocol})']:+.1f}%)"
            )
        rows.append(row)
    roles = [r for r in MAIN_ROLES if r in set(change.role)]
    return pd.DataFrame(rows, columns=["dataset", "backbone", *roles])


def cell_change(before, after) -> pd.DataFrame:
    """Each claim's effect per cell under two sets of records of the same cells (`before`, `after`:
    results folders with a claims table, `claim_tables.save_recorded_tables`), a row per claim (by
    role, `by_role`) and cell both have: per protocol the seeds, the mean paired effect and its 95%
    interval before and after (`report.interval_text`) and the raw p of each. Not Holm's: its
    family is the claim's cells, which the two folders need not share."""
    tables = [read_table("claims", r) for r in (before, after)]
    columns = ["claim", "dataset", "backbone"]
    columns += [
        f"{proto}: {c}"
        for proto in PROTOCOLS
        for c in ("seeds", "before", "after", "p before", "p after")
    ]
    if any(t is None for t in tables):
        return pd.DataFrame(columns=columns)
    keyed = []
    for t in tables:
        t = t[
            (t.dataset != "pooled") & t[[f"effect % ({p})" for p in PROTOCOLS]].notna().any(axis=1)
        ]
        keyed.append(
            t.assign(claim=t.claim.map(by_role)).set_index(["claim", "dataset", "backbone"])
        )
    both = keyed[0].merge(
        keyed[1], left_index=True, right_index=True, suffixes=(" before", " after")
    )
    rows = []
    for (claim, d, b), r in both.iterrows():
        row = {"claim": claim, "dataset": d, "backbone": b}
        for proto in PROTOCOLS:
            seeds = [r[f"seeds ({proto}) {w}"] for w in ("before", "after")]
            row[f"{proto}: seeds"] = " → ".join("-" if pd.isna(s) else str(int(s)) for s in seeds)
            for w in ("before", "after"):
                one = {f"{k} ({proto})": r[f"{k} ({proto}) {w}"] for k in EFFECT}
                row[f"{proto}: {w}"] = (
                    report.interval_text(one, proto) if pd.notna(one[f"effect % ({proto})"]) else ""
                )
                row[f"{proto}: p {w}"] = r[f"p ({proto}) {w}"]
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)
