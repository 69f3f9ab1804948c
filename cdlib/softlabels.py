"""What CD's teacher tells its student about the items it ranks on top (`analyse`): per rank of
the teacher guide's candidates, the mean soft label t = s(z / T) (METHOD.md "The CD loss"), the
share of users above 1/2, and how often the item is the user's held-out one; recorded in
results/analysis/soft_labels_*.json, read back by `records` and tabled by `table`."""

from __future__ import annotations

import dataclasses
import json
import time

import pandas as pd
import torch

from . import index, methods, runs, samplers
from .config import Config, Execution, dataset_for
from .train import load_teacher


def analyse(config: Config, results=None, progress: bool = True, train: bool = False) -> dict:
    """What CD's teacher tells the student about the items it ranks on top: for the teacher of CD run
    `config` and every user, its top `max_rank` missing items (the teacher guide's candidates,
    `samplers.teacher_top_missing`), the soft label t = s(z / T) of each (METHOD.md "The CD loss"),
    and how often the item at each rank is the user's held-out validation or test item (a lower
    bound on the chance that it is a hidden positive). Per rank: the means over users, and the share
    of users whose soft label there is above 1/2 (a mean of 0.4 may be 40% of users near 1 and the
    rest near 0); their means under the rank-aware sampling's p(r) ∝ exp(-r / mu). The teacher's
    weights are read from the cache (train=True: retrained where missing, `train.load_teacher`).
    Written to results/analysis/soft_labels_<teacher key>_T<T>.json with provenance."""
    cfg = config.canonical()
    if cfg.method != "cd":
        raise ValueError(
            f"softlabels.analyse takes a CD run's configuration, got method={cfg.method!r}"
        )
    ds = dataset_for(cfg)
    teacher, sha = load_teacher(cfg, results, progress, Execution(train=train))
    t0 = time.time()
    positives = index.UserItems(ds.train, teacher.device)
    unit = methods.build(cfg, positives, teacher)  # (its teacher_score gives training's labels)
    k = unit.sampler.max_rank
    cand = samplers.teacher_top_missing(teacher, positives, k)  # [users x k], rank 1 first
    users = torch.arange(ds.n_users, device=cand.device)
    z = torch.cat([unit.teacher_score(u, cand[u]) for u in users.split(1024)])
    t = torch.sigmoid(z / cfg.temperature)
    held = {
        name: (cand == torch.as_tensor(items, device=cand.device)[:, None]).float().mean(0)
        for name, items in (("valid", ds.valid_item), ("test", ds.test_item))
    }
    p = unit.sampler.log_weights.softmax(0)  # the sampling's p(r) ∝ exp(-r / mu)
    per_rank = {
        "soft_label": t.mean(0),
        "soft_label_above_half": (t > 0.5).float().mean(0),
        "teacher_logit": z.mean(0),
        **{f"{name}_item_rate": rate for name, rate in held.items()},
    }
    result = {
        "key": cfg.key(),
        "teacher_key": cfg.teacher().key(),
        "teacher_sha256": sha,
        "config": dataclasses.asdict(cfg),
        "max_rank": k,
        "per_rank": {name: v.tolist() for name, v in per_rank.items()},
        "under_sampling": {name: float(p @ v.cpu()) for name, v in per_rank.items()},
        "at_rank": {
            r: {name: float(v[r - 1]) for name, v in per_rank.items()}
            for r in sorted({1, 10, min(50, k), k})
        },
        "wall_seconds": time.time() - t0,
        "dataset": runs.dataset_info(ds),
        "provenance": runs.provenance(teacher.device),
    }
    name = f"soft_labels_{result['teacher_key']}_T{cfg.temperature:g}.json"
    runs.write_atomic(
        runs.results_dir(results) / "analysis" / name, json.dumps(result, indent=1, default=float)
    )
    return result


def records(results=None) -> list[dict]:
    """The analyses `analyse` wrote (results/analysis/soft_labels_*.json), by dataset, backbone
    and temperature."""
    d = runs.results_dir(results) / "analysis"
    found = [json.loads(p.read_text()) for p in sorted(d.glob("soft_labels_*.json"))]
    return sorted(
        found,
        key=lambda a: (a["dataset"]["name"], a["config"]["backbone"], a["config"]["temperature"]),
    )


def table(results=None, ranks=(1, 10, 50)) -> pd.DataFrame:
    """One row per `analyse` analysis: its teacher (learning rate, seed), T, and at `ranks` the
    mean soft label, the share of users whose label is above 1/2 and the rate of the held-out
    validation item; then the mean label and validation-item rate under the sampling's p(r)."""
    rows = []
    for a in records(results):
        c, per = a["config"], a["per_rank"]
        row = {
            "dataset": a["dataset"]["name"],
            "backbone": c["backbone"],
            "teacher": a["teacher_key"],
            "teacher lr": c["teacher_lr"],
            "teacher seed": c["teacher_seed"],
            "T": c["temperature"],
        }
        for r in ranks:
            if r <= a["max_rank"]:
                row[f"label @{r}"] = round(per["soft_label"][r - 1], 4)
                row[f">1/2 @{r}"] = round(per["soft_label_above_half"][r - 1], 3)
                row[f"valid item @{r}"] = round(per["valid_item_rate"][r - 1], 4)
        row["label, p(r)"] = round(a["under_sampling"]["soft_label"], 4)
        row["valid item, p(r)"] = round(a["under_sampling"]["valid_item_rate"], 4)
        rows.append(row)
    return pd.DataFrame(rows)
