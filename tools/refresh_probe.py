"""A probe of the student-guided refresh of CD's ranking (`samplers.top_missing`): how much of a
guided epoch it is, from the records, and the feature-major NeuMF tower (`Config.refresh_tower`)
against the item-major one: their times, and the rankings they give trained models, written to
results/bench/refresh_tower_cpu.json (read by the README).

    python tools/refresh_probe.py                     # the recorded share, per dataset and backbone
    python tools/refresh_probe.py --score citeulike-t # score_all as it is against feature-major
    python tools/refresh_probe.py --agreement         # both, on every trained NeuMF cached here: the record

The feature-major tower computes the same function with the tower's layers as [units x pairs]
products (long rows, where `score_all`'s [pairs x 4] output leaves the vector units half idle); its
sums run in another order, so its scores differ by rounding, and a ranking built on them by ties
broken otherwise (`agreement.ranking_agreement`).
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import torch

from cdlib import agreement, bench, config, costs, index, runs, samplers, train

RECORD = "bench/refresh_tower_cpu.json"
TIMED = ("ml-1m", "citeulike-t", "foursquare", "amazon-music", "yelp")


def recorded_share() -> None:
    """Per dataset, backbone and guide, the refreshes' part of the training time
    (`costs.refresh_share`, from the records)."""
    t = costs.refresh_share()
    print(t.round({"refresh s": 2, "epoch s": 2, "share of training": 2}).to_string(index=False))


def timed(dataset: str, size: int, n_users: int = 1024, repeats: int = 3) -> dict:
    """score_all against score_all_feature_major, one thread, on a model with non-trivial weights:
    the best of `repeats` seconds for `n_users` users (`bench.timed`, after a warm-up call), the
    largest score difference, and the whole refresh of 2 x `n_users` users (`samplers.top_missing`,
    top 100) with each tower."""
    torch.set_num_threads(1)
    model, ds = bench.perturbed_model(dataset, "neumf", size)
    users = torch.arange(min(n_users, ds.n_users))
    out, scores = {"dataset": dataset, "size": size, "users": len(users)}, {}
    pos = index.UserItems(ds.train, torch.device("cpu"))
    refreshed = torch.arange(min(2 * n_users, ds.n_users))
    for name, f, tower in (
        ("item-major", model.score_all, None),
        ("feature-major", model.score_all_feature_major, "feature-major"),
    ):
        scores[name] = f(users)
        out[f"{name} s"] = bench.timed(functools.partial(f, users), repeats)
        refresh = functools.partial(samplers.top_missing, model, pos, 100, refreshed, tower=tower)
        out[f"refresh {name} s"] = bench.timed(refresh, repeats)
    out["speed-up"] = out["item-major s"] / out["feature-major s"]
    out["refresh speed-up"] = out["refresh item-major s"] / out["refresh feature-major s"]
    out["largest score difference"] = float(
        (scores["item-major"] - scores["feature-major"]).abs().max()
    )
    return out


def trained_rankings(n_users: int = 2048) -> list[dict]:
    """`agreement.ranking_agreement` of every NeuMF run recorded with its weights cached here, on its
    dataset's first `n_users` users (a refresh's top `max_rank` = 100 missing items)."""
    torch.set_num_threads(1)
    rows = []
    for r in sorted(runs.all_records(), key=lambda r: r["key"]):
        c = r["config"]
        if c.get("backbone") != "neumf" or not train.weights_file(r["key"]).is_file():
            continue
        cfg = config.Config(**c)
        ds = config.dataset_for(cfg)
        model = train.load_weights(cfg, ds, torch.device("cpu"))
        pos = index.UserItems(ds.train, torch.device("cpu"))
        users = torch.arange(min(n_users, ds.n_users))
        rows.append(
            {
                "key": r["key"],
                "dataset": ds.name,
                "size": c["size"],
                "method": c["method"],
                **agreement.ranking_agreement(model, pos, users),
            }
        )
        print(rows[-1])
    return rows


def write_record(size: int, datasets=TIMED) -> Path:
    """The timings on `datasets` and the trained models' rankings, with provenance, to `RECORD`."""
    start = time.time()
    rec = {
        "timings": [timed(d, size) for d in datasets],
        "rankings": trained_rankings(),
    }
    rec["wall_seconds"] = time.time() - start
    rec["provenance"] = runs.provenance("cpu")
    return bench.write_probe(RECORD, rec)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--score", metavar="DATASET", help="time score_all on DATASET instead")
    ap.add_argument("--agreement", action="store_true", help=f"write results/{RECORD}")
    ap.add_argument("--size", type=int, default=8, help="NeuMF's d (default 8, the student's)")
    a = ap.parse_args()
    if a.agreement:
        print(f"wrote {write_record(a.size)}")
    elif a.score:
        print(timed(a.score, a.size))
    else:
        recorded_share()
