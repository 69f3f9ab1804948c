"""Write the unexecuted numbered notebooks (the source of their cells).

    python tools/build_notebooks.py [--force]

Without --force an existing notebook is left alone: the committed notebooks carry the outputs of
a reproduction run, which `python -m cdlib.reproduce` regenerates from these cells.
"""
import argparse
from pathlib import Path

import nbformat as nbf

NB = Path(__file__).resolve().parent.parent / "notebooks"

PARAMS = '''profile = "quick"          # smoke | quick | paper (python -m cdlib.reproduce --help says what each costs)
datasets = None            # None: the profile's datasets
backbones = ["cdae", "neumf"]
seeds = None               # None: the profile's seeds
device = None              # None: cuda if present, else cpu
results_dir = None         # None: results/
figures_dir = None         # None: figures/
write_tables = True        # the per-dataset training jobs of the reproduction set this to False
train_missing = None       # None: train what is not recorded, unless CDLIB_NO_TRAIN is 1; False: never train'''

SETUP = '''import pandas as pd
from IPython.display import display

from cdlib import experiments as ex, plots, report

pd.set_option("display.width", 200)
pd.set_option("display.max_columns", 40)
P = ex.profile(profile, datasets, backbones, seeds, device)
P'''


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
    lines += [f"    ex.save_table({obj}, {name!r}, results_dir)" for obj, name in pairs]
    return "\n".join(lines)


NOTEBOOKS = {
    "01_datasets": [
        md("""# 01 · Datasets
The six implicit-feedback datasets of METHOD.md, split leave-one-out (last interaction = test, the one
before = validation; users with fewer than 3 interactions dropped). The raw counts match
`../shared/data/README.md`; the split order (timestamp, file order or seeded random) is a
[decision] recorded per dataset."""),
        params('all_datasets = True       # the statistics of all six datasets, whatever the profile'),
        code(SETUP),
        md("## Load and split every dataset"),
        code('''from cdlib import data
names = data.DATASETS if all_datasets and not datasets else P.datasets
loaded = [data.load(n) for n in names]
stats = data.statistics(loaded)
if write_tables:
    ex.save_table(stats, "01_datasets", results_dir)'''),
        md("## Table 1: statistics before and after filtering"),
        code("print(stats.to_string())", "nbval-check-output"),
        code('''print(f"{len(stats)} datasets; {int(stats['users dropped'].sum())} users dropped for fewer than 3 "
      f"interactions; {int(stats['duplicates merged'].sum())} duplicate interactions merged.")''',
             "nbval-check-output"),
    ],
    "02_teachers": [
        md("""# 02 · Teachers
Accuracy and size of each backbone's teacher (CDAE H = 200, NeuMF d = 64) on each dataset, on the
sampled (NCF: held-out item vs 99 negatives) and the full protocol. For reference, the NCF paper
reports NeuMF HR@10 ≈ 0.73 on ml-1m with pre-training (≈ 0.70 without)."""),
        params(),
        code(SETUP),
        md("## Train (or read the recorded runs)"),
        code('''runs = ex.collect(ex.teacher_grid(P), results_dir, train_missing)
table = ex.summarize(runs, ["HR@10", "NDCG@10", "HR@10 (full)", "NDCG@10 (full)"])
''' + save(("runs", "02_teachers_runs"), ("table", "02_teachers"))),
        md("## Table 2: teachers (test, mean ± std over seeds)"),
        code("print(ex.fmt(table).to_string())", "nbval-check-output"),
        code('''for (d, b, _), r in table.iterrows():
    print(f"{b} teacher on {d}: HR@10 = {r['HR@10 mean']:.3f}, {int(r['params']):,} parameters")''',
             "nbval-check-output"),
    ],
    "03_main": [
        md("""# 03 · Main results
Teacher, Student (no distillation), RD (Tang & Wang 2018) and CD with teacher-, student- and hybrid-guided
sampling, at the main student size (CDAE H = 20, NeuMF d = 8, a [decision]).

**Paper's claim:** CD beats RD by 2.7–33.2 % in HR and 2.7–29.1 % in NDCG (arXiv v1), and the CD student
comes close to the teacher. The gain below is that of the best CD guide (by mean test NDCG@10) over RD,
with a paired t-test over seeds."""),
        params(),
        code(SETUP),
        md("## Train (or read the recorded runs)"),
        code('''runs = ex.best_cd(ex.collect(ex.main_grid(P), results_dir, train_missing))
table = ex.summarize(runs, ["HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@20", "NDCG@20"])
full = ex.summarize(runs, ["HR@10 (full)", "NDCG@10 (full)"])
gain = ex.compare(runs, "CD-best", "RD")
''' + save(("runs", "03_main_runs"), ("table", "03_main"), ("full", "03_main_full"),
           ("gain", "03_gain_cd_over_rd"))),
        md("## Table 3: test accuracy, sampled protocol (mean ± std over seeds)"),
        code('print(ex.fmt(table[["HR@10 mean", "HR@10 std", "NDCG@10 mean", "NDCG@10 std", "seeds"]]).to_string())',
             "nbval-check-output"),
        md("All cut-offs, and the full-ranking protocol (Krichene & Rendle 2020: sampled metrics can mis-order models):"),
        code("display(ex.fmt(table)); display(ex.fmt(full))"),
        md("## Gain of the best CD guide over RD"),
        code('print(gain.round(4).to_string())', "nbval-check-output"),
        code('''if (runs.status == "ok").any():
    plots.save(plots.bars(runs, "NDCG@10"), "03_main_ndcg10", figures_dir)'''),
        code('''print(report.verdict_gain(gain))''', "nbval-check-output"),
    ],
    "04_sampling": [
        md("""# 04 · Sampling ablation
What rank-aware sampling buys: CD with p(j) ∝ exp(−rank/μ) over the guide's top items (`rank`), against
K_u uniform over the missing items (`uniform`) and the deterministic top n_distill (`topk`, RD-style
hard selection), for the teacher and the student guide."""),
        params('guides = ["teacher", "student"]'),
        code(SETUP),
        code('''runs = ex.collect(ex.sampling_grid(P, guides), results_dir, train_missing)
table = ex.summarize(runs)
''' + save(("runs", "04_sampling_runs"), ("table", "04_sampling"))),
        md("## Table 4: sampling strategies (test, sampled protocol)"),
        code("print(ex.fmt(table).to_string())", "nbval-check-output"),
        code('''if (runs.status == "ok").any():
    plots.save(plots.bars(runs, "NDCG@10"), "04_sampling_ndcg10", figures_dir)'''),
        code('print(report.verdict_best(runs, [f"rank/{g}" for g in guides], "rank-aware sampling"))',
             "nbval-check-output"),
    ],
    "05_guidance": [
        md("""# 05 · Guidance ablation
Which model's ranking chooses the distilled items: the teacher's (once), the student's (refreshed every
epoch) or teacher then student (hybrid, switch after a quarter of the budget). These are the CD runs of
the main table; here with their validation learning curves."""),
        params(),
        code(SETUP),
        code('''runs = ex.collect(ex.guidance_grid(P), results_dir, train_missing)
table = ex.summarize(runs)
''' + save(("table", "05_guidance"))),
        md("## Table 5: guidance strategies (test, sampled protocol)"),
        code("print(ex.fmt(table).to_string())", "nbval-check-output"),
        md("## Learning curves (validation NDCG@10 per epoch, mean ± sd over seeds)"),
        code('''if (runs.status == "ok").any():
    plots.save(plots.learning_curves(runs, results_dir), "05_guidance_curves", figures_dir)'''),
        code('print(report.verdict_best(runs, ["CD-T", "CD-S", "CD-H"], "a CD guide"))', "nbval-check-output"),
    ],
    "06_student_size": [
        md("""# 06 · Student size
Accuracy against student size (parameters, log scale), with and without CD, and born-again CD (BACD: a
student as large as the teacher, from the journal extension, which claims it beats the teacher by
3.5–12.0 % HR and 4.9–13.3 % NDCG)."""),
        params('guide = "teacher"          # the CD guide used across sizes [decision]'),
        code(SETUP),
        code('''runs = ex.collect(ex.size_grid(P, guide), results_dir, train_missing)
table = ex.summarize(runs, by=("dataset", "backbone", "label", "size"))
''' + save(("runs", "06_size_runs"), ("table", "06_size"))),
        md("## Table 6: accuracy by size"),
        code("print(ex.fmt(table).to_string())", "nbval-check-output"),
        code('''if (runs.status == "ok").any():
    plots.save(plots.accuracy_vs_params(runs, "NDCG@10"), "06_size_ndcg10", figures_dir)'''),
        code('print(report.verdict_pairs(runs, "CD", "Student", ["size"], "CD over the same-size student"))',
             "nbval-check-output"),
    ],
    "07_sensitivity": [
        md("""# 07 · Sensitivity
CD's parameters one at a time, the others at their defaults (λ = 0.5, μ = 10, T = 1, n_distill = 10):
the KD weight λ, the sampling sharpness μ, the temperature T and the number of distilled items."""),
        params('guide = "teacher"          # the CD guide of these runs [decision]'),
        code(SETUP),
        code('''runs = ex.collect(ex.sensitivity_grid(P, guide), results_dir, train_missing)
table = ex.summarize(runs)
''' + save(("runs", "07_sensitivity_runs"), ("table", "07_sensitivity"))),
        md("## Table 7: sensitivity"),
        code("print(ex.fmt(table).to_string())", "nbval-check-output"),
        code('''if (runs.status == "ok").any():
    plots.save(plots.sensitivity(runs, "NDCG@10"), "07_sensitivity_ndcg10", figures_dir)'''),
    ],
    "08_efficiency": [
        md("""# 08 · Efficiency
What distillation is for: parameters, and latency and throughput of scoring all items for a batch of
users, for the teacher and every student size, on the CPU (and on a GPU when one is present). Latency
does not depend on the weights, so untrained models of each size are timed; the accuracy beside it is
that of the trained runs of notebook 06."""),
        params('batch = 256                # users per scoring call\n'
               'measure = None             # None: measure, unless CDLIB_NO_TRAIN is 1 and timings are recorded\n'
               'devices = None             # None: cpu, and cuda if present; recorded rows of other devices are kept'),
        code(SETUP),
        md("Timings are measurements of the machine that ran them, named in the `device` column: a re-execution "
           "with `CDLIB_NO_TRAIN=1` (the nbval check, `make figures`) reads the recorded ones instead of measuring "
           "again, and a measuring run replaces only the rows of its own kind of device, so GPU rows measured on "
           "another machine (`devices=[\"cuda\"]`) stay beside this machine's CPU rows."),
        code('''import os
from cdlib import bench
recorded = report.read_table("08_timings", results_dir)
if measure is None:
    measure = recorded is None or os.environ.get("CDLIB_NO_TRAIN", "") in ("", "0")
if measure:
    timings = bench.timing_table(P.datasets, P.backbones, devices, batch, keep=recorded)
    if write_tables:
        ex.save_table(timings.set_index("dataset"), "08_timings", results_dir)
else:
    timings = recorded
eff = timings.copy()
size_runs = report.read_table("06_size_runs", results_dir)
if size_runs is not None:
    acc = size_runs[size_runs.status == "ok"].groupby(["dataset", "backbone", "size"])[["HR@10", "NDCG@10"]].mean()
    eff = eff.join(acc, on=["dataset", "backbone", "size"])
''' + save(("eff", "08_efficiency"))),
        md("## Table 8: parameters (stable) and timings (per recorded device)"),
        code('print(eff[["dataset", "backbone", "label", "size", "n_params"]].drop_duplicates().to_string(index=False))',
             "nbval-check-output"),
        code('display(eff.round(3))'),
        code('''if "NDCG@10" in eff and eff["NDCG@10"].notna().any():
    plots.save(plots.accuracy_vs_latency(eff.dropna(subset=["NDCG@10"]), "NDCG@10"), "08_accuracy_vs_latency",
               figures_dir)'''),
    ],
    "09_summary": [
        md("""# 09 · Summary
One row per claim of METHOD.md and dataset × backbone: the measured figure and whether it held (for the
CD-over-RD gains also whether they fall inside the paper's 2.7–33.2 % HR and 2.7–29.1 % NDCG). A claim that
our runs do not support is reported as not holding. The README's results section is regenerated from
`results/` here."""),
        params('update_readme = False      # the reproduction sets this when writing into the repository'),
        code(SETUP),
        code('''claims = report.claims(results_dir)
if write_tables:
    ex.save_table(claims.set_index("claim"), "claims", results_dir)'''),
        md("## The claims"),
        code('print(claims.to_string(index=False))', "nbval-check-output"),
        code('''held = claims.held.sum()
print(f"{held} of {len(claims)} claim checks held.")''', "nbval-check-output"),
        md("## Coverage"),
        code("print(report.coverage(results_dir).to_string())", "nbval-check-output"),
        code('''if update_readme:
    print("README updated:", report.update_readme(results_dir))'''),
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
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        nbf.write(nb, path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
