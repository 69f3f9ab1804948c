"""A profile's runs still to train, in the order issue 23 ranks them, and workers that share them.

`outstanding(p)` lists the runs that can be configured now and are not recorded: the next stage of
each cell's tuning (`tuning.tuning_frontier`), then the runs of the training notebooks' grids
whose cell is tuned. They come in tiers, as the issue says to cut its grid: first the tuning stage, the
main table (02, 03), the sampling ablation (04) and born-again CD (06's "BACD"), the claims' runs; then
the rest of the student-size table (06); last the sensitivity figure (07). The first tier also holds
each cell's runs one step past its tuning grid's edges where a choice lies on one (`tuning.edge_check`;
outside the profile's grid, each after its seed's runs of the grid; a run a grid lists too keeps its
table and takes the first tier). It goes cell by
cell (a cell's claims complete before the next cell's start), then seed by seed; the later tiers seed
by seed, then cell by cell, so that a cut leaves every cell with fewer seeds rather than some cells
with none (the issue cuts the size table's seeds). Cells come in the order of their dataset's users x
items (table 01; the profile's order without it, and among equals): what a ranking of every item
costs, and the order of the cells' estimated hours, so that each CPU hour completes as many cells'
claims as it can [decision] (`cell_order`). Teachers and plain students come before the students
that distil them. A run two tables share takes the first tier that names it.

`work(p)` trains them one at a time until none is left, each run claimed by a lock file
(results/.locks/), so that any number of workers on this machine train one backlog without training a
run twice; a lock dies with its process, so a killed worker frees its run. (Workers on other machines
would need a shared results/, a file system whose `flock` spans machines, and a shared $CDLIB_CACHE for
the teachers' weights.) The list is read again after every run: another worker's may have opened runs
that rank higher. Records are written atomically (`runs.write_record`), and a run saves checkpoints
as it trains (`checkpoint`), so a worker killed mid-run loses the epochs since its run's last
checkpoint only; a run with a checkpoint here is taken first, and the checkpoints of runs recorded
since (their weights cached here) are deleted when a worker starts (`checkpoint.sweep`).

    python -m cdlib.backlog --profile next --datasets ml-1m,citeulike-t --workers 2
    python -m cdlib.backlog --profile next --dry          # what is left, per tier, table and cell; hours to go
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import multiprocessing
import os
import sys
import time
import traceback
from pathlib import Path

import pandas as pd
import torch

from . import audit, checkpoint, experiments, ials, plan, profiles, runs, train, tuning
from .config import Execution
from .plan import TRAINING_NOTEBOOKS
from .runs import read_table
from .tables import Pending

# the tier of each training notebook's runs (born-again CD, 06's "BACD", is in the first: claim 6)
TIERS = {"00_tuning": 0, "02_teachers": 0, "03_main": 0, "04_sampling": 0, "06_student_size": 1}
TIERS["07_sensitivity"] = 2
# the runs one step past a tuning grid's edge where a cell's choice lies on it (`tuning.edge_check`:
# does the grid bracket the choice?): outside the profile's grid, in the first tier
TIERS["00_edges"] = 0
FIRST_TIER_LABELS = {"06_student_size": ("BACD",)}
# a run two tables of one tier name is counted in the first of this order, as `plan.profile_runs`
# and `audit.profile_coverage` count it (a teacher in 03_main, not 02_teachers)
TABLE_ORDER = ["00_tuning", *TRAINING_NOTEBOOKS, "00_edges"]


@dataclasses.dataclass(frozen=True)
class Item:
    """One run of the backlog: its configuration and where it ranks."""

    tier: int
    table: str
    label: str
    config: object  # config.Config, canonical


def outstanding(p, results=None) -> list[Item]:
    """Profile `p`'s runs not recorded that can be configured now (a cell's tables wait for its tuning;
    each tuning stage waits for the one before), in training order (module docstring). Reads the
    records; trains nothing."""
    look = dataclasses.replace(p, execution=Execution(train=False))
    cells = cell_order(p, results)
    best: dict[str, tuple] = {}

    def add(table, label, c):
        c = c.canonical()
        if _recorded(c.key(), results):
            return
        tier = 0 if label in FIRST_TIER_LABELS.get(table, ()) else TIERS[table]
        cell = (c.dataset, c.backbone)
        # a tuning dataset outside p.datasets (one that others borrow) comes before every cell
        where = cells.index(cell) if cell in cells else -1
        order = (where, c.seed) if tier == 0 else (c.seed, where)
        rank = (tier, *order, c.has_teacher, TABLE_ORDER.index(table))
        if c.key() not in best or rank < best[c.key()][0]:
            item = Item(tier, table, label, c)
            if table == "00_edges" and c.key() in best:  # a grid's run: counted in its table
                item = dataclasses.replace(best[c.key()][1], tier=tier)
            best[c.key()] = (rank, item)

    with tuning.read_once():  # each cell's tuning read once, not once per table
        if p.tuning is not None:
            for d in p.tuning_datasets():
                for b in p.backbones:
                    for c in tuning.tuning_frontier(look, d, b, results):
                        add("00_tuning", "tuning", c)
        for nb in TRAINING_NOTEBOOKS:
            for label, cs in experiments.notebook_grid(nb, look, results).items():
                for c in cs:
                    if not isinstance(c, Pending):
                        add(nb, label, c)
        for d in p.tuning_datasets() if p.tuning is not None else ():
            for b in p.backbones:  # after the grids: a run a grid lists keeps its table
                for c in tuning.edge_frontier(look, d, b, results):
                    add("00_edges", "past the edge", c)
    return [item for _, item in sorted(best.values(), key=lambda v: v[0])]


def cell_order(p, results=None) -> list[tuple]:
    """Profile `p`'s (dataset, backbone) cells in the order the first tier trains them: by the
    dataset's users x items (results/01_datasets.csv), the smallest first; a dataset the table does
    not list, and every dataset without the table, in the profile's order after those it lists."""
    st = read_table("01_datasets", results)
    work = {} if st is None else dict(zip(st["dataset"], st["users"] * st["items"]))
    datasets = sorted(p.datasets, key=lambda d: (d not in work, work.get(d, 0)))  # (stable)
    return [(d, b) for d in datasets for b in p.backbones]


def summary(items: list[Item]) -> pd.DataFrame:
    """Runs outstanding per tier, table, dataset and backbone."""
    rows = [(i.tier, i.table, i.config.dataset, i.config.backbone) for i in items]
    df = pd.DataFrame(rows, columns=["tier", "table", "dataset", "backbone"])
    return df.groupby(list(df.columns), sort=False).size().rename("runs").reset_index()


def lock_dir(results=None) -> Path:
    """Where the workers' locks live: results/.locks (git-ignored)."""
    return runs.results_dir(results) / ".locks"


def claim(key: str, results=None):
    """An open, exclusively locked file for `key`, or None when another worker holds it."""
    d = lock_dir(results)
    d.mkdir(parents=True, exist_ok=True)
    f = open(d / key, "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def _recorded(key: str, results=None) -> bool:
    return runs.record_path(key, results).is_file()


def _checkpointed(c) -> bool:
    """Whether `c`, or the teacher it would train first, has a checkpoint on this machine (a run
    stopped mid-training, `checkpoint`): such a run is trained before the others, in their order."""
    keys = [c.key()] + ([c.teacher().canonical().key()] if c.has_teacher else [])
    return any(checkpoint.path_of([k]).is_file() for k in keys)


def _log(worker: int, *parts) -> None:
    print(time.strftime("%H:%M:%S"), f"[worker {worker}]", *parts, flush=True)


def _describe(c) -> str:
    guide = f" guide={c.guide}" if c.method == "cd" else ""
    return f"{c.dataset} {c.backbone} size={c.size} {c.method}{guide} seed={c.seed}"


class _Failed(Exception):
    """A run raised (logged with its traceback by `_run`)."""


def _blocked(c, failed: set) -> bool:
    """Whether `c` or the teacher it distils failed in this worker."""
    return c.key() in failed or (c.has_teacher and c.teacher().canonical().key() in failed)


def _train(c, p, results, worker: int, failed: set) -> int:
    """Train `c` unless it is recorded or another worker holds it; its teacher first when that is not
    recorded, or is recorded without its weights on this machine (a new machine's cache is empty:
    retrained for them, `train.load_teacher`); when another worker holds the teacher, nothing, so
    that this worker takes another run instead of waiting on the teacher. Returns the runs recorded
    (0, 1, or 2 with the teacher); raises `_Failed` when one of them raises."""
    lock = claim(c.key(), results)
    if lock is None:
        return 0
    with lock:
        if _recorded(c.key(), results) or _blocked(c, failed):
            return 0
        n = 0
        t = c.teacher().canonical() if c.has_teacher else None
        if t is not None and not _teacher_ready(t, results):
            tl = claim(t.key(), results)
            if tl is None:
                return 0
            with tl:
                if not _recorded(t.key(), results):
                    n += _run(t, p, results, worker, failed)
                elif not train.weights_file(t.key()).is_file():
                    _run(t, p, results, worker, failed, student=c)  # no new record
        return n + _run(c, p, results, worker, failed)


def _teacher_ready(t, results) -> bool:
    """Whether teacher `t` is recorded and its weights are cached on this machine."""
    return _recorded(t.key(), results) and train.weights_file(t.key()).is_file()


def _run(c, p, results, worker: int, failed: set, student=None) -> int:
    """Train and record `c`; with `student`, `c` is the student's teacher, recorded but without its
    weights here, retrained for them (its record kept, `train.load_teacher`)."""
    start = time.time()
    _log(worker, "retraining for its weights" if student else "training", _describe(c), c.key())
    try:
        if student is None:
            rec = train.run(c, results, progress=sys.stderr.isatty(), execution=p.execution)
        else:
            train.load_teacher(student, results, sys.stderr.isatty(), p.execution)
            rec = runs.read_record(c.key(), results)
    except train.DeadlineReached:
        raise
    except Exception as e:
        _log(worker, "failed", _describe(c), c.key(), f"({type(e).__name__}: {e})")
        traceback.print_exc()
        failed.add(c.key())
        raise _Failed(c.key()) from e
    seconds = f"{time.time() - start:.0f} s"
    done = "weights cached for" if student else "recorded"
    _log(worker, done, c.key(), f"best epoch {rec['best_epoch']},", seconds)
    return 1


def work(p, results=None, worker: int = 0, poll: float = 30.0, max_runs: int | None = None) -> int:
    """Train profile `p`'s backlog until it is empty (waiting while other workers hold its last runs),
    a run stopped mid-training on this machine first (`_checkpointed`), then (whoever claims it) the
    main table's iALS rows. A run that raises is logged with its traceback and not tried again by
    this worker, nor are the students of a teacher that raised; the time limit (CDLIB_DEADLINE)
    stops the worker. The backlog is read again after every run (another worker's
    may have opened runs that rank higher). Returns how many runs this worker trained, teachers
    included; stops once it has trained `max_runs` when given."""
    done, failed = 0, set()
    checkpoint.sweep(lambda key: _recorded(key, results) and train.weights_file(key).is_file())
    while True:
        if max_runs is not None and done >= max_runs:
            return done
        items = [i for i in outstanding(p, results) if not _blocked(i.config, failed)]
        if not items:
            break
        items.sort(key=lambda i: not _checkpointed(i.config))  # half-trained runs first
        _log(worker, f"{len(items)} runs outstanding, tier {items[0].tier} first")
        for item in items:  # the first this worker can claim
            try:
                n = _train(item.config, p, results, worker, failed)
            except train.DeadlineReached as e:
                _log(worker, f"stopped: {e}")
                return done
            except _Failed:
                break  # read the backlog again, less what failed
            if n:
                done += n
                break
        else:
            time.sleep(poll)  # every outstanding run is another worker's
    if failed:
        _log(worker, f"{len(failed)} runs failed here (tracebacks above): the iALS rows wait")
    elif p.execution.deadline is not None and time.time() > p.execution.deadline:
        _log(worker, "stopped: the time limit (CDLIB_DEADLINE) has passed; the iALS rows wait")
    else:
        lock = claim("ials", results)
        if lock is not None:
            with lock:
                ials.main_rows(p, results, p.execution)
            _log(worker, "iALS rows recorded")
    return done


def _worker(args) -> int:
    profile, datasets, backbones, device, worker, threads, max_runs = args
    torch.set_num_threads(threads)
    p = profiles.profile(
        profile, datasets=datasets, backbones=backbones, device=device, train_missing=True
    )
    return work(p, worker=worker, max_runs=max_runs)


def hours_left(p, results=None, by=("backbone",)) -> pd.DataFrame:
    """`plan.hours_to_go` of profile `p` against its records, per `by`: its grid priced at its own
    step (`plan.profile_estimate`), what it has recorded (`audit.profile_coverage`); empty where the
    grid cannot be priced (no bench or no recorded run)."""
    estimate = plan.profile_estimate(
        p, plan.bench_steps(results), results, p.step or "dense", digits=None
    )
    if estimate.empty:
        return pd.DataFrame()
    return plan.hours_to_go(estimate, audit.profile_coverage(p, results), by)


def to_go_line(left: pd.DataFrame, cores: int) -> str:
    """`hours_left` (by any grouping) in a sentence: the runs to go, their estimated CPU hours, the
    hours at the ratio the complete tables took where there is one, and the wall hours that means
    on `cores` cores, one run per core."""
    if left.empty:
        return "the grid to go cannot be priced here (no step bench or no recorded run)"
    whole = left.iloc[-1]  # the row "all"
    hours, at = whole["CPU hours to go, estimated"], whole["CPU hours to go, at that ratio"]
    best = at if pd.notna(at) else hours
    return (
        f"the whole grid: {int(whole['runs to go'])} runs to go, an estimated {hours:.0f} CPU hours"
        + (f" ({at:.0f} at the ratio its complete tables took)" if pd.notna(at) else "")
        + f", about {best / cores:.0f} h on {cores} cores (`plan.hours_to_go`)"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m cdlib.backlog", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--profile", default="next", choices=list(profiles.PROFILES))
    ap.add_argument("--datasets", help="comma-separated (default: the profile's)")
    ap.add_argument("--backbones", help="comma-separated (default: the profile's)")
    ap.add_argument("--device", help="cpu or cuda (default: the profile's)")
    ap.add_argument(
        "--workers", type=int, help="processes (default: the number of cores; 1 with --device cuda)"
    )
    ap.add_argument(
        "--threads", type=int, help="torch threads per worker (default: cores / workers)"
    )
    ap.add_argument("--max-runs", type=int, help="runs per worker, then stop")
    ap.add_argument("--dry", action="store_true", help="print what is outstanding; train nothing")
    a = ap.parse_args(argv)
    datasets = a.datasets.split(",") if a.datasets else None
    backbones = a.backbones.split(",") if a.backbones else None
    if a.dry:
        p = profiles.profile(a.profile, datasets=datasets, backbones=backbones, train_missing=False)
        items = outstanding(p)
        print(summary(items).to_string(index=False) if items else "nothing outstanding")
        print(
            f"{len(items)} runs can be trained now; a tuning stage's later stages and the tables of"
        )
        print("a cell not yet tuned are not counted until the runs before them are recorded;")
        cells = hours_left(p, by=("dataset", "backbone"))
        if not cells.empty:
            print("CPU hours to go per cell (`plan.hours_to_go`):")
            print(cells[cells["runs to go"] > 0].round(1).to_string(index=False))
        print(to_go_line(cells, os.cpu_count() or 1))
        for c in (i.config for i in items if _checkpointed(i.config)):
            own = checkpoint.path_of([c.key()])
            if own.is_file():
                own = checkpoint.saved_epochs(own)
            else:  # its teacher's
                teacher = c.teacher().canonical().key()
                own = f"its teacher, {checkpoint.saved_epochs(checkpoint.path_of([teacher]))}"
            print(
                f"half-trained here, resumed first: {_describe(c)} {c.key()} ({own} epochs saved)"
            )
        return 0
    workers = a.workers or (1 if a.device == "cuda" else os.cpu_count() or 1)
    threads = a.threads or max(1, (os.cpu_count() or 1) // workers)
    jobs = [
        (a.profile, datasets, backbones, a.device, w, threads, a.max_runs) for w in range(workers)
    ]
    if workers == 1:
        n = [_worker(jobs[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            n = pool.map(_worker, jobs)
    print(f"trained {sum(n)} runs ({', '.join(map(str, n))} per worker)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
