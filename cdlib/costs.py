"""What the grid costs: the CPU hours recorded and estimated to go per dataset and backbone
(`compute`), each kind of run priced with a step's benched ratio (`pricer`, `step_estimate`), the
paper profile's training time on a benchmarked device (`device_estimate`), and the share of a
guided CD run that refreshes its student's ranking (`refresh_share`). A profile's whole plan,
priced, is `plan`."""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd

from . import rowadam, runs
from .config import BACKBONE_DEFAULTS, STUDENT, TEACHER_SIZE, recorded
from .runs import read_table
from .tables import own_runs

RUN_TABLES = {
    "00_tuning_runs": "tuning (00)",
    "02_teachers_runs": "teachers (02)",
    "03_main_runs": "main (03)",
    "04_sampling_runs": "sampling (04)",
    "06_size_runs": "size (06)",
    "07_sensitivity_runs": "sensitivity (07)",
}


def grid_runs(results=None) -> pd.DataFrame | None:
    """Every distinct run the tables list (a run named by two tables once), with its status, recorded
    epochs, and for a recorded run its cost (`runs.run_seconds`) and seconds per epoch (validation
    included)."""
    need = {"label", "dataset", "backbone", "size", "seed", "method", "status", "key", "epochs_run"}
    frames = [
        t
        for t in (read_table(n, results) for n in RUN_TABLES)
        if t is not None and need <= set(t.columns)
    ]
    if not frames:
        return None
    t = pd.concat(frames, ignore_index=True)
    t = own_runs(t)
    t = (
        t.assign(
            id=t.key.where(
                t.key.notna(),
                t.dataset
                + "/"
                + t.backbone
                + "/"
                + t.label.astype(str)
                + "/"
                + t["size"].astype(str)
                + "/"
                + t.seed.astype(str),
            )
        )
        .drop_duplicates("id")
        .copy()
    )
    ok = t.status == "ok"
    t["seconds"] = np.nan
    t.loc[ok, "seconds"] = [
        runs.run_seconds(runs.read_record(k, results) or runs.read_record(k, results, "ials") or {})
        for k in t.key[ok]
    ]
    t["per_epoch"] = t.seconds / t.epochs_run
    return t


def _work(results=None) -> dict:
    """{(dataset, backbone): the work of one epoch} from table 01: users x items for CDAE's dense rows,
    training interactions for NeuMF's pairs."""
    st = read_table("01_datasets", results)
    return (
        {}
        if st is None
        else {
            (r.dataset, b): float(w)
            for r in st.itertuples()
            for b, w in (("cdae", r.users * r.items), ("neumf", r.train))
        }
    )


def _estimator(ok: pd.DataFrame, work: dict):
    """estimate(dataset, backbone, size, method) -> (epochs, seconds per epoch on the CPU): the medians of
    the recorded runs of the same backbone, size and method (else method) on the same dataset, else on the
    recorded dataset nearest in work, its seconds scaled by the work; (nan, nan) when none is recorded.
    Cached: the README's tables ask for a few hundred distinct ones thousands of times."""

    @functools.cache
    def estimate(d, b, size, m):
        for cols, key in ((["size", "method"], (size, m)), (["method"], (m,))):
            same = ok[
                (ok.backbone == b) & np.logical_and.reduce([ok[c] == v for c, v in zip(cols, key)])
            ]
            refs = [
                r for r in same.dataset.unique() if r == d or ((r, b) in work and (d, b) in work)
            ]
            if refs:  # this dataset, else the recorded one nearest in work, scaled
                r = (
                    d
                    if d in refs
                    else min(refs, key=lambda r: abs(np.log(work[(r, b)] / work[(d, b)])))
                )
                g = same[same.dataset == r]
                return g.epochs_run.median(), g.per_epoch.median() * (
                    1 if r == d else work[(d, b)] / work[(r, b)]
                )
        return np.nan, np.nan

    return estimate


def compute(results=None) -> pd.DataFrame:
    """CPU time of the grid the tables list, per dataset and backbone: the cost of every distinct
    recorded run, and an estimate for the runs not recorded (missing, or waiting for their tuning).
    The estimate is the median epochs times the median seconds per epoch (`runs.run_seconds`,
    validation included) of the recorded runs of the same backbone, size and method (else method) on the same
    dataset, else on the recorded dataset nearest in work, scaled by the work (users x items for
    CDAE's dense rows, training interactions for NeuMF's pairs). Runs waiting for their tuning are
    counted once per table row, so two tables naming one such run count it twice."""
    t = grid_runs(results)
    if t is None:
        return pd.DataFrame()
    ok = t[t.status == "ok"]
    estimate = _estimator(ok, _work(results))
    todo = t[t.status != "ok"]
    est = pd.Series(
        [
            float(np.prod(estimate(r.dataset, r.backbone, r.size, r.method)))
            for r in todo.itertuples()
        ],
        index=todo.index,
        dtype=float,
    )
    rows = []
    for (d, b), g in t.groupby(["dataset", "backbone"], sort=False):
        o = ok[(ok.dataset == d) & (ok.backbone == b)]
        rest = est[g.index[g.status != "ok"]]
        rows.append(
            {
                "dataset": d,
                "backbone": b,
                "runs recorded": len(o),
                "CPU hours": o.seconds.sum() / 3600,
                "runs to go": len(rest),
                "est. CPU hours to go": rest.sum(min_count=1) / 3600,
            }
        )
    out = pd.DataFrame(rows)
    total = {
        "dataset": "all",
        "backbone": "",
        **out.drop(columns=["dataset", "backbone"]).sum(min_count=1),
    }
    out = pd.concat([out, pd.DataFrame([total])], ignore_index=True).astype(
        {"runs recorded": int, "runs to go": int}
    )
    out[["CPU hours", "est. CPU hours to go"]] = out[["CPU hours", "est. CPU hours to go"]].round(1)
    return out


def step_kinds(backbone: str) -> dict:
    """The kinds of run `stepbench.step_table` times, {name: Config fields}: the teacher, the plain
    student, and the CD student teacher-guided and student-guided (whose every epoch refreshes the
    student's ranking of all items, a cost the step does not change)."""
    s = STUDENT[backbone]
    return {
        "teacher": {},
        "student, none": {"size": s},
        "student, CD teacher-guided": {"size": s, "method": "cd", "guide": "teacher"},
        "student, CD student-guided": {"size": s, "method": "cd", "guide": "student"},
    }


BACKBONE_NAMES = {"cdae": "CDAE", "neumf": "NeuMF"}


def kind_name(backbone: str, kind: str) -> str:
    """A kind of run as the bench records name it: "CDAE teacher", "NeuMF student, none", ..."""
    return f"{BACKBONE_NAMES[backbone]} {kind}"


def run_kind(backbone: str, size: int, method: str, label: str) -> str:
    """The kind of run (`step_kinds`) that a grid's run is priced as: the teacher (a run of
    the teacher's size, born-again CD included), the plain student, or the CD student guided by the
    student (labels CD-S, CD-H, sampling's ".../student": every epoch refreshes the student's
    ranking) or by the teacher (every other CD run, uniform sampling's, which ranks nothing, and
    RD, whose per-step work is alike)."""
    if size == TEACHER_SIZE[backbone]:
        return "teacher"
    if method == "none":
        return "student, none"
    if label in ("CD-S", "CD-H") or (
        label.endswith("/student") and not label.startswith("uniform/")
    ):
        return "student, CD student-guided"
    return "student, CD teacher-guided"


def pricer(bench_records: list[dict], t: pd.DataFrame | None, results=None, step: str = "sparse"):
    """price(dataset, backbone, size, method, label, recorded=None, min_epochs=0) -> (seconds with the
    dense step, seconds with `step`, the benched dataset whose ratios it used) of one run: its
    recorded (epochs, seconds), else `compute`'s estimate (its epochs at least `min_epochs`, the
    minimum its run will train: the recorded runs it is priced from may have stopped earlier),
    divided by the ratio of whole epochs (dense / step, validation included) that `bench --steps`
    measured for its kind of run (`run_kind`) on its dataset, else on the benched dataset nearest in
    work; "deferred": the epochs within the deferred Adam's warm-up (its first 1,000 steps, at
    users / batch size steps an epoch) at the warm-up's ratio. An iALS run (the teachers table's
    baseline) costs the same with every step. NaN where no ratio or no estimate exists.
    None without bench records of `step` or recorded runs (`t`: the tables' runs, `grid_runs`)."""
    column = f"dense / {step}, validation included"
    if t is None or not any(column in row for rec in bench_records for row in rec["steps"]):
        return None
    work = _work(results)
    estimate = _estimator(t[t.status == "ok"], work)
    phases = [step, f"{step} warm-up"] if step == "deferred" else [step]
    ratio = {
        (row["dataset"], row["run"], phase): row.get(
            f"dense / {phase}, validation included", np.nan
        )
        for rec in bench_records
        for row in rec["steps"]
        for phase in phases
    }
    benched = sorted({d for d, _, _ in ratio})
    st = read_table("01_datasets", results)
    users = {} if st is None else dict(zip(st.dataset, st.users))
    warm_steps = rowadam.warmup_steps() if step == "deferred" else 0

    def reference(d, b):
        """The benched dataset whose ratios stand for d's: d, else the nearest in work (or None)."""
        if d in benched or (d, b) not in work:
            return d if d in benched else None
        near = [r for r in benched if (r, b) in work]
        return min(near, key=lambda r: abs(np.log(work[(r, b)] / work[(d, b)])), default=None)

    def price(d, b, size, method, label, recorded=None, min_epochs=0):
        ref = reference(d, b)
        if recorded is not None:
            epochs, seconds = recorded
        else:
            epochs, per = estimate(d, b, size, method)
            if epochs < min_epochs:  # (NaN, no estimate, stays NaN)
                epochs = min_epochs
            seconds = epochs * per
        if method == "ials":  # its alternating least squares has no step to change
            return seconds, seconds, ref
        per_epoch = math.ceil(users.get(d, np.nan) / BACKBONE_DEFAULTS[b]["batch_size"])
        kind = kind_name(b, run_kind(b, int(size), method, str(label)))
        warm = min(1.0, warm_steps / per_epoch / epochs) if warm_steps else 0.0
        new = seconds * (1 - warm) / ratio.get((ref, kind, step), np.nan)
        if warm:
            new += seconds * warm / ratio.get((ref, kind, phases[-1]), np.nan)
        return seconds, new, ref

    return price


def step_estimate(bench_records: list[dict], results=None, step: str = "sparse") -> pd.DataFrame:
    """The whole grid the tables list (recorded and to go, as `compute` counts it) trained with a
    sparse step (`Config.step`), per dataset and backbone: each run's CPU hours with the dense step
    (recorded seconds, else `compute`'s estimate) and with `step` (`pricer`). A cell with a run
    whose kind has no benched ratio has no estimate. Empty without bench records or tables."""
    t = grid_runs(results)
    price = pricer(bench_records, t, results, step)
    if price is None:
        return pd.DataFrame()
    rows = []
    for (d, b), g in t.groupby(["dataset", "backbone"], sort=False):
        dense, new, ref = [], [], ""
        for r in g.itertuples():
            recorded = (r.epochs_run, r.seconds) if r.status == "ok" else None
            seconds, stepped, ref = price(d, b, r.size, r.method, r.label, recorded)
            dense.append(seconds)
            new.append(stepped)
        rows.append(
            {
                "dataset": d,
                "backbone": b,
                "runs": len(g),
                "CPU hours, dense step": pd.Series(dense, dtype=float).sum(skipna=False) / 3600,
                # a run without a benched ratio leaves the cell without an estimate
                f"CPU hours, {step} step (est.)": pd.Series(new, dtype=float).sum(skipna=False)
                / 3600,
                "ratios of": ref or "",
            }
        )
    return with_total(
        pd.DataFrame(rows), ["CPU hours, dense step", f"CPU hours, {step} step (est.)"]
    )


def with_total(
    out: pd.DataFrame, cols: list, by=("dataset", "backbone"), digits: int | None = 1
) -> pd.DataFrame:
    """`out` with a last row "all" summing `cols` and the runs (NaN where a row has none), rounded
    to `digits` (None: not rounded)."""
    total = {c: "" for c in out.columns}
    total.update({by[0]: "all", "runs": int(out.runs.sum())})
    total.update({c: out[c].sum(skipna=False) for c in cols})
    out = pd.concat([out, pd.DataFrame([total])], ignore_index=True)
    out[cols] = out[cols].astype(float)
    if digits is not None:
        out[cols] = out[cols].round(digits)
    return out


def _bench_epoch(seconds: dict, backbone: str, size: int, method: str, teacher_size: int) -> float:
    """Seconds per training epoch of a kind of run, from a `cdlib.bench` record's 'seconds': the teacher,
    the student without distillation, or (RD and CD) the CD student-guided student, the dearest method."""
    epochs = {k: v for k, v in seconds.items() if " epoch" in k}
    if backbone == "cdae" and size == teacher_size:
        pick = [v for k, v in epochs.items() if k.startswith("CDAE teacher")]
    elif backbone == "cdae":
        end = "method none" if method == "none" else "CD student-guided"
        pick = [v for k, v in epochs.items() if k.startswith("CDAE student") and k.endswith(end)]
    else:
        pick = [
            v
            for k, v in epochs.items()
            if k.startswith("NeuMF (d=") and (f"(d={teacher_size})" in k) == (size == teacher_size)
        ]
    return max(pick) if pick else np.nan


def device_estimate(bench_record: dict, results=None) -> dict:
    """The paper profile's training time on the device of a `cdlib.bench` record (`--out` JSON), one run
    at a time: every run the tables list, recorded or not (records say which device trained them, so a new
    device trains them all), times its epochs (recorded, else `compute`'s estimate), times the bench's
    seconds per training epoch for its kind of run (`_bench_epoch`), scaled from the bench dataset by the
    steps per epoch (users / batch) on a GPU, where a step costs its overhead whatever its size, and by the
    work (`_work`) on a CPU. Validation is left out, so this is a lower bound. Returns hours in all and per
    dataset, and what it rests on."""
    t = grid_runs(results)
    if t is None:
        return {}
    gpu = runs.device_kind(bench_record["provenance"]["device"]) == "cuda"
    st = read_table("01_datasets", results)
    users = {} if st is None else dict(zip(st.dataset, st.users))
    work = _work(results)
    estimate = _estimator(t[t.status == "ok"], work)
    ref = bench_record["dataset"]["name"]
    seconds, epochs_of = [], []
    for r in t.itertuples():
        epochs = (
            r.epochs_run
            if r.status == "ok"
            else estimate(r.dataset, r.backbone, r.size, r.method)[0]
        )
        per = _bench_epoch(
            bench_record["seconds"], r.backbone, int(r.size), r.method, TEACHER_SIZE[r.backbone]
        )
        if gpu:  # steps per epoch; the batch size is the backbone's
            scale = users.get(r.dataset, np.nan) / users.get(ref, np.nan)
        else:
            scale = work.get((r.dataset, r.backbone), np.nan) / work.get((ref, r.backbone), np.nan)
        seconds.append(epochs * per * scale)
        epochs_of.append(epochs)
    t = t.assign(device_seconds=seconds)
    per_dataset = (t.groupby("dataset", sort=False).device_seconds.sum(min_count=1) / 3600).round(2)
    return {
        "device": bench_record["provenance"]["device"],
        "bench_dataset": ref,
        "runs": len(t),
        "runs_without_estimate": int(t.device_seconds.isna().sum()),
        "epochs": float(np.nansum(epochs_of)),
        "hours": round(float(np.nansum(seconds)) / 3600, 2),
        "hours_per_dataset": per_dataset.to_dict(),
    }


# the commits that brought a refresh's compiled kernels: NeuMF's feature-major tower (`towerkernel`)
# and each user's top k (`topkernel`)
REFRESH_KERNELS = (
    ("tower", "07a17399328ac9bbc7ac1e9adf7488f43ef21fa2"),
    ("top-k", "f66bfe2c1710c4b07a8ddae503b78d5b6440aea2"),
)


def refresh_kernels(rec: dict) -> str:
    """The compiled kernels a record's refreshes could take, from the commit of its code
    (`runs.has_commit`, `REFRESH_KERNELS`): "none", "tower", "top-k" or "tower + top-k" (the
    tower only for a NeuMF student ranked feature-major), "unknown" where git cannot tell. Each
    stands in where its check against torch passes on the machine (the tower at d <= 8 on this
    project's Intel CPU) and gives torch's bits, so this says what a refresh cost, not what it
    computed."""
    c, commit = rec.get("config", {}), rec.get("provenance", {}).get("git", {}).get("commit")
    tower = c.get("backbone") == "neumf" and recorded(c, "refresh_tower") == "feature-major"
    used = []
    for name, since in REFRESH_KERNELS:
        has = runs.has_commit(commit, since)
        if has is None:
            return "unknown"
        if has and (name != "tower" or tower):
            used.append(name)
    return " + ".join(used) or "none"


def refresh_share(results=None) -> pd.DataFrame:
    """Per dataset, backbone and guide of the recorded CD runs whose student guides (student or
    hybrid), the refreshes' part of the training time: each run's mean refresh times the refreshes
    it made (one every `refresh_every` epochs from the epoch the student guides, as
    `samplers.CDSampler.start_epoch` refreshes), over its training seconds, pooled over the runs;
    with the mean seconds of a refresh and of an epoch, the refresh tower (`Config.refresh_tower`;
    "item-major" where the record has none) and the compiled kernels its code had
    (`refresh_kernels`)."""
    rows = []
    for r in runs.all_records(results):
        c, t = r.get("config", {}), r.get("timing", {})
        if c.get("method") != "cd" or not t.get("refresh_seconds_mean"):
            continue
        first = (c.get("switch_epoch") or 0) if c["guide"] == "hybrid" else 0
        every = c.get("refresh_every") or 1
        refreshes = sum(e == first or e % every == 0 for e in range(first, r["epochs_run"]))
        rows.append(
            {
                "dataset": c["dataset"].split("/")[-1],
                "backbone": c["backbone"],
                "guide": c["guide"],
                "tower": recorded(c, "refresh_tower") or "item-major",
                "kernels": refresh_kernels(r),
                "refresh s": t["refresh_seconds_mean"],
                "epoch s": t["epoch_seconds_mean"],
                "refreshing": t["refresh_seconds_mean"] * refreshes,
                "training": t["train_seconds"],
            }
        )
    cols = ["dataset", "backbone", "guide", "tower", "kernels"]
    if not rows:
        return pd.DataFrame(columns=[*cols, "runs", "refresh s", "epoch s", "share of training"])
    g = pd.DataFrame(rows).groupby(cols)
    out = g[["refresh s", "epoch s"]].mean()
    out.insert(0, "runs", g.size())
    out["share of training"] = g.refreshing.sum() / g.training.sum()
    return out.reset_index()
