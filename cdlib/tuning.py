"""The tuning stage (METHOD.md "A fair comparison"), per dataset and backbone, in stages: the
teacher's learning rate, the student's, RD's settings, CD's, and the CD guide where the profile tunes
it. Each stage trains a grid of points over the tuning seeds, at the choices of the stages before
it, and chooses the point with the best mean validation NDCG@10. `settings` gives every method the
settings its cell's tuning chose, for the grids of `experiments`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools

import pandas as pd

from .config import STUDENT, Execution
from .profiles import STAGES, TUNE_METRIC, TUNING, Profile, check_tuning
from .tables import collect


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


def beyond(values, value):
    """The next value of a grid dimension's progression past `value`, an edge of it: the largest
    times its ratio to the second largest, the smallest divided by the second smallest's ratio to it
    (to 2 significant digits: 1 of 0.03 ... 1 gives 3.3; 3e-2 of 1e-4 ... 3e-2, 0.09); None where
    `value` is no edge."""
    v = sorted(values)
    if len(v) < 2 or value not in (v[0], v[-1]):
        return None
    return float(f"{v[-1] * v[-1] / v[-2] if value == v[-1] else v[0] * v[0] / v[1]:.2g}")


def beyond_edge_grid(p: Profile, dataset: str, backbone: str, choice: dict) -> dict:
    """{(stage, setting): {label: [Config per tuning seed]}}: for each stage's choice (`choice`, as
    `tune` gives it, every stage chosen) at an edge of its grid (`at_edge`), the stage's point one
    step past that edge in that setting (`beyond`), the others as chosen, at the choices of the
    stages before it: whether the grid brackets the choice, run as the stage ran its own points."""
    out = {}
    for stage in tuning_stages(p):
        for k in at_edge(p.tuning[stage], choice[stage]):
            point = {**choice[stage], k: beyond(p.tuning[stage][k], choice[stage][k])}
            one = dataclasses.replace(
                p, tuning={**p.tuning, stage: {n: [v] for n, v in point.items()}}
            )
            out[(stage, k)] = stage_grid(one, dataset, backbone, stage, choice)
    return out


def first_choice(p: Profile) -> dict:
    """The choice of a tuning stage that chose every stage's first grid point: one it can make,
    at which `plan.profile_runs` plans a profile's grid."""
    return {stage: _points(p.tuning[stage])[0] for stage in tuning_stages(p)}


_READ: dict | None = None  # `read_once`'s tunings read so far, else None


@contextlib.contextmanager
def read_once():
    """Within this block a tuning that trains nothing is read from the records once per profile,
    dataset and backbone, however often `tune` (and `settings`) asks for it: a planning pass
    (`backlog.outstanding`) asks each cell's tuning for every table's grid, 150 readings of 12 cells
    (14 s of its 18). A record written meanwhile is seen by the next block."""
    global _READ
    outer = _READ
    _READ = {} if outer is None else outer
    try:
        yield
    finally:
        _READ = outer


def tune(
    p: Profile, dataset: str, backbone: str, results=None, progress: bool = True
) -> tuple[pd.DataFrame, dict | None]:
    """The tuning stage of one dataset and backbone: every stage's configurations over the tuning
    seeds (trained when missing, unless training is off), and the choice of each stage, the point
    with the best mean validation NDCG@10 (ties: the earlier point). Returns (runs, choice); choice
    is {stage: settings} with every stage, or None while some run is not recorded."""
    # the profile less what `Profile.scoped` and planning change, which no tuning reads
    unscoped = dataclasses.replace(p, datasets=[], seeds=[], scope={}, presume=None, cost="")
    memo = (repr(unscoped), dataset, backbone, str(results))
    kept = _READ if _READ is not None and not p.execution.train else None  # never a training one
    if kept is not None and memo in kept:
        runs_df, choice = kept[memo]
        return runs_df.copy(), _copy_choice(choice)
    walked, choice = _walk(p, dataset, backbone, results, p.execution, progress)
    frames = [df.assign(stage=stage) for stage, _, df in walked]
    runs_df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    choice = choice if len(choice) == len(tuning_stages(p)) else None
    if kept is not None:
        kept[memo] = (runs_df.copy(), _copy_choice(choice))
    return runs_df, choice


def _copy_choice(choice: dict | None) -> dict | None:
    return None if choice is None else {stage: dict(kw) for stage, kw in choice.items()}


def tune_all(p: Profile, results=None, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """`tune` on each of profile `p`'s tuning datasets and backbones, as notebook 00 tables them:
    (their runs, {(dataset, backbone): choice} of the cells tuned whole). A profile whose execution
    does not train reads its records alone: a run not recorded is 'missing'."""
    frames, choices = [], {}
    for d in p.tuning_datasets():
        for b in p.backbones:
            runs_df, choice = tune(p, d, b, results, progress)
            frames.append(runs_df)
            if choice is not None:
                choices[(d, b)] = choice
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), choices


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


def grid_moves(grid: dict, was: dict, now: dict) -> dict:
    """How far each numeric setting of a stage's choice moved from `was` to `now`, {setting: steps
    of its `grid` dimension sorted by value, signed; None: a value not on that grid}, the settings
    that did not move left out. `grid` is the after profile's: the before profile's grids may hold
    other values."""
    out = {}
    for k, v in now.items():
        old = was.get(k)
        if old is None or old == v or isinstance(v, (str, bool)) or k not in grid:
            continue
        values = sorted(grid[k])
        on = old in values and v in values
        out[k] = values.index(v) - values.index(old) if on else None
    return out


def steps_text(moves: dict) -> str:
    """`grid_moves`' moves as text: "lr +1, lambda_kd -2", "lambda_kd off the grid"; "": none."""
    return ", ".join(f"{k} off the grid" if n is None else f"{k} {n:+d}" for k, n in moves.items())


def tuning_change(before: Profile, after: Profile, results=None) -> pd.DataFrame:
    """Each stage's choice under profile `after` beside `before`'s for the same dataset and backbone
    ("before", "after", "moved"; "... tuned on": a profile may borrow another dataset's tuning;
    "after at grid edge": the settings `at_edge`; "grid steps": how far each numeric setting moved,
    `grid_moves` as `steps_text`; "largest grid step": the largest of those moves in absolute
    value, 0 where no setting on its grid moved), for every cell whose tuning under `after` is
    recorded. A stage `before` does not tune shows the setting it runs instead (`UNTUNED`,
    "(fixed)"); where `before`'s tuning is not recorded whole, "before" is blank and "moved" NA.
    Reads the records; trains nothing."""
    columns = ["dataset", "backbone", "stage", "before tuned on", "before", "after tuned on"]
    columns += ["after", "after at grid edge", "moved", "grid steps", "largest grid step"]
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
                moves = {} if was is None else grid_moves(after.tuning[stage], was, new[stage])
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
                        "grid steps": steps_text(moves),
                        "largest grid step": pd.NA
                        if was is None
                        else max((abs(n) for n in moves.values() if n is not None), default=0),
                    }
                )
    return pd.DataFrame(rows, columns=columns)


def edge_frontier(p: Profile, dataset: str, backbone: str, results=None) -> list:
    """The runs of `beyond_edge_grid` not recorded, once the cell's tuning is recorded whole (before:
    none, its choice unknown). Reads the records; trains nothing."""
    _, choice = tune(
        dataclasses.replace(p, execution=Execution(train=False)), dataset, backbone, results, False
    )
    if choice is None:
        return []
    grids = beyond_edge_grid(p, dataset, backbone, choice).values()
    configs = [c for g in grids for cs in g.values() for c in cs]
    df = collect({"past the edge": configs}, results, Execution(train=False), False)
    return [c for c, ok in zip(configs, df.status == "ok") if not ok]


def edge_check(p: Profile, results=None, progress: bool = True) -> pd.DataFrame:
    """Whether each tuned cell's grid brackets its choices: for every stage whose choice lies at an
    edge of its grid (`at_edge`), the mean validation NDCG@10 over the tuning seeds of the chosen
    point and of the point one step past the edge (`beyond_edge_grid`; trained where `p`'s execution
    trains, else read), and "past better": whether the point past the edge scores higher (NA until
    its runs are recorded). A choice past which validation still rises is not the grid's optimum but
    its edge: its method was tuned less than the grid suggests."""
    columns = ["dataset", "backbone", "stage", "setting", "chosen", f"valid {TUNE_METRIC}, chosen"]
    columns += ["past the edge", f"valid {TUNE_METRIC}, past", "recorded", "past - chosen %"]
    columns += ["past better"]
    rows = []
    off = dataclasses.replace(p, execution=Execution(train=False))
    for d in p.tuning_datasets():
        for b in p.backbones:
            df, choice = tune(off, d, b, results, False)
            if choice is None:
                continue
            for (stage, k), grid in beyond_edge_grid(p, d, b, choice).items():
                at = df[(df.stage == stage) & (df.label == point_label(stage, choice[stage]))]
                past = collect(grid, results, p.execution, progress)
                ok = past[past.status == "ok"]
                chosen = at[f"valid {TUNE_METRIC}"].mean()
                value = ok[f"valid {TUNE_METRIC}"].mean() if len(ok) else float("nan")
                whole = len(ok) == len(past)
                rows.append(
                    {
                        "dataset": d,
                        "backbone": b,
                        "stage": stage,
                        "setting": k,
                        "chosen": point_label(stage, choice[stage]),
                        f"valid {TUNE_METRIC}, chosen": chosen,
                        "past the edge": next(iter(grid)),
                        f"valid {TUNE_METRIC}, past": value,
                        "recorded": f"{len(ok)} / {len(past)}",
                        "past - chosen %": 100 * (value - chosen) / chosen,
                        "past better": bool(value > chosen) if whole else pd.NA,
                    }
                )
    return pd.DataFrame(rows, columns=columns)


def teacher_margin(p: Profile, results=None) -> pd.DataFrame:
    """The teacher each cell's tuning chose against the plain student it chose, on validation NDCG@10
    over the tuning seeds, once both stages are recorded (the later stages need not be): per cell the
    two points, their mean validation NDCG@10, the teacher's margin % of the means, and the smallest
    margin of a seed (the same seed's teacher and student). A negative margin is a teacher weaker
    than its own plain student (METHOD.md "A fair comparison"), known here before the main table
    runs (`audit.violations` lists it there). Reads the records; trains nothing."""
    col = f"valid {TUNE_METRIC}"
    columns = ["dataset", "backbone", "teacher", f"teacher {col}", "student", f"student {col}"]
    columns += ["seeds", "margin %", "smallest seed margin %"]
    rows = []
    for d in p.tuning_datasets():
        for b in p.backbones:
            walked, choice = _walk(p, d, b, results, Execution(train=False), False)
            if not {"Teacher", "Student"} <= set(choice):
                continue
            frames = {stage: df for stage, _, df in walked}
            label = {st: point_label(st, choice[st]) for st in ("Teacher", "Student")}
            t, s = (
                frames[st][frames[st].label == label[st]].set_index("seed")[col] for st in label
            )
            both = t.index.intersection(s.index)
            rows.append(
                {
                    "dataset": d,
                    "backbone": b,
                    "teacher": label["Teacher"],
                    f"teacher {col}": t.mean(),
                    "student": label["Student"],
                    f"student {col}": s.mean(),
                    "seeds": len(both),
                    "margin %": 100 * (t.mean() / s.mean() - 1),
                    "smallest seed margin %": (100 * (t[both] / s[both] - 1)).min(),
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
