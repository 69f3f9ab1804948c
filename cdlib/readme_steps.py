"""The README's sections on the engine's faster paths: the sparse steps (`Config.step`, issue 22),
their epoch timings beside the dense step's (`cdlib.bench --steps`), what the grids cost with them
(`costs.step_estimate`, `plan.profile_estimate`), their agreement with the dense step
(`agreement`), and what decided profile `next`'s step. Part of `readme.readme_section`; the
sections of the probes beside the steps are `readme_probes`'."""

from __future__ import annotations

import json

import pandas as pd

from . import runs
from .agreement import step_agreement, step_equivalence
from .audit import profile_coverage
from .costs import step_estimate
from .plan import bench_steps, estimate_check, hours_to_go, profile_estimate
from .profiles import PROFILES
from .stepbench import STEP_COLUMNS
from .tables import markdown

# the bench's columns the README shows (`stepbench.step_table`): seconds per epoch of each step,
# and the ratios of whole epochs (validation included)
_BENCHED = [name for name, _, _ in STEP_COLUMNS]
STEP_BENCH_COLUMNS = [
    "dataset",
    "run",
    "size",
    *(f"{s} s/epoch" for s in _BENCHED),
    *(f"dense / {s}, validation included" for s in _BENCHED[1:]),
]


def next_step_sentence(step: str, pooled: pd.DataFrame) -> str:
    """What decided profile `next`'s step, from the pooled equivalence table of that step
    (`agreement.step_equivalence`): the datasets where it was shown equivalent to the dense step,
    those where it was not, and those with too few paired seeds to test."""

    def cells(rows) -> str:
        return ", ".join(f"{r.dataset} ({r.seeds} seed{'s' if r.seeds != 1 else ''})" for r in rows)

    margin = pooled["margin %"].iloc[0]
    shown, tested = pooled.equivalent.eq(True), pooled.equivalent.notna()
    said = [
        f"it is shown equivalent to the dense step within ±{margin:g}% on {cells(pooled[shown].itertuples())}"
        if shown.any()
        else f"it is shown equivalent to the dense step within ±{margin:g}% on no dataset",
    ]
    if (tested & ~shown).any():
        said.append(f"not on {cells(pooled[tested & ~shown].itertuples())}")
    if (~tested).any():
        said.append(f"untested (under 2 paired seeds) on {cells(pooled[~tested].itertuples())}")
    return (
        f'Profile `next` (issue 23\'s grid) trains with step="{step}", decided on this pooled '
        "test rather than on one standard deviation per configuration: "
        + "; ".join(said)
        + ". The deferral itself (rows that wait for their Adam steps) is tested against torch's "
        "Adam in `tests/test_sparse.py` (the same weights to 1e-4 after 21 epochs). Which tables "
        "defer (`rowadam.defers`) depends on the dataset: on ml-100k none, on ml-1m only the "
        "teachers' user tables, so there the study tests the sparse look-ups and decoding more than "
        "the deferral; on citeulike-t every item and user table of both teachers defers (no "
        "student's), so there it tests the deferral itself, teachers and the students distilled "
        "from them."
    )


def sparse_step_section(results=None, next_coverage: pd.DataFrame | None = None) -> list[str]:
    """The sparse steps (`Config.step`): their timings beside the dense step's (`bench --steps`),
    the grid's cost with them (`costs.step_estimate`, and profile `next`'s against what it has
    recorded: `next_coverage`, its `audit.profile_coverage`, read here where not given), and the
    agreement study (`agreement.step_agreement`)."""
    records = bench_steps(results)
    agree = {step: step_agreement(results, step=step) for step in ("sparse", "deferred")}
    if not records and all(a.empty for a in agree.values()):
        return []
    devices = sorted({r.get("provenance", {}).get("device", "") for r in records} - {""})
    timed_on = f"on {'; '.join(devices)} " if devices else ""
    parts = [
        "### The sparse steps against the dense one",
        "",
        '`Config.step`: "sparse" and "deferred" compute the losses at the cost of the step\'s pairs, '
        'with row gradients, and step only the rows a step read: "sparse" with a lazy Adam (other '
        'training), "deferred" with Adam\'s steps of the other rows deferred and applied in closed '
        "form when a row is next read (Adam's own training), its first 1,000 steps whole-table "
        "(its warm-up). Seconds per training epoch of untrained models, each step timed in turn, "
        "the best of two epochs kept (so that what a run does once, the teacher's ranking of "
        f"every user's items, is left out), {timed_on}(`python -m cdlib.bench --steps --dataset D "
        "--out results/bench/steps_D_cpu.json`); the ratios add each epoch's validation to both.",
        "",
    ]
    if records:
        bench = pd.DataFrame([row for rec in records for row in rec["steps"]])
        bench = bench.reindex(columns=STEP_BENCH_COLUMNS)
        peak = {rec["dataset"]["name"]: rec["peak_rss_gib"] for rec in records}
        bench["peak GiB (process)"] = bench.dataset.map(peak)
        parts += [markdown(bench.round(3)), ""]
        est = {step: step_estimate(records, results, step) for step in ("sparse", "deferred")}
        if not any(e.empty for e in est.values()):
            both = est["sparse"].merge(
                est["deferred"], on=["dataset", "backbone", "runs", "CPU hours, dense step"]
            )
            both = both.drop(columns="ratios of_y").rename(columns={"ratios of_x": "ratios of"})
            both = both[[c for c in both if c != "ratios of"] + ["ratios of"]]
            whole = both[both.dataset == "all"].iloc[0]
            estimates = {
                step: e.loc[e.dataset == "all", f"CPU hours, {step} step (est.)"].iloc[0]
                for step, e in est.items()
            }
            cards = [
                json.loads(p.read_text())
                for p in sorted(runs.results_dir(results).glob("bench/distill_*_cpu.json"))
            ]
            targets = engine_targets(records, cards, estimates)
            parts += [
                f"The whole grid the tables list ({whole['runs']} runs) costs "
                f"**{whole['CPU hours, dense step']:.0f} CPU hours** with the dense step (recorded, "
                f"and estimated for the runs to go as in the compute table), and an estimated "
                f"**{whole['CPU hours, sparse step (est.)']:.0f}** with the sparse step and "
                f"**{whole['CPU hours, deferred step (est.)']:.0f}** with the deferred one: each "
                "run's hours divided by the benched ratio of its kind of run, validation included, on "
                "its dataset or the benched one nearest in size, the deferred step's warm-up epochs at "
                "the warm-up's ratio (`costs.step_estimate`; the recorded hours were timed on another "
                "CPU than the bench's).",
                "",
                markdown(both),
                "",
                "Issue 22's targets against these measurements (`readme_steps.engine_targets`): "
                "epochs are training epochs (dense / step, the bench above; the deferred step after "
                "its warm-up), memory the bench's and `cdlib.distill`'s peak (process), the grid's "
                "hours the estimate above, the distillation's time its card "
                "(`results/bench/distill_*_cpu.json`).",
                "",
                markdown(targets),
                "",
            ]
        nxt = profile_estimate(PROFILES["next"], records, results, "deferred", digits=None)
        if not nxt.empty:
            by_table = (  # a table with a run that has no estimate has none
                nxt.groupby("table", sort=False)[list(nxt.columns[-3:])]
                .agg(lambda x: x.sum(skipna=False))
                .round(1)
            )
            whole = by_table.loc["all"]
            parts += [
                f"Issue 23's grid (profile `next`: every dataset tuned on its own, the CD guide chosen "
                f"in tuning, 5 seeds for the main table and the claims' ablations, 3 for the size "
                f"table, sensitivity on ml-1m and citeulike-t) is {int(whole['runs'])} runs: an "
                f"estimated **{whole['CPU hours, dense step']:.0f} CPU hours** with the dense step and "
                f"**{whole['CPU hours, deferred step (est.)']:.0f}** with the deferred one, every run "
                "priced as a run to go (`plan.profile_estimate`).",
                "",
                markdown(by_table.reset_index()),
                "",
            ]
            if next_coverage is None:
                next_coverage = profile_coverage(PROFILES["next"], results)
            parts += _estimate_check_sentence(nxt, next_coverage)
    for step, table in agree.items():
        if table.empty:
            continue
        parts += [
            f'Main-table configurations trained with the dense step and with step="{step}" (settings '
            "tuned with the dense one); test NDCG@10 (sampled), paired over seeds "
            "(`agreement.step_agreement`, notebook 09). `within 1 sd`: the sparse step's mean lies "
            "within one standard deviation (over the paired seeds) of the dense step's, the "
            "criterion the issue proposed (empty: fewer than 2 seeds); two steps that train "
            "alike fail it by chance in 19% of the configurations at 5 independent seeds. `TOST p`, "
            "`equivalent`: the equivalence test of the paired differences against ±1.35% of the "
            "dense mean (half the paper's smallest claimed gain; p < 0.05).",
            "",
            markdown(
                table.round(4).replace({c: {-0.0: 0.0} for c in table.select_dtypes("float")})
            ),
            "",
        ]
        pooled = step_equivalence(results, step=step)
        parts += [
            f"Pooled per dataset (`agreement.step_equivalence`): each seed's relative difference "
            f'(step="{step}" - dense) / dense averaged over the configurations, on the seeds that '
            "every configuration has with both steps; its mean over those seeds with a 90% interval "
            "(a TOST at 0.05 holds exactly when it lies within the margin), and the equivalence test.",
            "",
            markdown(pooled.round(3)),
            "",
        ]
        if step == PROFILES["next"].step and not pooled.empty:
            parts += [next_step_sentence(step, pooled), ""]
    return parts


def _estimate_check_sentence(estimate: pd.DataFrame, coverage: pd.DataFrame) -> list[str]:
    """What profile `next` has recorded so far, the estimate against the recorded hours of each
    cell's tables whose every run is recorded (`plan.estimate_check`), and, once some are, the hours
    to go (`plan.hours_to_go`): in all, and per cell with runs to go."""
    whole = coverage[coverage.table == "all"]
    if whole.empty or not whole.recorded.iloc[0]:
        return []
    check = estimate_check(estimate, coverage)
    text = (
        f"Recorded so far: {int(whole.recorded.iloc[0])} runs, "
        f"{whole['CPU hours'].iloc[0]:.1f} CPU hours (`audit.profile_coverage`)."
    )
    table = []
    if not check.empty:
        text += (
            " Over each cell's tables whose every planned run is recorded, the estimate beside the "
            "hours they took (`plan.estimate_check`): "
            + "; ".join(
                f"{r['dataset']} {r['backbone']}, {r['runs']} runs priced at "
                f"{r['CPU hours, estimated']:.1f} h, recorded {r['CPU hours, recorded']:.1f} h "
                f"({r['recorded / estimated']:.2f}x)"
                for _, r in check.iterrows()
            )
            + "."
        )
        text += _to_go_sentence(hours_to_go(estimate, coverage))
        cells = hours_to_go(estimate, coverage, by=("dataset", "backbone"))
        table = [
            "Where those hours lie, per cell with runs to go (`plan.hours_to_go` by dataset and "
            "backbone, each cell at its backbone's ratio):",
            "",
            markdown(cells[cells["runs to go"] > 0].round(2)),
            "",
        ]
    return [text, "", *table]


def _to_go_sentence(t: pd.DataFrame) -> str:
    """The runs and CPU hours `next` has to go (`plan.hours_to_go`), as estimated and at the ratio
    its complete tables took."""
    whole = t.set_index("backbone").loc["all"]
    cells = "; ".join(
        f"{r.backbone} {r['recorded / estimated']:.2f}x"
        if r.notna().all()
        else f"{r.backbone} none"
        for _, r in t[t.backbone != "all"].iterrows()
    )
    at_ratio = whole["CPU hours to go, at that ratio"]
    return (
        f" To go: {int(whole['runs to go'])} runs, an estimated "
        f"**{whole['CPU hours to go, estimated']:.0f} CPU hours**; at the ratio of recorded to "
        f"estimated hours of each backbone's complete tables ({cells}), "
        + (f"**{at_ratio:.0f}** (`plan.hours_to_go`)." if pd.notna(at_ratio) else "not known yet.")
    )


def engine_targets(records: list[dict], cards: list[dict], estimates: dict) -> pd.DataFrame:
    """Issue 22's targets against what was measured, a row per target and step: the step bench's
    training-epoch ratios dense / step (`records`: `cdlib.bench --steps` JSON), the peak memory of
    the yelp bench and of `cdlib.distill` on yelp (`cards`: `cdlib.distill`'s cards, with the
    `wall_seconds` and `peak_rss_gib` of the command that wrote them), the grid's estimated CPU
    hours per step (`estimates`: step -> hours, `costs.step_estimate`'s total). A target with
    nothing measured is left out."""
    bench = pd.DataFrame(
        [row for rec in records for row in rec["steps"]],
        columns=["dataset", "run", "dense / sparse", "dense / deferred"],
    )
    peaks = {rec["dataset"]["name"]: rec["peak_rss_gib"] for rec in records}
    rows = []

    def add(target, step, measured, met, unit=""):
        rows.append(
            {"target": target, "step": step, "measured": f"{measured:.3g}{unit}", "met": met}
        )

    for dataset, run, at_least in (
        ("citeulike-t", "CDAE teacher", 10),
        ("yelp", "CDAE teacher", 10),
        ("yelp", "NeuMF teacher", 5),
    ):
        got = bench[(bench.dataset == dataset) & (bench.run == run)]
        for step in ("sparse", "deferred") if not got.empty else ():
            ratio = got[f"dense / {step}"].iloc[0]
            add(f"{dataset} {run} epoch >= {at_least}x faster", step, ratio, ratio >= at_least, "x")
    ml1m = bench[bench.dataset == "ml-1m"]
    for step in ("sparse", "deferred") if not ml1m.empty else ():
        worst = ml1m.loc[ml1m[f"dense / {step}"].idxmin()]
        add(
            f"no kind of epoch slower on ml-1m (slowest: {worst.run})",
            step,
            worst[f"dense / {step}"],
            worst[f"dense / {step}"] >= 1,
            "x",
        )
    yelp_cards = [c for c in cards if c["data"]["name"].startswith("yelp")]
    peak = [peaks["yelp"]] if "yelp" in peaks else []
    peak += [c["peak_rss_gib"] for c in yelp_cards]
    if peak:
        add(
            "peak memory of any yelp run <= 4 GiB",
            "every step benched; distill's",
            max(peak),
            max(peak) <= 4,
            " GiB",
        )
    for step, hours in estimates.items():
        add("the paper profile <= 30 CPU hours", step, hours, hours <= 30, " h")
    for c in yelp_cards:
        minutes = c["wall_seconds"] / 60
        step = c["models"]["teacher"]["config"].get("step") or "dense"
        add("python -m cdlib.distill on yelp <= 30 minutes", step, minutes, minutes <= 30, " min")
    return pd.DataFrame(rows, columns=["target", "step", "measured", "met"])
