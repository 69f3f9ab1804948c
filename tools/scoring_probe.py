"""A probe of two scoring paths made faster without changing a bit of what they compute, on
models with weights of a trained model's scale (`bench.perturbed_model`), one thread, written to
results/bench/scoring_cpu.json:

- a NeuMF's sampled validation (`metrics.evaluate`, 1,024 users x 100 candidates a batch):
  `NeuMF.score` (cache-sized chunks, the first layer's item half once an item) against the per-pair
  path on the whole batch that every earlier run validated with (`Recommender.score`);
- the item-major ranking of every user's missing items (`samplers.top_missing`, a CDAE student's
  refresh and a teacher's once-a-run ranking): equal batches of at most `samplers.RANK_USERS` users
  against 1024 users a batch.

Each pair is timed (`bench.timed`: the best of `repeats` after a warm-up call) and compared: the
validation's metrics and the first batch's scores, the rankings, bit for bit.

    python tools/scoring_probe.py                          # ml-1m, citeulike-t, yelp: the record
    python tools/scoring_probe.py --datasets ml-100k       # print, write nothing
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import torch

from cdlib import bench, index, metrics, models, runs, samplers

RECORD = "bench/scoring_cpu.json"
DATASETS = ("ml-1m", "citeulike-t", "yelp")


def validation(dataset: str, size: int, repeats: int = 3) -> dict:
    """A NeuMF (dimension `size`) validated both ways: seconds, and whether they agree exactly."""
    model, ds = bench.perturbed_model(dataset, "neumf", size)
    per_pair = functools.partial(models.Recommender.score, model)
    ways = {"per pair": per_pair, "chunked": model.score}
    out, got = {"dataset": dataset, "model": f"NeuMF d={size}"}, {}
    users = torch.arange(min(1024, ds.n_users))
    cand = torch.from_numpy(ds.negatives[: len(users)])
    for name, score in ways.items():
        model.score = score  # (an instance attribute: what metrics.evaluate calls)
        run = functools.partial(metrics.evaluate, model, ds, "valid", "sampled")
        out[f"{name} s"] = bench.timed(run, repeats)
        got[name] = (run(), score(users, cand))
    del model.score
    out["speed-up"] = out["per pair s"] / out["chunked s"]
    out["same metrics"] = got["per pair"][0] == got["chunked"][0]
    out["same scores"] = torch.equal(got["per pair"][1], got["chunked"][1])
    return out


def ranking(dataset: str, size: int, repeats: int = 2) -> dict:
    """A CDAE (`size` hidden units) ranking every user's top 100 missing items both ways."""
    model, ds = bench.perturbed_model(dataset, "cdae", size)
    pos = index.UserItems(ds.train, torch.device("cpu"))
    out, got = {"dataset": dataset, "model": f"CDAE H={size}"}, {}
    for name, batch in (("1024 users", 1024), (f"<= {samplers.RANK_USERS} users", None)):
        run = functools.partial(samplers.top_missing, model, pos, 100, batch_size=batch)
        out[f"{name} s"] = bench.timed(run, repeats)
        got[name] = run()
    a, b = got.values()
    out["speed-up"] = out["1024 users s"] / out[f"<= {samplers.RANK_USERS} users s"]
    out["same ranking"] = torch.equal(a, b)
    return out


def probe(datasets=DATASETS) -> dict:
    torch.set_num_threads(1)
    start = time.time()
    rec = {
        "validation": [validation(d, s) for d in datasets for s in (64, 8)],
        "ranking": [ranking(d, s) for d in datasets for s in (20, 200)],
    }
    for row in rec["validation"] + rec["ranking"]:
        print(row, flush=True)
    rec["wall_seconds"] = time.time() - start
    rec["provenance"] = runs.provenance("cpu")
    return rec


def write_record(datasets=DATASETS) -> Path:
    """`probe` on `datasets`, with provenance, to `RECORD`."""
    return bench.write_probe(RECORD, probe(datasets))


if __name__ == "__main__":
    bench.probe_command(__doc__, probe, write_record)
