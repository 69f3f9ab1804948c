"""A probe, not part of any result: how much of a student- or hybrid-guided CD epoch is the refresh
of the student's ranking (`samplers.top_missing`, NeuMF's `score_all` over every item), and what a
feature-major MLP tower would give it. Records nothing.

    python tools/refresh_probe.py                     # the recorded share, per dataset and backbone
    python tools/refresh_probe.py --score citeulike-t # score_all as it is against feature-major

The feature-major tower computes the same function with the tower's layers as [units x pairs]
products (long rows, where `score_all`'s [pairs x 4] output leaves the vector units half idle); its
sums run in another order, so its scores differ by rounding, and a ranking built on them by ties
broken otherwise: adopting it would need an agreement study, as the deferred step had.
"""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np
import torch

from cdlib import config, runs


def recorded_share() -> None:
    """Per dataset, backbone and guide, the refreshes' part of the training time (records): the mean
    refresh times the refreshes a run made (one every `refresh_every` epochs from the epoch the
    student guides), over its training seconds."""
    cells = collections.defaultdict(list)
    for r in runs.all_records():
        c, t = r.get("config", {}), r.get("timing", {})
        if c.get("method") != "cd" or not t.get("refresh_seconds_mean"):
            continue
        first = c.get("switch_epoch") or 0 if c["guide"] == "hybrid" else 0
        every = c.get("refresh_every") or 1  # (samplers.CDSampler.start_epoch's rule)
        refreshes = sum(e == first or e % every == 0 for e in range(first, r["epochs_run"]))
        name = c["dataset"].split("/")[-1]
        cells[(name, c["backbone"], c["guide"])].append(
            (t["refresh_seconds_mean"], t["epoch_seconds_mean"], refreshes, t["train_seconds"])
        )
    print(f"{'dataset':16} {'backbone':8} {'guide':8} runs  refresh s  epoch s  share of training")
    for (d, b, g), v in sorted(cells.items()):
        refresh, epoch = np.mean([x[:2] for x in v], axis=0)
        share = sum(x[0] * x[2] for x in v) / sum(x[3] for x in v)
        print(f"{d:16} {b:8} {g:8} {len(v):4}  {refresh:9.2f}  {epoch:7.2f}  {share:5.0%}")


@torch.no_grad()
def feature_major(model, users: torch.Tensor, max_elems: int = 1 << 18) -> torch.Tensor:
    """NeuMF's score_all with the tower feature-major: the same function, summed in another order."""
    d, e = model.size, model.size * model.mlp_scale
    n_items = model.gmf_item.num_embeddings
    gmf = (model.gmf_user(users) * model.out.weight[0, :d]) @ model.gmf_item.weight.T
    a = (model.mlp_user(users) @ model.layer1.weight[:, :e].T + model.layer1.bias).T.contiguous()
    c = (model.mlp_item.weight @ model.layer1.weight[:, e:].T).T.contiguous()
    out = torch.empty(len(users), n_items)
    step = max(1, min(len(users), max_elems // (n_items * e)))
    buf = torch.empty(e, step, n_items)
    w2, b2, w = model.layer2.weight, model.layer2.bias[:, None], model.out.weight[0, d:]
    for s in range(0, len(users), step):
        n = min(step, len(users) - s)
        h = buf[:, :n]
        torch.add(a[:, s : s + n, None], c[:, None, :], out=h).relu_()
        g = w2 @ h.reshape(e, -1)
        out[s : s + n] = (w @ (g + b2).relu_()).view(n, n_items)
    return out.add_(gmf).add_(model.out.bias)


def perturbed_neumf(dataset: str, size: int):
    """A NeuMF of `dataset` at its initial weights plus N(0, 0.3) noise (weights of a trained
    model's scale, not the init's 0.01): the model and its number of users."""
    cfg = config.Config(dataset=dataset, backbone="neumf", size=size, device="cpu").canonical()
    ds = config.dataset_for(cfg)
    torch.manual_seed(0)
    model = config.build_model(cfg, ds, torch.device("cpu")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model, ds.n_users


def compare(dataset: str, size: int, n_users: int = 1024) -> None:
    """score_all as it is against `feature_major`, one thread, on a model with non-trivial weights."""
    torch.set_num_threads(1)
    model, users = perturbed_neumf(dataset, size)
    users = torch.arange(min(n_users, users))
    timed = {}
    for name, f in (
        ("score_all", model.score_all),
        ("feature-major", lambda u: feature_major(model, u)),
    ):
        seconds = []
        for _ in range(3):
            t = time.perf_counter()
            timed[name] = f(users)
            seconds.append(time.perf_counter() - t)
        print(f"{dataset} NeuMF d={size}, {len(users)} users: {name:13} {min(seconds):.3f} s")
    diff = (timed["score_all"] - timed["feature-major"]).abs().max().item()
    print(f"  equal: {torch.equal(*timed.values())}, largest difference {diff:.3g}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--score", metavar="DATASET", help="time score_all on DATASET instead")
    ap.add_argument("--size", type=int, default=8, help="NeuMF's d (default 8, the student's)")
    a = ap.parse_args()
    if a.score:
        compare(a.score, a.size)
    else:
        recorded_share()
