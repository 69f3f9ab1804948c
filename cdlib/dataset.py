"""The Dataset of a run: leave-one-out split, 99 sampled test negatives and the validation's own 99,
from a long table of interactions (`leave_one_out`).

Split (METHOD.md, "Evaluation protocol", a [decision]): leave-one-out per user, the last interaction
is the test item and the one before it the validation item; users with fewer than
``min_interactions`` (3) interactions are dropped and counted. Duplicate (user, item) pairs are
merged, keeping the latest one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

N_NEGATIVES = 99  # sampled protocol: the held-out item against 99 negatives (NCF)


class DataError(Exception):
    """Bad or missing input data; the message names the file and the problem."""


@dataclass
class Dataset:
    """One leave-one-out dataset, users and items re-indexed 0..n-1.

    train:      scipy CSR [users x items], 1.0 where the user interacted in training.
    valid_item, test_item: the held-out item of each user (int64 [users]).
    negatives:  [users x 99] items the user never interacted with: the test candidates (sampled protocol);
                None, as the two below, where the split was made without them (`leave_one_out`).
    user_ids, item_ids: the original id of each index.
    meta:       name, source, sha256 of every file read, counts before/after filtering.
    valid_negatives: [users x 99] the validation's own draw of never-interacted items (so that early
                stopping never sees the test candidates; METHOD.md "Evaluation protocol").
    valid_disjoint: [users x 99] a draw of never-interacted items that are not among the user's test
                negatives either (valid_negatives="disjoint"); None where some user cannot spare 2 x 99
                (`meta["valid_disjoint"]` says who).
    """

    name: str
    train: sp.csr_matrix
    valid_item: np.ndarray
    test_item: np.ndarray
    negatives: np.ndarray | None
    user_ids: np.ndarray
    item_ids: np.ndarray
    meta: dict = field(default_factory=dict)
    valid_negatives: np.ndarray | None = None
    valid_disjoint: np.ndarray | None = None

    @property
    def n_users(self) -> int:
        return self.train.shape[0]

    @property
    def n_items(self) -> int:
        return self.train.shape[1]

    def subset(self, n_users: int, seed: int = 0) -> Dataset:
        """A seeded random subset of users (items kept), for smoke runs and tests."""
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(self.n_users, size=min(n_users, self.n_users), replace=False))
        meta = dict(self.meta, name=f"{self.name}[{len(keep)}u,seed{seed}]", subset_users=len(keep))
        return Dataset(
            meta["name"],
            self.train[keep],
            self.valid_item[keep],
            self.test_item[keep],
            None if self.negatives is None else self.negatives[keep],
            self.user_ids[keep],
            self.item_ids,
            meta,
            None if self.valid_negatives is None else self.valid_negatives[keep],
            None if self.valid_disjoint is None else self.valid_disjoint[keep],
        )

    def with_valid_in_train(self) -> Dataset:
        """The training set NCF trains on (all but the test item): each user's validation item added
        to `train`. For analyses of the protocol only (analyses.best_test_epoch): validation is then no
        longer held out, so nothing may be chosen on it."""
        meta = dict(self.meta, name=f"{self.name}+valid", valid_in_train=True)
        return Dataset(
            meta["name"],
            with_items(self.train, self.valid_item),
            self.valid_item,
            self.test_item,
            self.negatives,
            self.user_ids,
            self.item_ids,
            meta,
            self.valid_negatives,
            self.valid_disjoint,
        )

    def validation_negatives(self, kind: str = "own") -> np.ndarray:
        """The validation's 99 candidates besides its item: "own" (its own draw of never-interacted
        items), "disjoint" (its own draw, none of them among the test's negatives) or "test" (the
        test's, the protocol before validation had its own draw)."""
        negs = {
            "own": self.valid_negatives,
            "disjoint": self.valid_disjoint,
            "test": self.negatives,
        }
        if kind not in negs:
            raise ValueError(f"valid_negatives must be one of {list(negs)}, got {kind!r}")
        if negs[kind] is None:  # why not, as `leave_one_out` recorded it
            why = self.meta.get("valid_disjoint") if kind == "disjoint" else None
            raise DataError(
                why or f"{self.name}: no {kind} validation negatives (an older Dataset)"
            )
        return negs[kind]

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, users={self.n_users:,}, items={self.n_items:,}, "
            f"train interactions={self.train.nnz:,})"
        )


def with_items(matrix: sp.csr_matrix, *items: np.ndarray) -> sp.csr_matrix:
    """A binary [users x items] CSR: `matrix` plus, for every array in `items`, the item it gives each
    user (items[k][u]), e.g. the training set plus the held-out validation and test items."""
    n = matrix.shape[0]
    extra = sp.csr_matrix(
        (
            np.ones(n * len(items), np.float32),
            (np.tile(np.arange(n), len(items)), np.concatenate(items)),
        ),
        shape=matrix.shape,
    )
    out = (matrix + extra).tocsr()
    out.data[:] = 1.0
    return out


def _raw_counts(df: pd.DataFrame) -> dict:
    return {
        "users": int(df.user.nunique()),
        "items": int(df.item.nunique()),
        "interactions": int(len(df)),
    }


def _sample_negatives(
    seen: sp.csr_matrix, k: int, seed, chunk: int = 2048, where: str = "", user_ids=None
) -> np.ndarray:
    """k distinct never-seen items per user: the k smallest of seeded uniform keys, seen items excluded.
    Vectorised over chunks of users; memory is chunk x items."""
    rng = np.random.default_rng(seed)
    n_users, n_items = seen.shape
    n_seen = np.diff(seen.indptr)
    if n_items - n_seen.max() < k:
        u = int(n_seen.argmax())
        who = user_ids[u] if user_ids is not None else u
        who = who.item() if hasattr(who, "item") else who
        raise DataError(
            f"{where or 'dataset'}: too small for the sampled protocol: user {who!r} has only "
            f"{n_items - n_seen[u]} never-interacted items of {n_items}, and every user needs "
            f"{k} as negatives"
        )
    out = np.empty((n_users, k), np.int64)
    for s in range(0, n_users, chunk):
        block = seen[s : s + chunk]
        keys = rng.random((block.shape[0], n_items), dtype=np.float32)
        keys[block.nonzero()] = 2.0
        out[s : s + chunk] = smallest_keys(keys, k, n_items - n_seen[s : s + chunk])
    return out


def smallest_keys(keys: np.ndarray, k: int, free: np.ndarray) -> np.ndarray:
    """The columns of each row's k smallest keys, in column order: np.sort(np.argpartition(keys, k,
    axis=1)[:, :k], axis=1), the same integers. `free`: each row's keys below 1 (at least k), the
    never-interacted items whose uniform keys the others' 2.0 sits above. A row's k smallest lie
    below a threshold that ~k + 8 sqrt(k) + 16 of its free keys pass, so they are sorted from those
    (argpartition reads every item: its three draws took 70 s of a yelp load's 80); a row where
    fewer pass, or whose k-th and (k+1)-th smallest keys are equal (argpartition's pick), takes
    argpartition. Keys are float32 and nonnegative (uniform keys, 2.0 for the seen)."""
    if keys.dtype != np.float32:
        raise TypeError(f"smallest_keys takes float32 keys, not {keys.dtype}")
    want = k + 8 * math.sqrt(k) + 16
    below = np.minimum(1.0, want / np.maximum(free, 1)).astype(np.float32)
    at = np.flatnonzero(keys < below[:, None])  # row-major: 1-D nonzero, 7x faster than 2-D
    rows, cols = np.divmod(at, keys.shape[1])
    vals = keys.ravel()[at]
    # by row, then key, ties in column order: lexsort((vals, rows)) (4x slower), as one int64 key;
    # a nonnegative float32's bits sort as its value
    order = np.argsort((rows << 31) | vals.view(np.int32), kind="stable")
    rows, cols, vals = rows[order], cols[order], vals[order]
    count = np.bincount(rows, minlength=len(keys))
    start = np.concatenate(([0], np.cumsum(count)[:-1]))
    rank = np.arange(len(rows)) - start[rows]
    slow = count < k
    tied = np.flatnonzero(count > k)
    tied = tied[vals[start[tied] + k - 1] == vals[start[tied] + k]]
    slow[tied] = True
    pick = (rank < k) & ~slow[rows]
    out = np.empty((len(keys), k), np.int64)
    out[~slow] = np.sort(cols[pick].reshape(-1, k), axis=1)
    if slow.any():
        out[slow] = np.sort(np.argpartition(keys[slow], k, axis=1)[:, :k], axis=1)
    return out


def _disjoint_negatives(seen: sp.csr_matrix, neg: np.ndarray, seed: int, where: str, user_ids):
    """The validation's candidates disjoint from the test's (issue 23; METHOD.md: validation never
    sees the test's candidates): 99 items per user that are neither interacted with nor among the
    user's test negatives, seed [seed, 98]. Returns (draw, how it was made), or (None, why not) when a
    user cannot spare 2 x 99 distinct negatives."""
    taken = with_items(seen, *neg.T)
    free = taken.shape[1] - np.diff(taken.indptr)
    if free.min() < N_NEGATIVES:
        u = int(free.argmin())
        who = user_ids[u].item() if hasattr(user_ids[u], "item") else user_ids[u]
        never = seen.shape[1] - seen[u].nnz
        return None, (
            f"{where or 'dataset'}: too small for validation negatives disjoint from the test's: "
            f"user {who!r} has {never} never-interacted items, and needs {2 * N_NEGATIVES} (99 for "
            "the test, 99 others for validation)"
        )
    draw = _sample_negatives(taken, N_NEGATIVES, [seed, 98], where=where, user_ids=user_ids)
    return draw, (
        f"sampled uniformly from the never-interacted items not among the test's negatives, "
        f"seed [{seed}, 98]"
    )


def _repair_negatives(neg: np.ndarray, seen: sp.csr_matrix, seed: int) -> int:
    """Replace, in place, negatives that the user interacted with (NCF's ml-1m file lists the
    test item among its own negatives for 156 users) by seeded never-interacted items not yet in
    the row. Returns how many were replaced. Runs once per load, over the few bad entries."""
    rows = np.repeat(np.arange(neg.shape[0]), neg.shape[1])
    bad = np.flatnonzero(np.asarray(seen[rows, neg.ravel()]).ravel() > 0)
    rng = np.random.default_rng(seed)
    for b in bad:
        u, c = divmod(int(b), neg.shape[1])
        while True:
            j = int(rng.integers(seen.shape[1]))
            if seen[u, j] == 0 and j not in neg[u]:
                neg[u, c] = j
                break
    return len(bad)


def leave_one_out(
    name,
    df,
    order,
    seed,
    meta,
    min_interactions=3,
    test=None,
    valid=None,
    negatives=None,
    user_names=None,
    draw=True,
):
    """Leave-one-out on a long table (user, item[, time], pos) -> Dataset.

    order: "time" (timestamp, then file position), "file" (file position) or "random" (seeded).
    test/valid: optional tables (user, item) of held-out items given by the source, which then
    take precedence over the split of `df` (valid may be None: taken as the last of df).
    negatives: optional {raw user: array of raw items} given by the source.
    user_names: optional original ids of df's user codes (for error messages).
    draw: False leaves the candidates out (negatives, valid_negatives and valid_disjoint None): the
    split alone, for callers that need its shapes, at a quarter of a load's time (yelp's three
    draws of 30,431 x 20,033 keys are three quarters of it).
    """
    meta = dict(
        meta, name=name, split_order=order, split_seed=seed, min_interactions=min_interactions
    )
    all_df = pd.concat([x for x in (df, valid, test) if x is not None], ignore_index=True)
    meta["before"] = _raw_counts(all_df)
    rng = np.random.default_rng(seed)
    df = df.copy()
    if "pos" not in df:
        df["pos"] = np.arange(len(df))
    if order == "random":
        key = rng.permutation(len(df))
    elif order == "time":
        key = np.lexsort((df.pos.to_numpy(), df.time.to_numpy()))
        key = np.argsort(key)  # rank of each row in time order
    elif order == "file":
        key = df.pos.to_numpy()
    else:
        raise ValueError(f"order must be time, file or random, got {order!r}")
    df["key"] = key
    n0 = len(df)
    df = df.sort_values("key").drop_duplicates(["user", "item"], keep="last")
    meta["duplicates_merged"] = n0 - len(df)
    held = [x for x in (valid, test) if x is not None]
    n_held = len(held)
    counts = df.groupby("user").size()
    need = max(min_interactions - n_held, 1)
    keep_users = counts.index[counts >= need]
    for h in held:
        keep_users = keep_users.intersection(pd.Index(h.user.unique()))
    if len(keep_users) == 0:
        raise DataError(
            f"{meta.get('source', name)}: no user has at least {min_interactions} interactions "
            f"({meta['before']['users']} users, {meta['before']['interactions']} interactions before "
            "filtering); leave-one-out needs a test item, a validation item and training items per user"
        )
    meta["users_dropped"] = int(all_df.user.nunique() - len(keep_users))
    df = df[df.user.isin(keep_users)]
    # the last (and second to last) interaction of each user, in split order
    df = df.sort_values(["user", "key"])
    rank_from_end = df.groupby("user").cumcount(ascending=False).to_numpy()
    if test is None:
        test = df[rank_from_end == 0][["user", "item"]]
        valid_ = df[rank_from_end == 1][["user", "item"]]
        train = df[rank_from_end >= 2]
    elif valid is None:
        valid_ = df[rank_from_end == 0][["user", "item"]]
        train = df[rank_from_end >= 1]
    else:
        valid_, train = valid, df
    test = test[test.user.isin(keep_users)].drop_duplicates("user", keep="last")
    valid_ = valid_[valid_.user.isin(keep_users)].drop_duplicates("user", keep="last")
    user_ids = np.sort(keep_users.to_numpy())
    item_ids = np.unique(
        np.concatenate(
            [train.item.to_numpy(), valid_.item.to_numpy(), test.item.to_numpy()]
            + ([np.concatenate(list(negatives.values()))] if negatives else [])
        )
    )
    uix = pd.Index(user_ids)
    iix = pd.Index(item_ids)
    U, I = len(user_ids), len(item_ids)
    tr = sp.csr_matrix(
        (
            np.ones(len(train), np.float32),
            (uix.get_indexer(train.user), iix.get_indexer(train.item)),
        ),
        shape=(U, I),
    )
    tr.sum_duplicates()
    tr.data[:] = 1.0

    def held_items(t):
        a = np.full(U, -1, np.int64)
        a[uix.get_indexer(t.user)] = iix.get_indexer(t.item)
        return a

    valid_item, test_item = held_items(valid_), held_items(test)
    seen = with_items(tr, valid_item, test_item)
    names = (
        user_ids if user_names is None else np.asarray(user_names)[user_ids]
    )  # for error messages
    where = meta.get("source", name)
    n_all = int(seen.nnz)
    meta["after"] = {
        "users": U,
        "items": I,
        "interactions": n_all,
        "train_interactions": int(tr.nnz),
        "density": n_all / (U * I),
    }
    if not draw:
        meta["negatives"] = "not drawn (draw=False)"
        return Dataset(name, tr, valid_item, test_item, None, user_ids, item_ids, meta)
    if negatives is not None:
        neg = np.stack([iix.get_indexer(np.asarray(negatives[u])) for u in user_ids])
        n_bad = _repair_negatives(neg, seen, seed + 1)
        meta["negatives"] = (
            "given by the source; entries that are an interacted item (the held-out "
            f"item itself: {n_bad}) replaced by seeded never-interacted items"
        )
        meta["negatives_replaced"] = n_bad
    else:
        neg = _sample_negatives(seen, N_NEGATIVES, seed + 1, where=where, user_ids=names)
        meta["negatives"] = f"sampled uniformly from never-interacted items, seed {seed + 1}"
    # the validation's own candidates: never-interacted items (so never the test item), a draw of
    # its own beside the test negatives, whichever way those were obtained
    valid_neg = _sample_negatives(seen, N_NEGATIVES, [seed, 99], where=where, user_ids=names)
    meta["valid_negatives"] = f"sampled uniformly from never-interacted items, seed [{seed}, 99]"
    valid_disjoint, meta["valid_disjoint"] = _disjoint_negatives(seen, neg, seed, where, names)
    return Dataset(
        name, tr, valid_item, test_item, neg, user_ids, item_ids, meta, valid_neg, valid_disjoint
    )
