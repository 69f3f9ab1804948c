"""Samplers: never a training positive, distinct items, and p ∝ exp(-rank/mu) (chi-square)."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy import stats

from cdlib import index, samplers


class FixedScores:
    """A 'model' whose scores are a fixed table (the guide of a sampler)."""

    def __init__(self, table):
        self.table = table

    def score_all(self, users):
        return self.table[users].clone()


@pytest.fixture(scope="module")
def setup(ml100k):
    pos = index.UserItems(ml100k.train)
    g = torch.Generator().manual_seed(0)
    guide = FixedScores(torch.rand(ml100k.n_users, ml100k.n_items, generator=g))
    return ml100k, pos, guide


def test_uniform_negatives_never_positive_and_n_per_positive(setup):
    ds, pos, _ = setup
    users = torch.arange(0, ds.n_users, 3)
    rows, items = samplers.uniform_negatives(pos, users, 4, torch.Generator().manual_seed(1))
    assert len(rows) == 4 * ds.train[users.numpy()].nnz
    assert not pos.contains(rows, items, users).any()
    assert (
        torch.bincount(rows, minlength=len(users)).tolist()
        == (4 * np.diff(ds.train[users.numpy()].indptr)).tolist()
    )


def test_group_negatives_are_each_members_negatives_alone(setup):
    """A group's members (their own users, n_neg and generators) get bit for bit the negatives they draw
    alone, and their generators end in the same state (so their later draws agree too)."""
    ds, pos, _ = setup
    users = [
        torch.randperm(ds.n_users, generator=torch.Generator().manual_seed(s))[:64]
        for s in range(3)
    ]
    users[1] = users[1][:40]  # members may differ in batch length and n_neg
    n_negs = [4, 1, 4]
    group_gens = [torch.Generator().manual_seed(10 + s) for s in range(3)]
    alone_gens = [torch.Generator().manual_seed(10 + s) for s in range(3)]
    grouped = samplers.group_negatives(pos, users, n_negs, group_gens)
    for u, n, g, (rows, items) in zip(users, n_negs, alone_gens, grouped):
        r, i = samplers.uniform_negatives(pos, u, n, g)
        assert torch.equal(rows, r) and torch.equal(items, i)
    assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(group_gens, alone_gens))


def _redraw_every_hit(pos, users, rows, n_items, generator):
    """The rejection sampler by its definition: one uniform draw per entry, then, round by round,
    every entry whose item is the user's positive drawn again (in entry order)."""
    seen = {(r, i) for r, i in zip(*(t.tolist() for t in pos.pairs(users)))}
    items = torch.randint(n_items, (len(rows),), generator=generator)
    while True:
        hits = [j for j, (r, i) in enumerate(zip(rows.tolist(), items.tolist())) if (r, i) in seen]
        if not hits:
            return items
        items[hits] = torch.randint(n_items, (len(hits),), generator=generator)


def test_uniform_negatives_are_the_rejection_samplers_draws(setup):
    """The vectorised sampler draws exactly what the rejection sampler's definition draws from the
    same generator (so that every record's negatives stay the same whatever the loop's form)."""
    ds, pos, _ = setup
    users = torch.randperm(ds.n_users, generator=torch.Generator().manual_seed(5))[:64]
    rows, items = samplers.uniform_negatives(pos, users, 4, torch.Generator().manual_seed(2))
    want = _redraw_every_hit(pos, users, rows, ds.n_items, torch.Generator().manual_seed(2))
    assert torch.equal(items, want)


def test_inverse_missing_is_uniform_over_each_users_missing_items(setup):
    """The fixed-shape sampler: never a positive, every missing item, equally often (chi-square), for
    users with few and with many positives, padding or not."""
    ds, pos, _ = setup
    deg = np.diff(ds.train.indptr)
    users = torch.tensor([int(deg.argmin()), int(deg.argmax()), 7])
    n = 200 * ds.n_items
    rows = torch.arange(3).repeat_interleave(n)
    for extra in (0, 100):
        pairs = pos.padded_pairs(users, int(deg[users.numpy()].sum()) + extra)
        items = samplers.inverse_missing(
            pos, users, rows, pairs, torch.Generator().manual_seed(extra)
        )
        assert not pos.contains(rows, items, users).any()
        for r, u in enumerate(users.tolist()):
            counts = np.bincount(items[rows == r].numpy(), minlength=ds.n_items)
            missing = np.setdiff1d(np.arange(ds.n_items), ds.train[u].indices)
            assert (counts[ds.train[u].indices] == 0).all() and (counts[missing] > 0).all()
            assert stats.chisquare(counts[missing]).pvalue > 1e-3


def test_the_static_step_needs_no_value_from_the_device(setup):
    """On the meta device tensors have shapes and no values: the fixed-shape samplers run there, so
    none of them waits for a value (a GPU would stop for it); the dynamic ones cannot."""
    ds, pos, _ = setup
    meta = index.UserItems(ds.train, "meta")
    users = torch.randperm(ds.n_users)[:64].to("meta")
    g = torch.Generator().manual_seed(0)
    pairs = meta.padded_pairs(users, 7000)
    assert samplers.inverse_missing(meta, users, pairs[0].repeat_interleave(4), pairs, g).shape == (
        28000,
    )
    assert samplers.uniform_items(meta, users, 100, g, pairs).shape == (64, 100)
    assert samplers.uniform_missing(meta, users, 10, g, pairs).shape == (64, 10)
    with pytest.raises(RuntimeError, match="meta"):
        samplers.uniform_negatives(meta, users, 4, g)


def test_top_missing_is_the_guides_ranking(setup):
    ds, pos, guide = setup
    top = samplers.top_missing(guide, pos, 20, batch_size=100)
    for u in (0, 500, 942):
        sc = guide.table[u].clone()
        sc[ds.train[u].indices] = -math.inf
        assert top[u].tolist() == sc.argsort(descending=True)[:20].tolist()


@pytest.mark.parametrize(
    "backbone,size", [("cdae", 20), ("cdae", 200), ("neumf", 8), ("neumf", 64)]
)
def test_the_item_major_ranking_in_equal_batches_is_that_of_1024_users_a_batch(
    ml100k, backbone, size
):
    """top_missing's default batches (`RANK_USERS` users at most, equal: 943 users as 236, 236,
    236, 235) rank every user as one batch of 1024 did, bit for bit, at 1 and 2 threads (the
    same held for every model cached here, trained on ml-100k, ml-1m and citeulike-t)."""
    from cdlib import models

    torch.manual_seed(0)
    m = models.build(backbone, ml100k.train, size, device="cpu").eval()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.3)
    pos = index.UserItems(ml100k.train)
    calls = []
    score_all = m.score_all
    m.score_all = lambda u: calls.append(len(u)) or score_all(u)
    threads = torch.get_num_threads()
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            calls.clear()
            got = samplers.top_missing(m, pos, 100)
            assert calls == [236, 236, 236, 235]
            assert torch.equal(got, samplers.top_missing(m, pos, 100, batch_size=1024))
    finally:
        torch.set_num_threads(threads)


def test_a_teachers_ranking_is_computed_once_for_its_weights_positives_and_k(ml100k, monkeypatch):
    """`teacher_top_missing` gives top_missing's ranking, computed once a process for equal weights
    (another instance of the same teacher, as each run loads its own), positives, k and threads."""
    from cdlib import models

    monkeypatch.setattr(samplers, "_teacher_rankings", type(samplers._teacher_rankings)())
    monkeypatch.setattr(samplers, "TEACHER_RANKINGS_KEPT", 2)
    calls = []

    def teacher(scale):
        torch.manual_seed(0)
        m = models.build("neumf", ml100k.train, 8, device="cpu").eval()
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.3 * scale)
        score_all = m.score_all
        m.score_all = lambda u: calls.append(len(u)) or score_all(u)
        return m

    pos = index.UserItems(ml100k.train)
    first = samplers.teacher_top_missing(teacher(1), pos, 100)
    n = len(calls)
    assert n and torch.equal(first, samplers.top_missing(teacher(1), pos, 100))
    calls.clear()
    first[:] = -1  # a copy: the kept ranking is not changed through it
    again = samplers.teacher_top_missing(teacher(1), pos, 100)
    assert not calls and torch.equal(again, samplers.top_missing(teacher(1), pos, 100))
    calls.clear()
    other = samplers.teacher_top_missing(teacher(2), pos, 100)  # other weights: ranked anew
    assert len(calls) == n and not torch.equal(other, again)
    assert torch.equal(samplers.teacher_top_missing(teacher(1), pos, 10), again[:, :10])
    assert len(samplers._teacher_rankings) == 2  # the oldest of three, (1, 100), dropped
    calls.clear()
    assert torch.equal(samplers.teacher_top_missing(teacher(1), pos, 100), again)
    assert len(calls) == n  # (dropped: ranked again)
    calls.clear()
    fewer = index.UserItems(ml100k.train[:-1])  # other positives: ranked anew
    assert torch.equal(samplers.teacher_top_missing(teacher(1), fewer, 100), again[:-1])
    assert calls


def test_a_feature_major_refresh_differs_from_the_item_major_one_only_at_near_ties(
    ml100k, monkeypatch
):
    """A NeuMF student's top-100 missing items through both towers: the same lists but where two
    items' scores lie within rounding (`agreement.ranking_agreement`; the study on trained models is
    tools/refresh_probe.py --agreement), and the CD sampler ranks with the tower it is given."""
    from cdlib import agreement, models

    torch.manual_seed(0)
    m = models.NeuMF(ml100k.n_users, ml100k.n_items, 8).eval()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.3)
    pos = index.UserItems(ml100k.train)
    users = torch.arange(ml100k.n_users)
    a = agreement.ranking_agreement(m, pos, users)
    assert a["users"] == ml100k.n_users and a["identical lists"] > 0.99
    assert 0 < a["largest score difference"] < 1e-5  # summed in another order, not another function
    assert a["largest gap at a difference"] <= 2 * a["largest score difference"]
    calls = []
    m.score_all_feature_major = lambda u: (
        calls.append(len(u)) or type(m).score_all_feature_major(m, u)
    )
    item_major = samplers.top_missing(m, pos, 100)
    assert not calls
    feature_major = samplers.top_missing(m, pos, 100, tower="feature-major")
    assert calls == [ml100k.n_users]  # REFRESH_PAIRS // items: one batch
    calls.clear()
    monkeypatch.setattr(samplers, "REFRESH_PAIRS", 100 * ml100k.n_items)
    assert torch.equal(samplers.top_missing(m, pos, 100, tower="feature-major"), feature_major)
    assert calls == [100] * 9 + [43]  # a batch's scores do not depend on the others
    assert (item_major == feature_major).all(1).float().mean() == a["identical lists"]
    for tower, want in ((None, item_major), ("feature-major", feature_major)):
        calls.clear()
        s = samplers.CDSampler(pos, m, guide="student", tower=tower)
        s.start_epoch(0, m)
        assert torch.equal(s.candidates, want) and bool(calls) == (tower is not None)


@pytest.mark.parametrize(
    "sampling,guide",
    [
        ("rank", "teacher"),
        ("uniform", "teacher"),
        ("topk", "teacher"),
        ("rank", "student"),
        ("rank", "hybrid"),
    ],
)
def test_cd_sampler_distinct_missing_items(setup, sampling, guide):
    ds, pos, teacher = setup
    s = samplers.CDSampler(
        pos, teacher, n_distill=10, mu=10, sampling=sampling, guide=guide, switch_epoch=1
    )
    s.start_epoch(0, student=teacher)
    users = torch.arange(ds.n_users)
    k = s.sample(users, torch.Generator().manual_seed(3))
    assert k.shape == (ds.n_users, 10)
    srt = k.sort(1).values
    assert (srt[:, 1:] != srt[:, :-1]).all()
    rows = torch.arange(ds.n_users).repeat_interleave(10)
    assert not pos.contains(rows, k.reshape(-1), users).any()
    if sampling == "topk":
        assert torch.equal(k, s.candidates[:, :10])


def test_hybrid_switches_guide_and_student_refreshes(setup):
    ds, pos, teacher = setup
    student = FixedScores(-teacher.table)
    s = samplers.CDSampler(pos, teacher, guide="hybrid", switch_epoch=2)
    s.start_epoch(0, student)
    first = s.candidates.clone()
    assert s.source == "teacher"
    s.start_epoch(1, student)
    assert torch.equal(first, s.candidates)
    s.start_epoch(2, student)
    assert s.source == "student" and not torch.equal(first, s.candidates)
    assert len(s.refresh_seconds) == 1


@pytest.mark.parametrize("mu", [2.0, 10.0])
def test_rank_sampling_frequencies_match_exp_rank_over_mu(setup, mu):
    """First draw of each user: p(rank r) ∝ exp(-r/mu) over the top max_rank, chi-square at 1%.
    With n_distill = 1 the whole sample is the first draw."""
    ds, pos, teacher = setup
    s = samplers.CDSampler(pos, teacher, n_distill=1, mu=mu, sampling="rank", guide="teacher")
    s.start_epoch(0, teacher)
    R = s.max_rank
    assert R == math.ceil(10 * mu)
    users = torch.arange(ds.n_users).repeat(40)  # 37,720 draws
    k = s.sample(users, torch.Generator().manual_seed(11))
    rank = (s.candidates[users] == k).float().argmax(1)  # 0-based rank of the drawn item
    observed = torch.bincount(rank, minlength=R).numpy().astype(float)
    p = np.exp(-np.arange(1, R + 1) / mu)
    p /= p.sum()
    expected = p * len(users)
    # pool sparse tail cells so every expected count is at least 5
    keep = expected >= 5
    obs = np.r_[observed[keep], observed[~keep].sum()] if (~keep).any() else observed
    exp = np.r_[expected[keep], expected[~keep].sum()] if (~keep).any() else expected
    assert stats.chisquare(obs, exp).pvalue > 0.01
    # and it is not uniform
    assert stats.chisquare(observed, np.full(R, len(users) / R)).pvalue < 1e-6


def test_sampler_rejects_bad_parameters(setup):
    ds, pos, teacher = setup
    with pytest.raises(ValueError, match="sampling"):
        samplers.CDSampler(pos, teacher, sampling="softmax")
    with pytest.raises(ValueError, match="guide"):
        samplers.CDSampler(pos, teacher, guide="oracle")


def _gumbel_uniform_missing(positives, users, n, generator, pairs=None):
    """The uniform draw by its definition: the top n of Gumbel keys of torch.rand's numbers, the
    positives' keys -inf (the code `uniform_missing` replaced, to the bit)."""
    keys = samplers.masked_scores(
        torch.zeros(len(users), positives.shape[1]), positives, users, pairs
    )
    u = torch.rand(keys.shape, generator=generator)
    return (keys + -torch.log(-torch.log(u.clamp(1e-20, 1 - 1e-7)))).topk(n, dim=1).indices


@pytest.fixture(scope="module")
def wide():
    """300 users of 12,000 items (enough that most rows take the numbers' own ranking), a few
    users with all but 10 or 11 items among their positives."""
    g = np.random.default_rng(5)
    n_users, n_items = 300, 12_000
    rows = [g.choice(n_items, size=g.integers(5, 400), replace=False) for _ in range(n_users)]
    rows[7] = np.arange(10, n_items)  # 10 missing items: the n + 1-th is -inf
    rows[8] = np.arange(11, n_items)
    indptr = np.cumsum([0] + [len(r) for r in rows])
    matrix = sp.csr_matrix(
        (np.ones(indptr[-1], dtype=np.float32), np.concatenate(rows), indptr), (n_users, n_items)
    )
    return index.UserItems(matrix)


@pytest.mark.parametrize("top", [None, 1.0])
def test_uniform_missing_draws_the_gumbel_top_n_to_the_bit(wide, monkeypatch, top):
    """The same items, in the same order, and the generator left in the same state as the Gumbel
    draw by its definition, over batches whose rows tie among their top numbers (about 1 in 100
    here), whose n + 1-th missing item does not exist, and (top = 1.0) where every row takes the
    keys; padded pairs (a static step's) alike."""
    if top is not None:
        monkeypatch.setattr(samplers, "UNIFORM_TOP", top)
    ours, theirs = (torch.Generator().manual_seed(9) for _ in range(2))
    order = torch.randperm(300, generator=torch.Generator().manual_seed(1))
    ties = 0
    for step in range(40):
        users = torch.cat([order[(step * 64) % 236 :][:62], torch.tensor([7, 8])])
        pairs = wide.padded_pairs(users, 50_000) if step % 2 else wide.pairs(users)
        clone = torch.Generator()
        clone.set_state(theirs.get_state())
        u = torch.rand(len(users), 12_000, generator=clone)
        top12 = samplers.masked_scores(u, wide, users).topk(12, dim=1).values[:, :11]
        ties += int((top12[:, 1:] == top12[:, :-1]).any(1).sum())
        expected = _gumbel_uniform_missing(wide, users, 10, theirs, pairs)
        assert torch.equal(samplers.uniform_missing(wide, users, 10, ours, pairs), expected), step
        assert torch.equal(ours.get_state(), theirs.get_state())
    assert ties > 0  # the draws above did tie: their rows took the keys


def test_numbers_above_uniform_top_rank_as_their_keys_with_a_margin():
    """Every float32 number from `UNIFORM_TOP` to the clamp's 1 - 1e-7 (2^15 of them): adjacent
    numbers' Gumbel keys at least 3e-5 apart, in the numbers' order, the margin `UNIFORM_TOP`'s
    comment gives for ranking a row by its numbers."""
    u = (samplers.UNIFORM_TOP + torch.arange(2**15, dtype=torch.float64) * 2**-24).float()
    keys = samplers.gumbel(u[u <= 1 - 1e-7].clone())
    assert len(keys) > 30_000
    assert (keys[1:] - keys[:-1]).min() >= 3e-5


def test_by_keys_sends_ties_low_numbers_and_short_rows_to_the_keys():
    top = samplers.UNIFORM_TOP
    distinct = torch.tensor([True, False, True, True, True])
    last = torch.tensor([top, 0.9999, top - 2**-24, 0.0, 1 - 1e-7])
    assert samplers.by_keys(distinct, last).tolist() == [False, True, True, True, False]
