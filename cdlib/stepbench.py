"""The step bench: seconds per training epoch of the dense optimiser step against the sparse and
deferred steps of `cdlib/sparse.py` and `cdlib/rowadam.py` (`Config.step`), side by side for each kind of run
(`costs.step_kinds`), with their ratios dense / step per kind of epoch (training alone, and with
its validation) and the process's peak memory. The ratios are what the sparse steps save: the
README shows them and `costs.step_estimate` scales the grid's CPU hours by them.

`python -m cdlib.bench --steps --dataset D --out results/bench/steps_D_cpu.json` (`steps_main`).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import pandas as pd
import torch

from . import costs, data, metrics, models, rowadam, runs
from .bench import epoch_seconds, timed
from .config import TEACHER_SIZE, Config, build_model

# the steps `step_table` times: (column name, Config.step, deferred Adam's warm-up factor or None)
STEP_COLUMNS = (
    ("dense", "dense", None),
    ("sparse", "sparse", None),
    ("deferred", "deferred", 0.0),  # after its warm-up: the step of most of a run
    ("deferred warm-up", "deferred", 1e9),  # its first 1,000 steps: whole-table Adam steps
)


STEP_EPOCHS = 2  # epochs of each step per round in `step_table`, the best kept


def step_table(
    dataset: str, ds, device, rounds: int = 2, epochs: int = STEP_EPOCHS, on_row=None
) -> pd.DataFrame:
    """Seconds per training epoch with the dense step and the sparse ones (`Config.step`: lazy
    "sparse"; "deferred" after its warm-up and during it, `rowadam.WARMUP`), side by side, for each
    backbone's `costs.step_kinds` (the teacher, the plain student, the CD student teacher- and
    student-guided, its refresh of every user's ranking included), and the ratios dense / step; then
    each epoch's validation with the dense and the sparse model (the deferred step's is the sparse
    model), and the ratios of whole epochs (training and validation). The steps are timed in turn,
    `rounds` times over, each keeping its best epoch (of `epochs` per round, so that what a run does
    once, the teacher's ranking of every user's items, is left out): a one-off slow epoch of a
    shared machine does not pass for a difference of the steps. Models are untrained (the time of a
    step does not depend on the weights). on_row(rows so far) after each row."""
    dev = models.default_device(device)
    torch.manual_seed(0)
    teachers = {
        b: models.build(b, ds.train, TEACHER_SIZE[b], 0.5, dev).eval() for b in TEACHER_SIZE
    }
    kinds = [
        (costs.kind_name(b, kind), dict(backbone=b, **kw), b if "CD" in kind else None)
        for b in TEACHER_SIZE
        for kind, kw in costs.step_kinds(b).items()
    ]
    rows = []
    for what, kw, teacher in kinds:
        cfgs = {
            name: Config(dataset=dataset, device=dev.type, step=step, **kw).canonical()
            for name, step, _ in STEP_COLUMNS
        }
        best = {name: float("inf") for name in cfgs}
        for _ in range(rounds):
            for name, _, warmup in STEP_COLUMNS:
                with sparse_warmup(warmup):
                    seconds = epoch_seconds(cfgs[name], ds, teachers.get(teacher), epochs)
                best[name] = min(best[name], seconds)
        valid = {  # each epoch's validation (sampled NDCG@10 for early stopping), per model
            name: timed(
                lambda cfg=cfgs[name]: metrics.evaluate(
                    build_model(cfg, ds, dev), ds, "valid", "sampled"
                ),
                rounds,
            )
            for name in ("dense", "sparse")
        }
        row = {"dataset": dataset, "run": what, "size": cfgs["dense"].size}
        row.update({f"{name} s/epoch": best[name] for name in cfgs})
        row.update(
            {f"dense / {name}": best["dense"] / best[name] for name in cfgs if name != "dense"}
        )
        row.update({f"{name} validation s": valid[name] for name in valid})
        for name in list(cfgs)[1:]:  # (each sparse step validates the sparse model)
            row[f"dense / {name}, validation included"] = (best["dense"] + valid["dense"]) / (
                best[name] + valid["sparse"]
            )
        rows.append(row)
        print(
            f"{dataset:<12s} {what:<34s} "
            + "  ".join(f"{name} {best[name]:.3f} s" for name in cfgs)
            + f"  (validation {valid['dense']:.2f} / {valid['sparse']:.2f} s)",
            flush=True,
        )
        if on_row is not None:
            on_row(pd.DataFrame(rows))
    return pd.DataFrame(rows)


@contextlib.contextmanager
def sparse_warmup(factor: float | None):
    """rowadam.WARMUP set to `factor` (None: left as it is) for the block."""
    old = rowadam.WARMUP
    rowadam.WARMUP = old if factor is None else factor
    try:
        yield
    finally:
        rowadam.WARMUP = old


def peak_rss_gib() -> float:
    """This process's peak resident memory so far, GiB (Linux: ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def steps_main(args) -> None:
    """`--steps`: `step_table` on --dataset, written with its provenance to --out (after each row)."""
    t0 = time.time()
    dev = models.default_device(args.device)
    ds = data.load(args.dataset)
    print(f"{ds}  device: {runs.device_name(dev)}  torch {torch.__version__}")

    def save(table, complete=False):
        if args.out:
            rec = {
                "steps": table.to_dict(orient="records"),
                "rounds": args.rounds,
                "epochs": STEP_EPOCHS,
                "peak_rss_gib": peak_rss_gib(),
                "threads": torch.get_num_threads(),
                "wall_seconds": time.time() - t0,
                "complete": complete,
                "dataset": runs.dataset_info(ds),
                "provenance": runs.provenance(dev, None),
            }
            runs.write_atomic(Path(args.out), json.dumps(rec, indent=1) + "\n")

    table = step_table(args.dataset, ds, dev, rounds=args.rounds, on_row=save)
    save(table, complete=True)
    print(f"peak memory {peak_rss_gib():.2f} GiB, {time.time() - t0:.0f} s")
