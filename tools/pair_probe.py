"""A probe of the pair kernel (`cdlib/pairkernel.py`): training epochs of sparse NeuMFs with the
extension against autograd's graph of `_pairs`, in turn in one process, one thread, deferred Adam
after its warm-up, the best epoch of each kept; the two trainings' weights compared bit for bit.
Written to results/bench/pair_kernel_cpu.json.

    python tools/pair_probe.py                          # the record
    python tools/pair_probe.py --runs ml-100k/8         # print, write nothing
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from cdlib import bench, data, loop, pairkernel, runs
from cdlib.config import Config
from cdlib.stepbench import sparse_warmup

RECORD = "bench/pair_kernel_cpu.json"
RUNS = ("citeulike-t/8", "citeulike-t/64", "yelp/8")  # dataset/size: students and a teacher


def compare(dataset: str, size: int, rounds: int = 3, epochs: int = 2) -> dict:
    """A NeuMF of `size` (plain, NCF's initialisation) on `dataset` trained `epochs` epochs each way,
    `rounds` times in turn: the best seconds per epoch of each, and whether their weights are the
    same bits."""
    ext = pairkernel.load()
    if ext is None:
        raise SystemExit("the pair extension did not build here: nothing to compare")
    ds = data.load(dataset)
    cfg = Config(
        dataset=dataset, backbone="neumf", size=size, step="deferred", mlp_init="ncf",
        epochs=epochs, patience=epochs, min_epochs=epochs, plateau=None,
    ).canonical()  # fmt: skip
    ways = {"autograd": None, "extension": ext}
    seconds = {name: [] for name in ways}
    weights = {}
    load = pairkernel.load
    with sparse_warmup(0.0):  # (the step of most of a run: after the warm-up)
        try:
            for _ in range(rounds):
                for name, way in ways.items():
                    pairkernel.load = lambda way=way: way
                    out = loop.fit(cfg, ds, progress=False)
                    seconds[name] += [c["seconds"] for c in out["curve"]]
                    weights[name] = out["model"].state_dict()
        finally:
            pairkernel.load = load
    a, b = weights.values()
    best = {name: min(s) for name, s in seconds.items()}
    return {
        "dataset": dataset,
        "run": f"NeuMF d = {size}, plain, deferred step",
        **{f"{name} s/epoch": s for name, s in best.items()},
        "speed-up": best["autograd"] / best["extension"],
        "same weights": all(torch.equal(a[k], b[k]) for k in a),
    }


def probe(which=RUNS, rounds: int = 3, epochs: int = 2) -> dict:
    torch.set_num_threads(1)
    start = time.time()
    rows = []
    for run in which:
        dataset, size = run.split("/")
        rows.append(compare(dataset, int(size), rounds, epochs))
        print(rows[-1], flush=True)
    return {"rows": rows, "wall_seconds": time.time() - start, "provenance": runs.provenance("cpu")}


def write_record(which=RUNS, rounds: int = 3, epochs: int = 2) -> Path:
    """`probe`, with provenance, to `RECORD`."""
    return bench.write_probe(RECORD, probe(which, rounds, epochs))


if __name__ == "__main__":
    bench.probe_command(__doc__, probe, write_record, "--runs", "dataset/size")
