"""Protocol analyses that notebooks and tests call on recorded runs: how much choosing the epoch on
test would add (`best_test_epoch`), whose seed an early collapse follows (`first_epochs`), and
whether a group trains as its runs alone (`group_agreement`). Whether early stopping ended runs
before they converged is in `stopping`; what a CD teacher's soft labels say is in `softlabels`; the
paired tables of configurations run two ways (devices, shapes, steps) are in `agreement`."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pandas as pd
import torch

from . import metrics, models, runs
from .config import TEACHER_SIZE, Config, Execution, dataset_for, recorded
from .loop import check_group, fit, fit_group
from .train import differences, load_teacher, run


def best_test_epoch(
    config: Config,
    results=None,
    progress: bool = True,
    valid_in_train: bool = False,
    epochs: int = 50,
) -> dict:
    """How much choosing the epoch on test would add (NCF reports its best test epoch): the recorded
    run of `config` is trained again with each epoch's test metrics tracked, its learning curve checked
    equal to the record's (the run is deterministic), and the test HR@10 / NDCG@10 of the best
    validation epoch set beside the best over all epochs. Written to results/analysis/ with provenance.

    valid_in_train=True measures NCF's whole protocol instead: the model is trained on all but the
    test item (`Dataset.with_valid_in_train`) for exactly `epochs` epochs, and the best test epoch is
    reported. Teachers only (a student would need a teacher trained on the same data)."""
    cfg = config.canonical()
    if valid_in_train and cfg.has_teacher:
        raise ValueError("best_test_epoch(valid_in_train=True) is for runs without distillation")
    rec = run(cfg, results, progress=progress)
    ds = dataset_for(cfg)
    teacher = load_teacher(cfg, results, progress)[0] if cfg.has_teacher else None
    t0 = time.time()
    if valid_in_train:
        ds = ds.with_valid_in_train()
        fit_cfg = dataclasses.replace(
            cfg, epochs=epochs, min_epochs=min(epochs, cfg.min_epochs), patience=epochs
        )
        out = fit(fit_cfg, ds, None, progress, track_test=True)
    else:
        out = fit(cfg, ds, teacher, progress, track_test=True)
        diff = differences(
            {"curve": rec["curve"]},
            {
                "curve": [
                    {k: v for k, v in e.items() if not k.startswith("test_")} for e in out["curve"]
                ]
            },
        )
        if diff:
            raise RuntimeError(
                f"run {rec['key']} did not reproduce its recorded curve: {diff} (recorded on "
                f"{runs.describe_arithmetic(rec['provenance'])}, retrained on "
                f"{runs.describe_arithmetic(runs.provenance(out['model'].device))}: runs agree bit "
                "for bit only on the same instruction set and thread count)"
            )
    best = max(out["curve"], key=lambda e: e["test_HR@10"])
    result = {
        "key": rec["key"],
        "config": dataclasses.asdict(cfg),
        "best_valid_epoch": rec["best_epoch"],
        "test_at_best_valid_epoch": {m: rec["test_sampled"][m] for m in ("HR@10", "NDCG@10")},
        "best_test_epoch": best["epoch"],
        "test_at_best_test_epoch": {m: best[f"test_{m}"] for m in ("HR@10", "NDCG@10")},
        "valid_in_train": valid_in_train,
        "epochs": len(out["curve"]),
        "curve": out["curve"],
        "reproduced_record_curve": not valid_in_train,
        "wall_seconds": time.time() - t0,
        "dataset": runs.dataset_info(ds),
        "provenance": runs.provenance(out["model"].device),
    }
    name = "ncf_protocol" if valid_in_train else "best_test_epoch"
    runs.write_atomic(
        runs.results_dir(results) / "analysis" / f"{name}_{rec['key']}.json",
        json.dumps(result, indent=1, default=str),
    )
    return result


def first_epochs(config: Config, teacher_seeds, epochs: int = 1, results=None) -> dict:
    """Whose seed an early collapse follows, the student's or its teacher's: the first `epochs` epochs
    of student `config` are trained again with each of `teacher_seeds` (recorded, cached teachers;
    none is trained here) and, beside them, of the plain student of the same seed (a plain `config`,
    method "none", with no `teacher_seeds`: that student alone). Each row gives the learning curve
    and, for NeuMF, how many units of the MLP tower's last layer are active on the validation pairs
    after those epochs (0: the tower is dead). The row of the config itself (its own teacher's, or
    the plain run's) is checked against the record's first epochs where the run is recorded. Written
    to results/analysis/first_epochs_<key>.json with provenance."""
    cfg = config.canonical()
    if teacher_seeds and not cfg.has_teacher:
        raise ValueError(
            "first_epochs compares the teachers of a distilled student; a plain run (method 'none') "
            f"takes no teacher_seeds, got {list(teacher_seeds)}"
        )
    ds = dataset_for(cfg)
    short = {"epochs": epochs, "min_epochs": epochs, "patience": epochs}
    plain = Config(**{**dataclasses.asdict(cfg), "method": "none"}).canonical()
    arms = [(None, plain)] + [
        (int(s), dataclasses.replace(cfg, teacher_seed=int(s))) for s in teacher_seeds
    ]
    users = torch.arange(ds.n_users)
    t0, rows = time.time(), []
    for tseed, c in arms:
        teacher = (
            load_teacher(c, results, progress=False, execution=Execution(train=False))[0]
            if tseed is not None
            else None
        )
        out = fit(dataclasses.replace(c, **short), ds, teacher, progress=False)
        model = out["model"]
        units = (
            model.tower_units(
                users.to(model.device), torch.as_tensor(ds.valid_item, device=model.device)
            )
            if isinstance(model, models.NeuMF)
            else None
        )
        rows.append(
            {
                "method": c.method,
                "student_seed": c.seed,
                "teacher_seed": tseed,
                "key": c.key(),
                "curve": out["curve"],
                "tower_units_active": units,
                "tower_units": model.layer2.out_features
                if isinstance(model, models.NeuMF)
                else None,
            }
        )
    rec = runs.read_record(cfg.key(), results)
    own = (
        rows[0]
        if not cfg.has_teacher
        else next((r for r in rows if r["teacher_seed"] == cfg.teacher_seed), None)
    )
    reproduced = None
    if rec is not None and own is not None:
        reproduced = not differences({"curve": rec["curve"][:epochs]}, {"curve": own["curve"]})
    result = {
        "key": cfg.key(),
        "config": dataclasses.asdict(cfg),
        "epochs": epochs,
        "rows": rows,
        "reproduced_record_curve": reproduced,
        "wall_seconds": time.time() - t0,
        "dataset": runs.dataset_info(ds),
        "provenance": runs.provenance(models.default_device(cfg.device)),
    }
    runs.write_atomic(
        runs.results_dir(results) / "analysis" / f"first_epochs_{cfg.key()}.json",
        json.dumps(result, indent=1, default=str),
    )
    return result


def group_agreement(configs, results=None, progress: bool = True) -> dict:
    """Does training in a group change a run? The runs `configs` (one stackable group; their teachers
    recorded and cached) trained alone and as one group (`fit_group`); per run the largest loss difference
    over the first 5 epochs, the first epoch whose loss or validation NDCG@10 differs, the epochs run and
    the test NDCG@10 (sampled) of both, and their means and standard deviations over the runs. Written to
    results/analysis/group_agreement_<first key>.json."""
    cfgs = [c.canonical() for c in configs]
    check_group(cfgs)
    ds = dataset_for(cfgs[0])
    teachers = [
        load_teacher(c, results, progress, Execution(train=False))[0] if c.has_teacher else None
        for c in cfgs
    ]
    t0 = time.time()
    alone = [fit(c, ds, t, progress) for c, t in zip(cfgs, teachers)]
    t1 = time.time()
    group = fit_group(cfgs, ds, teachers, progress)
    t2 = time.time()
    rows = []
    for c, a, g in zip(cfgs, alone, group):
        ndcg = [metrics.evaluate(o["model"], ds, "test", "sampled")["NDCG@10"] for o in (a, g)]
        same = [
            x["loss"] == y["loss"] and x["valid_NDCG@10"] == y["valid_NDCG@10"]
            for x, y in zip(a["curve"], g["curve"])
        ]
        rows.append(
            {
                "key": c.key(),
                "seed": c.seed,
                "first_epochs_max_loss_difference": max(
                    abs(x["loss"] - y["loss"]) for x, y in zip(a["curve"][:5], g["curve"][:5])
                ),
                "first_different_epoch": same.index(False) + 1 if False in same else None,
                "epochs_alone": len(a["curve"]),
                "epochs_group": len(g["curve"]),
                "test_NDCG@10_alone": ndcg[0],
                "test_NDCG@10_group": ndcg[1],
            }
        )
    a, g = (np.array([r[f"test_NDCG@10_{k}"] for r in rows]) for k in ("alone", "group"))
    result = {
        "configs": [dataclasses.asdict(c) for c in cfgs],
        "runs": rows,
        "test_NDCG@10": {
            "alone_mean": a.mean(),
            "alone_sd": a.std(ddof=1) if len(a) > 1 else 0.0,
            "group_mean": g.mean(),
            "group_sd": g.std(ddof=1) if len(g) > 1 else 0.0,
        },
        "within_one_sd": bool(abs(a.mean() - g.mean()) <= (a.std(ddof=1) if len(a) > 1 else 0.0)),
        "seconds": {"alone": t1 - t0, "group": t2 - t1},
        "dataset": runs.dataset_info(ds),
        "provenance": runs.provenance(models.default_device(cfgs[0].device)),
    }
    runs.write_atomic(
        runs.results_dir(results) / "analysis" / f"group_agreement_{cfgs[0].key()}.json",
        json.dumps(result, indent=1, default=float),
    )
    return result


NCF_NEUMF_HR10 = (
    0.70  # NCF (He et al. 2017), ml-1m, NeuMF without pre-training, 64 predictive factors [paper]
)


def teacher_variants(
    dataset: str = "ml-1m", backbone: str = "neumf", seeds=(0, 1), results=None
) -> pd.DataFrame:
    """Every recorded teacher-size run of one dataset and backbone under the fair protocol, one row per
    seed and setting (learning rate, tower width, weight decay): validation and test HR@10 and the best
    epoch; where `analyses.best_test_epoch` was run, the test HR@10 of the best *test* epoch (how NCF
    reports), and where it was run with valid_in_train, that of NCF's whole protocol (trained on all
    but the test item, best test epoch), so that the part of a gap to a published number that is
    protocol can be read off."""
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    analyses = {"best_test_epoch": {}, "ncf_protocol": {}}
    d = runs.results_dir(results) / "analysis"
    for kind, found in analyses.items():
        for p in sorted(d.glob(f"{kind}_*.json")) if d.is_dir() else []:
            a = json.loads(p.read_text())
            found[a["key"]] = a
    rows = []
    for r in runs.all_records(results):
        c = r["config"]
        if (c["dataset"], c["backbone"], c["method"], c["size"]) != (
            dataset,
            backbone,
            "none",
            TEACHER_SIZE[backbone],
        ) or c["seed"] not in seeds:
            continue
        if "min_epochs" not in c or recorded(c, "step") != "dense":
            continue  # the fair protocol's runs, with the step every table uses
        a, n = analyses["best_test_epoch"].get(r["key"]), analyses["ncf_protocol"].get(r["key"])
        rows.append(
            {
                "seed": c["seed"],
                "lr": c["lr"],
                "mlp_scale": c.get("mlp_scale"),
                "weight_decay": c["weight_decay"],
                "best epoch": r["best_epoch"],
                "valid HR@10": r["valid_sampled"]["HR@10"],
                "test HR@10": r["test_sampled"]["HR@10"],
                "test HR@10 at the best test epoch": a["test_at_best_test_epoch"]["HR@10"]
                if a
                else np.nan,
                "best test epoch": a["best_test_epoch"] if a else np.nan,
                "test HR@10, NCF protocol": n["test_at_best_test_epoch"]["HR@10"] if n else np.nan,
                "its best test epoch": f"{n['best_test_epoch']} of {n['epochs']}" if n else "",
            }
        )
    cols = [
        "seed",
        "lr",
        "mlp_scale",
        "weight_decay",
        "best epoch",
        "valid HR@10",
        "test HR@10",
        "test HR@10 at the best test epoch",
        "best test epoch",
        "test HR@10, NCF protocol",
        "its best test epoch",
    ]
    out = pd.DataFrame(rows, columns=cols).sort_values(
        ["mlp_scale", "weight_decay", "lr", "seed"], ignore_index=True
    )
    hr = [c for c in cols if "HR@10" in c]
    out[hr] = out[hr].astype(float).round(4)
    out["best test epoch"] = out["best test epoch"].astype("Int64")
    out["weight_decay"] = out["weight_decay"].map(lambda v: f"{v:g}")
    return out


def retrained_towers(results=None) -> dict:
    """{run key: active units of its MLP tower's last layer after its first epoch} for the NeuMF
    runs `first_epochs` retrained for one epoch (results/analysis/first_epochs_*.json): the
    measurement behind `audit.first_epoch_drops`' proxy."""
    d = runs.results_dir(results) / "analysis"
    out = {}
    for p in sorted(d.glob("first_epochs_*.json")) if d.is_dir() else []:
        a = json.loads(p.read_text())
        if a["epochs"] == 1:
            out.update(
                (r["key"], r["tower_units_active"])
                for r in a["rows"]
                if r.get("tower_units_active") is not None
            )
    return out


def first_epochs_table(results=None) -> pd.DataFrame:
    """The analyses of `analyses.first_epochs`, one row per arm: the student and teacher seeds, the loss and
    validation NDCG@10 after the retrained epochs, the MLP tower's initialisation and active units
    (NeuMF, `Config.mlp_init`), and the best validation NDCG@10 of the recorded run of that arm, where
    there is one."""
    d = runs.results_dir(results) / "analysis"
    rows = []
    for p in sorted(d.glob("first_epochs_*.json")) if d.is_dir() else []:
        a = json.loads(p.read_text())
        c = a["config"]
        weight = c["lambda_kd"] if c["method"] == "cd" else c["lambda_rd"]
        for r in a["rows"]:
            rec = runs.read_record(r["key"], results)
            last = r["curve"][-1]
            rows.append(
                {
                    "dataset": c["dataset"],
                    "backbone": c["backbone"],
                    "run": "plain student"
                    if r["method"] == "none"
                    else f"{r['method'].upper()} λ={weight:g}",
                    "lr": c["lr"],
                    "mlp init": c.get("mlp_init") or "torch" if c["backbone"] == "neumf" else "",
                    "student seed": r["student_seed"],
                    "teacher seed": "" if r["teacher_seed"] is None else r["teacher_seed"],
                    f"loss, epoch {a['epochs']}": round(last["loss"], 4),
                    f"valid NDCG@10, epoch {a['epochs']}": round(last["valid_NDCG@10"], 4),
                    "tower units active": ""
                    if r["tower_units"] is None
                    else f"{r['tower_units_active']} of {r['tower_units']}",
                    "recorded run, best valid NDCG@10": round(rec["valid_sampled"]["NDCG@10"], 4)
                    if rec
                    else np.nan,
                }
            )
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["teacher seed"] = out["teacher seed"].astype(str)  # the plain student has none
    return out.drop_duplicates().sort_values(
        ["dataset", "backbone", "mlp init", "student seed", "run", "lr", "teacher seed"],
        ignore_index=True,
    )


def protocol_gap(tv: pd.DataFrame, target: float = NCF_NEUMF_HR10) -> str:
    """One sentence on the runs of `teacher_variants` that were also trained under NCF's protocol:
    their mean test HR@10 under ours and under NCF's, against the published `target`."""
    both = tv.dropna(subset=["test HR@10, NCF protocol"])
    if both.empty:
        return ""
    ours, ncf = both["test HR@10"].mean(), both["test HR@10, NCF protocol"].mean()
    runs_ = "; ".join(
        f"lr={r.lr:g}, mlp_scale={r.mlp_scale}, seed {r.seed}" for r in both.itertuples()
    )
    out = (
        f"Over the {len(both)} runs trained both ways ({runs_}): test HR@10 {ours:.4f} under this project's "
        f"protocol, {ncf:.4f} under NCF's, so {ncf - ours:+.4f} of the gap to {target:.2f} is protocol and "
        + (
            f"{target - ncf:+.4f} remains."
            if ncf < target
            else f"none remains (NCF's protocol exceeds it by {ncf - target:.4f})."
        )
    )
    settings = both.groupby(["lr", "mlp_scale", "weight_decay"], sort=True)
    if settings.ngroups > 1:
        out += (
            " Per setting: "
            + "; ".join(
                f"lr={lr:g}, mlp_scale={ms}"
                + (f", weight_decay={wd}" if float(wd) else "")
                + f" (seed{'s' if len(g) > 1 else ''} {', '.join(str(s) for s in g.seed)}): {g['test HR@10'].mean():.4f} "
                f"under ours, {g['test HR@10, NCF protocol'].mean():.4f} under NCF's"
                for (lr, ms, wd), g in settings
            )
            + "."
        )
    return out
