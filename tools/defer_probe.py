"""A probe of the deferred step's tables (`Config.defer`): the same NeuMF runs of profile `next`
trained for a few epochs with the tables `rowadam.defers` picks (a student's small ones stepped
whole) and with every table deferred (`defer="all"`), one thread, written to
results/bench/defer_cpu.json: seconds per training epoch after the first (which holds the
warm-up's whole-table steps), each epoch's loss and validation NDCG@10 both ways, and whether they
are the same bits (the teacher, whose tables the size rule defers already, should be); and, as a
yardstick of rounding alone, the size rule's validation NDCG@10 on two threads (MKL's products
round by their thread count).

Run it on a quiet machine: its seconds are what the choice rests on.

    python tools/defer_probe.py                        # yelp, the record
    python tools/defer_probe.py --datasets ml-1m       # print, write nothing
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from cdlib import bench, data, loop, profiles, runs

RECORD = "bench/defer_cpu.json"
DATASETS = ("yelp",)
EPOCHS = 3
RUNS = {"NeuMF student, none": dict(size=8, method="none"), "NeuMF teacher": dict(method="none")}


def probe_dataset(dataset: str, epochs: int = EPOCHS) -> list[dict]:
    ds, p, rows = data.load(dataset), profiles.profile("next"), []
    for name, kw in RUNS.items():
        curves = {}
        for defer, threads in ((None, 1), ("all", 1), (None, 2)):
            cfg = dataclasses.replace(
                p.config(dataset, "neumf", 0, **kw), defer=defer, epochs=epochs, min_epochs=1
            ).canonical()
            torch.set_num_threads(threads)
            curves[defer, threads] = loop.fit(cfg, ds, progress=False)["curve"]
        torch.set_num_threads(1)
        size, whole, every = cfg.size, curves[None, 1], curves["all", 1]
        rows.append(
            {
                "dataset": dataset,
                "run": name,
                "size": size,
                "epochs": epochs,
                "size rule s/epoch": sum(c["seconds"] for c in whole[1:]) / (epochs - 1),
                "all s/epoch": sum(c["seconds"] for c in every[1:]) / (epochs - 1),
                "size rule loss": [c["loss"] for c in whole],
                "all loss": [c["loss"] for c in every],
                "size rule valid NDCG@10": [c["valid_NDCG@10"] for c in whole],
                "all valid NDCG@10": [c["valid_NDCG@10"] for c in every],
                "size rule 2 threads valid NDCG@10": [c["valid_NDCG@10"] for c in curves[None, 2]],
                "same bits": all(
                    a["loss"] == b["loss"] and a["valid_NDCG@10"] == b["valid_NDCG@10"]
                    for a, b in zip(whole, every)
                ),
            }
        )
        print(rows[-1], flush=True)
    return rows


def probe(datasets=DATASETS) -> dict:
    torch.set_num_threads(1)
    start = time.time()
    rows = [row for d in datasets for row in probe_dataset(d)]
    return {"runs": rows, "wall_seconds": time.time() - start, "provenance": runs.provenance("cpu")}


def write_record(datasets=DATASETS) -> Path:
    """`probe` on `datasets`, with provenance, to `RECORD`."""
    return bench.write_probe(RECORD, probe(datasets))


if __name__ == "__main__":
    bench.probe_command(__doc__, probe, write_record)
