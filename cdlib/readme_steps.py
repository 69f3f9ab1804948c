"""The README's sections on the engine's faster paths: the sparse steps (`Config.step`, issue 22),
their epoch timings beside the dense step's (`cdlib.bench --steps`), what the grids cost with them
(`costs.step_estimate`, `plan.profile_estimate`), their agreement with the dense step
(`agreement`), and what decided profile `next`'s step; and the feature-major refresh
(`Config.refresh_tower`), its timings and agreement; the uniform draw of CD's ablation
(`uniform_draw_section`); deferring every table (`Config.defer`, `defer_section`); and what a
lent GPU's window measured (`gpu_section`). Part of `readme.readme_section`."""

from __future__ import annotations

import json

import pandas as pd

from . import runs
from .agreement import step_agreement, step_equivalence, tower_agreement, tower_equivalence
from .audit import profile_coverage
from .costs import refresh_share, step_estimate
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


def _sci(x: float) -> str:
    return f"{x:.1e}"


def refresh_tower_section(results=None) -> list[str]:
    """The feature-major refresh (`Config.refresh_tower`): both towers' times and the rankings they
    give trained models (`results/bench/refresh_tower_cpu.json`, tools/refresh_probe.py
    --agreement), and the runs trained with each (`agreement.tower_agreement`)."""
    path = runs.results_dir(results) / "bench" / "refresh_tower_cpu.json"
    agree = tower_agreement(results)
    if not path.is_file() and agree.empty:
        return []
    share = refresh_share(results)
    share = share[share.backbone == "neumf"].reset_index(drop=True)
    parts = [
        "### The feature-major refresh",
        "",
        "A student-guided CD run ranks every user's missing items by the student once an epoch "
        "(`samplers.top_missing`). For NeuMF students that refresh is most of the training on the "
        "larger datasets: its share of the training seconds of the recorded NeuMF runs guided by "
        "their student (hybrid: from its switch epoch), the seconds of a refresh and of an epoch "
        "(`costs.refresh_share`, `python tools/refresh_probe.py`), and the compiled kernels the "
        "run's code had for its refreshes (`costs.refresh_kernels`: the feature-major tower in one "
        "pass, `towerkernel`, and each user's top k, `topkernel`; both give torch's bits, so they "
        "change what a refresh costs, not what it ranks):",
        "",
        markdown(share.round({"refresh s": 2, "epoch s": 2, "share of training": 2})),
        "",
        '`Config.refresh_tower="feature-major"` ranks with `NeuMF.score_all_feature_major`: the '
        "tower's layers as [units x pairs] products instead of [pairs x units], the same function "
        "summed in another order. Profile `next` uses it for every NeuMF student that refreshes "
        "[decision]; the runs recorded before used the item-major tower (`score_all`).",
        "",
    ]
    if path.is_file():
        rec = json.loads(path.read_text())
        timed = pd.DataFrame(rec["timings"])
        ranked = pd.DataFrame(rec["rankings"])
        by = ranked.groupby(["dataset", "size"], sort=False)
        summary = pd.DataFrame(
            {
                "models": by.size(),
                "users each": by.users.first(),
                "identical top-100 lists, fewest": by["identical lists"].min().map("{:.2%}".format),
                "positions differing, most": by["positions differing"].max().map(_sci),
                "largest score": by["largest score"].max().round(1),
                "largest score difference": by["largest score difference"].max().map(_sci),
                "largest gap at a difference": by["largest gap at a difference"].max().map(_sci),
            }
        ).reset_index()
        timed["largest score difference"] = timed["largest score difference"].map(_sci)
        parts += [
            f"Seconds to score {timed.users.iloc[0]} users' items with each tower, and to refresh "
            "twice as many users' top 100 (`samplers.top_missing`, in the batches a run uses), "
            f"one thread, a NeuMF of d = {timed['size'].iloc[0]} with weights of a trained model's "
            "scale (the best of 3; `python tools/refresh_probe.py --agreement`, "
            f"{rec['provenance']['device']}):",
            "",
            markdown(timed.round(3)),
            "",
            "Each trained NeuMF whose weights were cached here, its top-100 missing items for its "
            "dataset's first users through both towers (`agreement.ranking_agreement`): the share "
            "of users whose lists are identical, the share of list positions that differ, the "
            "largest score (float32 rounds a score of size s by up to s x 6e-8), and the largest "
            "item-major score gap between the two items at a differing position (0: a tie broken "
            "otherwise):",
            "",
            markdown(summary),
            "",
        ]
    if not agree.empty:
        pooled = tower_equivalence(results)
        parts += [
            "Configurations trained with both towers (the item-major runs are the ones recorded "
            "before the choice); test NDCG@10 (sampled), paired over seeds, with the criterion and "
            "the equivalence test of the steps' agreement above (`agreement.tower_agreement`, "
            "notebook 09):",
            "",
            markdown(
                agree.round(4).replace({c: {-0.0: 0.0} for c in agree.select_dtypes("float")})
            ),
            "",
            "Pooled per dataset as the steps are (`agreement.tower_equivalence`):",
            "",
            markdown(pooled.round(3)),
            "",
        ]
    return parts


def uniform_draw_section(results=None) -> list[str]:
    """CD's uniform draw of K_u both ways (`samplers.uniform_missing`, `randkernel`): their times and
    whether they drew the same numbers and items (`results/bench/uniform_cpu.json`,
    tools/uniform_probe.py)."""
    path = runs.results_dir(results) / "bench" / "uniform_cpu.json"
    if not path.is_file():
        return []
    rec = json.loads(path.read_text())
    d = pd.DataFrame(rec["draws"])
    table = pd.DataFrame(
        {
            "dataset": d.dataset,
            "users a batch": d["users a batch"],
            "items": d["items"],
            "torch.rand ms": d["torch.rand s"] * 1e3,
            "randkernel.rand ms": d["randkernel.rand s"] * 1e3,
            "Gumbel keys ms": d["Gumbel keys s"] * 1e3,
            "uniform_missing ms": d["uniform_missing s"] * 1e3,
            "speed-up": d["speed-up"],
            "rows by their keys": d["rows by their keys"].map("{:.2%}".format),
            "same numbers and items": d["same numbers"] & d["same items"],
        }
    )
    return [
        "### The uniform draw",
        "",
        "CD's uniform-sampling ablation draws each user's K_u as the top n of Gumbel keys of one "
        "uniform number per item. Milliseconds a batch: the numbers by torch.rand and by "
        "`randkernel.rand`, and the whole draw as the earlier runs drew it (the keys of every "
        "row) and by `samplers.uniform_missing` (the keys only for a batch with a row that needs "
        f"them), over {d.batches.iloc[0]} batches a row, one thread "
        f"(`python tools/uniform_probe.py`, {rec['provenance']['device']}); the last column "
        "checks the numbers, the items and the generator's state after them, bit for bit:",
        "",
        markdown(table.round(2)),
        "",
    ]


def defer_section(results=None) -> list[str]:
    """The deferred step with every table deferred against the size rule's tables (`Config.defer`,
    `results/bench/defer_cpu.json`, tools/defer_probe.py): seconds per epoch and whether the two
    trained the same bits."""
    path = runs.results_dir(results) / "bench" / "defer_cpu.json"
    if not path.is_file():
        return []
    rec = json.loads(path.read_text())
    d = pd.DataFrame(rec["runs"])

    def gap(other: str) -> list[str]:
        pairs = zip(d["size rule valid NDCG@10"], d[other])
        return [_sci(max(abs(a - b) for a, b in zip(x, y))) for x, y in pairs]

    table = pd.DataFrame(
        {
            "dataset": d.dataset,
            "run": d.run,
            "size": d["size"],
            "size rule s/epoch": d["size rule s/epoch"].round(2),
            "all s/epoch": d["all s/epoch"].round(2),
            "speed-up": (d["size rule s/epoch"] / d["all s/epoch"]).round(2),
            "largest valid NDCG@10 difference": gap("all valid NDCG@10"),
            "same bits": d["same bits"],
            "size rule, 2 threads: largest difference": gap("size rule 2 threads valid NDCG@10"),
        }
    )
    nxt = PROFILES["next"].defer_for
    cells = ", ".join(f"{a} {b}" for a, b in nxt) or "no cell"
    return [
        "### Deferring every table",
        "",
        "The deferred step steps a table whole, Adam's step over every row, when `rowadam.defers` "
        "judges it too small to gain from deferring (a NeuMF student's embeddings); "
        '`Config.defer="all"` defers every table after the warm-up, the same training up to '
        "rounding (`tests/test_sparse.py`). Seconds per training epoch after the first (the "
        f"warm-up's), {d.epochs.iloc[0]} epochs of untrained runs each way, one thread "
        f"(`python tools/defer_probe.py`, {rec['provenance']['device']}); the validation curves' "
        "largest difference and whether the two trained the same bits (the teacher's tables are all "
        "deferred by the size rule already), and the largest difference of the size rule's run on "
        "two threads from its run on one, rounding alone (MKL's products round by their thread "
        "count):",
        "",
        markdown(table),
        "",
        f"Profile `next` defers every table on {cells} (`Profile.defer_for`), the one cell none of "
        "whose runs had been recorded, so that each cell's runs share one arithmetic [decision].",
        "",
    ]


def gpu_section(results=None) -> list[str]:
    """What the last GPU window checked (`results/bench/gpu_check.json`, written by
    tools/gpu_window.sh) and the gain of groups there (`results/bench/*_cuda.json`, `cdlib.bench
    --groups`): README lines, none where neither was recorded."""
    bench = runs.results_dir(results) / "bench"
    lines = []
    if (bench / "gpu_check.json").is_file():
        c = json.loads((bench / "gpu_check.json").read_text())
        prov, waits = c["provenance"], c.get("host_waits_in_one_epoch", {})
        dyn = [n for k, n in waits.items() if k.endswith("dynamic")]
        static = [n for k, n in waits.items() if k.endswith("static")]

        def span(v):
            return f"{min(v)}" if min(v) == max(v) else f"{min(v)}-{max(v)}"

        lines += [
            f"**The GPU window's check** (`results/bench/gpu_check.json`, {prov['device']}, torch "
            f"{prov['packages']['torch']}, commit {prov['git']['commit'][:7]}): the same 3-epoch run twice "
            f"on the GPU gave {'the same' if c['device_deterministic'] else 'different'} curves; its "
            f"losses differ from the CPU's by at most {c['max_loss_difference_cpu_vs_device']:.1e} (each "
            "device draws its own random numbers); 3 CD students trained as a group differ from the same "
            f"runs alone by at most {c['group_max_loss_difference']:.1e}; in one epoch the host waited on "
            f"the GPU {span(dyn)} times with the dynamic step and {span(static)} "
            f"times with the static one ({len(static)} kinds of step each).",
            "",
        ]
    for path in sorted(bench.glob("*_cuda.json")):
        record = json.loads(path.read_text())
        groups = pd.DataFrame(record.get("groups", []))
        if groups.empty:
            continue
        best = groups.loc[groups.groupby("run")["gain over one after another"].idxmax()]
        gains = ", ".join(
            f"{r.run} {r['gain over one after another']:.1f}x (groups of {r.group})"
            for _, r in best.iterrows()
        )
        lines += [
            f"In groups on the {record['provenance']['device']} of `results/bench/{path.name}` "
            "(`cdlib.bench --groups`), the most "
            f"member-epochs per second against one run after another: {gains}. Profile `next` trains "
            "one run at a time (its sparse step does not stack).",
            "",
        ]
    return lines
