"""Write the unexecuted numbered notebooks (the source of their cells).

    python tools/build_notebooks.py [--force]

Without --force an existing notebook is left alone: the committed notebooks carry the outputs of
a reproduction run, which `python -m cdlib.reproduce` regenerates from these cells.
"""

import argparse
from pathlib import Path

import nbformat as nbf

NB = Path(__file__).resolve().parent.parent / "notebooks"

PARAMS = """profile = "quick"          # smoke | quick | paper (python -m cdlib.reproduce --help says what each costs)
datasets = None            # None: the profile's datasets
backbones = ["cdae", "neumf"]
seeds = None               # None: the profile's seeds
device = None              # None: cuda if present, else cpu
results_dir = None         # None: results/
figures_dir = None         # None: figures/
write_tables = True        # the per-dataset training jobs of the reproduction set this to False
train_missing = None       # None: train what is not recorded, unless CDLIB_NO_TRAIN is 1; False: never train"""

SETUP = """import pandas as pd
from IPython.display import display

from cdlib import analyses, audit, claim_tables, costs, ials, plan, plots, profiles, readme, readme_next, report, sentences, softlabels, tables, tuning
from cdlib import experiments as ex

pd.set_option("display.width", 200)
pd.set_option("display.max_columns", 40)
P = profiles.profile(profile, datasets, backbones, seeds, device, train_missing)
P"""


def md(text):
    return nbf.v4.new_markdown_cell(text.strip())


def code(text, *tags):
    c = nbf.v4.new_code_cell(text.strip())
    if tags:
        c.metadata["tags"] = list(tags)
    return c


def params(extra=""):
    return code(PARAMS + ("\n" + extra.strip() if extra else ""), "parameters")


def save(*pairs):
    lines = ["if write_tables:"]
    lines += [f"    tables.save_table({obj}, {name!r}, results_dir)" for obj, name in pairs]
    return "\n".join(lines)


GRID = "results_dir"  # every grid resolves the tuned settings from the records

# notebook 09: next's NeuMF cells under PyTorch's initialisation and under NCF's
INIT_MD = """`next`'s NeuMF cells recorded under both initialisations of the tower: PyTorch's defaults, as `next` ran
before session 38 (its tables rebuilt from those records, `claim_tables.save_torch_init_tables`, into
`results/next-torch-init/`), and NCF's, as it runs now (`Profile.mlp_init`). Each claim's paired effect per
cell before → after (`readme_next.init_change`), then the main table's test NDCG@10 (`before_after.main_change`)."""
INIT_CODE = """if write_tables:  # (else: as last written)
    claim_tables.save_torch_init_tables(results_dir)
init = readme_next.init_change(results_dir)
print(init.round(3).to_string(index=False) if not init.empty else "no NeuMF cell of next is recorded under both initialisations yet")
if not init.empty:
    print(before_after.main_glance(readme_next.init_main(results_dir), "sampled").to_string(index=False))"""

NOTEBOOKS = {
    "00_tuning": [
        md("""# 00 · Tuning stage
Equal tuning budgets before any comparison (Rendle et al. 2019; METHOD.md "A fair comparison"): on each
tuning dataset and backbone, CD and RD get 6 configurations each (the weight of the distillation term ×
how many items it distils; RD's grid starts at its authors' defaults λ_RD = 1, K = 10), and the teacher and
the plain student get 4 learning rates, all over the same seeds and epoch rules (cap, patience, minimum
epochs). Each stage chooses the point with the best mean **validation** NDCG@10 (sampled protocol, the
validation's own negatives); test numbers are shown, never chosen on. The stages run in order: the chosen
teacher is the teacher of every student, the chosen student learning rate is that of RD and CD.
The other datasets use the choice of the dataset named in the profile's `tune_on` (default: the last tuned)."""),
        params(),
        code(SETUP),
        md("## Run (or read) the tuning stage of each tuning dataset and backbone"),
        code(
            """runs, choices = tuning.tune_all(P, results_dir)
table = tuning.tuning_table(runs, choices)
"""
            + save(("runs", "00_tuning_runs"), ("table", "00_tuning"))
        ),
        md("## The grid (mean over the tuning seeds) and the choice of each stage"),
        code(
            'print(table.round(4).to_string() if not table.empty else "no tuning run recorded")',
            "nbval-check-output",
        ),
        code(
            """for (d, b), c in choices.items():
    print(f"{d}/{b}: " + "; ".join(f"{stage}: {tuning.point_label(stage, kw).split(' ', 1)[1]}" for stage, kw in c.items()))
incomplete = sorted({(r.dataset, r.backbone) for r in runs.itertuples() if r.status != "ok"}) if not runs.empty else []
print("not complete:", incomplete or "none")""",
            "nbval-check-output",
        ),
        md("""## Students that collapse in their first epoch
Some ml-1m NeuMF students (d = 8, lr 3e-3) lose their MLP tower in the first epoch: every unit of its last
layer is off on every validation pair, the model ranks by GMF alone and ends below the others. To see whose seed
this follows, `analyses.first_epochs` retrains the first epoch of such a student with each teacher seed, beside
the plain student of the same seed (the row of the run's own teacher is checked against its record). The
ml-100k and yelp rows are plain students of profile `next`'s tuning stage (ml-100k: its 12, lr 1e-4 to 3e-2,
seeds 0 and 1; yelp: lr 3e-3 and 1e-2, seeds 0-3), retrained alone, with the tower initialised as the paper
profile's runs were (PyTorch's defaults, "torch") and as NCF's code does ("ncf": Glorot-uniform kernels, zero biases;
`Config.mlp_init`): under PyTorch's, most of ml-100k's and yelp's seed 1 lose their tower; under NCF's, none
does, which is why profile `next` now initialises as NCF's code does."""),
        code(
            """fe = analyses.first_epochs_table(results_dir)
print(fe.to_string() if not fe.empty else "no first-epoch analysis recorded")""",
            "nbval-check-output",
        ),
    ],
    "01_datasets": [
        md("""# 01 · Datasets
The six implicit-feedback datasets of METHOD.md, split leave-one-out (last interaction = test, the one
before = validation; users with fewer than 3 interactions dropped). The raw counts match
`../shared/data/README.md`; the split order (timestamp, file order or seeded random) is a
[decision] recorded per dataset. Validation has its own 99 sampled negatives, drawn beside the test's."""),
        params(
            "all_datasets = True       # the statistics of all six datasets, whatever the profile"
        ),
        code(SETUP),
        md("## Load and split every dataset"),
        code("""from cdlib import data
names = data.DATASETS if all_datasets and not datasets else P.datasets
loaded = [data.load(n, draw=False) for n in names]  # the split; its candidates are not counted here
stats = data.statistics(loaded)
if write_tables:
    tables.save_table(stats, "01_datasets", results_dir)"""),
        md("## Table 1: statistics before and after filtering"),
        code("print(stats.to_string())", "nbval-check-output"),
        code(
            """print(f"{len(stats)} datasets; {int(stats['users dropped'].sum())} users dropped for fewer than 3 "
      f"interactions; {int(stats['duplicates merged'].sum())} duplicate interactions merged.")""",
            "nbval-check-output",
        ),
    ],
    "02_teachers": [
        md("""# 02 · Teachers
Accuracy and size of each backbone's teacher (CDAE H = 200, NeuMF d = 64, each at its tuned learning rate)
on each dataset, on the sampled (NCF: held-out item vs 99 negatives) and the full protocol. For reference,
NCF (He et al. 2017) reports NeuMF HR@10 ≈ 0.73 on ml-1m with pre-training and ≈ 0.70 without, at the best
*test* epoch; here the epoch is chosen on validation."""),
        params(),
        code(SETUP),
        md("## Train (or read the recorded runs)"),
        code(
            f"""runs = tables.collect(ex.teacher_grid(P, {GRID}), results_dir, P.execution)
table = tables.summarize(runs, ["HR@10", "NDCG@10", "HR@10 (full)", "NDCG@10 (full)"])
"""
            + save(("runs", "02_teachers_runs"), ("table", "02_teachers"))
        ),
        md("## Table 2: teachers (test, mean ± std over seeds)"),
        code("print(tables.fmt(table).to_string())", "nbval-check-output"),
        code(
            """for (d, b, _), r in table.iterrows():
    print(f"{b} teacher on {d}: HR@10 = {r['HR@10 mean']:.3f}, {int(r['params']):,} parameters")""",
            "nbval-check-output",
        ),
        md("""## The NeuMF teacher on ml-1m against NCF (seeds 0 and 1)
Every setting tried for the ml-1m NeuMF teacher (learning rates of the tuning stage, NCF's wider tower
`mlp_scale = 2`, weight decay), chosen on validation. 'at the best test epoch' retrains one run with each
epoch's test HR@10 tracked (`analyses.best_test_epoch`, which also checks that the run reproduces its record): NCF
reports its best test epoch. 'NCF protocol' also trains on all but the test item, as NCF does (our validation
item included, a fixed number of epochs; `best_test_epoch(valid_in_train=True)`). The difference from
`test HR@10` is protocol."""),
        code(
            """tv = analyses.teacher_variants('ml-1m', 'neumf', [0, 1], results_dir)
print(tv.to_string())
print(analyses.protocol_gap(tv))""",
            "nbval-check-output",
        ),
    ],
    "03_main": [
        md("""# 03 · Main results
Teacher, Student (no distillation), RD (Tang & Wang 2018, as its authors' code runs it) and CD with teacher-,
student- and hybrid-guided sampling, at the main student size (CDAE H = 20, NeuMF d = 8, a [decision]),
each method at the settings its tuning stage chose (notebook 00). Seed s of every student is distilled
from teacher seed s.

**Paper's claim:** CD beats RD by 2.7–33.2 % in HR and 2.7–29.1 % in NDCG (arXiv v1), and the CD student
comes close to the teacher. "CD-best" is the CD guide with the best mean **validation** NDCG@10 of the same
protocol; the gains carry a paired t-test over seeds, on the sampled and the full-ranking protocol.
For reference, a strong small model of another family that is not distilled: iALS (`cdlib.ials`, the
`implicit` package) at the teacher's and at the student's parameter budget, tuned on validation with CD's and
RD's budget (the profile's `ials_grid`: 6 configurations in the paper profile, 8 in `next`), on the same split, negatives and metrics (not part of the claims)."""),
        params(
            'rd_v1_datasets = ["ml-100k"]   # where RD is also run in its first (v1) form, to show what its fixes change'
        ),
        code(SETUP),
        md("## Train (or read the recorded runs)"),
        code(
            f"""runs = claim_tables.main_runs(P, {GRID}, P.execution)  # with CD-best and iALS's reference rows
table = tables.summarize(runs, ["HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@20", "NDCG@20"])
full = tables.summarize(runs, ["HR@10 (full)", "NDCG@10 (full)"])
gain = tables.gain_over(runs[runs.status == "ok"], "RD")
"""
            + save(
                ("runs", "03_main_runs"),
                ("table", "03_main"),
                ("full", "03_main_full"),
                ("gain", "03_gain_cd_over_rd"),
            )
        ),
        md("## Table 3: test accuracy, sampled protocol (mean ± std over seeds)"),
        code(
            """show = table.drop(index="CD-best (full)", level="label", errors="ignore")
print(tables.fmt(show[["HR@10 mean", "HR@10 std", "NDCG@10 mean", "NDCG@10 std", "seeds"]]).to_string())""",
            "nbval-check-output",
        ),
        md(
            "The full-ranking protocol (Krichene & Rendle 2020: sampled metrics can mis-order models); here CD-best is "
            "`CD-best (full)`, chosen on the full-ranking validation:"
        ),
        code(
            'print(tables.fmt(full.drop(index="CD-best", level="label", errors="ignore")).to_string())',
            "nbval-check-output",
        ),
        code("display(tables.fmt(table))"),
        md("## Which guide is CD-best, and its gain over RD (both protocols)"),
        code(
            """ok = runs[runs.status == "ok"]
if not ok.empty:
    print(ok[ok.label.str.startswith("CD-best")].groupby(["dataset", "backbone", "label"]).best_of.first().to_string())
print(gain.round(4).to_string())""",
            "nbval-check-output",
        ),
        md("## Each method as % of its own teacher (the same seed), with 95% intervals over seeds"),
        code("""if (runs.status == "ok").any():
    labels = ["Student", "RD", *(["CD"] if (runs.label == "CD").any() else []), "CD-T", "CD-S", "CD-H", "Teacher"]
    plots.save(plots.dots(runs, "NDCG@10", labels=labels), "03_main_ndcg10", figures_dir)
    plots.save(plots.dots(runs, "NDCG@10 (full)", labels=labels), "03_main_ndcg10_full", figures_dir)"""),
        code(
            'print(sentences.verdict_gain(gain) if not gain.empty else "no CD and RD runs recorded")',
            "nbval-check-output",
        ),
        md(
            "## RD before and after its fixes\n"
            "RD as this project first ran it (`RD-v1`: weights renormalised per user, λ_RD = 0.5, a 5-epoch warm-up, "
            "exact student ranks once per epoch) beside RD as its authors' code runs it (the main table's `RD`), "
            "same teachers, seeds and learning rate, on the datasets in `rd_v1_datasets`."
        ),
        code(
            f"""import dataclasses
Q = dataclasses.replace(P, datasets=[d for d in P.datasets if d in rd_v1_datasets])
rd = tables.collect(ex.rd_variant_grid(Q, {GRID}), results_dir, P.execution) if Q.datasets else pd.DataFrame()
rd_gain = tables.compare(rd, "RD", "RD-v1", metrics=("HR@10", "NDCG@10", "NDCG@10 (full)")) if not rd.empty else rd
print(tables.fmt(tables.summarize(rd, ["HR@10", "NDCG@10", "NDCG@10 (full)"])).to_string() if not rd.empty else "not run")
print(rd_gain.round(4).to_string())
"""
            + save(("rd_gain", "03_rd_fixes")),
            "nbval-check-output",
        ),
    ],
    "04_sampling": [
        md("""# 04 · Sampling ablation
What rank-aware sampling buys: CD with p(j) ∝ exp(−rank/μ) over the guide's top items (`rank`), against
K_u uniform over the missing items (`uniform`) and the deterministic top n_distill (`topk`, RD-style
hard selection), for the teacher and the student guide, at CD's tuned settings."""),
        params('guides = ["teacher", "student"]'),
        code(SETUP),
        code(
            f"""runs = tables.collect(ex.sampling_grid(P, guides, {GRID}), results_dir, P.execution)
table = tables.summarize(runs, ["HR@10", "NDCG@10", "NDCG@10 (full)"])
"""
            + save(("runs", "04_sampling_runs"), ("table", "04_sampling"))
        ),
        md("## Table 4: sampling strategies (test)"),
        code("print(tables.fmt(table).to_string())", "nbval-check-output"),
        code("""if (runs.status == "ok").any():
    plots.save(plots.dots(runs, "NDCG@10", relative_to=None), "04_sampling_ndcg10", figures_dir)"""),
        code(
            'print(sentences.verdict_best(runs, [f"rank/{g}" for g in guides], "rank-aware sampling"))',
            "nbval-check-output",
        ),
    ],
    "05_guidance": [
        md("""# 05 · Guidance ablation
Which model's ranking chooses the distilled items: the teacher's (once), the student's (refreshed every
epoch) or teacher then student (hybrid, switch after `switch_epoch` = 50 epochs). These are the CD runs of
the main table; here with their validation learning curves."""),
        params(),
        code(SETUP),
        code(
            f"""runs = tables.collect(ex.guidance_grid(P, {GRID}), results_dir, P.execution)
table = tables.summarize(runs, ["HR@10", "NDCG@10", "valid NDCG@10"])
"""
            + save(("table", "05_guidance"))
        ),
        md(
            "## Table 5: guidance strategies (test, sampled protocol, and the validation NDCG@10 choices are made on)"
        ),
        code("print(tables.fmt(table).to_string())", "nbval-check-output"),
        md("## Learning curves (validation NDCG@10 per epoch, mean ± sd over seeds)"),
        code("""if (runs.status == "ok").any():
    plots.save(plots.learning_curves(runs, results_dir), "05_guidance_curves", figures_dir)"""),
        code(
            'print(sentences.verdict_best(runs, ["CD-T", "CD-S", "CD-H"], "a CD guide"))',
            "nbval-check-output",
        ),
        md("""## What the teacher's soft labels say (`softlabels.analyse`)

CD's soft labels are the teacher's own probabilities, t = s(z / T) with T = 1 (METHOD.md's default, a
decision). On its top missing items a teacher may be sure either way: where most of them get a label near
0, teacher-guided CD tells the student that the items its teacher ranks highest are negatives. For each
analysed teacher: the mean soft label at a few ranks of its top missing items, the share of users whose
label there is above 1/2, how often the item there is the user's held-out validation item (a lower bound
on its chance of being a hidden positive), and the means under the sampling's p(r) ∝ exp(-r / μ). The
analysis reads a teacher's cached weights, so it covers the teachers cached where it ran."""),
        code(
            """soft = softlabels.table(results_dir)
print(soft.to_string() if not soft.empty else "no soft-label analysis recorded")""",
            "nbval-check-output",
        ),
        code("""records = softlabels.records(results_dir)
if records:
    plots.save(plots.soft_labels(records), "05_soft_labels", figures_dir)"""),
    ],
    "06_student_size": [
        md("""# 06 · Student size
Accuracy against student size (parameters, log scale), with and without CD, and born-again CD (BACD: a
student as large as the teacher, from the journal extension, which claims it beats the teacher by
3.5–12.0 % HR and 4.9–13.3 % NDCG). Students use the tuned student settings, BACD the teacher's learning
rate; BACD seed s is distilled from teacher seed s and compared with it."""),
        params('guide = "teacher"          # the CD guide used across sizes [decision]'),
        code(SETUP),
        code(
            f"""runs = tables.collect(ex.size_grid(P, guide, {GRID}), results_dir, P.execution)
table = tables.summarize(runs, by=("dataset", "backbone", "label", "size"))
"""
            + save(("runs", "06_size_runs"), ("table", "06_size"))
        ),
        md("## Table 6: accuracy by size"),
        code("print(tables.fmt(table).to_string())", "nbval-check-output"),
        code("""if (runs.status == "ok").any():
    plots.save(plots.accuracy_vs_params(runs, "NDCG@10"), "06_size_ndcg10", figures_dir)"""),
        code(
            'print(sentences.verdict_pairs(runs, "CD", "Student", ["size"], "CD over the same-size student"))',
            "nbval-check-output",
        ),
    ],
    "07_sensitivity": [
        md("""# 07 · Sensitivity
CD's parameters one at a time around the settings the tuning stage chose (notebook 00): the KD weight λ,
the sampling sharpness μ, the temperature T and the number of distilled items."""),
        params('guide = "teacher"          # the CD guide of these runs [decision]'),
        code(SETUP),
        code(
            """runs = tables.collect(ex.sensitivity_grid(P, guide, results=results_dir), results_dir, P.execution)
table = tables.summarize(runs)
"""
            + save(("runs", "07_sensitivity_runs"), ("table", "07_sensitivity"))
        ),
        md("## Table 7: sensitivity"),
        code("print(tables.fmt(table).to_string())", "nbval-check-output"),
        code("""if (runs.status == "ok").any():
    plots.save(plots.sensitivity(runs, "NDCG@10"), "07_sensitivity_ndcg10", figures_dir)"""),
    ],
    "08_efficiency": [
        md("""# 08 · Efficiency
What distillation is for: parameters, and latency and throughput of scoring all items for a batch of
users, for the teacher and every student size, on the CPU (and on a GPU when one is present). Latency
does not depend on the weights, so untrained models of each size are timed; the accuracy beside it is
that of the trained runs of notebook 06."""),
        params(
            "batch = 256                # users per scoring call\n"
            "measure = None             # None: measure, unless CDLIB_NO_TRAIN is 1 and timings are recorded\n"
            "devices = None             # None: cpu, and cuda if present; recorded rows of other devices are kept"
        ),
        code(SETUP),
        md(
            "Timings are measurements of the machine that ran them, named in the `device` column: a re-execution "
            "with `CDLIB_NO_TRAIN=1` (the nbval check, `make figures`) reads the recorded ones instead of measuring "
            "again, and a measuring run replaces only the rows of its own kind of device, so GPU rows measured on "
            'another machine (`devices=["cuda"]`) stay beside this machine\'s CPU rows.'
        ),
        code(
            """from cdlib import bench
recorded = report.read_table("08_timings", results_dir)
if measure is None:
    measure = recorded is None or P.execution.train
if measure:
    timings = bench.timing_table(P.datasets, P.backbones, devices, batch, keep=recorded)
    if write_tables:
        tables.save_table(timings.set_index("dataset"), "08_timings", results_dir)
else:
    timings = recorded
eff = timings.copy()
size_runs = report.read_table("06_size_runs", results_dir)
if size_runs is not None:
    acc = size_runs[size_runs.status == "ok"].groupby(["dataset", "backbone", "size"])[["HR@10", "NDCG@10"]].mean()
    eff = eff.join(acc, on=["dataset", "backbone", "size"])
"""
            + save(("eff", "08_efficiency"))
        ),
        md("## Table 8: parameters (stable) and timings (per recorded device)"),
        code(
            'print(eff[["dataset", "backbone", "label", "size", "n_params"]].drop_duplicates().to_string(index=False))',
            "nbval-check-output",
        ),
        code("display(eff.round(3))"),
        code("""if "NDCG@10" in eff and eff["NDCG@10"].notna().any():
    plots.save(plots.accuracy_vs_latency(eff.dropna(subset=["NDCG@10"]), "NDCG@10"), "08_accuracy_vs_latency",
               figures_dir)"""),
    ],
    "09_summary": [
        md("""# 09 · Summary
One row per claim of METHOD.md and dataset × backbone, the sampled and the full-ranking protocol side by
side: the mean paired relative difference over seeds (a seed is a whole replicate) with its 95% interval,
its p-value, the Holm-adjusted p over the claim's cells, the minimum detectable effect at 80% power, and
whether it held (significant after adjustment, in the claimed direction); then one pooled row per claim
(random effects across cells, DerSimonian-Laird) with its interval, I² and a verdict. Claim 3's primary
comparison is the CD configuration the tuning stage chose (CD-T) against RD; CD-best (the best of three
guides on validation) is a secondary row. Claim 4 is measured by the fraction of the teacher-student gap
CD and RD recover and by CD against the plain student. A claim that our runs do not support is reported
as not holding. Then what each table rests on, and every run that
breaks the fair protocol. The README's results section is regenerated from `results/` here."""),
        params(
            "update_readme = False      # the reproduction sets this when writing into the repository"
        ),
        code(SETUP),
        code("""claims = report.claims(results_dir)
if write_tables:
    tables.save_table(claims.set_index("claim"), "claims", results_dir)"""),
        md("## The claims"),
        code(
            'print(claims[["claim", "dataset", "backbone", "measured", "held (sampled)", "held (full)"]]'
            ".to_string(index=False))",
            "nbval-check-output",
        ),
        code(
            """for proto in ("sampled", "full"):
    held = claims[f"held ({proto})"].fillna(False).astype(bool)
    print(f"{proto}: {held.sum()} of {len(claims)} claim checks held.")""",
            "nbval-check-output",
        ),
        md("## Verdicts: the pooled effect of each claim, and the forest plots"),
        md("""At a glance: per claim and protocol, the pooled effect with its 95% interval, the verdict
(fragile where the Hartung-Knapp interval gives another; the paper's range named where it lies wholly
above or below the interval), and the cells where the claim held after Holm, of those tested. The
paragraphs below give the reasons."""),
        code(
            "print(sentences.at_a_glance(claims).to_string(index=False))",
            "nbval-check-output",
        ),
        code(
            'print("\\n\\n".join(sentences.verdicts(claims)))',
            "nbval-check-output",
        ),
        md("""Claim 3's primary comparison against its secondary row, CD-best (a maximum over guides): the
cells where they disagree."""),
        code(
            """for metric in ("HR@10", "NDCG@10"):
    print("\\n".join(sentences.primary_against_best(claims, metric)))""",
            "nbval-check-output",
        ),
        md("""One forest plot per claim (`figures/09_forest_*`): each cell's effect with its 95% interval, the
pooled diamond, the paper's range shaded; claim 3's primary comparison is shown here."""),
        code(
            """for claim in claims[claims.dataset == "pooled"].claim.unique():
    fig = plots.forest(claims, claim)
    plots.save(fig, plots.forest_name(claim), figures_dir)
    if claim.startswith("3. ") and "primary" in claim:
        display(fig)
    plots.close(fig)
plots.remove_stale_forests(claims, figures_dir);  # a renamed claim's old plot"""
        ),
        md("## Coverage: what each table rests on"),
        code("print(audit.coverage(results_dir).to_string(index=False))", "nbval-check-output"),
        md("""Issue 23's grid (profile `next`) against its records: per dataset and backbone, recorded / planned
runs of each table, a run two tables share counted in the first (`audit.profile_coverage`); the runs of
this notebook's `device` (the device enters a run's key)."""),
        code(
            """progress = audit.profile_coverage(profiles.profile("next", device=device), results_dir)
print(progress[progress.table == "all"].to_string(index=False))
print(audit.coverage_grid(progress).to_string(index=False))""",
            "nbval-check-output",
        ),
        md("""The settings `next`'s tuning stage chose (after) beside the paper profile's (before: tuned on ml-100k
and ml-1m, the other datasets borrowing ml-1m's), per cell whose tuning under `next` is recorded."""),
        code(
            """change = tuning.tuning_change(profiles.profile("paper", device=device), profiles.profile("next", device=device), results_dir)
print(change.to_string(index=False) if not change.empty else "no cell's tuning under next is recorded yet")""",
            "nbval-check-output",
        ),
        md("""The teacher each cell's tuning chose against the plain student it chose, on validation NDCG@10 over
the tuning seeds, as means and seed by seed (`tuning.teacher_margin`): a negative margin is a teacher weaker
than its own student, known before the main table runs."""),
        code(
            """margin = tuning.teacher_margin(profiles.profile("next", device=device), results_dir)
print(margin.round(4).to_string(index=False) if not margin.empty else "no cell of next has its teacher and student stages recorded yet")""",
            "nbval-check-output",
        ),
        md("""Where a choice lies at an edge of its grid, the stage's point one step past that edge, on the tuning
seeds (`tuning.edge_check`; trained by the backlog, read here): does validation still rise past the edge?"""),
        code(
            """edges = tuning.edge_check(profiles.profile("next", device=device, train_missing=False), results_dir, progress=False)
print(edges.round(4).to_string(index=False) if not edges.empty else "no choice of next's tuning lies at an edge of its grid")""",
            "nbval-check-output",
        ),
        md("""What `next`'s recorded runs say so far: its run tables from the records alone and the claims on
them (`claim_tables.save_recorded_tables`, into `results/next/`), per cell whose runs are recorded; claim 3's
primary arm is the CD whose guide `next`'s tuning chose. The claims above are this notebook's profile's."""),
        code(
            """if write_tables:  # (else: as last written)
    claim_tables.save_recorded_tables(profiles.profile("next", device=device), results_dir)
shown = readme_next.next_claims(results_dir)
print(shown.to_string(index=False) if not shown.empty else "no cell of next has its runs recorded yet")""",
            "nbval-check-output",
        ),
        md("""The teacher and student stages of `next`'s tuning, every run's validation NDCG@10 per epoch, a
line per seed coloured by its learning rate (`plots.tuning_curves`, `figures/09_next_tuning_curves`): a curve
cut before it settled would show here, as yelp NeuMF's teacher at lr 1e-3, seed 0 did (an early peak, a dip,
then a climb past it) before early stopping waited for a rising curve (`Config.rise`)."""),
        code(
            """tuned = report.read_table("next/00_tuning_runs", results_dir)
if tuned is not None and (tuned.status == "ok").any():
    fig = plots.tuning_curves(tuned, results_dir)
    plots.save(fig, "09_next_tuning_curves", figures_dir)
    display(fig)
    plots.close(fig)"""
        ),
        md("The same claims pooled over `next`'s cells recorded so far, at a glance."),
        code(
            """glance = readme_next.next_at_a_glance(results_dir)
print(glance.to_string(index=False) if not glance.empty else "no cell of next has its runs recorded yet")""",
            "nbval-check-output",
        ),
        md("""Each claim before (the tables of `results_dir` itself: the paper profile's) and after (`next`), on each
protocol pooled over the cells both pool it on, each recomputed on those cells alone (`before_after.verdict_change`,
written beside `next`'s claims): the verdict's kind and pooled effect before → after, and the protocols on which
the kind changed (the same cells, not the same runs: tuning, validation negatives and seeds differ). Then the main
table's test NDCG@10 on both protocols, before → after, per cell both have (`before_after.main_change`).
Last, the claims' intervals before and after, drawn (`plots.verdict_change`: `figures/09_next_verdict_change.png`)."""),
        code(
            """from cdlib import before_after
from cdlib.runs import read_table
change = read_table("next/verdict_change", results_dir)
if change is None or change.empty:
    print("no claim is tested on a cell both profiles have")
else:
    print(sentences.verdict_change_glance(change).to_string(index=False))
main_change = read_table("next/main_change", results_dir)
for proto in ("sampled", "full") if main_change is not None and not main_change.empty else ():
    print(f"\\nNDCG@10, {proto} protocol")
    print(before_after.main_glance(main_change, proto).to_string(index=False))""",
            "nbval-check-output",
        ),
        code("""if change is not None and not change.empty:  # the intervals above, drawn
    fig = plots.verdict_change(change)
    plots.save(fig, "09_next_verdict_change", figures_dir)"""),
        md(INIT_MD),
        code(INIT_CODE, "nbval-check-output"),
        md("## Compute: CPU hours recorded, and an estimate for the runs not recorded yet"),
        code("print(costs.compute(results_dir).to_string(index=False))", "nbval-check-output"),
        md("""Issue 23's grid (profile `next`: every dataset tuned on its own, the CD guide chosen in tuning,
validation negatives disjoint from the test's, 5 seeds for the main table and the claims' ablations,
3 for the size table, sensitivity on ml-1m and citeulike-t), every run priced as a run to go, with
the dense step and the deferred one (`plan.profile_estimate`, from the recorded runs and the step
bench); then, per cell, over its tables whose every planned run is recorded, the estimate beside the
hours those runs took (`plan.estimate_check`)."""),
        code(
            """grid_next = plan.profile_estimate(profiles.PROFILES["next"], plan.bench_steps(results_dir), results_dir, step="deferred", digits=None)
if grid_next.empty:
    print("no step bench or recorded runs to price it from")
else:
    print(grid_next.groupby("table", sort=False)[grid_next.columns[-3:]].sum().round(1).to_string())
    check = plan.estimate_check(grid_next, progress)
    print(check.round(2).to_string(index=False) if not check.empty else "no table of next is complete yet")""",
            "nbval-check-output",
        ),
        md(
            "## Runs that break the fair protocol (capped by the epoch budget, stalled on the initial plateau, "
            "stopped by early stopping while still rising, or a teacher below its own plain student; "
            "`next`'s tuning stage included)"
        ),
        code(
            """bad = audit.violations(results_dir)
print(bad.to_string(index=False) if not bad.empty else "none")
bad_next = audit.violations(results_dir, folder="next")  # profile next's tables (results/next/)
print("next:", bad_next.to_string(index=False) if not bad_next.empty else "none")""",
            "nbval-check-output",
        ),
        md("""## The static step against the dynamic one (one device; test NDCG@10, paired over seeds)
The GPU trains with static shapes (`train.Config.shapes`): inverse-transform negatives and padded
batches, the same distributions as the CPU's dynamic step with other draws. Configurations recorded
with both steps show whether that changes the results."""),
        code(
            """from cdlib import agreement
steps = agreement.shapes_agreement(results_dir)
print(steps.round(4).to_string(index=False) if not steps.empty else "no configuration is recorded with both steps yet")""",
            "nbval-check-output",
        ),
        md("""## The sparse steps against the dense one (one device; test NDCG@10, paired over seeds)
The sparse steps (`train.Config.step`) compute the same losses at the cost of the step's pairs and
update only the rows of the embedding tables that the step read. `"sparse"` does it with a lazy Adam
(the other rows' moments do not decay, they do not move): other training. `"deferred"` defers the
other rows' Adam steps and applies them in closed form before the row is next read: Adam's own
training, the dense step's numbers up to rounding (`tests/test_sparse.py`). The issue that asked
for them proposed a criterion: for every main-table configuration of ml-100k and ml-1m, the mean test
NDCG@10 within one standard deviation (over seeds) of the dense step's (`agreement.step_agreement`,
column `within 1 sd`). Two steps that train alike fail it by chance in 19% of the configurations at
5 seeds, so each row also gives the equivalence test (TOST) of the paired
differences against ±1.35% of the dense mean (half the paper's smallest claimed gain), and the
second table pools each dataset: each seed's relative difference averaged over its configurations,
then tested over the seeds (`agreement.step_equivalence`)."""),
        code(
            """for step in ("sparse", "deferred"):
    agree_step = agreement.step_agreement(results_dir, step=step)
    print(f"step={step!r}")
    print(agree_step.round(4).to_string(index=False) if not agree_step.empty else "no configuration is recorded with both steps yet", end="\\n\\n")
    pooled = agreement.step_equivalence(results_dir, step=step)
    print(pooled.round(3).to_string(index=False) if not pooled.empty else "", end="\\n\\n")""",
            "nbval-check-output",
        ),
        md("""## The feature-major refresh against the item-major one (test NDCG@10, paired over seeds)
A NeuMF student that guides CD ranks every user's missing items once an epoch. Profile `next` ranks
with the feature-major tower (`train.Config.refresh_tower`): the same scores up to rounding, a
faster refresh (README "The feature-major refresh"); the runs recorded before that choice used the
item-major one. Where a
configuration is recorded with both, the two are compared here as the steps are above
(`agreement.tower_agreement`), and pooled per dataset (`agreement.tower_equivalence`)."""),
        code(
            """towers = agreement.tower_agreement(results_dir)
print(towers.round(4).to_string(index=False) if not towers.empty else "no configuration is recorded with both towers yet", end="\\n\\n")
pooled = agreement.tower_equivalence(results_dir)
print(pooled.round(3).to_string(index=False) if not pooled.empty else "")""",
            "nbval-check-output",
        ),
        md("## CPU against GPU: configurations recorded on both (test NDCG@10, paired over seeds)"),
        code(
            """agree = agreement.device_agreement(results_dir)
print(agree.round(4).to_string(index=False) if not agree.empty else "no configuration is recorded on both a CPU and a GPU yet")""",
            "nbval-check-output",
        ),
        code("""if update_readme:
    print("README updated:", readme.update_readme(results_dir))"""),
    ],
    "10_your_data": [
        md("""# 10 · Your data
Teacher, plain student, RD and CD students on an interactions file of your own, with the table and
figure of notebook 03. `data_path` takes a CSV or TSV with a header `user,item[,timestamp]` (`.gz`
accepted), a Parquet file, or a RecBole `.inter` file. The committed copy runs on
`data/synthetic.inter`, a seeded synthetic table (`cdlib.files.synthetic()`: 600 users, 395 items, string
ids) shipped for the purpose. With `tune = False` every method runs at the documented defaults; `tune = True`
runs the tuning stage of notebook 00 on your file first. To keep a student as a file, use
`python -m cdlib.distill FILE`; here the cached weights of a run are loaded with `cdlib.saved.from_run`."""),
        params(
            'data_path = "data/synthetic.inter"   # your interactions file\n'
            "tune = False               # True: the tuning stage of notebook 00 on this file first\n"
            "show_users = 3             # users whose recommendations are shown"
        ),
        code(
            """import pandas as pd
from IPython.display import display

from cdlib import data, plots, profiles, saved, tables
from cdlib import experiments as ex

pd.set_option("display.width", 200)
P = profiles.profile(profile, [data_path], backbones, seeds, device, train_missing, tuned=[data_path], tune_on={},
               tuning=profiles.PROFILES[profile].tuning if tune else None)     # the profile's epoch rules and seeds
ds = data.load(data_path)
print(ds, ds.meta["sha256"])""",
            "nbval-check-output",
        ),
        md("## Train (or read the recorded runs): every method on every seed"),
        code("""grid = ex.main_grid(P, results_dir)
runs = tables.best_cd(tables.collect(grid, results_dir, P.execution))
table = tables.summarize(runs, ["HR@10", "NDCG@10", "HR@10 (full)", "NDCG@10 (full)"])"""),
        md("## The table (test, mean ± std over seeds; CD-best chosen on validation)"),
        code(
            'print(tables.fmt(table.drop(index="CD-best (full)", level="label", errors="ignore")).to_string())',
            "nbval-check-output",
        ),
        code(
            """ok = runs[runs.status == "ok"]
print(tables.compare_best(ok, "RD", "NDCG@10").round(4).to_string() if not ok.empty else "nothing recorded")""",
            "nbval-check-output",
        ),
        code("""if not ok.empty:
    plots.save(plots.dots(runs, "NDCG@10", labels=["Student", "RD", "CD-T", "CD-S", "CD-H", "Teacher"]),
               "10_your_data_ndcg10", figures_dir)"""),
        md(
            "## What the CD student recommends, in the file's own ids (when its weights are cached on this machine)"
        ),
        code("""best = ok[ok.label == "CD-best"].sort_values("seed").iloc[0] if not ok.empty else None
if best is not None:
    cfg = next(c for c in grid[best.best_of] if c.seed == best.seed and c.backbone == best.backbone)
    try:
        model = saved.from_run(cfg)
        display(model.recommend(list(model.user_ids[:show_users]), k=5))
    except FileNotFoundError as e:
        print(e)"""),
    ],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--force", action="store_true")
    ap.add_argument("names", nargs="*", help="only these notebooks (default: all)")
    args = ap.parse_args()
    for name, cells in NOTEBOOKS.items():
        if args.names and name not in args.names:
            continue
        path = NB / f"{name}.ipynb"
        if path.exists() and not args.force:
            print(f"kept {path}")
            continue
        nb = nbf.v4.new_notebook(cells=cells)
        nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        nb.metadata["language_info"] = {"name": "python"}
        nbf.write(nb, path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
