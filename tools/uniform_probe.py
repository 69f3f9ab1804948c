"""A probe of CD's uniform draw of K_u (`samplers.uniform_missing`) made faster without changing a
bit of what it draws, one thread, written to results/bench/uniform_cpu.json, per dataset and batch
(16 users: NeuMF's steps; 64: CDAE's):

- the [users x items] uniform numbers: torch.rand against `randkernel.rand`, the same numbers and
  the generator left in the same state;
- the whole draw: the Gumbel top n of those numbers as every earlier run drew it (`gumbel_topk` on
  the zero weights of the missing items) against `uniform_missing`, which takes the two logs only
  for a batch with a row that needs them: the same items over `steps` batches, the generators in
  the same state after them, and the share of rows that took the keys.

    python tools/uniform_probe.py                        # the record's five datasets
    python tools/uniform_probe.py --datasets ml-100k     # print, write nothing
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from cdlib import bench, data, index, randkernel, runs, samplers

RECORD = "bench/uniform_cpu.json"
DATASETS = ("citeulike-t", "yelp", "foursquare", "amazon-music", "ml-1m")


def gumbel_draw(positives, users, n, generator, pairs):
    """K_u as every run before `randkernel` drew it: the Gumbel top n of torch.rand's numbers."""
    keys = torch.zeros(len(users), positives.shape[1])
    keys = samplers.masked_scores(keys, positives, users, pairs)
    u = torch.rand(keys.shape, generator=generator)
    return (keys + samplers.gumbel(u)).topk(n, dim=1).indices


def key_rows(positives, users, n, generator) -> int:
    """How many of the batch's rows `uniform_missing` ranks by their keys (all on a dataset of few
    items, `samplers.by_numbers`; else `samplers.by_keys` of their n + 1 highest numbers, found
    here by torch.topk), from a copy of the generator."""
    if not samplers.by_numbers(positives.shape[1], n):
        return len(users)
    copy = torch.Generator()
    copy.set_state(generator.get_state())
    u = torch.rand(len(users), positives.shape[1], generator=copy).clamp_(1e-20, 1 - 1e-7)
    top = samplers.masked_scores(u, positives, users).topk(n + 1, dim=1).values
    distinct = (top[:, 1:] != top[:, :-1]).all(1)
    return int(samplers.by_keys(distinct, top[:, -1]).sum())


def probe_dataset(dataset: str, batch: int, steps: int = 100, n: int = 10) -> dict:
    ds = data.load(dataset)
    pos = index.UserItems(ds.train, torch.device("cpu"))
    order = torch.randperm(ds.n_users, generator=torch.Generator().manual_seed(0))
    batches = [order[(s * batch) % (ds.n_users - batch) :][:batch] for s in range(steps)]
    shape = (batch, ds.n_items)
    out = {"dataset": dataset, "users a batch": batch, "items": ds.n_items, "batches": steps}
    gens = [torch.Generator().manual_seed(1) for _ in range(2)]
    out["torch.rand s"] = bench.timed(lambda: torch.rand(shape, generator=gens[0]), 20)
    out["randkernel.rand s"] = bench.timed(lambda: randkernel.rand(shape, gens[1]), 20)
    out["same numbers"] = torch.equal(
        torch.rand(shape, generator=gens[0]), randkernel.rand(shape, gens[1])
    ) and torch.equal(gens[0].get_state(), gens[1].get_state())
    pairs = [pos.pairs(users) for users in batches]
    g, keyed = torch.Generator().manual_seed(2), 0
    for users in batches:  # the rows that take the keys, from the draws' numbers
        keyed += key_rows(pos, users, n, g)
        torch.rand(len(users), ds.n_items, generator=g)
    got, seconds = {}, {}
    for name, draw in (("Gumbel keys", gumbel_draw), ("uniform_missing", samplers.uniform_missing)):
        g = torch.Generator().manual_seed(2)
        start = time.perf_counter()
        items = [draw(pos, users, n, g, p) for users, p in zip(batches, pairs)]
        seconds[name] = (time.perf_counter() - start) / steps
        got[name] = (torch.cat(items), g.get_state())
    (a, sa), (b, sb) = got.values()
    out |= {f"{k} s": v for k, v in seconds.items()}
    out["speed-up"] = seconds["Gumbel keys"] / seconds["uniform_missing"]
    out["same items"] = torch.equal(a, b) and torch.equal(sa, sb)
    out["rows by their keys"] = keyed / (steps * batch)
    return out


def probe(datasets=DATASETS) -> dict:
    torch.set_num_threads(1)
    start = time.time()
    rows = []
    for d in datasets:
        for batch in (16, 64):
            rows.append(probe_dataset(d, batch))
            print(rows[-1], flush=True)
    return {
        "draws": rows,
        "wall_seconds": time.time() - start,
        "provenance": runs.provenance("cpu"),
    }


def write_record(datasets=DATASETS) -> Path:
    """`probe` on `datasets`, with provenance, to `RECORD`."""
    return bench.write_probe(RECORD, probe(datasets))


if __name__ == "__main__":
    bench.probe_command(__doc__, probe, write_record)
