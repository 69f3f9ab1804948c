"""Samplers, vectorised over users (METHOD.md "Probabilistic rank-aware sampling", a [decision]
in its exact form). No function here loops over users in Python.

- uniform_negatives: N_u of the CF loss, `n_neg` uniform missing items per positive (group_negatives:
  for the members of a group at once); inverse_missing: the same distribution with fixed shapes.
- uniform_items: n uniform missing items per user, with replacement (RD's rank estimate).
- top_missing: each user's top-R missing items under a model's scores (the guide's ranking).
- CDSampler: the distilled items K_u of CD, with sampling in {rank, uniform, topk} and guide in
  {teacher, student, hybrid}.
"""

from __future__ import annotations

import collections
import hashlib
import math
import time

import numpy as np
import torch

from . import randkernel, topkernel
from .index import UserItems, put_pairs
from .topkernel import top_ids

SAMPLINGS = ("rank", "uniform", "topk")
GUIDES = ("teacher", "student", "hybrid")


def uniform_negatives(
    positives: UserItems,
    users: torch.Tensor,
    n_neg: int,
    generator: torch.Generator,
    max_rounds: int = 100,
    pairs=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`n_neg` items drawn uniformly from M_u for every training positive of each user (with
    replacement, as in NCF); a draw that hits a positive is redrawn. Returns flat (rows, items).
    Membership is read from the batch's dense 0/1 rows (memory: batch x items), built from `pairs`
    (the users' training (rows, items)) where the caller has them. A group of one of `group_negatives`."""
    return group_negatives(positives, [users], [n_neg], [generator], max_rounds, pairs)[0]


def group_negatives(
    positives: UserItems,
    users: list,
    n_negs: list,
    generators: list,
    max_rounds: int = 100,
    pairs=None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`uniform_negatives` for the members of a group at once, member g with its own users, n_neg and
    generator: the look-ups are done once for the concatenated users (`pairs`: theirs, if known), the
    draws from each member's generator in the order and number its run alone would make them, so each
    member gets exactly the negatives it would get alone."""
    dev = users[0].device
    everyone = torch.cat(users) if len(users) > 1 else users[0]
    draws = positives.indptr[everyone + 1] - positives.indptr[everyone]
    if len(set(n_negs)) == 1:
        draws = draws * n_negs[0]
    else:
        draws = draws * torch.cat(
            [torch.full((len(u),), n, device=dev) for u, n in zip(users, n_negs)]
        )
    rows = torch.repeat_interleave(torch.arange(len(everyone), device=dev), draws)
    sizes = (
        [len(rows)]
        if len(users) == 1
        else torch.stack([c.sum() for c in torch.split(draws, [len(u) for u in users])]).tolist()
    )
    items = _draw_missing(positives, everyone, rows, sizes, generators, max_rounds, pairs)
    starts = np.cumsum([0] + [len(u) for u in users[:-1]]).tolist()
    return [
        (r - s if s else r, i)
        for r, i, s in zip(torch.split(rows, sizes), torch.split(items, sizes), starts)
    ]


def uniform_items(
    positives: UserItems, users: torch.Tensor, n: int, generator: torch.Generator, pairs=None
) -> torch.Tensor:
    """[B x n] items drawn uniformly with replacement from each user's M_u (RD's samples for
    estimating the student's rank, as Tang & Wang's code draws them). With the users' `padded_pairs`,
    by `inverse_missing` (fixed shapes)."""
    rows = torch.arange(len(users), device=users.device).repeat_interleave(n)
    if pairs is not None:
        return inverse_missing(positives, users, rows, pairs, generator).view(len(users), n)
    return _draw_missing(positives, users, rows, [len(rows)], [generator]).view(len(users), n)


def _draw_missing(
    positives: UserItems,
    users: torch.Tensor,
    rows: torch.Tensor,
    sizes: list,
    generators: list,
    max_rounds: int = 100,
    pairs=None,
) -> torch.Tensor:
    """One uniform missing item of users[rows] per entry of `rows`, hits on a positive redrawn. The
    entries come in consecutive blocks of `sizes`, block g drawn from generators[g] (a group's members:
    each block's draws are those its member alone would make, round by round)."""
    seen = positives.dense(users, torch.bool, pairs)
    n_items = positives.shape[1]

    def draw(counts):
        parts = [
            torch.randint(n_items, (c,), generator=g, device=g.device)
            for c, g in zip(counts, generators)
            if c
        ]
        return (parts[0] if len(parts) == 1 else torch.cat(parts)).to(users.device)

    items = draw(sizes) if len(rows) else rows.new_empty(0)
    idx = seen[rows, items].nonzero().squeeze(1)  # the entries to redraw, ascending
    ends = torch.cumsum(torch.tensor(sizes, device=users.device), 0) if len(sizes) > 1 else None
    for _ in range(max_rounds):  # each round costs the entries still to redraw, not all of them
        if not len(idx):
            return items
        counts = (
            [len(idx)]
            if ends is None
            else torch.bincount(
                torch.searchsorted(ends, idx, right=True), minlength=len(sizes)
            ).tolist()
        )
        items[idx] = draw(counts)
        idx = idx[seen[rows[idx], items[idx]]]
    raise RuntimeError("uniform sampling: some user has (almost) no missing item to draw")


def inverse_missing(
    positives: UserItems, users: torch.Tensor, rows: torch.Tensor, pairs, generator: torch.Generator
) -> torch.Tensor:
    """One uniform missing item of users[rows] per entry, without rejection, so with fixed shapes
    and no wait on a GPU: for r uniform in [0, |M_u|), the r-th missing item of u is r + #{j : p_j - j <= r}
    over u's sorted positives p_0 < p_1 < ... (p_j - j missing items precede p_j), counted by one
    binary search over the batch. pairs: the users' `padded_pairs`. Same distribution as
    `uniform_negatives`' rejection sampling, other draws."""
    n_items = positives.shape[1]
    pair_rows, pair_items, valid = pairs
    count = positives.indptr[users + 1] - positives.indptr[users]
    first = torch.cumsum(count, 0) - count  # each row's first slot
    slot = torch.arange(len(pair_rows), device=users.device)
    keys = torch.where(
        valid, pair_rows * n_items + pair_items - (slot - first[pair_rows]), len(users) * n_items
    )
    r = torch.randint(1 << 62, rows.shape, generator=generator, device=generator.device).to(
        users.device
    ) % (n_items - count[rows])  # modulo bias below 2^-45
    return r + torch.searchsorted(keys, rows * n_items + r, right=True) - first[rows]


def masked_scores(
    scores: torch.Tensor, positives: UserItems, users: torch.Tensor, pairs=None
) -> torch.Tensor:
    """scores with each user's training positives set to -inf (in place); pairs: the users' `pairs` or
    `padded_pairs`, if known."""
    return put_pairs(scores, positives.pairs(users) if pairs is None else pairs, -math.inf)


# a feature-major refresh scores this many (user, item) pairs a batch (8 MiB), which the mask and
# the top-k then read from the cache: 1.3-1.7x faster than batches of 1024 users on citeulike-t,
# yelp, foursquare and amazon-music, the same ranking (the scores do not depend on the batch)
REFRESH_PAIRS = 1 << 21
# an item-major ranking (`score_all`) takes the users in equal batches of at most this many, whose
# scores the mask and the top-k read while they are in the cache: a CDAE student's (H = 20) ranking
# of every user 1.7-1.8x faster than batches of 1024 users on citeulike-t and yelp, a teacher's
# (H = 200) 1.1-1.3x, ml-1m's alike (tools/scoring_probe.py: results/bench/scoring_cpu.json). The
# batches are equal (sizes differ by one at most) so that none is a short tail: the same scores,
# bit for bit, as 1024 users a batch (this machine's BLAS rounds alike for any batch of a dozen
# users or more)
RANK_USERS = 256


@torch.no_grad()
def top_missing(
    model,
    positives: UserItems,
    k: int,
    users: torch.Tensor | None = None,
    batch_size: int | None = None,
    tower: str | None = None,
) -> torch.Tensor:
    """Each user's k highest-scored missing items, rank 1 first: [users x k] item ids.
    A user with fewer than k missing items gets -1 in the surplus slots. tower="feature-major":
    a NeuMF scores with `score_all_feature_major` (the same scores up to rounding, faster), by
    default `REFRESH_PAIRS` pairs a batch; else with `score_all`, by default in equal batches of
    at most `RANK_USERS` users (the ranking of 1024 users a batch, every earlier run's); the top k
    of each batch by `topkernel.top_ids` (torch.topk's ids)."""
    if users is None:
        users = torch.arange(positives.shape[0], device=positives.indptr.device)
    score = model.score_all_feature_major if tower == "feature-major" else model.score_all
    if batch_size is not None or tower:
        size = batch_size or max(1, REFRESH_PAIRS // positives.shape[1])
        batches = users.split(size)
    else:
        batches = users.tensor_split(max(1, -(-len(users) // RANK_USERS)))
    out = torch.empty(len(users), k, dtype=torch.long, device=users.device)
    s = 0
    for u in batches:
        out[s : s + len(u)] = top_ids(masked_scores(score(u), positives, u), k)
        s += len(u)
    return out


# the teachers' rankings this process keeps (`teacher_top_missing`): a few [users x k] tensors
TEACHER_RANKINGS_KEPT = 4
_teacher_rankings: collections.OrderedDict = collections.OrderedDict()


def fingerprint(tensors) -> str:
    """A digest of tensors' shapes, dtypes and bytes (BLAKE2b): equal for equal contents."""
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)} {t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")
    return h.hexdigest()


@torch.no_grad()
def teacher_top_missing(teacher, positives: UserItems, k: int) -> torch.Tensor:
    """`top_missing(teacher, positives, k)` of a trained teacher, computed once in this process for
    its weights, these positives, k and the thread count, and kept (the last
    `TEACHER_RANKINGS_KEPT`): the students distilled from one teacher (a tuning stage's CD and RD
    runs, a seed's rows of the tables) rank its items once, where each run ranked them again (78 s
    for a NeuMF teacher of d = 64 on yelp, one thread). A copy of the same tensor. A guide without
    weights (no `state_dict`: a table of scores) is ranked each time."""
    if not hasattr(teacher, "state_dict"):
        return top_missing(teacher, positives, k)
    key = (
        type(teacher).__name__,
        fingerprint(teacher.state_dict().values()),
        fingerprint((positives.indptr, positives.indices)),
        k,
        torch.get_num_threads(),
    )
    if key not in _teacher_rankings:
        _teacher_rankings[key] = top_missing(teacher, positives, k)
        while len(_teacher_rankings) > TEACHER_RANKINGS_KEPT:
            _teacher_rankings.popitem(last=False)
    _teacher_rankings.move_to_end(key)
    return _teacher_rankings[key].clone()


def gumbel_topk(log_weights: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n distinct column indices per row, drawn without replacement with p ∝ exp(log_weights)
    (Gumbel-top-k: the top n of log w + Gumbel noise is a successive weighted draw)."""
    u = randkernel.rand(log_weights.shape, generator).to(log_weights.device)
    return (log_weights + gumbel(u)).topk(n, dim=1).indices


def gumbel(u: torch.Tensor) -> torch.Tensor:
    """Gumbel noise -log(-log u) of uniform numbers u, clamped (in place) into [1e-20, 1 - 1e-7]."""
    return -torch.log(-torch.log(u.clamp_(1e-20, 1 - 1e-7)))


# `uniform_missing` ranks a row by its uniform numbers where the n + 1 highest of its missing items
# are distinct and at least this high: there, two adjacent numbers (2^-24 apart) have Gumbel keys at
# least 3e-5 apart, ten times what float32 logs off by even 4 ulps could close, so the keys rank
# them as the numbers do. A row has items x 2^-9 missing items above it on average: 26-55 on
# citeulike-t, yelp, foursquare and amazon-music, 7 on ml-1m and 3 on ml-100k (most rows there take
# the keys)
UNIFORM_TOP = 1 - 2**-9


def by_numbers(n_items: int, n: int) -> bool:
    """Whether `uniform_missing` ranks rows of `n_items` items by their numbers: where a row has on
    average at least 2 (n + 1) numbers above `UNIFORM_TOP`, else most rows would take the keys."""
    return n_items * (1 - UNIFORM_TOP) >= 2 * (n + 1)


def by_keys(distinct: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """The rows `uniform_missing` ranks by their Gumbel keys on a dataset `by_numbers` ranks: those
    whose n + 1 highest numbers are not `distinct`, or whose n + 1-th highest number `last` (0 for
    a row short of n + 1 missing items) is below `UNIFORM_TOP`. [B] bool each."""
    return ~distinct | (last < UNIFORM_TOP)


def uniform_missing(
    positives: UserItems, users: torch.Tensor, n: int, generator: torch.Generator, pairs=None
) -> torch.Tensor:
    """n distinct items per user, uniform over M_u: [B x n] (pairs: the users' pairs, if known). The
    draw of `gumbel_topk` with zero weights outside the positives, the same numbers and the same
    items: a row whose n + 1 highest numbers are distinct and above `UNIFORM_TOP` takes its top n
    numbers (`topkernel`), which are its top n Gumbel keys in the same order; the other rows (ties,
    0.25-0.75% of rows on citeulike-t, yelp, foursquare and amazon-music; every row on ml-1m and
    ml-100k, `by_numbers`) take the keys themselves, computed as `gumbel_topk` computes them, for
    the whole batch. [B x items] numbers either way (`randkernel`), but the two logs only in a batch
    that needs them: 2.5-5x faster a draw on those four datasets, 1.5x on ml-1m
    (tools/uniform_probe.py: results/bench/uniform_cpu.json)."""
    pairs = positives.pairs(users) if pairs is None else pairs
    kernel = topkernel.load()
    if (
        not by_numbers(positives.shape[1], n)
        or kernel is None
        or users.device.type != "cpu"
        or generator.device.type != "cpu"
    ):
        keys = torch.zeros(len(users), positives.shape[1], device=users.device)
        return gumbel_topk(masked_scores(keys, positives, users, pairs), n, generator)
    u = randkernel.rand((len(users), positives.shape[1]), generator).clamp_(1e-20, 1 - 1e-7)
    ids, distinct = kernel(masked_scores(u.clone(), positives, users, pairs), n + 1)
    out = ids[:, :n].contiguous()
    last = u.gather(1, ids[:, n:].clamp(min=0))[:, 0].masked_fill_(ids[:, n] < 0, 0.0)
    redo = by_keys(distinct, last).nonzero()[:, 0]
    if len(redo):
        keys = gumbel(u).index_select(0, redo)  # the batch's keys, as gumbel_topk computes them
        out[redo] = masked_scores(keys, positives, users[redo]).topk(n, dim=1).indices
    return out


class CDSampler:
    """Chooses K_u, the `n_distill` missing items per user whose teacher soft labels are distilled.

    sampling: rank    -- p(j) ∝ exp(-rank(j)/mu) over the guide's top `max_rank` missing items
              uniform -- uniform over M_u (ablation)
              topk    -- the guide's top n_distill, deterministic (ablation)
    guide:    teacher -- ranks from the teacher, computed once
              student -- ranks from the current student, recomputed every `refresh_every` epochs
              hybrid  -- teacher for epochs < switch_epoch, student afterwards
    tower:    how a NeuMF student ranks in a refresh (`top_missing`): None, score_all's item-major
              tower | "feature-major", the same up to rounding, faster
    """

    def __init__(
        self,
        positives: UserItems,
        teacher,
        n_distill: int = 10,
        mu: float = 10.0,
        sampling: str = "rank",
        guide: str = "teacher",
        max_rank: int | None = None,
        refresh_every: int = 1,
        switch_epoch: int = 0,
        tower: str | None = None,
    ):
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        if guide not in GUIDES:
            raise ValueError(f"guide must be one of {GUIDES}, got {guide!r}")
        n_missing = positives.shape[1] - int((positives.indptr[1:] - positives.indptr[:-1]).max())
        if n_missing < n_distill:
            raise ValueError(
                f"n_distill={n_distill} exceeds the fewest missing items of a user ({n_missing})"
            )
        self.positives, self.teacher = positives, teacher
        self.n_distill, self.mu, self.sampling, self.guide = n_distill, mu, sampling, guide
        self.max_rank = min(max(max_rank or math.ceil(10 * mu), n_distill), n_missing)
        self.refresh_every, self.switch_epoch, self.tower = refresh_every, switch_epoch, tower
        self.candidates = None  # [users x max_rank] of the guide in use
        self.source = None  # "teacher" or "student": who ranked `candidates`
        self.refresh_seconds = []  # wall time of each student-guided refresh
        r = torch.arange(1, self.max_rank + 1, dtype=torch.float32, device=positives.indptr.device)
        self.log_weights = -r / mu

    def guide_at(self, epoch: int) -> str:
        if self.guide == "hybrid":
            return "teacher" if epoch < self.switch_epoch else "student"
        return self.guide

    def start_epoch(self, epoch: int, student) -> None:
        """Refresh the guide's ranking when the epoch calls for it."""
        if self.sampling == "uniform":
            return
        who = self.guide_at(epoch)
        if who == "teacher" and self.source != "teacher":
            self.candidates, self.source = (
                teacher_top_missing(self.teacher, self.positives, self.max_rank),
                "teacher",
            )
        elif who == "student" and (self.source != "student" or epoch % self.refresh_every == 0):
            t = time.perf_counter()
            self.candidates, self.source = (
                top_missing(student, self.positives, self.max_rank, tower=self.tower),
                "student",
            )
            self.refresh_seconds.append(time.perf_counter() - t)

    def sample(self, users: torch.Tensor, generator: torch.Generator, pairs=None) -> torch.Tensor:
        """K_u for a batch of users: [B x n_distill] distinct missing items (pairs: the users' pairs, if known)."""
        if self.sampling == "uniform":
            return uniform_missing(self.positives, users, self.n_distill, generator, pairs)
        cand = self.candidates[users]
        if self.sampling == "topk":
            return cand[:, : self.n_distill]
        logw = self.log_weights.expand_as(cand).masked_fill(cand < 0, -math.inf)
        return cand.gather(1, gumbel_topk(logw, self.n_distill, generator))
