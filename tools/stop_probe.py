"""A probe of early stopping: do recorded runs that stopped at the minimum of epochs (`min_epochs`,
their best epoch long before it) climb past their recorded best when trained on? Each run chosen is
trained again for `--epochs` epochs (`stopping.past_stop`: its recorded epochs checked equal, then
trained on), one thread, written to results/analysis/past_stop_<key>_<epochs>.json; a run already
probed is skipped, so the probe resumes. The runs are the records of the disjoint-negatives protocol
(profile `next`), those the main table uses first (`--main`), then one of each (dataset, backbone,
method) in turn, cheapest first; `--control` takes runs that stopped by patience later instead.

    python tools/stop_probe.py --main                      # the main table's runs stopped at 50
    python tools/stop_probe.py --share 1/2 --minutes 100   # half of the rest, within 100 minutes
    python tools/stop_probe.py --dry                       # list the runs and their estimated cost
"""

from __future__ import annotations

import argparse
import itertools
import time

import pandas as pd
import torch

from cdlib import runs, stopping
from cdlib.config import Config


def order(df: pd.DataFrame) -> pd.DataFrame:
    """Round robin over (dataset, backbone, method), each group cheapest first."""
    groups = [g.sort_values("epoch_s") for _, g in df.groupby(["dataset", "backbone", "method"])]
    groups.sort(key=lambda g: g.epoch_s.iloc[0])
    rows = [r for rs in itertools.zip_longest(*(g.to_dict("records") for g in groups)) for r in rs]
    return pd.DataFrame([r for r in rows if r is not None])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--main", action="store_true", help="the main table's runs only")
    ap.add_argument("--control", action="store_true", help="runs stopped by patience instead")
    ap.add_argument("--share", default="1/1", help="i/n: every n-th run from the i-th")
    ap.add_argument("--minutes", type=float, default=None, help="start no run past this")
    ap.add_argument("--keys", nargs="*", help="only these runs")
    ap.add_argument("--dry", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    i, n = (int(x) for x in a.share.split("/"))
    todo = order(stopping.stopped_early(a.control, a.main)).iloc[i - 1 :: n]
    done = {r.key for r in stopping.past_stop_table().itertuples()} if not a.dry else set()
    todo = todo[~todo.key.isin(done) & (todo.key.isin(a.keys) if a.keys else True)]
    todo = todo.assign(est_min=todo.epoch_s * a.epochs / 60)
    print(todo.to_string(index=False), f"\n{len(todo)} runs, {todo.est_min.sum():.0f} min est.")
    if a.dry:
        return 0
    start = time.time()
    for r in todo.itertuples():
        if a.minutes is not None and (time.time() - start) / 60 + r.est_min > a.minutes:
            print("skipped (past --minutes):", r.key, flush=True)
            continue
        cfg = Config(**runs.read_record(r.key)["config"])
        out = stopping.past_stop(cfg, a.epochs, progress=True)
        rise = stopping.past_stop_row(out)["valid NDCG@10 rise"]
        print(
            r.key,
            r.dataset,
            r.backbone,
            r.method,
            f"best epoch {r.best_epoch} ->",
            out["best_epoch"],
            f"valid NDCG@10 {rise:+.1%}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
