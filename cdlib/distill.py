"""Distill your own data: an interactions file in, a saved teacher and CD student out.

    python -m cdlib.distill DATA [--backbone cdae|neumf] [--teacher-size N] [--student-size N]
                                 [--guide teacher|student|hybrid] [--seed S] [--device cpu|cuda] [--out DIR]
                                 [--step dense|sparse|deferred]

DATA is the path of an interactions file (CSV or TSV with a header user, item[, timestamp], .gz
accepted; Parquet; RecBole's .inter; other column names mapped by --user-col, --item-col,
--time-col, and --rating-col with --min-rating to keep the interactions rated at least that) or one
of the six dataset names. The teacher is trained, or
reused when a run of the same configuration on the same bytes is recorded and its weights cached;
the student is distilled from it with CD. From Python: `cdlib.distill(DATA, backbone=..., out=...)`
returns the teacher, the student and the card. DIR receives teacher.pt and student.pt (load them with
cdlib.load_model, then .recommend(user_ids)) and card.json: the configuration, the data file and
its SHA-256, the SHA-256 of each weights file, both models' test metrics on both protocols, their
parameter counts and their scoring latency on this machine. Run records go to --results (default
$CDLIB_CACHE/results, outside the repository), so nothing of the repository's results is touched.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import torch

from . import bench, data, files, models, paths, runs, saved, sparse, train
from .config import STUDENT, Config, Execution

METRICS = ("HR@10", "NDCG@10")


@dataclass
class Distilled:
    """What `distill` returns: the teacher and the CD student, ready to recommend in the data's own
    ids (`.recommend(user_ids, k=10)`), and the card that describes both."""

    teacher: saved.SavedModel
    student: saved.SavedModel
    card: dict


def distill(
    data_path: str,
    *,
    backbone: str = "cdae",
    teacher_size: int | None = None,
    student_size: int | None = None,
    guide: str = "teacher",
    seed: int = 0,
    device: str | None = None,
    out=None,
    results=None,
    progress: bool = True,
    user_col: str = "user",
    item_col: str = "item",
    time_col: str = "timestamp",
    rating_col: str | None = None,
    min_rating: float | None = None,
    execution: Execution | None = None,
    **config,
) -> Distilled:
    """Train (or reuse) the teacher of `data_path` (a file or one of the six dataset names), distil
    the student with CD, and return both with their card; with `out`, also write out/teacher.pt,
    out/student.pt and out/card.json (load them with `cdlib.load_model`). The file's own column names
    are mapped by `user_col`, `item_col`, `time_col`, and rows rated below `min_rating` in
    `rating_col` are left out (`files.prepare`: the table then used is written to
    $CDLIB_CACHE/prepared/). `config`: further Config fields (epochs, lr, ...). Run records go to
    `results` (default $CDLIB_CACHE/results). Bad input raises DataError or ValueError before
    anything is written."""
    t0 = time.time()
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device cuda: this machine has no CUDA device (torch.cuda.is_available() is False)"
        )
    results = Path(results) if results else paths.cache_dir() / "results"
    source = {
        "path": str(Path(data_path)),
        "user_col": user_col,
        "item_col": item_col,
        "time_col": time_col,
        "rating_col": rating_col,
        "min_rating": min_rating,
    }
    if data.is_file_dataset(data_path):
        source["sha256"] = paths.sha256(Path(data_path))
        data_path = str(
            files.prepare(
                data_path,
                paths.cache_dir() / "prepared",
                user_col,
                item_col,
                time_col,
                rating_col,
                min_rating,
            )
        )
    scfg = Config(
        dataset=data_path,
        backbone=backbone,
        size=student_size or STUDENT.get(backbone),
        method="cd",
        guide=guide,
        seed=seed,
        teacher_size=teacher_size,
        device=device,
        **config,
    ).canonical()
    tcfg = scfg.teacher()
    if scfg.size >= tcfg.size:
        print(
            f"note: the student (size {scfg.size}) is not smaller than the teacher (size {tcfg.size}): "
            "born-again distillation",
            file=sys.stderr,
        )
    ds = train.dataset_for(scfg)  # bad data stops here, before any output
    merged = ds.meta.get("duplicates_merged", 0)
    print(
        f"{ds}  ({ds.meta['source']}{f'; {merged} repeated (user, item) pairs kept once' if merged else ''})",
        flush=True,
    )
    print(f"[1/2] teacher: {backbone} size {tcfg.size}", flush=True)
    trec = train.run(tcfg, results, progress=progress, execution=execution)
    print(f"[2/2] CD student: {backbone} size {scfg.size}, {guide}-guided", flush=True)
    srec = train.run(scfg, results, progress=progress, execution=execution)
    card = {
        "format": "cdlib-card/1",
        "data": {
            "path": str(Path(data_path)),
            **runs.dataset_info(ds),
            "duplicates_merged": merged,
            "source": source,
        },
        "weights": {},
        "models": {},
    }
    users = torch.arange(min(256, ds.n_users))
    models_ = {}
    for role, cfg, rec in (("teacher", tcfg, trec), ("student", scfg, srec)):
        models_[role] = saved.from_run(cfg, device)
        model = models_[role].model
        lat = bench.latency_ms(model, users.to(model.device))
        card["models"][role] = {
            "config": vars(cfg),
            "record_key": rec["key"],
            "n_params": model.n_params(),
            "best_epoch": rec["best_epoch"],
            "epochs_run": rec["epochs_run"],
            "test_sampled": rec["test_sampled"],
            "test_full": rec["test_full"],
            "valid_sampled": rec["valid_sampled"],
            "latency_ms": {
                "users": len(users),
                "ms": lat,
                "device": runs.device_name(model.device),
            },
            "train_seconds": rec["timing"]["train_seconds"],
        }
    card["models"]["student"]["teacher_sha256"] = srec.get("teacher_sha256")
    card["provenance"] = runs.provenance(models.default_device(device))
    if out is not None:
        out = Path(out)
        for role, cfg in (("teacher", tcfg), ("student", scfg)):
            sha = saved.save_model(models_[role].model, ds, out / f"{role}.pt", dict(vars(cfg)))
            card["weights"][f"{role}.pt"] = {"sha256": sha, "role": role}
    card["wall_seconds"] = time.time() - t0
    if out is not None:  # last: the card names complete files
        runs.write_atomic(out / "card.json", json.dumps(card, indent=1, default=str) + "\n")
    return Distilled(models_["teacher"], models_["student"], card)


def table(card: dict) -> str:
    """The teacher-against-student table of a card, as text."""
    head = (
        f"{'model':<9}{'size':>6}{'params':>12}"
        + "".join(f"{m + ' ' + p:>20}" for p in ("sampled", "full") for m in METRICS)
        + f"{'latency ms':>12}"
    )
    lines = [head, "-" * len(head)]
    for role in ("teacher", "student"):
        m = card["models"][role]
        vals = "".join(f"{m[f'test_{p}'][k]:>20.4f}" for p in ("sampled", "full") for k in METRICS)
        lines.append(
            f"{role:<9}{m['config']['size']:>6}{m['n_params']:>12,}{vals}{m['latency_ms']['ms']:>12.2f}"
        )
    t, s = card["models"]["teacher"], card["models"]["student"]
    lines.append(
        f"student/teacher: {s['n_params'] / t['n_params']:.1%} of the parameters, "
        f"{s['test_sampled']['NDCG@10'] / max(t['test_sampled']['NDCG@10'], 1e-12):.1%} of the NDCG@10 (sampled), "
        f"{t['latency_ms']['ms'] / s['latency_ms']['ms']:.1f}x the scoring speed "
        f"({t['latency_ms']['users']} users, {t['latency_ms']['device']})"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m cdlib.distill",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "data", help="interactions file (.csv/.tsv[.gz], .parquet, .inter) or a dataset name"
    )
    ap.add_argument("--backbone", default="cdae", choices=["cdae", "neumf"])
    ap.add_argument(
        "--teacher-size",
        type=int,
        default=None,
        help="CDAE hidden units / NeuMF d (default 200 / 64)",
    )
    ap.add_argument("--student-size", type=int, default=None, help="(default 20 / 8)")
    ap.add_argument("--guide", default="teacher", choices=["teacher", "student", "hybrid"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    ap.add_argument("--out", default="distilled", help="output folder (default ./distilled)")
    ap.add_argument("--results", default=None, help="run records (default $CDLIB_CACHE/results)")
    ap.add_argument("--epochs", type=int, default=None, help="epoch cap (default: train.Config's)")
    ap.add_argument("--patience", type=int, default=None)
    ap.add_argument("--min-epochs", type=int, default=None)
    ap.add_argument(
        "--step",
        default=None,
        choices=list(sparse.STEPS),
        help="the training step (train.Config.step; default: dense; deferred: the dense step's training at the cost of the rows a step touches)",
    )
    ap.add_argument("--no-progress", action="store_true")
    cols = ap.add_argument_group(
        "a file's own columns (e.g. MovieLens's ratings.csv: --user-col userId "
        "--item-col movieId --rating-col rating --min-rating 4)"
    )
    cols.add_argument("--user-col", default="user", help="the user id column (default user)")
    cols.add_argument("--item-col", default="item", help="the item id column (default item)")
    cols.add_argument(
        "--time-col", default="timestamp", help="the timestamp column, if any (default timestamp)"
    )
    cols.add_argument("--rating-col", default=None, help="a rating column, with --min-rating")
    cols.add_argument(
        "--min-rating",
        type=float,
        default=None,
        help="keep the interactions rated at least this (an implicit-feedback threshold)",
    )
    a = ap.parse_args(argv)
    extra = {
        k: v
        for k, v in (
            ("epochs", a.epochs),
            ("patience", a.patience),
            ("min_epochs", a.min_epochs),
            ("step", a.step),
        )
        if v is not None
    }
    try:
        result = distill(
            a.data,
            backbone=a.backbone,
            teacher_size=a.teacher_size,
            student_size=a.student_size,
            guide=a.guide,
            seed=a.seed,
            device=a.device,
            out=a.out,
            results=a.results,
            progress=not a.no_progress,
            user_col=a.user_col,
            item_col=a.item_col,
            time_col=a.time_col,
            rating_col=a.rating_col,
            min_rating=a.min_rating,
            execution=Execution.from_environment(),
            **extra,
        )
    except (data.DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out)
    print()
    print(table(result.card))
    print(
        f"\nwrote {out / 'teacher.pt'}, {out / 'student.pt'}, {out / 'card.json'} in "
        f"{result.card['wall_seconds']:.0f} s"
    )
    return 0


class _CallableModule(types.ModuleType):
    """`cdlib.distill(data, ...)` is `cdlib.distill.distill(data, ...)`: the command's module is also the
    function, so that the package's API reads `cdlib.distill(...)` beside `python -m cdlib.distill`."""

    def __call__(self, *args, **kwargs) -> Distilled:
        return distill(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
