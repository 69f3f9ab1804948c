"""The README's results section, generated from the tables in results/ and the claims computed from
them (`readme_section`), and written between its markers (`update_readme`): never typed by hand."""

from __future__ import annotations

import json
import re

import pandas as pd

from . import plots, runs, sentences
from .agreement import shapes_agreement
from .analyses import protocol_gap, teacher_variants
from .audit import coverage, profile_coverage, violations
from .costs import compute, device_estimate
from .profiles import PROFILES
from .readme_next import next_section, past_stop_section
from .readme_probes import defer_section, gpu_section, refresh_tower_section, uniform_draw_section
from .readme_steps import sparse_step_section
from .runs import read_table
from .tables import markdown

START, END = "<!-- results:start -->", "<!-- results:end -->"


LABELS = [
    "Teacher",
    "Student",
    "RD",
    "CD",  # the CD the tuning stage chose, guide included (profile next; shown where recorded)
    "CD-T",
    "CD-S",
    "CD-H",
    "CD-best",
    "iALS (teacher budget)",
    "iALS (student budget)",
]


def main_markdown(main: pd.DataFrame, metrics=("HR@10", "NDCG@10")) -> pd.DataFrame:
    """The main table as one row per dataset x backbone x metric and one column per method,
    'mean ± std (seeds)'. For full-ranking metrics the column CD-best shows 'CD-best (full)', the
    guide chosen on the full-ranking validation."""
    full = all(m.endswith("(full)") for m in metrics)
    main = main[main.label != ("CD-best" if full else "CD-best (full)")].replace(
        {"label": {"CD-best (full)": "CD-best"}}
    )
    rows = []
    for (d, b), g in main.groupby(["dataset", "backbone"], sort=False):
        g = g.set_index("label")
        for m in metrics:
            row = {"dataset": d, "backbone": b, "metric": m}
            for lab in [x for x in LABELS if x in g.index]:
                mean, sd, n = (
                    g.loc[lab, f"{m} mean"],
                    g.loc[lab, f"{m} std"],
                    int(g.loc[lab, "seeds"]),
                )
                row[lab] = f"{mean:.4f}" + ("" if pd.isna(sd) else f" ± {sd:.4f}") + f" ({n})"
            rows.append(row)
    out = pd.DataFrame(rows)
    return out[["dataset", "backbone", "metric", *[x for x in LABELS if x in out.columns]]]


def _verdicts(claims) -> list[str]:
    """The verdict per claim (`sentences.verdicts`: pooled effect, interval, heterogeneity, where the
    paper's range lies, how many cells could see its smallest gain), and the forest plots."""
    if claims is None or "dataset" not in claims or not (claims.dataset == "pooled").any():
        return []
    pooled = claims[claims.dataset == "pooled"].claim.unique()
    shown = [c for c in pooled if c.startswith("3. ") and "primary" in c]
    return [
        "### What these runs say of each claim",
        "",
        "Per claim and protocol: the random-effects pooled mean of the per-cell paired relative "
        "differences (DerSimonian-Laird over dataset x backbone cells, `effects.pooled`) with its 95% "
        "interval and I²; the verdict from that interval; where the paper's claimed range lies; how many "
        "cells could have detected the paper's smallest gain (minimum detectable effect at 80% power at "
        "Holm's strictest level, given the cell's seeds and their spread); and the modified "
        "Hartung-Knapp interval of the same estimate (t on cells - 1 degrees of freedom, never narrower "
        "than the random-effects variance), with the verdict it gives where that differs: with 2 to 10 "
        "cells whose variances rest on 3 to 5 seeds the normal interval is too narrow, so a verdict "
        "that flips under Hartung-Knapp is fragile; and whether the verdict rests on one cell: the "
        "cells without which it would change, and to what (the pool of the other cells, "
        "`effects.without_each`). The gap recovered is a ratio of means over seeds "
        "with a delta-method interval. Claim 3's primary comparison is the CD configuration the tuning "
        "stage chose (its rows name it, `report.primary_cd`) against RD; CD-best, the best of three "
        "guides chosen on validation, is a maximum over guides and only a secondary row. In the paper "
        "profile the tuning stage has no guide stage, so the CD it chose runs teacher-guided by "
        "default (CD-T): its guide is not tuned; and CD-T was named the primary arm (2026-12-02) after "
        "the main table was recorded, not before. Profile `next` tunes the guide and fixes its "
        "primary arm (CD) before its main table runs. Claim 1 (distilling a recommender is hard: "
        "sparse positives, ambiguous missing feedback, a ranking problem) is the paper's motivation, "
        "not a measurable claim, and has no row.",
        "",
        "At a glance (`sentences.at_a_glance`): the pooled effect and 95% interval per protocol, the "
        "verdict (fragile where the Hartung-Knapp interval gives another; the cells without which it "
        "would change, named, or counted where more than two change it alike; where the paper's "
        "claimed range lies wholly above or below the interval, that is said), and the cells where the claim "
        "held on its own after Holm, of the cells with two seeds or more.",
        "",
        markdown(sentences.at_a_glance(claims)),
        "",
        "Claim by claim:",
        "",
        *[f"- {v}" for v in sentences.verdicts(claims)],
        "",
        *[
            f"- {s}"
            for m in ("HR@10", "NDCG@10")
            for s in sentences.primary_against_best(claims, m)
        ],
        "",
        *[f"![{c}](figures/{plots.forest_name(c)}.png)" for c in shown],
        "",
        "Forest plots of the other claims: "
        + "; ".join(f"[{c}](figures/{plots.forest_name(c)}.png)" for c in pooled if c not in shown)
        + ".",
        "",
    ]


def readme_section(results=None) -> str:
    parts = [
        START,
        "",
        "_Generated by `notebooks/09_summary.ipynb` from `results/`; do not edit by hand._",
        "",
    ]
    parts += _verdicts(read_table("claims", results))
    tuning = read_table("00_tuning", results)
    if tuning is not None and not tuning.empty:
        chosen = tuning[tuning.chosen.astype(bool)]
        budget = tuning.groupby("stage", sort=False).label.nunique()
        parts += [
            "### Tuning stage: the settings chosen on validation NDCG@10 (notebook 00)",
            "",
            "Configurations per stage: "
            + ", ".join(f"{stage} {n}" for stage, n in budget.items())
            + "; the same seeds and epoch rules for all; full grid in `results/00_tuning.csv`.",
            "",
            markdown(
                chosen[["dataset", "backbone", "stage", "label", "valid NDCG@10", "seeds"]]
                .round(4)
                .rename(columns={"label": "chosen"})
                .reset_index(drop=True)
            ),
            "",
        ]
    for name, proto in (("03_main", "sampled"), ("03_main_full", "full ranking")):
        main = read_table(name, results)
        if main is not None and not main.empty:
            parts += [
                f"### Main table (test, {proto} protocol; mean ± std over (seeds))",
                "",
                "Students: CDAE H = 20, NeuMF d = 8, each method at its tuned settings. CD-T/S/H: teacher-, "
                "student-, hybrid-guided CD; CD-best: per dataset and backbone, the CD guide with the best mean "
                "validation NDCG@10 of this protocol. Test numbers are reported, never chosen on.",
                "",
                markdown(
                    main_markdown(
                        main,
                        ("HR@10", "NDCG@10")
                        if proto == "sampled"
                        else ("HR@10 (full)", "NDCG@10 (full)"),
                    )
                ),
                "",
            ]
    tv = teacher_variants(results=results)
    if not tv.empty:
        parts += [
            "### The NeuMF teacher on ml-1m against NCF's HR@10 ≈ 0.70 (seeds 0 and 1, sampled protocol)",
            "",
            "Each setting tried (the tuning stage chooses among the learning rates on validation NDCG@10). "
            "'at the best test epoch' retrains the run with each epoch's test metric tracked "
            "(`analyses.best_test_epoch`): NCF reports its best *test* epoch. 'NCF protocol' also trains, as NCF "
            "does, on all but the test item (our validation item included; "
            "`best_test_epoch(valid_in_train=True)`, a fixed number of epochs). The difference between "
            "'test HR@10' and these columns is protocol, not model.",
            "",
            markdown(tv.astype(object).where(tv.notna(), "")),
            "",
        ]
        gap = protocol_gap(tv)
        if gap:
            parts += [gap, ""]
    cl = read_table("claims", results)
    if cl is not None:
        show = cl[
            [
                c
                for c in (
                    "claim",
                    "dataset",
                    "backbone",
                    "measured",
                    "held (sampled)",
                    "held (full)",
                    "paper",
                )
                if c in cl
            ]
        ]
        parts += [
            "### Claims (both protocols; paired t-test over seeds, Holm-adjusted per claim and protocol)",
            "",
            markdown(show),
            "",
        ]
    cov = coverage(results)
    if not cov.empty:
        done, empty = cov[cov.runs > 0], cov[cov.runs == 0]
        parts += [
            "### Coverage (what each table rests on)",
            "",
            markdown(done.reset_index(drop=True)),
            "",
        ]
        if not empty.empty:
            ran = set(zip(done.dataset, done.backbone))
            never = empty[[(d, b) not in ran for d, b in zip(empty.dataset, empty.backbone)]]
            partly = empty[[(d, b) in ran for d, b in zip(empty.dataset, empty.backbone)]]
            if not never.empty:
                by_ds = (
                    never.drop_duplicates(["dataset", "backbone"])
                    .groupby("dataset", sort=False)
                    .backbone.agg(", ".join)
                )
                parts += [
                    "Nothing recorded yet under this protocol: "
                    + "; ".join(f"{d} ({b})" for d, b in by_ds.items())
                    + ".",
                    "",
                ]
            if not partly.empty:
                parts += [
                    "Tables not yet run for a cell that has other runs: "
                    + "; ".join(
                        f"{t} {d}/{b}"
                        for t, d, b in zip(partly.table, partly.dataset, partly.backbone)
                    )
                    + ".",
                    "",
                ]
    next_coverage = profile_coverage(PROFILES["next"], results)  # (seconds: read once, used twice)
    parts += next_section(next_coverage, results)
    cost = compute(results)
    if not cost.empty:
        parts += [
            "### Compute (CPU hours, one core per run)",
            "",
            "The cost of every distinct recorded run the tables use (`runs.run_seconds`: its process's CPU "
            "time, else, in records older than that measure, its wall time less the time its epochs stood "
            "paused), and for the runs not recorded an "
            "estimate from the recorded runs most like them (`costs.compute`: median epochs x median seconds "
            "per epoch, scaled by the dataset's size where none of its own is recorded). The runs were timed "
            "two at a time on a 2-core CPU.",
            "",
            markdown(cost.astype(object).where(cost.notna(), "")),
            "",
        ]
        for path in sorted(runs.results_dir(results).glob("bench/*_cuda.json")):
            est = device_estimate(json.loads(path.read_text()), results)
            if est:
                parts += [
                    f"On the GPU of `results/bench/{path.name}` ({est['device']}), the whole grid ({est['runs']} "
                    f"runs, {est['epochs']:,.0f} epochs, recorded or estimated as above) would take "
                    f"**{est['hours']:.0f} h** of training epochs one run at a time at that bench's seconds per "
                    "epoch, scaled by the steps per epoch (`costs.device_estimate`, validation left out).",
                    "",
                ]
    parts += gpu_section(results)  # the window's check, whatever the compute table holds
    parts += sparse_step_section(results, next_coverage)
    parts += refresh_tower_section(results)
    parts += uniform_draw_section(results)
    parts += defer_section(results)
    steps = shapes_agreement(results)
    if not steps.empty:
        parts += [
            "### The GPU's static step against the CPU's dynamic one",
            "",
            "Configurations trained with both steps on one device (`Config.shapes`: the static step, "
            "the default on a GPU, draws other numbers from the same distributions); test NDCG@10 (sampled), "
            "paired over seeds (`agreement.shapes_agreement`, notebook 09).",
            "",
            markdown(steps.round(4).replace(-0.0, 0.0)),
            "",
        ]
    bad = violations(results)
    parts += [
        "### Runs that break the fair protocol",
        "",
        "Runs used by a table whose best validation epoch lies in the last 10% of the epoch cap (capped), "
        "whose validation NDCG@10 is at most 1.05x that of the most-popular ranking (stalled on the "
        "initial plateau), or that early stopping ended while their validation NDCG@10 still rose (over "
        "the last `patience` epochs, a least-squares rise above 2% of the best with a slope t of 3 or "
        "more: stopped rising), and teachers below their own plain student on validation NDCG@10, with "
        "the fix applied where there is one (for a run of the tuning stage, whether its stage chose its "
        "point); `audit.violations`.",
        "",
        markdown(bad) if not bad.empty else "None.",
        "",
    ]
    parts += past_stop_section(results)
    v1 = read_table("v1/03_main", results)
    if v1 is not None:
        parts += [
            "### Before the fair protocol (v1, superseded)",
            "",
            "The first reproduction's main table (`results/v1/`: 200-epoch cap, RD weights renormalised per "
            "user, validation on the test negatives, every student distilled from teacher seed 0, CD-best "
            "chosen on test). Kept for comparison only; see [Protocol](#protocol).",
            "",
            markdown(main_markdown(v1)),
            "",
        ]
    parts.append(END)
    return "\n".join(parts)


def update_readme(results=None, readme=None) -> bool:
    """Replace the README's results section; returns whether it changed."""
    path = runs.readme_path(readme)
    text = path.read_text()
    new = re.sub(
        re.escape(START) + ".*?" + re.escape(END),
        lambda _: readme_section(results),
        text,
        flags=re.S,
    )
    if new != text:
        runs.write_atomic(path, new)
    return new != text
