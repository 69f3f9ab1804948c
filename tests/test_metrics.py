"""Vectorised metrics against brute-force definitions, ties included."""

import math

import numpy as np
import pytest
import torch

from cdlib import metrics
from cdlib.index import UserItems
from cdlib.samplers import masked_scores


def brute_rank(target_score, others):
    """1 + number of other candidates scoring at least the target (ties against it)."""
    return 1 + sum(1 for s in others if s >= target_score)


def brute_metrics(ranks, cutoffs=(5, 10, 20)):
    out = {}
    for n in cutoffs:
        out[f"HR@{n}"] = np.mean([1.0 if r <= n else 0.0 for r in ranks])
        out[f"NDCG@{n}"] = np.mean([1 / math.log2(r + 1) if r <= n else 0.0 for r in ranks])
    out["MRR"] = np.mean([1 / r for r in ranks])
    return out


def test_sampled_matches_brute_force_with_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (300, 100), generator=g).float()  # many ties
    ranks = metrics.ranks_sampled(scores[:, 0], scores[:, 1:])
    expect = [brute_rank(row[0], row[1:]) for row in scores.tolist()]
    assert ranks.tolist() == expect
    got, want = metrics.summarize(ranks), brute_metrics(expect)
    for k in want:
        assert abs(got[k] - want[k]) < 1e-12, k


def test_full_matches_brute_force_with_exclusions_and_ties():
    g = torch.Generator().manual_seed(1)
    B, I = 50, 40
    scores = torch.randint(0, 8, (B, I), generator=g).float()
    targets = torch.randint(0, I, (B,), generator=g)
    excluded = torch.rand(B, I, generator=g) < 0.3
    excluded[torch.arange(B), targets] = False
    masked = scores.masked_fill(excluded, -math.inf)
    ranks = metrics.ranks_full(masked, targets)
    expect = []
    for b in range(B):
        t = targets[b].item()
        others = [scores[b, j].item() for j in range(I) if j != t and not excluded[b, j]]
        expect.append(brute_rank(scores[b, t].item(), others))
    assert ranks.tolist() == expect


def test_constant_scores_get_no_credit_and_perfect_scores_get_full_credit():
    r = metrics.ranks_sampled(torch.zeros(10), torch.zeros(10, 99))
    assert (r == 100).all() and metrics.summarize(r)["HR@20"] == 0.0
    r = metrics.ranks_sampled(torch.ones(10), torch.zeros(10, 99))
    m = metrics.summarize(r)
    assert m["HR@5"] == m["NDCG@5"] == m["MRR"] == 1.0


class Oracle:
    """Scores every item by a fixed table, to check `evaluate` end to end."""

    def __init__(self, table):
        self.table = table
        self.device = torch.device("cpu")

    def score(self, users, items):
        return self.table[users[:, None], items]

    def score_all(self, users):
        return self.table[users].clone()


def test_evaluate_full_and_sampled_on_real_data(ml100k):
    g = torch.Generator().manual_seed(2)
    table = torch.rand(ml100k.n_users, ml100k.n_items, generator=g)
    m = Oracle(table)
    for split, items in (("valid", ml100k.valid_item), ("test", ml100k.test_item)):
        got = metrics.evaluate(m, ml100k, split, "full", batch_size=100)
        ranks = []
        for u in range(0, ml100k.n_users, 37):  # brute force on a spread of users
            other = (
                ml100k.test_item[u] if split == "valid" else ml100k.valid_item[u]
            )  # the other held-out item
            seen = set(ml100k.train[u].indices) | {other}
            t = items[u]
            others = [table[u, j].item() for j in range(ml100k.n_items) if j != t and j not in seen]
            ranks.append(brute_rank(table[u, t].item(), others))
        sub = metrics.evaluate(m, ml100k, split, "full", users=torch.arange(0, ml100k.n_users, 37))
        assert abs(sub["MRR"] - brute_metrics(ranks)["MRR"]) < 1e-12
        assert 0 < got["HR@20"] < 0.2  # random scores: about 20 / n_items
        us = range(0, ml100k.n_users, 37)
        s = metrics.evaluate(m, ml100k, split, "sampled", users=torch.tensor(list(us)))
        negs = (
            ml100k.valid_negatives if split == "valid" else ml100k.negatives
        )  # validation's own draw
        ranks = [brute_rank(table[u, items[u]].item(), table[u, negs[u]].tolist()) for u in us]
        assert abs(s["NDCG@10"] - brute_metrics(ranks)["NDCG@10"]) < 1e-12
        if split == "valid":  # the old protocol: validation on the test's candidates
            old = metrics.evaluate(
                m, ml100k, split, "sampled", users=torch.tensor(list(us)), valid_negatives="test"
            )
            ranks = [
                brute_rank(table[u, items[u]].item(), table[u, ml100k.negatives[u]].tolist())
                for u in us
            ]
            assert abs(old["NDCG@10"] - brute_metrics(ranks)["NDCG@10"]) < 1e-12
        s = metrics.evaluate(m, ml100k, split, "sampled")
        sd = (0.1 * 0.9 / ml100k.n_users) ** 0.5  # random scores: HR@10 = 10/100 in expectation
        assert abs(s["HR@10"] - 0.1) < 4 * sd


def full_split(model, ds, split, batch_size):
    """The full protocol of one split as `evaluate` computed it before `evaluate_full` (one scoring
    a split): the reference that `evaluate_full` must equal bit for bit."""
    target = torch.from_numpy(ds.valid_item if split == "valid" else ds.test_item)
    other = torch.from_numpy(ds.test_item if split == "valid" else ds.valid_item)
    positives, ranks = UserItems(ds.train), []
    for s in range(0, ds.n_users, batch_size):
        u = torch.arange(s, min(s + batch_size, ds.n_users))
        sc = masked_scores(model.score_all(u), positives, u)
        sc[torch.arange(len(u)), other[u]] = -math.inf
        ranks.append(metrics.ranks_full(sc, target[u]))
    return metrics.summarize(torch.cat(ranks))


def test_evaluate_full_scores_once_and_equals_each_split_alone(ml100k):
    g = torch.Generator().manual_seed(3)
    table = torch.randint(0, 4, (ml100k.n_users, ml100k.n_items), generator=g).float()  # ties
    m = Oracle(table)
    calls = []
    score_all = m.score_all
    m.score_all = lambda u: calls.append(len(u)) or score_all(u)
    both = metrics.evaluate_full(m, ml100k, batch_size=100)
    assert sum(calls) == ml100k.n_users  # every user scored once, for both splits
    m.score_all = score_all
    for split in ("valid", "test"):
        assert both[split] == full_split(m, ml100k, split, 100)
        assert metrics.evaluate(m, ml100k, split, "full", batch_size=100) == both[split]
    rec = metrics.evaluate_all(m, ml100k, "disjoint")
    assert list(rec) == ["valid_sampled", "valid_full", "test_sampled", "test_full"]
    assert rec["valid_full"] == both["valid"] and rec["test_full"] == both["test"]
    assert rec["valid_sampled"] == metrics.evaluate(m, ml100k, "valid", valid_negatives="disjoint")


def test_count_above_matches_brute_force_with_ties_and_minus_inf():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (7, 40), generator=g).float()  # many ties
    scores[:, :3] = -math.inf
    thresholds = scores[:, [0, 5, 9]].clone()
    for strict in (True, False):
        got = metrics.count_above(scores, thresholds, strict)
        assert got.dtype == torch.int64
        for b in range(7):
            for i in range(3):
                want = sum(
                    (s > thresholds[b, i]) if strict else (s >= thresholds[b, i])
                    for s in scores[b].tolist()
                )
                assert got[b, i] == want


def test_a_non_finite_score_is_an_error_naming_model_and_split(ml100k):
    table = torch.rand(ml100k.n_users, ml100k.n_items)
    table[5, 3] = float("nan")
    for protocol, what in (("sampled", "valid"), ("full", "valid and test")):  # full: one scoring
        t = table.clone()
        if protocol == "sampled":
            t[5, ml100k.valid_negatives[5, 0]] = float("nan")
        with pytest.raises(
            FloatingPointError,
            match=rf"Oracle .*non-finite score\(s\) on ml-100k {what} \({protocol}\)",
        ):
            metrics.evaluate(Oracle(t), ml100k, "valid", protocol)
    t = torch.rand(ml100k.n_users, ml100k.n_items)
    t[0, ml100k.negatives[0, 0]] = float("inf")
    with pytest.raises(FloatingPointError, match="test"):
        metrics.evaluate(Oracle(t), ml100k, "test", "sampled")


def test_popularity_ranks_by_training_counts(ml100k):
    pop = metrics.Popularity(ml100k)
    counts = np.asarray(ml100k.train.sum(0)).ravel()
    assert np.array_equal(pop.score_all(torch.tensor([0, 1]))[1].numpy(), counts.astype(np.float32))
    r = metrics.evaluate(pop, ml100k, "valid", "sampled")
    assert 0.2 < r["NDCG@10"] < 0.3  # the initial plateau of ml-100k's learning curves
