"""Top-N metrics of METHOD.md ("Evaluation protocol"), vectorised over batches of users.

One held-out item per user. HR@N = 1 if its rank <= N; NDCG@N = 1/log2(rank + 1) if so, else 0;
MRR = 1/rank. Ties are broken against the held-out item: rank = 1 + #{candidates scoring >= it}
(pessimistic), so a model that scores everything alike gets no credit.
  sampled: the held-out item against its user's 99 sampled negatives;
  full:    against every item not in the user's training set (test: nor the validation item).
"""
from __future__ import annotations

import numpy as np
import torch

from .data import Dataset, UserItems
from .samplers import masked_scores

CUTOFFS = (5, 10, 20)


def count_above(scores: torch.Tensor, thresholds: torch.Tensor, strict: bool = True) -> torch.Tensor:
    """[B x k] int64: #{j : scores[b, j] > thresholds[b, i]} (>= when not strict), for [B x I] scores.
    On the CPU numpy's count_nonzero does the counting: exact, and about 10x faster than summing
    torch's boolean tensor (0.06 s against 0.6 s for 256 x 10 thresholds over 26k items, one thread)."""
    if scores.device.type == "cpu":
        above = np.greater if strict else np.greater_equal
        hit = above(scores.detach().numpy()[:, None, :], thresholds.detach().numpy()[:, :, None])
        return torch.from_numpy(np.count_nonzero(hit, axis=-1).astype(np.int64))
    above = torch.gt if strict else torch.ge
    return above(scores[:, None, :], thresholds[:, :, None]).sum(-1)


def ranks_sampled(target_scores: torch.Tensor, negative_scores: torch.Tensor) -> torch.Tensor:
    """[B] ranks of the targets against [B x K] negatives, ties against the target."""
    return 1 + count_above(negative_scores, target_scores[:, None], strict=False)[:, 0]


def ranks_full(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[B] ranks of targets in [B x I] scores where excluded items are already -inf."""
    t = scores.gather(1, targets[:, None])
    return count_above(scores, t, strict=False)[:, 0]  # counts the target itself: 1 + #{others >= target}


def summarize(ranks: torch.Tensor, cutoffs=CUTOFFS) -> dict:
    """Mean HR@N, NDCG@N and MRR over users, from their ranks."""
    r = ranks.double()
    out = {}
    for n in cutoffs:
        hit = r <= n
        out[f"HR@{n}"] = hit.double().mean().item()
        out[f"NDCG@{n}"] = torch.where(hit, 1 / torch.log2(r + 1), torch.zeros_like(r)).mean().item()
    out["MRR"] = (1 / r).mean().item()
    return out


@torch.no_grad()
def evaluate(model, ds: Dataset, split: str = "test", protocol: str = "sampled",
             batch_size: int = 1024, positives: UserItems | None = None, users=None) -> dict:
    """HR@{5,10,20}, NDCG@{5,10,20} and MRR of `model` on the validation or test item."""
    if split not in ("valid", "test") or protocol not in ("sampled", "full"):
        raise ValueError(f"split must be valid/test and protocol sampled/full, got {split}/{protocol}")
    dev = model.device
    target = torch.from_numpy(ds.valid_item if split == "valid" else ds.test_item).to(dev)
    users = torch.arange(ds.n_users, device=dev) if users is None else users.to(dev)
    if protocol == "sampled":
        cand = torch.cat([target[:, None], torch.from_numpy(ds.negatives).to(dev)], 1)
    else:
        positives = positives or UserItems(ds.train, dev)
    ranks = []
    for s in range(0, len(users), batch_size):
        u = users[s:s + batch_size]
        if protocol == "sampled":
            sc = model.score(u, cand[u])
            ranks.append(ranks_sampled(sc[:, 0], sc[:, 1:]))
        else:
            sc = masked_scores(model.score_all(u), positives, u)
            if split == "test":
                sc[torch.arange(len(u), device=dev), torch.from_numpy(ds.valid_item).to(dev)[u]] = -np.inf
            ranks.append(ranks_full(sc, target[u]))
    return summarize(torch.cat(ranks))
