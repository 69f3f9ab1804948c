"""The store of runs: `run(config)` returns the run's record, training only when no record of that
exact configuration exists in `results/runs/` (or when `refresh=True`), and caches the weights of
every run outside git ($CDLIB_CACHE/weights). A student's teacher is itself a run, so every student
of one dataset, backbone and teacher seed reuses one teacher, and a student's record names the
SHA-256 of the teacher weights it was distilled from. A teacher retrained because its weights are
missing never overwrites its record (`load_teacher`). The loop itself is `loop.fit_group`; a run
stopped mid-training resumes from its last checkpoint (`checkpoint`, `Execution.checkpoint_every`).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import sys
import time
from pathlib import Path

import torch

from . import checkpoint, models, paths, runs
from .config import Config, Execution, build_model, dataset_for
from .loop import STACKED, evaluate, fit, fit_group


def weights_path(cfg: Config) -> Path:
    """Where the weights of a run are cached: $CDLIB_CACHE/weights/<key>.pt (outside git)."""
    return weights_file(cfg.key())


def weights_file(key: str) -> Path:
    """`weights_path` of the run `key`."""
    return paths.cache_dir() / "weights" / f"{key}.pt"


class NotRecorded(LookupError):
    """A run was asked for without training (Execution(train=False)) and no record of it exists."""


class DeadlineReached(NotRecorded):
    """A run not recorded, not started because the execution's deadline (unix time) has passed: a
    time-limited reproduction (reproduce --time-limit) leaves it for the next window."""


def _check_deadline(what: str, execution: Execution) -> None:
    if execution.deadline is not None and time.time() > execution.deadline:
        raise DeadlineReached(f"{what} not started: the time limit (CDLIB_DEADLINE) has passed")


class TeacherMismatch(RuntimeError):
    """A teacher retrained because its weights were missing differs from its committed record."""


def save_atomic(obj, path: Path) -> str:
    """torch.save `obj` to `path` atomically (a reader never sees half a file); returns its SHA-256."""
    with paths.atomic(path) as tmp:
        torch.save(obj, tmp)
    return paths.sha256(path)


def load_weights(cfg: Config, ds=None, device=None):
    """The model of run `cfg` (canonical) with its cached weights, in eval mode. FileNotFoundError
    when they are not cached here; RuntimeError naming the file when it cannot be loaded."""
    path = weights_path(cfg)
    if not path.is_file():
        raise FileNotFoundError(
            f"the weights of run {cfg.key()} are not cached on this machine ({path}); "
            "train it (train.run) or copy the file there"
        )
    model = build_model(cfg, ds if ds is not None else dataset_for(cfg), device or cfg.device)
    try:
        model.load_state_dict(torch.load(path, map_location=model.device, weights_only=True))
    except Exception as e:  # noqa: BLE001 -- a damaged cache file: say which, touch nothing
        raise RuntimeError(
            f"weights {path} cannot be loaded ({type(e).__name__}: {e}); delete the file "
            "to have the run retrained"
        ) from None
    return model.eval()


def differences(a: dict, b: dict) -> list[str]:
    """What differs between two records of one configuration: best epoch, metrics, and the learning
    curve (losses and validation metrics; not the seconds). Empty when the runs are the same."""
    out = []
    if a.get("best_epoch") != b.get("best_epoch"):
        out.append(f"best epoch {a.get('best_epoch')} vs {b.get('best_epoch')}")
    for k in ("valid_sampled", "valid_full", "test_sampled", "test_full"):
        for m in sorted(set(a.get(k, {})) | set(b.get(k, {}))):
            if a.get(k, {}).get(m) != b.get(k, {}).get(m):
                out.append(f"{k} {m} {a.get(k, {}).get(m)} vs {b.get(k, {}).get(m)}")
    ca, cb = (
        [{x: v for x, v in e.items() if x != "seconds"} for e in r.get("curve", [])] for r in (a, b)
    )
    if ca != cb:
        first = next((i for i, (x, y) in enumerate(zip(ca, cb)) if x != y), min(len(ca), len(cb)))
        out.append(f"learning curve from epoch {first + 1} ({len(ca)} vs {len(cb)} epochs)")
    return out


def load_teacher(
    cfg: Config,
    results=None,
    progress: bool = True,
    execution: Execution | None = None,
    refresh: bool = False,
):
    """The teacher of student `cfg` and the SHA-256 of its weights, read from the cache.

    Missing weights are retrained (one process at a time per teacher). A retrained teacher never
    overwrites its record: if the record exists, and the new run's metrics and curve equal it, the
    record is kept and the new weights are cached (their hash noted beside them). If they differ where
    they should agree bit for bit (the record's instruction set and thread count are this machine's,
    `runs.bit_for_bit_expected`), TeacherMismatch names the record and the difference, unless
    `refresh` asks for a new record; on another CPU, where runs agree only statistically, the new
    weights are used with a warning, and the students distilled from them name their hash."""
    execution = execution or Execution()
    tcfg = cfg.teacher()
    path = weights_path(tcfg)
    ds = dataset_for(tcfg)
    if not path.is_file():
        if not execution.train:
            raise NotRecorded(
                f"teacher weights {path} are not cached and training is off (CDLIB_NO_TRAIN)"
            )
        _check_deadline(f"teacher {tcfg.key()}", execution)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(
            f"{path}.lock", "w"
        ) as lock:  # parallel jobs wait for one teacher, not train it twice
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.is_file():
                recorded = runs.read_record(tcfg.key(), results)
                if recorded is None or refresh:
                    run(tcfg, results, refresh=True, progress=progress, execution=execution)
                else:
                    _retrain_recorded_teacher(tcfg, recorded, ds, results, progress, execution)
    return load_weights(tcfg, ds), paths.sha256(path)


def _retrain_recorded_teacher(
    tcfg: Config, recorded: dict, ds, results, progress: bool, execution: Execution
) -> None:
    resume = _resume([tcfg], [None], execution)
    out = fit_group([tcfg], ds, [None], progress, execution=execution, resume=resume)[0]
    new = {
        **evaluate(out["model"], ds, tcfg),
        "best_epoch": out["best_epoch"],
        "curve": out["curve"],
    }
    diff = differences(recorded, new)
    rec_path = runs.record_path(tcfg.key(), results)
    here = runs.provenance(out["model"].device, execution.compile)
    same = runs.bit_for_bit_expected(recorded["provenance"], here)
    if diff and same is not False:
        raise TeacherMismatch(
            f"teacher {rec_path} had no cached weights, so it was retrained, and the new run differs from the "
            f"record: {'; '.join(diff[:5])}{' ...' if len(diff) > 5 else ''}. Recorded on "
            f"{runs.describe_arithmetic(recorded['provenance'])}, retrained on {runs.describe_arithmetic(here)}. "
            "The students recorded so far were distilled from the recorded teacher; rerun with refresh=True to "
            "replace its record (and then retrain its students), or restore its weights into "
            + str(weights_path(tcfg))
        )
    if diff:
        print(
            f"warning: teacher {tcfg.key()} was retrained on {runs.describe_arithmetic(here)} and differs from "
            f"its record, made on {runs.describe_arithmetic(recorded['provenance'])} ({diff[0]}): runs on "
            "different instruction sets agree only statistically. Its record is kept; students distilled now "
            "name the new weights' SHA-256.",
            file=sys.stderr,
            flush=True,
        )
    path = weights_path(tcfg)
    sha = save_atomic(out["model"].state_dict(), path)
    note = {
        "key": tcfg.key(),
        "weights_sha256": sha,
        "record": str(rec_path),
        "record_weights_sha256": recorded.get("weights_sha256"),
        "retrained": (
            "weights were missing; the retrained run differs from the record (another instruction "
            f"set or thread count): {'; '.join(diff)}. The record was kept as it is"
        )
        if diff
        else "weights were missing; the retrained run equals the record (metrics and curve), "
        "which was kept as it is",
        "provenance": here,
    }
    runs.write_atomic(path.with_suffix(".json"), json.dumps(note, indent=1, default=str))
    if resume is not None:
        resume.discard()


def check_record(key: str, results=None, note: bool = False) -> list[str]:
    """Retrain the recorded run `key` (one without a teacher, which would be retrained too) with the
    record's thread count, and return how the new run differs from the record (`differences`; empty
    when it equals it bit for bit). `note=True` adds this machine's provenance to the record's
    `reproduced_on` when it reproduced, so that `runs.bit_for_bit_expected` knows it holds here too."""
    rec = runs.read_record(key, results)
    if rec is None:
        raise NotRecorded(f"run {key} is not recorded in {runs.results_dir(results)}")
    cfg = Config(**rec["config"])
    if cfg.has_teacher:
        raise ValueError(
            f"run {key} is distilled ({cfg.method}); check_record retrains runs without a teacher"
        )
    threads = torch.get_num_threads()
    torch.set_num_threads(runs.threads(rec["provenance"]) or threads)
    try:
        ds = dataset_for(cfg)
        out = fit(cfg, ds, progress=False)
        new = {
            **evaluate(out["model"], ds, cfg),
            "best_epoch": out["best_epoch"],
            "curve": out["curve"],
        }
        here = runs.provenance(out["model"].device)
    finally:
        torch.set_num_threads(threads)
    diff = differences(rec, new)
    if note and not diff and not runs.bit_for_bit_expected(rec["provenance"], here):
        rec["provenance"]["reproduced_on"] = [*rec["provenance"].get("reproduced_on", []), here]
        runs.write_record(rec, results)
    return diff


def run(
    config: Config,
    results=None,
    refresh: bool = False,
    progress: bool = True,
    execution: Execution | None = None,
) -> dict:
    """The record of `config`: read from results/runs/ when it exists (unless `refresh`), else
    trained, evaluated and written atomically, its weights cached. Execution(train=False) never
    trains: a missing run raises NotRecorded."""
    return run_group([config], results, refresh, progress, execution)[0]


def run_group(
    configs,
    results=None,
    refresh: bool = False,
    progress: bool = True,
    execution: Execution | None = None,
) -> list[dict]:
    """The records of `configs`, as `run` gives each: recorded runs are read (unless `refresh`), the
    others trained together, up to `execution.group_size` at a time (1 by default: on a CPU a stacked
    step is no faster than its members' steps one after another, `cdlib.bench --groups`), in groups
    of runs that stack (`loop.check_group`); each record names the group it was trained in. A group
    that runs out of GPU memory is split in two, with a message, and each half trained again."""
    execution = execution or Execution()
    cfgs = [c.canonical() for c in configs]
    recs = {c.key(): None if refresh else runs.read_record(c.key(), results) for c in cfgs}
    todo = list({c.key(): c for c in cfgs if recs[c.key()] is None}.values())
    if todo and not execution.train:
        c = todo[0]
        raise NotRecorded(
            f"run {c.key()} ({c.dataset} {c.backbone}-{c.size} {c.method} seed {c.seed}) is not "
            f"recorded in {runs.results_dir(results)}"
        )
    stacks: dict = {}
    for c in todo:
        stacks.setdefault(tuple(getattr(c, k) for k in STACKED), []).append(c)
    size = execution.group_size
    for members in stacks.values():
        for s in range(0, len(members), size):
            for rec in _train_group(members[s : s + size], results, progress, execution):
                recs[rec["key"]] = rec
    return [recs[c.key()] for c in cfgs]


def _resume(cfgs: list[Config], teacher_sha256: list, execution: Execution):
    """The checkpoints of a group of runs (`checkpoint.Resume`), or None where they are off."""
    if execution.checkpoint_every is None:
        return None
    return checkpoint.Resume(
        [c.key() for c in cfgs],
        teacher_sha256,
        execution.checkpoint_every,
        models.default_device(cfgs[0].device),
        execution.compile,
    )


def _train_group(cfgs: list[Config], results, progress: bool, execution: Execution) -> list[dict]:
    _check_deadline(
        f"run {cfgs[0].key()}" if len(cfgs) == 1 else f"a group of {len(cfgs)} runs", execution
    )
    ds = dataset_for(cfgs[0])
    teachers = [
        load_teacher(c, results, progress, execution) if c.has_teacher else (None, None)
        for c in cfgs
    ]
    # timed from here: a teacher trained (or retrained for its weights) above has its own record
    t0, cpu0 = time.time(), time.process_time()
    resume = _resume(cfgs, [sha for _, sha in teachers], execution)
    try:
        outs = fit_group(
            cfgs, ds, [t for t, _ in teachers], progress, execution=execution, resume=resume
        )
    except torch.cuda.OutOfMemoryError:
        if len(cfgs) == 1:
            raise
        if resume is not None:
            resume.discard()  # the halves keep checkpoints of their own
        half = len(cfgs) // 2
        print(
            f"out of GPU memory training a group of {len(cfgs)} runs: split into groups of {half} and "
            f"{len(cfgs) - half}",
            file=sys.stderr,
            flush=True,
        )
        torch.cuda.empty_cache()
        return _train_group(cfgs[:half], results, progress, execution) + _train_group(
            cfgs[half:], results, progress, execution
        )
    group = [c.key() for c in cfgs]
    out = []
    for cfg, (teacher, teacher_sha), o in zip(cfgs, teachers, outs):
        model = o["model"]
        weights_sha = save_atomic(model.state_dict(), weights_path(cfg))
        out.append(
            {
                "key": cfg.key(),
                "config": dataclasses.asdict(cfg),
                **evaluate(model, ds, cfg),
                "best_epoch": o["best_epoch"],
                "epochs_run": len(o["curve"]),
                "curve": o["curve"],
                "popularity_valid_NDCG@10": o["popularity_valid_NDCG@10"],
                "n_params": model.n_params(),
                "teacher_n_params": teacher.n_params() if teacher is not None else None,
                "teacher_key": cfg.teacher().key() if teacher is not None else None,
                "teacher_sha256": teacher_sha,
                "weights_sha256": weights_sha,
                "timing": o["timing"],
                "group": group,
                "dataset": runs.dataset_info(ds),
                "provenance": runs.provenance(model.device, execution.compile),
            }
        )
    earlier = resume.earlier if resume is not None else checkpoint.nothing_earlier()
    wall = time.time() - t0 + earlier["wall_seconds"]  # with the parts before a resume
    cpu = time.process_time() - cpu0 + earlier["cpu_seconds"]
    for rec in out:  # a member's share of the group's time (all of it for a group of one)
        rec["timing"] = dict(
            rec["timing"],
            wall_seconds=wall / len(cfgs),
            group_wall_seconds=wall,
            cpu_seconds=cpu / len(cfgs),  # the process's, every thread (`runs.run_seconds`)
        )
        if earlier["parts"]:  # resumed: each earlier part's epochs at its last checkpoint
            rec["resumed"] = earlier["parts"]  # and its provenance
        runs.write_record(rec, results)
    if resume is not None:
        resume.discard()
    return out
