"""The README's sections on the engine's probes, each read from its record in results/bench/: the
feature-major refresh (`Config.refresh_tower`, tools/refresh_probe.py), its timings and agreement;
the uniform draw of CD's ablation (tools/uniform_probe.py); deferring every table (`Config.defer`,
tools/defer_probe.py); and what a lent GPU's window measured (tools/gpu_window.sh). Part of
`readme.readme_section`, beside the sparse steps' sections (`readme_steps`)."""

from __future__ import annotations

import json

import pandas as pd

from . import runs
from .agreement import tower_agreement, tower_equivalence
from .costs import refresh_share
from .profiles import PROFILES
from .tables import markdown


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
