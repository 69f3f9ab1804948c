"""The experiment grids behind the numbered notebooks and the tuning stage they rest on.

A notebook names a profile (`profiles.profile`) and calls one grid function (`teacher_grid`,
`main_grid`, ...); each returns {label: [Config, ...]}, every method at the settings the tuning
stage chose on validation (`tune`, `settings`). `tables.collect` runs or reads them.
"""

from __future__ import annotations

import dataclasses
import itertools

import pandas as pd

from .config import STUDENT, STUDENT_SIZES, TEACHER_SIZE, Execution
from .profiles import STAGES, TUNE_METRIC, TUNING, Profile, check_tuning
from .tables import Pending, collect

SENSITIVITY = {
    "lambda_kd": [0.1, 0.5, 1.0, 2.0],
    "mu": [1.0, 5.0, 10.0, 50.0],
    "temperature": [0.5, 1.0, 2.0, 5.0],
    "n_distill": [5, 10, 20, 50],
}


# ----------------------------------------------------------------------------- tuning


def _points(grid: dict) -> list[dict]:
    """Every combination of a stage's values, in grid order (the first is the starting point)."""
    return [dict(zip(grid, v)) for v in itertools.product(*grid.values())]


def point_label(stage: str, point: dict) -> str:
    return f"{stage} " + ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items()
    )


def at_edge(grid: dict, point: dict) -> list[str]:
    """The numeric settings of `point` at the smallest or largest value of their `grid` dimension,
    for dimensions of three values or more: a choice at a grid's edge may lie beyond it."""
    return [
        k
        for k, values in grid.items()
        if len(values) >= 3
        and not isinstance(point.get(k), (str, bool))
        and point.get(k) in (min(values), max(values))
    ]


def tuning_stages(p: Profile) -> list[str]:
    """The stages `p`'s tuning runs, in order: every tuning's four, and "CD guide" where it has one."""
    return [stage for stage in STAGES if stage in TUNING or stage in p.tuning]


# what a profile without a stage runs in its place: the CD guide is teacher-guided
UNTUNED = {"CD guide": {"guide": "teacher"}}


def stage_grid(p: Profile, dataset: str, backbone: str, stage: str, choice: dict) -> dict:
    """{label: [Config per tuning seed]} of one tuning stage, each point of its grid at the choices of
    the stages before it (`choice`, {stage: settings}): the teacher's and the student's learning
    rates for RD and CD, and CD's settings for the guide stage."""
    base = {
        "Teacher": {},
        "Student": {"size": STUDENT[backbone]},
        "RD": {"size": STUDENT[backbone], "method": "rd"},
        "CD": {"size": STUDENT[backbone], "method": "cd", **UNTUNED["CD guide"]},
        "CD guide": {"size": STUDENT[backbone], "method": "cd"},
    }
    fixed = {}
    if stage in ("RD", "CD", "CD guide"):
        fixed = {"teacher_lr": choice["Teacher"].get("lr"), "lr": choice["Student"].get("lr")}
    if stage == "CD guide":  # the guides at CD's chosen settings
        fixed.update(choice["CD"])
    return {
        point_label(stage, pt): [
            p.config(dataset, backbone, s, **{**base[stage], **fixed, **pt}) for s in p.tune_seeds
        ]
        for pt in _points(p.tuning[stage])
    }


def first_choice(p: Profile) -> dict:
    """The choice of a tuning stage that chose every stage's first grid point: one it can make,
    at which `costs.profile_runs` plans a profile's grid."""
    return {stage: _points(p.tuning[stage])[0] for stage in tuning_stages(p)}


def tune(
    p: Profile, dataset: str, backbone: str, results=None, progress: bool = True
) -> tuple[pd.DataFrame, dict | None]:
    """The tuning stage of one dataset and backbone: every stage's configurations over the tuning
    seeds (trained when missing, unless training is off), and the choice of each stage, the point
    with the best mean validation NDCG@10 (ties: the earlier point). Returns (runs, choice); choice
    is {stage: settings} with every stage, or None while some run is not recorded."""
    walked, choice = _walk(p, dataset, backbone, results, p.execution, progress)
    frames = [df.assign(stage=stage) for stage, _, df in walked]
    runs_df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return runs_df, (choice if len(choice) == len(tuning_stages(p)) else None)


def tuning_frontier(p: Profile, dataset: str, backbone: str, results=None) -> list:
    """The runs the tuning stage of `dataset` and `backbone` needs next: those not recorded of its first
    stage that is not recorded whole (the later stages wait on its choice); [] once every stage is.
    Reads the records; trains nothing."""
    walked, choice = _walk(p, dataset, backbone, results, Execution(train=False), False)
    if len(choice) == len(walked):
        return []
    _, grid, df = walked[-1]
    configs = [c for cs in grid.values() for c in cs]  # `collect`'s row order
    return [c for c, ok in zip(configs, df.status == "ok") if not ok]


def _walk(p: Profile, dataset: str, backbone: str, results, execution, progress: bool):
    """The tuning stages in order, each at the choices of those before it, up to the first that is not
    recorded whole (trained first when `execution` trains): ([(stage, grid, collect's rows)],
    {stage: the chosen settings} of the stages recorded whole)."""
    check_tuning(p.tuning)
    walked, choice = [], {}
    for stage in tuning_stages(p):
        grid = stage_grid(p, dataset, backbone, stage, choice)
        df = collect(grid, results, execution, progress)
        walked.append((stage, grid, df))
        if (df.status != "ok").any():
            break
        choice[stage] = chosen_point(p, stage, df)
    return walked, choice


def chosen_point(p: Profile, stage: str, df: pd.DataFrame) -> dict:
    """The point of `stage`'s grid with the best mean validation NDCG@10 over its recorded runs `df`
    (`collect`'s rows of `stage_grid`; ties: the earlier point)."""
    means = df.groupby("label", sort=False)[f"valid {TUNE_METRIC}"].mean()
    return dict(_points(p.tuning[stage])[list(means.index).index(means.idxmax())])


def tuning_table(runs_df: pd.DataFrame, choices: dict) -> pd.DataFrame:
    """Mean validation and test NDCG@10 per tuning point, and which point each stage chose."""
    ok = runs_df[runs_df.status == "ok"]
    if ok.empty:
        return pd.DataFrame()
    g = ok.groupby(["dataset", "backbone", "stage", "label"], sort=False)
    out = (
        g[[f"valid {TUNE_METRIC}", TUNE_METRIC]]
        .mean()
        .rename(columns={TUNE_METRIC: f"test {TUNE_METRIC}"})
    )
    out["seeds"] = g.size()
    out["chosen"] = [
        point_label(st, choices.get((d, b), {}).get(st, {})) == lab if (d, b) in choices else False
        for d, b, st, lab in out.index
    ]
    return out


def tuning_change(before: Profile, after: Profile, results=None) -> pd.DataFrame:
    """Each stage's choice under profile `after` beside `before`'s for the same dataset and backbone
    ("before", "after", "moved"; "... tuned on": a profile may borrow another dataset's tuning;
    "after at grid edge": the settings `at_edge`), for every cell whose tuning under `after` is
    recorded. A stage `before` does not tune shows the
    setting it runs instead (`UNTUNED`, "(fixed)"); where `before`'s tuning is not recorded whole,
    "before" is blank and "moved" NA. Reads the records; trains nothing."""
    columns = ["dataset", "backbone", "stage", "before tuned on", "before", "after tuned on"]
    columns += ["after", "after at grid edge", "moved"]
    if after.tuning is None:
        return pd.DataFrame(columns=columns)
    off = Execution(train=False)
    rows = []
    for d in after.datasets:
        for b in after.backbones:
            on = after.tuning_dataset(d)
            _, new = tune(dataclasses.replace(after, execution=off), on, b, results, False)
            if new is None:
                continue
            src, old = before.tuning_dataset(d), None
            if before.tuning is not None:
                _, old = tune(dataclasses.replace(before, execution=off), src, b, results, False)
            for stage in tuning_stages(after):
                was = (old or {}).get(stage, UNTUNED.get(stage) if old else None)
                fixed = old is not None and stage not in old
                rows.append(
                    {
                        "dataset": d,
                        "backbone": b,
                        "stage": stage,
                        "before tuned on": src if old else "",
                        "before": ""
                        if was is None
                        else point_label(stage, was) + (" (fixed)" if fixed else ""),
                        "after tuned on": on,
                        "after": point_label(stage, new[stage]),
                        "after at grid edge": ", ".join(at_edge(after.tuning[stage], new[stage])),
                        "moved": pd.NA if was is None else was != new[stage],
                    }
                )
    return pd.DataFrame(rows, columns=columns)


def settings(
    p: Profile, dataset: str, backbone: str, results=None, progress: bool = True
) -> dict | None:
    """Each method's settings for `dataset` from the tuning stage of its tuning dataset:
    {"Teacher": kw, "Student": kw, "RD": kw, "CD": kw} (learning rates included; CD's guide when the
    tuning chooses it), or None while that tuning is not recorded. Without a tuning stage (p.tuning
    None) every method at its defaults; with `p.presume`, from that choice (planning)."""
    if p.tuning is None:
        return {k: {} for k in TUNING}
    choice = p.presume
    if choice is None:
        _, choice = tune(p, p.tuning_dataset(dataset), backbone, results, progress)
    if choice is None:
        return None
    t_lr, s_lr = choice["Teacher"].get("lr"), choice["Student"].get("lr")
    student = {"lr": s_lr} if s_lr else {}
    distil = {**student, **({"teacher_lr": t_lr} if t_lr else {})}
    return {
        "Teacher": dict(choice["Teacher"]),
        "Student": {**choice["Student"]},
        "RD": {**distil, **choice["RD"]},
        "CD": {**distil, **choice["CD"], **choice.get("CD guide", {})},
    }


def _grid(p: Profile, variants: dict, results=None, progress: bool = True) -> dict:
    """{label: [Config (or Pending) for every dataset x backbone x seed]} from {label: fn(backbone,
    tuned settings) -> kwargs}."""
    out = {label: [] for label in variants}
    for d in p.datasets:
        for b in p.backbones:
            tuned = settings(p, d, b, results, progress)
            for label, fn in variants.items():
                for s in p.seeds:
                    if tuned is None:
                        kw = fn(b, {k: {} for k in TUNING})
                        out[label].append(
                            Pending(
                                d,
                                b,
                                s,
                                kw.get("size"),
                                kw.get("method", "none"),
                                f"tuning on {p.tuning_dataset(d)}/{b} not recorded",
                            )
                        )
                    else:
                        out[label].append(p.config(d, b, s, **fn(b, tuned)))
    return out


def teacher_grid(p: Profile, results=None) -> dict:
    return _grid(p, {"Teacher": lambda b, t: t["Teacher"]}, results)


def main_grid(p: Profile, results=None) -> dict:
    """Table 3: Teacher, Student (no KD), RD and the three CD guides, at the main student size, each
    method at its tuned settings; and "CD", the CD configuration the tuning stage chose, guide
    included (the primary CD arm), when the profile's tuning chooses the guide (its runs are those
    of one of the guides' rows)."""
    s = STUDENT
    rows = {
        "Teacher": lambda b, t: t["Teacher"],
        "Student": lambda b, t: {"size": s[b], **t["Student"]},
        "RD": lambda b, t: {"size": s[b], "method": "rd", **t["RD"]},
        "CD-T": lambda b, t: {"size": s[b], "method": "cd", **t["CD"], "guide": "teacher"},
        "CD-S": lambda b, t: {"size": s[b], "method": "cd", **t["CD"], "guide": "student"},
        "CD-H": lambda b, t: {"size": s[b], "method": "cd", **t["CD"], "guide": "hybrid"},
    }
    if "CD guide" in (p.tuning or {}):
        rows["CD"] = lambda b, t: {"size": s[b], "method": "cd", **t["CD"]}
    return _grid(p, rows, results)


# The configurations of the step agreement (issue "An engine whose cost follows the data"): the main
# table's, less CD-H, trained with both steps (`Config.step`) on the datasets the study covers
STEP_AGREEMENT = ("Teacher", "Student", "RD", "CD-T", "CD-S")


def step_agreement_grid(p: Profile, results=None, steps=("sparse", "deferred")) -> dict:
    """The main table's configurations (`STEP_AGREEMENT`, each at the settings tuned with the dense
    step) with the dense step and with each of `steps` (labels "<method> <step>"), same seeds: which
    `agreement.step_agreement` pairs."""
    grid = main_grid(p, results)
    out = {  # the dense step whatever the profile's (the same keys as step None)
        label: [
            c if isinstance(c, Pending) else dataclasses.replace(c, step="dense")
            for c in grid[label]
        ]
        for label in STEP_AGREEMENT
    }
    for step in steps:
        for label in STEP_AGREEMENT:
            out[f"{label} {step}"] = [
                c if isinstance(c, Pending) else dataclasses.replace(c, step=step)
                for c in grid[label]
            ]
    return out


# RD as this project first ran it (v1): weights renormalised per user, lambda_RD = 0.5, a 5-epoch warm-up,
# exact student ranks once per epoch; beside RD as its authors ran it, to show what the fixes change
RD_V1 = {"rd_renorm": True, "lambda_rd": 0.5, "rd_warmup": 5, "rd_rank": "exact"}


def rd_variant_grid(p: Profile, results=None) -> dict:
    """RD in its authors' form (the main table's runs) and in the v1 form, same teacher, seeds and
    learning rate."""
    s = STUDENT
    return _grid(
        p,
        {
            "RD": lambda b, t: {"size": s[b], "method": "rd", **t["RD"]},
            "RD-v1": lambda b, t: {"size": s[b], "method": "rd", **t["RD"], **RD_V1},
        },
        results,
    )


def sampling_grid(p: Profile, guides=("teacher", "student"), results=None) -> dict:
    """Table 4: rank-aware sampling against uniform and top-K selection, per guide (tuned CD settings)."""
    return _grid(
        p,
        {
            f"{samp}/{g}": (
                lambda b, t, samp=samp, g=g: {
                    "size": STUDENT[b],
                    "method": "cd",
                    **t["CD"],
                    "sampling": samp,
                    "guide": g,
                }
            )
            for g in guides
            for samp in ("rank", "uniform", "topk")
        },
        results,
    )


def guidance_grid(p: Profile, results=None) -> dict:
    """Table 5: teacher-, student- and hybrid-guided CD (the same runs as the main table)."""
    g = main_grid(p, results)
    return {k: g[k] for k in ("Student", "CD-T", "CD-S", "CD-H")}


def size_grid(p: Profile, guide: str = "teacher", results=None) -> dict:
    """Table 6: each student size with and without CD, and born-again CD (student = teacher size,
    trained with the teacher's learning rate); other sizes use the main student's tuned settings.
    The profile's datasets and seeds as its scope narrows them (`Profile.scoped("size")`)."""
    p = p.scoped("size")
    out = {}
    for b in p.backbones:
        q = dataclasses.replace(p, backbones=[b])
        for size in STUDENT_SIZES[b]:
            for label, key, kw in (
                ("Student", "Student", {}),
                ("CD", "CD", {"method": "cd", "guide": guide}),
            ):
                g = _grid(
                    q,
                    {
                        label: lambda _b, t, key=key, kw=kw, size=size: {
                            **t[key],
                            "size": size,
                            **kw,
                        }
                    },
                    results,
                )
                out.setdefault(label, []).extend(g[label])
        out.setdefault("Teacher", []).extend(teacher_grid(q, results)["Teacher"])
        bacd = _grid(
            q,
            {
                "BACD": lambda b, t: {
                    **t["CD"],
                    "lr": t["Teacher"].get("lr"),
                    "size": TEACHER_SIZE[b],
                    "method": "cd",
                    "guide": guide,
                }
            },
            results,
        )
        out.setdefault("BACD", []).extend(bacd["BACD"])
    return out


def sensitivity_grid(p: Profile, guide: str = "teacher", values=None, results=None) -> dict:
    """Table 7: one CD parameter varied at a time around the tuned CD settings, on the profile's
    datasets and seeds as its scope narrows them (`Profile.scoped("sensitivity")`)."""
    p = p.scoped("sensitivity")
    values = values or SENSITIVITY
    return _grid(
        p,
        {
            f"{name}={v}": (
                lambda b, t, name=name, v=v: {
                    "size": STUDENT[b],
                    "method": "cd",
                    **t["CD"],
                    "guide": guide,
                    name: v,
                }
            )
            for name, vs in values.items()
            for v in vs
        },
        results,
    )


# The parameters of the training notebooks that choose their runs, at the notebooks' defaults (a test
# checks these against the committed notebooks' parameters cells)
NOTEBOOK_DEFAULTS = {
    "03_main": {"rd_v1_datasets": ["ml-100k"]},
    "04_sampling": {"guides": ["teacher", "student"]},
    "06_student_size": {"guide": "teacher"},
    "07_sensitivity": {"guide": "teacher"},
}


def notebook_grid(notebook: str, p: Profile, results=None) -> dict:
    """The runs that training notebook `notebook` (02, 03, 04, 06, 07) trains under profile `p`, at its
    default parameters: what `python -m cdlib.reproduce --no-notebooks` trains without Jupyter."""
    kw = NOTEBOOK_DEFAULTS.get(notebook, {})
    if notebook == "02_teachers":
        return teacher_grid(p, results)
    if notebook == "03_main":
        grid = main_grid(p, results)
        q = dataclasses.replace(p, datasets=[d for d in p.datasets if d in kw["rd_v1_datasets"]])
        if q.datasets:
            grid["RD-v1"] = rd_variant_grid(q, results)["RD-v1"]
        return grid
    if notebook == "04_sampling":
        return sampling_grid(p, kw["guides"], results)
    if notebook == "06_student_size":
        return size_grid(p, kw["guide"], results)
    if notebook == "07_sensitivity":
        return sensitivity_grid(p, kw["guide"], results=results)
    raise ValueError(
        f"{notebook!r} is not a training notebook (02_teachers, 03_main, 04_sampling, "
        "06_student_size, 07_sensitivity)"
    )


def train_notebook(notebook: str, p: Profile, results=None, progress: bool = True) -> pd.DataFrame:
    """Train (or read) what `notebook` trains under `p`, as its papermill job would, without Jupyter:
    00_tuning runs the tuning stage of each tuning dataset and backbone, the others `notebook_grid`.
    Returns one row per run (`collect`); like the notebooks, nothing is trained when the profile's
    execution says so (CDLIB_NO_TRAIN=1)."""
    if notebook == "00_tuning":
        frames = [
            tune(p, d, b, results, progress)[0] for d in p.tuning_datasets() for b in p.backbones
        ]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return collect(notebook_grid(notebook, p, results), results, p.execution, progress)
