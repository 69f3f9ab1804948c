"""The README's sections on issue 23's grid, profile `next`, while it is recorded: its coverage
(`audit.profile_coverage`), the settings its tuning chose beside the paper profile's and how far they
moved (`tuning.tuning_change`), whether its grids bracket the choices at their edges
(`tuning.edge_check`), its claims on the cells recorded so far (`claim_tables.save_recorded_tables`),
and each claim and the main table before and after (`before_after`). Part of
`readme.readme_section` (`next_section`)."""

from __future__ import annotations

import dataclasses

import pandas as pd

from . import before_after, sentences
from .audit import coverage_grid, first_epoch_drops, violations
from .claim_tables import TORCH_INIT
from .config import Execution
from .models import default_device
from .profiles import PROFILES
from .report import PROTOCOLS
from .runs import read_table, results_dir
from .stopping import CLIMB, NEAR, past_stop_table, stops
from .tables import markdown
from .tuning import edge_check, teacher_margin, tuning_change


def next_section(cov: pd.DataFrame, results=None) -> list[str]:
    """Profile `next`'s sections: how much of issue 23's grid is recorded (`cov`: its
    `audit.profile_coverage`), per dataset and backbone, recorded / planned runs of each table; then,
    once a cell's tuning is recorded, the rest (`_tuning_change_section`)."""
    nxt = PROFILES["next"]
    if cov.empty or cov.recorded.sum() == 0:
        return []
    whole = cov[cov.table == "all"].iloc[0]
    device = default_device(nxt.device).type
    return [
        "### Issue 23's grid (profile `next`), recorded so far",
        "",
        f"{int(whole.recorded)} of its {int(whole.runs)} runs ({whole['recorded %']:.1f}%) are "
        f'recorded on the {device} (step="{nxt.step or "dense"}"; iALS\'s runs, minutes in all, '
        "aside); per table, recorded / planned runs, a run two tables share counted in the first "
        "(`audit.profile_coverage`). A table's runs start once its cell's tuning stage is recorded. "
        "NeuMF's cells count their runs under NCF's initialisation of the tower "
        "(`Profile.mlp_init`, since session 38); those recorded under PyTorch's before stay in "
        "`results/runs/`, their tables in `results/next-torch-init/` (README Known issues).",
        "",
        markdown(coverage_grid(cov)),
        "",
    ] + _tuning_change_section(results)


# the claims `next_claims` shows, per cell (NDCG@10; claim 3's both arms on HR@10 too)
NEXT_CLAIMS = (
    "3. CD beats RD",
    "4. CD beats the plain student (NDCG@10)",
    "6. born-again CD beats the teacher (NDCG@10)",
    "2. rank-aware sampling beats uniform (student-guided, NDCG@10)",
)


def next_claims(results=None) -> pd.DataFrame:
    """Profile `next`'s claims so far (`claim_tables.save_recorded_tables`: results/next/claims.csv),
    the cells that have them, for `NEXT_CLAIMS`: claim, dataset, backbone, measured."""
    claims = read_table("next/claims", results)
    cols = ["claim", "dataset", "backbone", "measured"]
    if claims is None or "dataset" not in claims:
        return pd.DataFrame(columns=cols)
    keep = claims.claim.str.startswith(NEXT_CLAIMS) & (claims.dataset != "pooled")
    return claims.loc[keep, cols].reset_index(drop=True)


def next_at_a_glance(results=None) -> pd.DataFrame:
    """`sentences.at_a_glance` of profile `next`'s claims so far, for `NEXT_CLAIMS`: each pooled over
    the cells recorded."""
    claims = read_table("next/claims", results)
    if claims is None or "dataset" not in claims:
        return pd.DataFrame()
    return sentences.at_a_glance(claims[claims.claim.str.startswith(NEXT_CLAIMS)])


def _tuning_change_section(results=None) -> list[str]:
    """The choices of `next`'s tuning stage beside the paper profile's (`tuning.tuning_change`)."""
    change = tuning_change(PROFILES["paper"], PROFILES["next"], results)
    if change.empty:
        return []
    return (
        [
            "The settings `next`'s tuning stage chose (after), beside those of the paper profile (before; "
            "tuned on ml-100k and ml-1m, the other datasets borrowing ml-1m's, validation negatives of "
            "their own draw, no guide stage: CD teacher-guided), per cell whose tuning is recorded "
            '(`tuning.tuning_change`; "grid steps": how far each numeric setting moved along its '
            "grid, sorted by value, `tuning.grid_moves`)." + _moved_sentence(change),
            "",
            markdown(change),
            "",
        ]
        + _teacher_margin_section(teacher_margin(PROFILES["next"], results))
        + _first_epoch_section(results)
        + _init_section(results)
        + _edge_section(results)
        + _next_claims_section(results)
    )


def _moved_sentence(change: pd.DataFrame) -> str:
    """How many stage choices moved, in the cells that borrowed another dataset's tuning before and
    in those tuned on their own, and the largest move in grid steps (`tuning.tuning_change`'s
    "largest grid step")."""
    known = change[change.moved.notna()]
    borrowed = known["before tuned on"] != known.dataset
    sources = " and ".join(f"{d}'s" for d in sorted(set(known.loc[borrowed, "before tuned on"])))
    parts = []
    for what, rows in (
        (f"that borrowed {sources} settings before", known[borrowed]),
        ("tuned on their own before too", known[~borrowed]),
    ):
        if rows.empty:
            continue
        n = rows[["dataset", "backbone"]].drop_duplicates().shape[0]
        most = int(rows["largest grid step"].max())
        parts.append(
            f"in the {n} cell{'s' if n != 1 else ''} {what}, "
            f"{int(rows.moved.astype(bool).sum())} of {len(rows)} stage choices moved"
            + (
                f" (a setting by at most {most} grid step{'s' if most != 1 else ''})"
                if most
                else ""
            )
        )
    text = "; ".join(parts)
    return f" {text[0].upper()}{text[1:]}." if text else ""


def _teacher_margin_section(margin: pd.DataFrame) -> list[str]:
    """The teacher each cell's tuning chose against the student it chose (`margin`:
    `tuning.teacher_margin`), and the cells where a tuning seed's teacher is below its student."""
    if margin.empty:
        return []
    weak = margin[margin["smallest seed margin %"] < 0]
    text = (
        "The teacher each cell's tuning chose against the plain student it chose, on validation "
        "NDCG@10 over the tuning seeds (`tuning.teacher_margin`; margin: teacher / student - 1 of "
        "the means, and the smallest of a seed against the same seed's student), per cell whose "
        "teacher and student stages are recorded. "
    )
    if weak.empty:
        text += "Every chosen teacher is above its student on every tuning seed."
    else:
        text += (
            "A chosen teacher below its student on a tuning seed: "
            + "; ".join(
                f"{r.dataset} {r.backbone} ({r['smallest seed margin %']:+.1f}% on its worst seed, "
                f"{r['margin %']:+.1f}% on the means)"
                for _, r in weak.iterrows()
            )
            + "; the main table's teachers of those seeds are these runs, which `audit.violations` "
            "lists there once the main table has run."
        )
    shown = margin.round({"margin %": 1, "smallest seed margin %": 1}).round(4)
    return [
        text,
        "",
        markdown(shown),
        "",
        "The teacher and student stages' validation curves, a line per run and seed coloured by its "
        "learning rate (notebook 09, `plots.tuning_curves`): where a run stopped before its curve "
        "settled, and which learning rates a cell's curves rule out.",
        "",
        "![The tuning stage's learning curves](figures/09_next_tuning_curves.png)",
        "",
    ]


def _first_epoch_section(results=None) -> list[str]:
    """`next`'s NeuMF students whose first epoch drops below half the most-popular ranking
    (`audit.first_epoch_drops`), per dataset and method, under PyTorch's initialisation
    (`claim_tables.TORCH_INIT`'s tables) and under NCF's (`next`'s own), where any were recorded."""
    parts = []
    for folder, init in ((TORCH_INIT, "PyTorch's"), ("next", "NCF's")):
        drops = first_epoch_drops(results, folder=folder)
        if not drops.empty:
            parts.append(drops.assign(init=init, dropped=drops.dropped.astype(int)))
    if not parts:
        return []
    drops = pd.concat(parts, ignore_index=True)
    drops = drops[["init", *[c for c in drops.columns if c != "init"]]]
    counts = "; ".join(
        f"under {init} initialisation {int(g.dropped.sum())} of {int(g.runs.sum())} runs"
        for init, g in drops.groupby("init", sort=False)
    )
    return [
        "NeuMF students of `next`'s tables whose first epoch scores below half the most-popular "
        "ranking's validation NDCG@10, the mark of an MLP tower that lost its last live unit in "
        "that epoch (`audit.first_epoch_drops`; notebook 00's collapse table retrains such runs, "
        "and README Known issues gives the cause), under PyTorch's initialisation of the tower, as "
        "`next` ran before session 38 (its tables rebuilt from those records, "
        "`results/next-torch-init/`), and under NCF's, as it runs now (`Profile.mlp_init`). The "
        "mark is a proxy, which a slow first epoch at a small learning rate sets too: of the marked "
        'runs, "retrained" counts those whose first epoch `analyses.first_epochs` trained again and '
        '"tower dead" those it found with no live unit. A run with a dead tower ranks by GMF alone '
        "from then on; the claims pair arms by seed, so a seed whose "
        f"arms drop differently weighs on its cell's paired differences. {counts[0].upper()}"
        f"{counts[1:]}:",
        "",
        markdown(drops),
        "",
    ]


def init_change(results=None) -> pd.DataFrame:
    """`before_after.cell_change` of `next`'s NeuMF cells recorded under both initialisations
    (PyTorch's, `claim_tables.save_torch_init_tables`, before; NCF's, `next`'s own, after), for
    `NEXT_CLAIMS`."""
    root = results_dir(results)
    change = before_after.cell_change(root / TORCH_INIT, root / "next")
    keep = change.claim.str.startswith(tuple(before_after.by_role(c) for c in NEXT_CLAIMS))
    return change[keep & (change.backbone == "neumf")].reset_index(drop=True)


def init_main(results=None) -> pd.DataFrame:
    """The main table's test metrics of `next`'s NeuMF cells under PyTorch's initialisation (before)
    and NCF's (after): `before_after.main_change` of the two folders, NeuMF's rows."""
    root = results_dir(results)
    main = before_after.main_change(root / TORCH_INIT, root / "next")
    return main[main.backbone == "neumf"].reset_index(drop=True)


def _init_section(results=None) -> list[str]:
    """`next`'s NeuMF cells under PyTorch's initialisation and under NCF's (`init_change`, and the
    main table's `before_after.main_change`), where a cell has both."""
    change = init_change(results)
    if change.empty:
        return []
    main = init_main(results)
    cells = ", ".join(sorted({f"{d}/{b}" for d, b in zip(change.dataset, change.backbone)}))
    return [
        f"NeuMF cells recorded under both initialisations ({cells}): PyTorch's, as `next` ran "
        "before session 38 (`claim_tables.save_torch_init_tables`, `results/next-torch-init/`), "
        "then NCF's, as it runs now. Each claim's paired effect per cell, before → after "
        "(`before_after.cell_change`; raw p, as Holm's family, the claim's cells, differs between "
        "the two), and the main table's test NDCG@10 (`before_after.main_change`). Both are draws "
        "of the same cell with the same seeds and their own tuning, so a difference here is the "
        "initialisation's and its tuning's together:",
        "",
        markdown(change.round(3)),
        "",
        *(
            line
            for proto in PROTOCOLS
            for line in (
                f"Test NDCG@10 ({proto} protocol), PyTorch's → NCF's initialisation:",
                "",
                markdown(before_after.main_glance(main, proto)),
                "",
            )
        ),
    ]


def _edge_section(results=None) -> list[str]:
    """Whether `next`'s grids bracket the choices at their edges (`tuning.edge_check`), read only."""
    look = dataclasses.replace(PROFILES["next"], execution=Execution(train=False))
    edges = edge_check(look, results, progress=False)
    if edges.empty:
        return []
    done = edges[edges["past better"].notna()]
    rises = done[done["past better"].astype(bool)]
    text = (
        f"Of these choices, {len(edges)} settings lie at an edge of their grid. For each, the stage's point one "
        "step past the edge (the grid's own progression, on the tuning seeds, at the earlier stages' "
        "choices; trained by the backlog in its first tier) tells whether the grid brackets it "
        f"(`tuning.edge_check`): past the edge, validation NDCG@10 still rises in {len(rises)} of "
        f"the {len(done)} recorded"
    )
    if len(rises):
        text += ": " + "; ".join(
            f"{r.dataset} {r.backbone} {r['past the edge']} "
            f"({r['past - chosen %']:+.1f}% over {r.chosen})"
            for _, r in rises.iterrows()
        )
        text += " (its method was tuned less there than its grid suggests)"
    return [text + ".", "", markdown(edges.round(4)), ""]


def _next_claims_section(results=None) -> list[str]:
    """`next_claims` as a table, where `next` has any."""
    table = next_claims(results)
    if table.empty:
        return []
    return [
        f"Pooled over the {table[['dataset', 'backbone']].drop_duplicates().shape[0]} cells of "
        "`next` recorded so far, at a glance as above (`readme_next.next_at_a_glance`):",
        "",
        markdown(next_at_a_glance(results)),
        "",
        *_verdict_change_section(results),
        "What `next`'s recorded runs say so far, per cell whose runs are recorded (its tables built "
        "from the records alone and the claims on them, `claim_tables.save_recorded_tables` into "
        "`results/next/`; claim 3's primary arm is the CD whose guide `next`'s tuning chose):",
        "",
        markdown(table),
        "",
        "Runs of these tables and of `next`'s tuning stage that break the fair protocol, as above "
        "(`audit.violations` on `results/next/`):",
        "",
        markdown(bad) if not (bad := violations(results, folder="next")).empty else "None.",
        "",
    ]


def _verdict_change_section(results=None) -> list[str]:
    """Each claim and the main table before (the paper profile) and after (`next`), on the cells both
    have (`before_after.verdict_change` and `main_change`: results/next/verdict_change.csv and
    main_change.csv), where `next` has any."""
    change = read_table("next/verdict_change", results)
    if change is None or change.empty:
        return []
    glance = sentences.verdict_change_glance(change)
    counts = [
        f"{sum(bool(x) for x in change[f'{p}: changed'] if pd.notna(x))} of "
        f"{int((change[f'{p}: cells'] > 0).sum())} rows on the {p} protocol"
        for p in PROTOCOLS
    ]
    parts = [
        "Each claim before (the paper profile: ml-100k and ml-1m tuned, the other datasets "
        "borrowing ml-1m's settings, no guide stage, so its primary CD arm is CD-T) and after "
        "(`next`), on each protocol pooled over the cells both profiles pool it on there, each claim "
        "recomputed on those cells alone (`before_after.verdict_change`, "
        "`results/next/verdict_change.csv`, whose `cell list` columns name them). The same cells, "
        "not the same runs: the profiles differ in tuning, validation negatives and seeds (3 or 5 "
        "per cell), so a verdict whose kind changed is not itself evidence that the two estimates "
        'differ, and part of a change can be power; "fragile" marks a verdict the Hartung-Knapp '
        "interval does not share (with two cells the normal interval is too narrow). The kind "
        f"changed in {' and '.join(counts)}:",
        "",
        markdown(glance),
        "",
        "The same intervals drawn (notebook 09, `plots.verdict_change`):",
        "",
        "![Each claim before and after](figures/09_next_verdict_change.png)",
        "",
    ]
    main = read_table("next/main_change", results)
    if main is None or main.empty:
        return parts
    for proto in PROTOCOLS:
        parts += [
            f"The main table's test NDCG@10 ({proto} protocol), mean over each profile's seeds, "
            "before → after and the relative change, per cell both have "
            "(`before_after.main_change`, `results/next/main_change.csv`; not paired: the runs of "
            "the two profiles differ in tuning and validation negatives, their test split is one):"
            if proto == "sampled"
            else f"The same on the {proto} protocol:",
            "",
            markdown(before_after.main_glance(main, proto)),
            "",
        ]
    return parts


def past_stop_section(results=None) -> list[str]:
    """The runs early stopping ended at its minimum of epochs and whether, trained on, they climb
    past their recorded best (`stopping.past_stop`, tools/stop_probe.py); read only."""
    table = past_stop_table(results)
    if table.empty:
        return []
    ended = stops(results=results)  # each record read once
    early = ended[ended.at_min]
    nxt = PROFILES["next"]
    probed, controls = table[table.at_min], table[~table.at_min]
    rose = probed[probed["valid NDCG@10 rise"] > CLIMB]
    epochs = sorted(set(probed.epochs))
    text = (
        f"Early stopping (patience {nxt.patience} epochs, never before the minimum of "
        f"{nxt.min_epochs}) ended {len(early)} runs recorded for profile `next` within {NEAR} "
        f"epochs of the minimum (of the {len(ended)} it ended "
        f"before epoch 200), their best validation epoch a median "
        f"{early.best_epoch.median():.0f}: an early peak, then a fall that patience ends at the "
        f"minimum. Had they converged? {len(probed)} of them were trained on to "
        f"{' or '.join(map(str, epochs))} epochs (`python tools/stop_probe.py`: the main table's "
        "first, then a round robin over dataset, backbone and method, cheapest first). "
        f"{probed.reproduced.sum()} of them reproduced their recorded epochs bit for bit; the "
        "others, recorded on another CPU's arithmetic, are other draws of the same run, each set "
        f"against its own epochs up to the recorded stop. {len(rose)} climbed more than "
        f"{CLIMB:.0%} above their best up to the stop"
    )
    if len(rose):
        text += (
            " ("
            + "; ".join(
                f"{r.dataset} {r.backbone} {r.method} lr {r.lr:g} seed {r.seed}: "
                f"{r['valid NDCG@10 rise']:+.1%} by epoch {r.new_best_epoch}, more than "
                f"{CLIMB:.0%} above from epoch {r.rise_epoch:.0f}"
                for _, r in rose.iterrows()
            )
            + ")"
        )
    text += (
        f". The median run's best past its stop stays {-probed['after the stop'].median():.1%} "
        "below its best up to the stop (`after the stop`)"
    )
    ends = probed[probed["rising at the end"]]
    if len(ends):
        text += (
            f". {len(ends)} {'was' if len(ends) == 1 else 'were'} still rising when the probe ended "
            "(their last `patience` epochs read as early stopping reads them, `loop.still_rising`; "
            "`end rise`: their line's rise over the probe's best), so the probe says where "
            "they had got to, not where they end: "
            + "; ".join(
                f"{r.dataset} {r.backbone} {r.method} lr {r.lr:g} seed {r.seed}, "
                f"{r['end rise']:+.1%} over epochs {r.epochs - r.patience + 1}-{r.epochs}, "
                f"{r['valid NDCG@10 rise']:+.1%} over its best up to the stop"
                for _, r in ends.iterrows()
            )
        )
    if len(controls):
        up = controls[controls["valid NDCG@10 rise"] > CLIMB]
        text += (
            ". As controls, runs that patience ended later were trained on too (`at_min` False, "
            f"`--control`): {len(up)} of {len(controls)} climbed more than {CLIMB:.0%}"
        )
    text += (
        "; `rise` columns: the best epoch's "
        "metrics over those of the best epoch up to the stop (full-ranking test: reproduced runs "
        "only); `key`: the record, and its analysis in results/analysis/past_stop_<key>_<epochs>.json."
    )
    longer = nxt.min_epochs_for
    if longer:
        text += " Profile `next` now trains " + ", ".join(
            f"{d} {b} for at least {m} epochs" for (d, b), m in longer.items()
        )
        text += " (`Profile.min_epochs_for`, every method alike; README Known issues)."
    cols = ["dataset", "backbone", "method", "size", "lr", "seed", "key", "stopped", "at_min"]
    cols += ["best_epoch", "reproduced", "epochs", "new_best_epoch"]
    shares = ["valid NDCG@10 rise", "after the stop", "end rise"]
    shares += ["test NDCG@10 sampled rise", "test NDCG@10 full rise"]
    cols += [*shares, "rising at the end"]
    table = table[cols].copy()
    for c in shares:
        table[c] = table[c].map(lambda v: "" if pd.isna(v) else f"{v:+.1%}")
    return [
        "### Runs early stopping ended at its minimum, trained on",
        "",
        text,
        "",
        markdown(table.sort_values(cols[:7], ignore_index=True)),
        "",
    ]
