"""The results in sentences, computed from the claims table and the run tables, never typed by
hand: a table of every claim's verdicts (`at_a_glance`), a paragraph per claim (`verdicts`), where
claim 3's primary CD arm and CD-best disagree (`primary_against_best`), and the one-sentence
verdicts the notebooks print (`verdict_*`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import effects
from .report import PAPER_GAIN, PROTOCOLS, interval_text, measured_pool


def primary_against_best(table: pd.DataFrame, metric: str = "NDCG@10") -> list[str]:
    """Per protocol, one sentence naming the cells where claim 3's primary CD arm and CD-best (the
    maximum over guides) disagree against RD: opposite signs of the mean effect with at least one of
    the two 95% intervals excluding 0 (a sign near 0 is noise), or one held after Holm and the other
    not (from the claims table's per-cell rows)."""
    rows = table[table.dataset != "pooled"]
    prim = rows[rows.claim.str.startswith(f"3. CD beats RD ({metric}), primary")]
    best = rows[rows.claim.str.startswith(f"3. CD beats RD ({metric}), secondary")]
    if prim.empty or best.empty:
        return []
    both = prim.merge(best, on=["dataset", "backbone"], suffixes=("", " best"))
    out = []
    for proto in PROTOCOLS:
        e, eb = both[f"effect % ({proto})"], both[f"effect % ({proto}) best"]
        h, hb = both[f"held ({proto})"].astype(bool), both[f"held ({proto}) best"].astype(bool)
        sure = [  # the interval excludes 0
            (both[f"CI low ({proto}){s}"] > 0) | (both[f"CI high ({proto}){s}"] < 0)
            for s in ("", " best")
        ]
        flip = both[((np.sign(e) * np.sign(eb) < 0) & (sure[0] | sure[1])) | (h != hb)]
        cells = ", ".join(
            f"{r.dataset}/{r.backbone} ({r[f'effect % ({proto})']:+.1f}% against "
            f"{r[f'effect % ({proto}) best']:+.1f}%"
            + (
                "; held by CD-best only"
                if r[f"held ({proto}) best"] and not r[f"held ({proto})"]
                else ""
            )
            + (
                "; held by the primary arm only"
                if r[f"held ({proto})"] and not r[f"held ({proto}) best"]
                else ""
            )
            + ")"
            for _, r in flip.iterrows()
        )
        out.append(
            f"{proto.capitalize()} protocol, {metric}: the primary CD arm and CD-best disagree "
            f"(opposite signs, one of them with an interval excluding 0, or held by one only) in "
            f"{len(flip)} of {len(both)} cells" + (f": {cells}." if len(flip) else ".")
        )
    return out


def _pooled_claims(table: pd.DataFrame):
    """(claim, its pooled row, its cells' rows) for each claim of the claims table with a pooled row."""
    for claim, g in table.groupby("claim", sort=False):
        pool = g[g.dataset == "pooled"]
        if not pool.empty:
            yield claim, pool.iloc[0], g[g.dataset != "pooled"]


def verdicts(table: pd.DataFrame) -> list[str]:
    """One paragraph per claim from its pooled rows: what the paper says, what these runs say on
    each protocol (pooled effect, interval, heterogeneity, verdict, where the paper's range stands),
    and how many cells could have seen the paper's smallest gain (MDE at or below it)."""
    out = []
    for claim, r, cells in _pooled_claims(table):
        paper = r["paper"]
        lower = float(str(paper).split("-")[0]) if str(paper)[:1].isdigit() else None
        parts = []
        for proto in PROTOCOLS:
            text = measured_pool(r.to_dict(), proto)
            if isinstance(r.get(f"paper range is ({proto})"), str):
                text += f"; the paper's range: {r[f'paper range is ({proto})']} the pooled interval"
            if lower is not None:
                mde = cells[f"MDE % ({proto})"]
                text += f"; {int((mde <= lower).sum())} of {int(mde.notna().sum())} cells could see a {lower:g}% gain"
            text += _hartung_knapp(r, proto) + _without_one(r, proto)
            parts.append(text)
        out.append(
            f"**{claim}** (paper: {paper}). " + ". ".join(p[0].upper() + p[1:] for p in parts) + "."
        )
    return out


def at_a_glance(table: pd.DataFrame) -> pd.DataFrame:
    """One row per claim with a pooled row (the claims table, `report.claims`): what the paper says,
    and per protocol the pooled effect with its 95% interval, the verdict's kind (`effects.verdict_kind`;
    "fragile" where the Hartung-Knapp interval gives another kind; the cells without which it would
    change, and to what (`report._changes_without_one`); where the paper's claimed range and the
    interval do not overlap, on which side it lies) and the cells where it held after
    Holm, of the cells tested (two seeds or more). The bullets of `verdicts` give the reasons."""
    rows = []
    for claim, r, cells in _pooled_claims(table):
        row = {"claim": claim, "paper": r["paper"]}
        for proto in PROTOCOLS:
            if pd.isna(r.get(f"cells ({proto})")) or not r[f"cells ({proto})"]:
                row.update(
                    {
                        proto: "no pooled estimate",
                        f"{proto}: verdict": "",
                        f"{proto}: cells held": "",
                    }
                )
                continue
            kind = effects.verdict_kind(r[f"verdict ({proto})"])
            hk = r.get(f"verdict HK ({proto})")
            if isinstance(hk, str) and effects.verdict_kind(hk) != kind:
                kind += f" (fragile: {effects.verdict_kind(hk)} under Hartung-Knapp)"
            if changes := _changes(r, proto):
                kind += f"; {changes}"
            if r.get(f"paper range is ({proto})") in ("above", "below"):  # no overlap
                kind += f"; the paper's range lies {r[f'paper range is ({proto})']} the interval"
            tested = cells[f"p ({proto})"].notna()  # a cell of one seed has no test
            held = cells.loc[tested, f"held ({proto})"].astype(bool).sum()
            row.update(
                {
                    proto: interval_text(r, proto),
                    f"{proto}: verdict": kind,
                    f"{proto}: cells held": f"{int(held)} of {int(tested.sum())}",
                }
            )
        rows.append(row)
    return pd.DataFrame(rows)


def verdict_change_glance(change: pd.DataFrame) -> pd.DataFrame:
    """`before_after.verdict_change` in one row per claim: per protocol the cells pooled, the
    verdict's kind and pooled effect before and after ("inconclusive +0.3% [-2.7, +3.2] → holds
    +6.1% [+3.2, +9.1]"; "fragile" where the Hartung-Knapp interval gives another kind), and the
    protocols on which the kind changed."""
    rows = []
    for _, r in change.iterrows():
        row = {"claim": r["claim"]}
        if isinstance(r.get("arm before"), str):
            row["claim"] += f" ({r['arm before']} → {r['arm after']})"
        for proto in PROTOCOLS:
            if not r[f"{proto}: cells"]:
                row[proto] = "no cell pooled under both"
                continue
            ends = []
            for when in ("before", "after"):
                kind, hk = r[f"{proto}: verdict {when}"], r[f"{proto}: verdict HK {when}"]
                fragile = " (fragile)" if isinstance(hk, str) and hk != kind else ""
                ends.append(f"{kind}{fragile} {r[f'{proto}: pooled {when}']}")
            n = int(r[f"{proto}: cells"])
            row[proto] = f"{n} cell{'s' if n != 1 else ''}: " + " → ".join(ends)
        row["kind changed on"] = ", ".join(
            proto
            for proto in PROTOCOLS
            if pd.notna(r[f"{proto}: changed"]) and bool(r[f"{proto}: changed"])
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=["claim", *PROTOCOLS, "kind changed on"])


def _changes(r, proto: str, named: int = 2) -> str:
    """The pooled row's cells without which its verdict changes, per kind it changes to: "inconclusive
    without ml-1m/neumf or yelp/cdae", or where more than `named` cells change it alike, "inconclusive
    without any one of 6 of its 7 cells"; "" where none does ("no cell") or the table predates the check."""
    text = r.get(f"changes without one cell ({proto})")
    if not isinstance(text, str) or text == "no cell":
        return ""
    by_kind: dict = {}
    for part in text.split("; "):
        cell, kind = part.rsplit(": ", 1)
        by_kind.setdefault(kind, []).append(cell)
    return ", ".join(
        f"{kind} without {' or '.join(cells)}"
        if len(cells) <= named
        else f"{kind} without any one of {len(cells)} of its {int(r[f'cells ({proto})'])} cells"
        for kind, cells in by_kind.items()
    )


def _without_one(r, proto: str) -> str:
    """The leave-one-cell-out check of a pooled row in words (`report._changes_without_one`)."""
    text = r.get(f"changes without one cell ({proto})")
    if not isinstance(text, str):  # one cell, or a table from before the check
        return ""
    if text == "no cell":
        return "; left out one cell at a time, the verdict stands each time"
    return f"; left out one cell at a time, the verdict changes without {text}"


def _hartung_knapp(r, proto: str) -> str:
    """The pooled row's Hartung-Knapp interval, and its verdict where its kind (`effects.verdict_kind`)
    differs from the normal interval's."""
    lo, hi = r.get(f"CI low HK ({proto})"), r.get(f"CI high HK ({proto})")
    if lo is None or not np.isfinite(lo):
        return ""
    vhk = str(r[f"verdict HK ({proto})"])
    same = effects.verdict_kind(r[f"verdict ({proto})"]) == effects.verdict_kind(vhk)
    return f"; Hartung-Knapp interval [{lo:+.1f}, {hi:+.1f}]" + (
        "" if same else f", under which the claim {vhk.replace('inconclusive', 'is inconclusive')}"
    )


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
