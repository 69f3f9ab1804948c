"""A probe of deferred Adam's row writes (`sparse.put_rows`): training epochs of the deferred step
after its warm-up, the tables' rows written through numpy (`sparse.PUT_NUMPY_MIN`) against
index_copy_ for every write (what every earlier run did), in turn in one process, one thread, the
best epoch of each kept; the two trainings' weights compared bit for bit. Written to
results/bench/put_rows_cpu.json.

    python tools/put_rows_probe.py                      # yelp and citeulike-t: the record
    python tools/put_rows_probe.py --runs ml-100k/cdae  # print, write nothing
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from cdlib import bench, data, loop, runs, sparse
from cdlib.config import TEACHER_SIZE, Config
from cdlib.stepbench import sparse_warmup

RECORD = "bench/put_rows_cpu.json"
RUNS = ("yelp/cdae", "citeulike-t/cdae", "yelp/neumf")  # teachers: the tables with large writes
NEVER = 1 << 62  # PUT_NUMPY_MIN that writes every row by index_copy_


def compare(dataset: str, backbone: str, rounds: int = 3, epochs: int = 2) -> dict:
    """A teacher of `backbone` on `dataset` trained `epochs` epochs each way, `rounds` times in turn:
    the best seconds per epoch of each, and whether their weights are the same bits."""
    ds = data.load(dataset)
    cfg = Config(
        dataset=dataset,
        backbone=backbone,
        step="deferred",
        epochs=epochs,
        patience=epochs,
        min_epochs=epochs,
        plateau=None,
    ).canonical()
    ways = {"index_copy_": NEVER, "numpy": sparse.PUT_NUMPY_MIN}
    seconds = {name: [] for name in ways}
    weights = {}
    with sparse_warmup(0.0):  # (the step of most of a run: after the warm-up)
        try:
            for _ in range(rounds):
                for name, value in ways.items():
                    sparse.PUT_NUMPY_MIN = value
                    out = loop.fit(cfg, ds, progress=False)
                    seconds[name] += [c["seconds"] for c in out["curve"]]
                    weights[name] = out["model"].state_dict()
        finally:
            sparse.PUT_NUMPY_MIN = ways["numpy"]
    a, b = weights.values()
    best = {name: min(s) for name, s in seconds.items()}
    return {
        "dataset": dataset,
        "run": f"{backbone} teacher (size {TEACHER_SIZE[backbone]}), deferred step",
        **{f"{name} s/epoch": s for name, s in best.items()},
        "speed-up": best["index_copy_"] / best["numpy"],
        "same weights": all(torch.equal(a[k], b[k]) for k in a),
    }


def probe(which=RUNS, rounds: int = 3, epochs: int = 2) -> dict:
    torch.set_num_threads(1)
    start = time.time()
    rows = []
    for run in which:
        dataset, backbone = run.split("/")
        rows.append(compare(dataset, backbone, rounds, epochs))
        print(rows[-1], flush=True)
    return {
        "rows": rows,
        "put_numpy_min": sparse.PUT_NUMPY_MIN,
        "wall_seconds": time.time() - start,
        "provenance": runs.provenance("cpu"),
    }


def write_record(which=RUNS, rounds: int = 3, epochs: int = 2) -> Path:
    """`probe`, with provenance, to `RECORD`."""
    return bench.write_probe(RECORD, probe(which, rounds, epochs))


if __name__ == "__main__":
    bench.probe_command(__doc__, probe, write_record, "--runs", "dataset/backbone")
