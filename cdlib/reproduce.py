"""Run the numbered notebooks with papermill, in parallel: `python -m cdlib.reproduce --help`.

Stages:
 0. tuning: notebook 00 per tuning dataset (the equal-budget tuning stage every table's settings
    come from), before anything that uses its choice;
 1. training: one job per (training notebook, dataset), each a papermill run in its own process
    with its own kernel; the runs it trains are recorded in results/runs/ (a run already recorded
    is read, not trained: an interrupted reproduction resumes where it stopped);
 2. report: every selected notebook once over all datasets, reading the records (nothing is
    trained, except notebook 10 on its own small file), writing the tables to results/ and the
    figures to figures/.
A dataset may be given by name or as the path of an interactions file (notebook 10's formats).
One failing job neither stops nor damages the others; the command exits non-zero naming it.
`--no-notebooks` runs stages 0 and 1 without papermill or Jupyter (each job trains what its notebook
trains, `experiments.train_notebook`): for a machine that has PyTorch but no Jupyter, such as the GPU
machine; the notebooks then read the records (`--report-only`, or `make figures`) where Jupyter is.
`--scheduler ADDRESS` sends the same jobs to a Dask distributed cluster instead of the local
process pool; the records and executed notebooks come back to this machine (no shared disk).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import torch

from . import profiles, runs, sparse
from .jobs import NB_DIR, Job, run_jobs
from .profiles import PROFILES

NOTEBOOKS = [
    "00_tuning",
    "01_datasets",
    "02_teachers",
    "03_main",
    "04_sampling",
    "05_guidance",
    "06_student_size",
    "07_sensitivity",
    "08_efficiency",
    "09_summary",
    "10_your_data",
]
# notebooks whose per-dataset jobs train (05 reads the runs of 03); 00 runs first, as its own stage
TUNING = ["00_tuning"]
TRAINING = ["02_teachers", "03_main", "04_sampling", "06_student_size", "07_sensitivity"]
OWN_DATA = ["10_your_data"]
SCOPED = {
    "06_student_size": "size",
    "07_sensitivity": "sensitivity",
}  # `Profile.scope`'s tables  # trains on its own shipped file in the report stage


def stacks(profile) -> bool:
    """Whether the profile's runs can train stacked in groups: not with a sparse step
    (`loop.fit_group` trains those one run at a time)."""
    return profile.step not in sparse.SPARSE_STEPS


def default_group_size(profile, device: str | None) -> int:
    """Runs per stacked group when --group-size is not given: 15 with --device cuda, else 1 (on a
    CPU a stacked step is no faster, `cdlib.bench --groups`), and 1 for a profile whose runs do not
    stack."""
    return 15 if device == "cuda" and stacks(profile) else 1


def slug(dataset: str) -> str:
    """A dataset name, or an interactions file's name, fit for a job and file name."""
    return Path(dataset).name.replace(" ", "_")


def plan(
    profile: str,
    datasets,
    notebooks,
    results: Path,
    figures: Path,
    out_dir: Path,
    n_jobs: int,
    device=None,
    seeds=None,
    train: bool = True,
    backbones=None,
) -> tuple[list, list, list, list]:
    """The jobs of each stage: tuning (per tuning dataset), training (notebook x dataset), report,
    and the final summary."""
    cores = os.cpu_count() or 1
    threads = max(1, cores // max(1, n_jobs))
    in_repo = results == runs.results_dir().resolve()
    # into the repository: leave the directories at their defaults, so that the committed
    # notebooks carry no machine's absolute paths and re-execute anywhere
    common = (
        {"profile": profile}
        if in_repo
        else {"profile": profile, "results_dir": str(results), "figures_dir": str(figures)}
    )
    if device:
        common["device"] = device
    if seeds is not None:
        common["seeds"] = list(seeds)
    if backbones:
        common["backbones"] = list(backbones)
    logs = results / "logs"

    def job(nb, d):
        return Job(
            nb,
            dict(common, datasets=[d], write_tables=False),
            str(results / "notebooks" / f"{nb}__{slug(d)}.ipynb"),
            str(logs / f"{nb}__{slug(d)}.log"),
            f"{nb[:2]}/{slug(d)}",
            threads,
        )

    p = profiles.profile(profile)
    tune_sets = p.tuning_datasets(datasets)
    tuning = [job(nb, d) for nb in TUNING if nb in notebooks for d in tune_sets] if train else []
    training = [
        job(nb, d)
        for nb in TRAINING
        if nb in notebooks
        for d in datasets
        if d in dataclasses.replace(p, datasets=list(datasets)).scoped(SCOPED.get(nb, "")).datasets
    ]  # (a table the profile's scope narrows trains on its datasets only)
    training = training if train else []
    report = [
        Job(
            nb,
            dict(
                common,
                datasets=list(datasets),
                **({} if nb in OWN_DATA else {"train_missing": False}),
                **({"update_readme": in_repo} if nb == "09_summary" else {}),
            ),
            str(out_dir / f"{nb}.ipynb"),
            str(logs / f"{nb}.log"),
            nb,
            threads if nb != "08_efficiency" else cores,
        )
        for nb in notebooks
    ]
    for j in report:
        if j.notebook in OWN_DATA:
            del j.parameters["datasets"]  # its own file (the notebook's data_path)
    last = [j for j in report if j.notebook in ("08_efficiency", "09_summary")]
    return tuning, training, [j for j in report if j not in last], last


def main(argv=None) -> int:
    costs = "\n".join(f"  {k:6s} {p.cost}" for k, p in PROFILES.items())
    ap = argparse.ArgumentParser(
        description=__doc__ + "\nProfiles:\n" + costs,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--profile",
        default="paper",
        choices=list(PROFILES),
        help="what to run (default paper; costs above)",
    )
    ap.add_argument(
        "--datasets",
        default=None,
        help="comma-separated dataset names or interactions files (default: the profile's)",
    )
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default: the profile's)")
    ap.add_argument(
        "--backbones", default=None, help="comma-separated backbones, cdae,neumf (default: both)"
    )
    ap.add_argument(
        "--notebooks",
        default=None,
        help="comma-separated notebook numbers or names, e.g. 00,03 (default: all)",
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="parallel jobs (default: the number of cores); threads per job = cores // jobs",
    )
    ap.add_argument(
        "--threads", type=int, default=None, help="threads per job (default: cores // jobs)"
    )
    ap.add_argument(
        "--no-report",
        action="store_true",
        help="training stage only (several reproductions "
        "sharing the machine; run the report later)",
    )
    ap.add_argument(
        "--no-notebooks",
        action="store_true",
        help="training stage only, without papermill or Jupyter: each job trains what its notebook "
        "trains (experiments.train_notebook) in a plain Python process; for a machine without "
        "Jupyter, such as the GPU machine (tools/gpu_window.sh). Implies --no-report",
    )
    ap.add_argument("--results", default=None, help="results directory (default: results/)")
    ap.add_argument(
        "--figures",
        default=None,
        help="figures directory (default: figures/, or <results>/figures when --results is given)",
    )
    ap.add_argument(
        "--notebooks-out",
        default=None,
        help="where the executed report notebooks go (default: "
        "notebooks/ for results/, else <results>/notebooks)",
    )
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="no training stage: tables and figures from the recorded runs (make figures)",
    )
    ap.add_argument("--scheduler", default=None, help="address of a Dask distributed scheduler")
    ap.add_argument(
        "--group-size",
        type=int,
        default=None,
        help="runs trained together in one stacked step (train.run_group; default 1 on a CPU, where "
        "it is slower, 15 on CUDA; 1 for a profile with a sparse step, whose runs do not stack)",
    )
    ap.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="seconds: no run starts after this (runs not started stay unrecorded, the tables show "
        "them missing); a later reproduction resumes with them",
    )
    args = ap.parse_args(argv)
    if args.group_size is not None and args.group_size < 1:
        ap.error(f"--group-size must be at least 1, got {args.group_size}")
    if args.no_notebooks and (args.scheduler or args.report_only):
        ap.error(
            "--no-notebooks runs the training stage on the local pool: not with --scheduler or --report-only"
        )

    profile = PROFILES[args.profile]
    if args.group_size and args.group_size > 1 and not stacks(profile):
        ap.error(
            f"--group-size {args.group_size}: profile {args.profile} trains with "
            f"step={profile.step!r} (Config.step), whose runs train one at a time, not stacked"
        )
    if os.environ.get("CDLIB_COMPILE") and not stacks(profile):
        ap.error(
            f"CDLIB_COMPILE={os.environ['CDLIB_COMPILE']}: profile {args.profile} trains with "
            f"step={profile.step!r} (Config.step), which trains eagerly: unset CDLIB_COMPILE"
        )
    datasets = args.datasets.split(",") if args.datasets else profile.datasets
    notebooks = NOTEBOOKS
    if args.notebooks:
        want = args.notebooks.split(",")
        notebooks = [
            nb for nb in NOTEBOOKS if any(nb == w or nb.startswith(w.zfill(2) + "_") for w in want)
        ]
        if not notebooks:
            ap.error(f"no notebook matches {args.notebooks!r}; choose from {', '.join(NOTEBOOKS)}")
    results = runs.results_dir(args.results).resolve()
    default_results = results == runs.results_dir().resolve()
    figures = Path(
        args.figures or (runs.REPO / "figures" if default_results else results / "figures")
    ).resolve()
    out_dir = Path(
        args.notebooks_out or (NB_DIR if default_results else results / "notebooks")
    ).resolve()
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else None
    if args.device == "cuda":
        if not torch.cuda.is_available():
            ap.error(
                "--device cuda: this machine has no CUDA device (torch.cuda.is_available() is False)"
            )
    tuning, training, report, last = plan(
        args.profile,
        datasets,
        notebooks,
        results,
        figures,
        out_dir,
        args.jobs,
        args.device,
        seeds,
        train=not args.report_only,
        backbones=args.backbones.split(",") if args.backbones else None,
    )
    if args.threads:
        for j in tuning + training + report + last:
            j.threads = args.threads
    if args.no_report or args.no_notebooks:
        report, last = [], []
    group = args.group_size or default_group_size(profile, args.device)
    print(
        f"profile {args.profile}: {len(datasets)} dataset(s) {datasets}, {len(notebooks)} notebook(s), "
        f"{args.jobs} job(s) x {training[0].threads if training else report[0].threads if report else 1} "
        f"thread(s), groups of up to {group} run(s); results in {results}",
        flush=True,
    )
    t0 = time.time()
    env = {"CDLIB_GROUP_SIZE": str(group)}
    if args.time_limit is not None:
        env["CDLIB_DEADLINE"] = str(t0 + args.time_limit)  # read by profiles.profile in every job
    for j in tuning + training + report + last:
        j.env = dict(env)
    direct = args.no_notebooks
    done = run_jobs(tuning, args.jobs, "tuning", args.scheduler, results, figures, direct)
    done += run_jobs(training, args.jobs, "training", args.scheduler, results, figures, direct)
    done += run_jobs(report, args.jobs, "report", args.scheduler, results, figures)
    done += run_jobs(last, 1, "summary", args.scheduler, results, figures)
    failed = [j for j in done if j.status != "ok"]
    print(f"\n{'job':<28s}{'status':<9s}{'seconds':>9s}  log")
    for j in done:
        print(f"{j.name:<28s}{j.status:<9s}{j.seconds:9.1f}  {j.log}")
    print(f"\n{len(done) - len(failed)}/{len(done)} jobs ok in {time.time() - t0:.0f} s")
    for j in failed:
        print(f"FAILED {j.name}: {j.error} (log: {j.log}, notebook: {j.output})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
