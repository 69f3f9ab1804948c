"""The experiment grids behind the numbered notebooks.

A notebook names a profile (`profiles.profile`) and calls one grid function (`teacher_grid`,
`main_grid`, ...); each returns {label: [Config, ...]}, every method at the settings the tuning
stage chose on validation (`tuning.settings`). `tables.collect` runs or reads them.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from . import tuning
from .config import STUDENT, STUDENT_SIZES, TEACHER_SIZE
from .profiles import TUNING, Profile
from .tables import Pending, collect

SENSITIVITY = {
    "lambda_kd": [0.1, 0.5, 1.0, 2.0],
    "mu": [1.0, 5.0, 10.0, 50.0],
    "temperature": [0.5, 1.0, 2.0, 5.0],
    "n_distill": [5, 10, 20, 50],
}


def _grid(p: Profile, variants: dict, results=None, progress: bool = True) -> dict:
    """{label: [Config (or Pending) for every dataset x backbone x seed]} from {label: fn(backbone,
    tuned settings) -> kwargs}."""
    out = {label: [] for label in variants}
    for d in p.datasets:
        for b in p.backbones:
            tuned = tuning.settings(p, d, b, results, progress)
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
    """Table 4: rank-aware sampling against uniform and top-K selection, per guide (tuned CD settings).
    Uniform sampling reads no guide's ranking, so every guide's uniform row is one run, configured
    with the teacher guide and trained once (the 31 pairs recorded both ways had the same metrics
    and best epoch, bit for bit)."""
    return _grid(
        p,
        {
            f"{samp}/{g}": (
                lambda b, t, samp=samp, g=g: {
                    "size": STUDENT[b],
                    "method": "cd",
                    **t["CD"],
                    "sampling": samp,
                    "guide": "teacher" if samp == "uniform" else g,
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
            tuning.tune(p, d, b, results, progress)[0]
            for d in p.tuning_datasets()
            for b in p.backbones
        ]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return collect(notebook_grid(notebook, p, results), results, p.execution, progress)
