"""A probe of issue 22's last lever, steps of more users (more interactions) per step: one
configuration without distillation (a teacher, or a plain student) trained to convergence at several (users per step, learning rate) points, seed 0,
step="deferred", validation negatives disjoint from the test's (profile `next`'s rules); nothing is
recorded in results/ (a probe, not a table).

    python tools/batch_probe.py citeulike-t neumf 8 16:1e-2 16:3e-3 64:1e-2 64:3e-2 256:1e-2 256:3e-2

prints one JSON line per point: epochs run, best epoch, validation and test NDCG@10 (sampled; test
also full) and wall seconds.
"""

import argparse
import json
import time

import torch

from cdlib import data
from cdlib.config import Config
from cdlib.loop import evaluate, fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("backbone", choices=["cdae", "neumf"])
    ap.add_argument("size", type=int)
    ap.add_argument("points", nargs="+", help="users per step:learning rate, e.g. 64:1e-2")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    points = []
    for point in args.points:
        users, _, lr = point.partition(":")
        try:
            points.append((int(users), float(lr)))
        except ValueError:
            ap.error(f"point {point!r}: expected users per step:learning rate, e.g. 64:1e-2")
    ds = data.load(args.dataset)
    for users, lr in points:
        cfg = Config(
            dataset=args.dataset,
            backbone=args.backbone,
            size=args.size,
            step="deferred",
            valid_negatives="disjoint",
            batch_size=int(users),
            lr=float(lr),
        ).canonical()
        t = time.time()
        out = fit(cfg, ds, None, progress=False)
        wall = time.time() - t
        ev = evaluate(out["model"], ds, cfg)
        print(
            json.dumps(
                {
                    "users per step": int(users),
                    "lr": float(lr),
                    "epochs": len(out["curve"]),
                    "best epoch": out["best_epoch"],
                    "valid NDCG@10": round(ev["valid_sampled"]["NDCG@10"], 4),
                    "test NDCG@10": round(ev["test_sampled"]["NDCG@10"], 4),
                    "test NDCG@10 (full)": round(ev["test_full"]["NDCG@10"], 4),
                    "wall s": round(wall, 1),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
