"""A user's own interactions file: CSV or TSV (with `.gz`), Parquet, or RecBole's `.inter`, checked
with errors that name the file, the line and the problem (`read_interactions`), mapped from its own
column names (`prepare`), and split as the paper's datasets are (`from_interactions`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from .dataset import DataError, Dataset, leave_one_out
from .paths import sha256, write_bytes

_INT = r"[+-]?\d+"


_RECBOLE = {"user_id": "user", "item_id": "item", "timestamp": "timestamp"}


def file_format(path: Path) -> str:
    """csv, tsv, parquet or inter (RecBole atomic file), from the name (a trailing .gz is gzip)."""
    suffixes = [x.lower() for x in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    kinds = {
        ".csv": "csv",
        ".tsv": "tsv",
        ".tab": "tsv",
        ".txt": "tsv",
        ".parquet": "parquet",
        ".pq": "parquet",
        ".inter": "inter",
    }
    if ext not in kinds:
        raise DataError(
            f"{path}: unknown interactions format {ext or '(no extension)'!r}; use .csv or .tsv "
            "(header user, item[, timestamp]; .gz accepted), .parquet, or RecBole's .inter"
        )
    return kinds[ext]


def _check_ids(col: pd.Series, name: str, where: str, line) -> pd.Series:
    """Ids of one type per column: all integers (returned as int64) or all strings (kept)."""
    if col.dtype.kind in "iu":
        return col.astype(np.int64)
    if col.dtype.kind == "f":
        raise DataError(
            f"{where}, {line(0)}: column {name!r} holds floating-point numbers; ids must be integers "
            "or strings"
        )
    py_str = col.map(lambda v: isinstance(v, str)).to_numpy()
    if not py_str.all():  # Parquet object columns: Python ints beside strings
        if py_str.any():
            k = int(np.flatnonzero(py_str != py_str[0])[0])
            raise DataError(
                f"{where}, {line(k)}: column {name!r} mixes id types ({type(col.iloc[0]).__name__} "
                f"{col.iloc[0]!r} in {line(0)}, {type(col.iloc[k]).__name__} {col.iloc[k]!r} here)"
            )
        col = col.astype(str)
    is_int = col.str.fullmatch(_INT).to_numpy()
    if is_int.all():
        return col.astype(np.int64)
    if is_int.any():
        k = int(np.flatnonzero(is_int != is_int[0])[0])
        raise DataError(
            f"{where}, {line(k)}: column {name!r} mixes integer and non-integer ids ({col.iloc[0]!r} in "
            f"{line(0)}, {col.iloc[k]!r} here); the ids of one column must be all integers or all strings"
        )
    return col


def read_interactions(
    path,
    user_col: str = "user",
    item_col: str = "item",
    time_col: str = "timestamp",
    rating_col: str | None = None,
    min_rating: float | None = None,
) -> pd.DataFrame:
    """A user's interactions file as a table (user, item[, timestamp]), checked.

    Formats (by extension): CSV or TSV with a header naming `user`, `item` and optionally
    `timestamp` (other columns ignored; `.gz` accepted); Parquet with those columns; RecBole's
    atomic `.inter` files (tab-separated, typed header `user_id:token  item_id:token  timestamp:float`).
    Other names are mapped by `user_col`, `item_col`, `time_col`; with `rating_col` and `min_rating`
    only the rows rated at least `min_rating` are kept (MovieLens's ratings.csv: userId, movieId,
    rating, timestamp). Bad input raises DataError naming the file, the line where one applies, and
    the problem."""
    if (rating_col is None) != (min_rating is None):
        raise DataError(
            f"{path}: rating_col and min_rating go together (got rating_col={rating_col!r}, "
            f"min_rating={min_rating!r})"
        )
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    kind = file_format(path)
    if path.stat().st_size == 0:
        raise DataError(
            f"{path}: the file is empty; expected a header (user, item[, timestamp]) and rows"
        )
    if kind == "parquet":
        try:
            table = pd.read_parquet(path)
        except ImportError as e:
            raise DataError(f"{path}: reading Parquet needs pyarrow ({e})") from None
        except Exception as e:  # noqa: BLE001 -- pyarrow raises its own types for a damaged file
            raise DataError(
                f"{path}: not a readable Parquet file ({type(e).__name__}: {e})"
            ) from None

        def line(k):
            return f"row {k + 1}"
    else:
        try:
            table = pd.read_csv(
                path,
                sep="," if kind == "csv" else "\t",
                dtype=str,
                keep_default_na=False,
                compression="infer",
                skip_blank_lines=True,
            )
        except pd.errors.EmptyDataError:
            raise DataError(
                f"{path}: the file is empty; expected a header (user, item[, timestamp]) and rows"
            ) from None
        except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as e:
            raise DataError(f"{path}: malformed {kind} file ({type(e).__name__}: {e})") from None

        def line(k):
            return f"line {k + 2}"

    table.columns = [str(c).strip() for c in table.columns]
    mapped = {user_col: "user", item_col: "item", time_col: "timestamp"}
    named = [
        c
        for c, default in (
            (user_col, "user"),
            (item_col, "item"),
            (time_col, "timestamp"),
            (rating_col, None),
        )
        if c is not None and c != default
    ]
    absent = [c for c in named if c not in table.columns]
    if absent:
        raise DataError(
            f"{path}, line 1: no column(s) {absent} in the header; found {list(table.columns)}"
        )
    if any(k != v for k, v in mapped.items()):
        table = table.drop(columns=[v for k, v in mapped.items() if k != v and v in table.columns])
        table = table.rename(columns={k: v for k, v in mapped.items() if k in table.columns})
    if kind == "inter":
        fields = {c: c.split(":", 1)[0] for c in table.columns}
        untyped = [c for c in table.columns if ":" not in c]
        if untyped:
            raise DataError(
                f"{path}, line 1: RecBole header fields are name:type (e.g. user_id:token), "
                f"got {untyped}"
            )
        table = table.rename(columns={c: _RECBOLE.get(f, f) for c, f in fields.items()})
        want = "user_id:token and item_id:token"
    else:
        want = "user and item"
    missing = [c for c in ("user", "item") if c not in table.columns]
    if missing:
        raise DataError(
            f"{path}, line 1: missing column(s) {missing}: the header must name {want} "
            f"(and optionally timestamp); found {list(table.columns)}"
        )
    if len(table) == 0:
        raise DataError(f"{path}: a header but no rows")
    keep = ["user", "item"] + (["timestamp"] if "timestamp" in table.columns else [])
    if rating_col is not None:
        r = pd.to_numeric(table[rating_col], errors="coerce")
        bad = np.flatnonzero(r.isna().to_numpy())
        if len(bad):
            raise DataError(
                f"{path}, {line(int(bad[0]))}: rating {table[rating_col].iloc[bad[0]]!r} "
                f"(column {rating_col!r}) is not a number"
            )
        table = table[(r >= min_rating).to_numpy()]
        if len(table) == 0:
            raise DataError(
                f"{path}: no row has {rating_col} >= {min_rating} (ratings from {r.min()} to {r.max()})"
            )
        rows, at_file = table.index.to_numpy(), line

        def line(k):  # noqa: F811 -- the file's line of the k-th row kept
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
            raise DataError(
                f"{path}, {line(int(bad[0]))}: timestamp {table['timestamp'].iloc[bad[0]]!r} is not a number"
            )
        table["timestamp"] = t.to_numpy()
    return table


def prepare(
    path,
    out_dir,
    user_col: str = "user",
    item_col: str = "item",
    time_col: str = "timestamp",
    rating_col: str | None = None,
    min_rating: float | None = None,
) -> Path:
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


def from_interactions(
    table,
    name: str | None = None,
    order: str | None = None,
    seed: int = 0,
    min_interactions: int = 3,
    draw: bool = True,
) -> Dataset:
    """A Dataset from a user's own data: a DataFrame (columns `user`, `item`, optionally `timestamp`;
    ids of any one type per column), or the path of a file `read_interactions` reads. Leave-one-out
    by timestamp when present, else by seeded random pick (override with `order` = time, file or random);
    draw=False leaves the candidates out (`dataset.leave_one_out`)."""
    meta = {"source": "from_interactions", "sha256": {}}
    if not isinstance(table, pd.DataFrame):
        path = Path(table)
        table = read_interactions(path)
        meta.update(source=str(path), file=str(path.resolve()), sha256={path.name: sha256(path)})
        name = name or path.name
    else:
        missing = {"user", "item"} - set(table.columns)
        if missing:
            raise DataError(
                f"DataFrame: missing column(s) {sorted(missing)}; found {list(table.columns)}"
            )
        if len(table) == 0:
            raise DataError("DataFrame: no rows")
        table = table.reset_index(drop=True).copy()
        for c in ("user", "item"):
            if table[c].isna().any():
                raise DataError(
                    f"DataFrame, row {int(np.flatnonzero(table[c].isna().to_numpy())[0]) + 1}: empty {c} id"
                )
            table[c] = _check_ids(table[c], c, "DataFrame", lambda k: f"row {k + 1}")
        if "timestamp" in table:
            t = pd.to_numeric(table["timestamp"], errors="coerce")
            if t.isna().any():
                raise DataError(
                    f"DataFrame, row {int(np.flatnonzero(t.isna().to_numpy())[0]) + 1}: "
                    "timestamp is not a number"
                )
            table["timestamp"] = t.to_numpy()
    u_codes, u_raw = pd.factorize(table["user"], sort=True)
    i_codes, i_raw = pd.factorize(table["item"], sort=True)
    df = pd.DataFrame({"user": u_codes.astype(np.int64), "item": i_codes.astype(np.int64)})
    if "timestamp" in table:
        df["time"] = table["timestamp"].to_numpy()
    order = order or ("time" if "time" in df else "random")
    ds = leave_one_out(
        name or "custom",
        df,
        order,
        seed,
        meta,
        min_interactions=min_interactions,
        user_names=u_raw,
        draw=draw,
    )
    ds.user_ids = np.asarray(u_raw)[ds.user_ids]
    ds.item_ids = np.asarray(i_raw)[ds.item_ids]
    return ds


def synthetic(
    n_users: int = 600, n_items: int = 400, per_user: int = 40, dim: int = 8, seed: int = 0
) -> pd.DataFrame:
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
    items = order[
        np.arange(n_items)[None, :] < counts[:, None]
    ]  # each user's top `count`, row by row
    t = rng.permutation(len(users))
    return pd.DataFrame(
        {"user": [f"u{u:04d}" for u in users], "item": [f"i{i:04d}" for i in items], "timestamp": t}
    )


def write_inter(table: pd.DataFrame, path) -> Path:
    """Write a (user, item[, timestamp]) table as a RecBole atomic .inter file, atomically."""
    cols = {"user": "user_id:token", "item": "item_id:token", "timestamp": "timestamp:float"}
    out = table[[c for c in cols if c in table]].rename(columns=cols)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, out.to_csv(sep="\t", index=False).encode())
    return path
