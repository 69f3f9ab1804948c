"""Did early stopping end runs before they converged? The records that stopped at their minimum of
epochs (`stops`, `stopped_early`), a recorded run trained on past its stop (`past_stop`), and the
probes as a table (`past_stop_row`, `past_stop_table`; README "Runs early stopping ended at its
minimum", tools/stop_probe.py)."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pandas as pd

from . import runs
from .config import Config, dataset_for
from .loop import evaluate, fit, rising, still_rising
from .profiles import PROFILES
from .train import differences, load_teacher

NEAR = 5  # a run "stopped at the minimum" stopped within this many epochs of min_epochs
END = ("patience", "rise", "rise_t")  # the settings `loop.still_rising` reads, as the run had them
CLIMB = 0.01  # trained on, a run "climbed" when it beat its best up to the stop by more than this


def at_minimum(epochs_run: int, min_epochs: int) -> bool:
    """Whether a run that ran `epochs_run` epochs stopped at its minimum (within `NEAR` of it)."""
    return epochs_run <= min_epochs + NEAR


def stops(main: bool = False, results=None) -> pd.DataFrame:
    """The records of profile `next`'s protocol (disjoint validation negatives, cap 1000, all
    users, NeuMF's initialised as NCF's code does) that early stopping ended before epoch 200, a
    row each with its seconds an epoch (`runs.run_seconds`) and `at_min`: whether it ended at the
    minimum of epochs (within `NEAR` of `min_epochs`); `main`: only those of
    results/next/03_main_runs.csv. Reads each record once."""
    keep = None
    if main:
        m = pd.read_csv(runs.results_dir(results) / "next" / "03_main_runs.csv")
        keep = set(m.key[m.status == "ok"])
    rows = []
    for rec in runs.all_records(results):
        c = rec.get("config", {})
        if c.get("valid_negatives") != "disjoint" or c.get("epochs") != 1000:
            continue
        if c.get("subset_users") is not None or (keep is not None and rec["key"] not in keep):
            continue
        if c.get("backbone") == "neumf" and c.get("mlp_init") != PROFILES["next"].mlp_init:
            continue  # NeuMF records from before `next` took NCF's initialisation (README)
        at_min = at_minimum(rec["epochs_run"], c["min_epochs"])
        if not at_min and rec["epochs_run"] >= 200:
            continue
        rows.append(
            {
                "key": rec["key"],
                **{k: c[k] for k in ("dataset", "backbone", "method", "size", "lr", "seed")},
                "stopped": rec["epochs_run"],
                "best_epoch": rec["best_epoch"],
                "epoch_s": runs.run_seconds(rec) / rec["epochs_run"],
                "at_min": at_min,
            }
        )
    return pd.DataFrame(rows, columns=None if rows else ["key", "at_min"])


def stopped_early(control: bool = False, main: bool = False, results=None) -> pd.DataFrame:
    """`stops` ended at the minimum of epochs (with `control`: those patience ended later, before
    epoch 200)."""
    s = stops(main, results)
    return s[s.at_min != control].drop(columns="at_min").reset_index(drop=True)


def past_stop(config: Config, epochs: int = 200, results=None, progress: bool = True) -> dict:
    """Did early stopping end a recorded run before it converged? The run of `config` (recorded; its
    teacher's weights cached or retrained) is trained again for exactly `epochs` epochs (its cap,
    minimum and patience all `epochs`), each epoch's test HR@10 / NDCG@10 (sampled) tracked (no
    random numbers drawn: the same run). Its first epochs are checked equal to the record's learning
    curve: a mismatch raises where the record's arithmetic is this machine's
    (`runs.bit_for_bit_expected`), else the retraining is another draw of the same run and says so
    (`reproduced_record_curve`, `differences`). The best validation NDCG@10 (sampled) over all
    `epochs`, its epoch and the metrics of that epoch's model are set beside the record's. Written
    to results/analysis/past_stop_<key>_<epochs>.json with provenance."""
    cfg = config.canonical()
    rec = runs.read_record(cfg.key(), results)
    if rec is None:
        raise ValueError(f"run {cfg.key()} is not recorded: past_stop extends recorded runs only")
    if rec["epochs_run"] >= epochs:
        raise ValueError(
            f"run {cfg.key()} ran {rec['epochs_run']} epochs already, not fewer than epochs={epochs}"
        )
    ds = dataset_for(cfg)
    teacher = load_teacher(cfg, results, progress)[0] if cfg.has_teacher else None
    long = dataclasses.replace(cfg, epochs=epochs, min_epochs=epochs, patience=epochs)
    t0 = time.time()
    out = fit(long, ds, teacher, progress, desc=f"past stop {cfg.key()}", track_test=True)
    valid = [{k: v for k, v in e.items() if not k.startswith("test_")} for e in out["curve"]]
    diff = differences({"curve": rec["curve"]}, {"curve": valid[: rec["epochs_run"]]})
    here = runs.provenance(out["model"].device)
    if diff and runs.bit_for_bit_expected(rec["provenance"], here) is not False:
        raise RuntimeError(
            f"run {rec['key']} did not reproduce its recorded curve: {diff} (recorded on "
            f"{runs.describe_arithmetic(rec['provenance'])}, retrained on "
            f"{runs.describe_arithmetic(here)})"
        )
    result = {
        "key": rec["key"],
        "config": dataclasses.asdict(cfg),
        "epochs": epochs,
        "recorded": {
            k: rec[k] for k in ("epochs_run", "best_epoch", "valid_sampled", "test_sampled")
        }
        | {"test_full": rec.get("test_full")},
        "best_epoch": out["best_epoch"],
        **evaluate(out["model"], ds, cfg),
        "curve": out["curve"],
        "reproduced_record_curve": not diff,
        "differences": diff,
        "wall_seconds": time.time() - t0,
        "dataset": runs.dataset_info(ds),
        "provenance": here,
    }
    runs.write_atomic(
        runs.results_dir(results) / "analysis" / f"past_stop_{rec['key']}_{epochs}.json",
        json.dumps(result, indent=1, default=str),
    )
    return result


def past_stop_row(a: dict) -> dict:
    """One `past_stop` analysis `a` as a row: the run, its recorded stop and best epoch, whether its
    retraining reproduced the record, and how much its best validation NDCG@10 (sampled) and the
    test HR@10 / NDCG@10 of that epoch rise when trained on to `epochs`, over the best of the same
    retraining's epochs up to the recorded stop (the record's own where reproduced; its full-ranking
    test only there). `rise_epoch`: the first epoch whose validation NDCG@10 beat that best by more
    than `CLIMB`; "after the stop": the best validation NDCG@10 of the epochs past the stop,
    relative to that best. `at_min`: whether the record stopped at its minimum of epochs (within `NEAR`), else
    the probe was a control (`tools/stop_probe.py --control`). "rising at the end": whether the
    probe's last `patience` epochs still rise as early stopping's rule reads them
    (`loop.still_rising`), so that the probe ended a climb, not a run; "end rise": their line's rise
    as a fraction of the probe's best (`loop.rising`)."""
    c, r, curve = a["config"], a["recorded"], a["curve"]
    patience, rise, rise_t = (c.get(k, getattr(Config, k)) for k in END)
    stop, same = r["epochs_run"], a["reproduced_record_curve"]
    at = max(curve[:stop], key=lambda e: e["valid_NDCG@10"])
    best = at["valid_NDCG@10"]
    over = [e["epoch"] for e in curve if e["valid_NDCG@10"] > (1 + CLIMB) * best]
    row = {
        "key": a["key"],
        **{k: c[k] for k in ("dataset", "backbone", "method", "size", "lr", "seed")},
        "stopped": stop,
        "at_min": at_minimum(stop, c["min_epochs"]),
        "best_epoch": r["best_epoch"],
        "reproduced": same,
        "epochs": a["epochs"],
        "new_best_epoch": a["best_epoch"],
        "valid NDCG@10 rise": a["valid_sampled"]["NDCG@10"] / best - 1,
        "rise_epoch": over[0] if over else None,
        "after the stop": max(e["valid_NDCG@10"] for e in curve[stop:]) / best - 1,
        "rising at the end": still_rising(curve, patience, rise, rise_t),
        "patience": patience,
        "end rise": (rising(curve, patience) or (np.nan,))[0],
    }
    for m in ("HR@10", "NDCG@10"):
        old = r["test_sampled"][m] if same else at[f"test_{m}"]
        row[f"test {m} sampled rise"] = a["test_sampled"][m] / old - 1
        old = (r.get("test_full") or {}).get(m) if same else None
        row[f"test {m} full rise"] = a["test_full"][m] / old - 1 if old else np.nan
    return row


def past_stop_table(results=None) -> pd.DataFrame:
    """A row per `past_stop` analysis in results/analysis/ (`past_stop_row`)."""
    files = sorted((runs.results_dir(results) / "analysis").glob("past_stop_*.json"))
    return pd.DataFrame([past_stop_row(json.loads(f.read_text())) for f in files])
