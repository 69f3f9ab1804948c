"""python -m cdlib.distill and saved models: a file in, a student that recommends out."""

import json

import numpy as np
import pytest
import torch

import cdlib
from cdlib import data, distill, files, paths, saved, train

SHIPPED = data.Path(__file__).resolve().parent.parent / "notebooks" / "data" / "synthetic.inter"
QUICK = ["--epochs", "3", "--min-epochs", "1", "--patience", "2", "--no-progress"]


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distill")
    mp = pytest.MonkeyPatch()
    mp.setenv("CDLIB_CACHE", str(tmp / "cache"))
    out = tmp / "out"
    assert distill.main([str(SHIPPED), "--out", str(out), "--student-size", "8", *QUICK]) == 0
    yield out, tmp
    mp.undo()


def test_distill_writes_weights_and_a_card_that_names_them(distilled, capsys):
    out, tmp = distilled
    card = json.loads((out / "card.json").read_text())
    assert card["data"]["sha256"] == {"synthetic.inter": paths.sha256(SHIPPED)}
    for role in ("teacher", "student"):
        assert card["weights"][f"{role}.pt"]["sha256"] == paths.sha256(out / f"{role}.pt")
        m = card["models"][role]
        assert {"HR@10", "NDCG@10"} <= set(m["test_sampled"]) and {"HR@10", "NDCG@10"} <= set(
            m["test_full"]
        )
        assert m["n_params"] > 0 and m["latency_ms"]["ms"] > 0
    assert (
        card["models"]["student"]["config"]["size"] == 8
        and card["models"]["teacher"]["config"]["size"] == 200
    )
    assert card["models"]["student"]["teacher_sha256"]
    assert not list((tmp / "cache" / "results").glob("*.csv"))  # records only, in the cache
    assert len(list((tmp / "cache" / "results" / "runs").glob("*.json"))) == 2


def test_saved_student_recommends_in_the_files_ids(distilled):
    out, _ = distilled
    m = cdlib.load_model(out / "student.pt")
    ds = data.load(str(SHIPPED))
    users = ["u0003", "u0420", "u0003"]
    rec = m.recommend(users, k=5)
    assert (
        list(rec.user) == [u for u in users for _ in range(5)] and rec.item.map(type).eq(str).all()
    )
    assert (np.diff(rec.score.to_numpy().reshape(len(users), 5), axis=1) <= 0).all() and list(
        rec["rank"][:5]
    ) == [1, 2, 3, 4, 5]
    # brute force for one user: the model's top-5 over the items it never interacted with
    u = list(ds.user_ids).index("u0420")
    scores = m.score(["u0420"])[0]
    seen = set(ds.train[u].indices) | {ds.valid_item[u], ds.test_item[u]}
    order = [i for i in np.argsort(-scores, kind="stable") if i not in seen][:5]
    assert list(rec[rec.user == "u0420"].item) == list(ds.item_ids[order])
    assert not set(rec[rec.user == "u0420"].item) & set(ds.item_ids[list(seen)])
    with_seen = m.recommend(["u0420"], k=5, exclude_seen=False)
    assert list(with_seen.item) == list(ds.item_ids[np.argsort(-scores, kind="stable")[:5]])
    with pytest.raises(KeyError, match=r"2 unknown user id\(s\): \['nobody', 7\]"):
        m.recommend(["u0003", "nobody", 7])
    t = cdlib.load_model(out / "teacher.pt")
    assert t.model.n_params() > m.model.n_params()


def test_load_model_refuses_damaged_files_and_foreign_cards(distilled, tmp_path):
    out, _ = distilled
    bad = tmp_path / "student.pt"
    bad.write_bytes((out / "student.pt").read_bytes()[:1000])  # truncated
    with pytest.raises(saved.ModelError, match="not a readable model file"):
        saved.load_model(bad)
    (tmp_path / "card.json").write_text((out / "card.json").read_text())
    with pytest.raises(
        saved.ModelError, match=r"SHA-256 .* is not the .* that .*card.json records"
    ):
        saved.load_model(bad)
    with pytest.raises(saved.ModelError, match="names no weights file 'other.pt'"):
        (tmp_path / "other.pt").write_bytes((out / "student.pt").read_bytes())
        saved.load_model(tmp_path / "other.pt")
    (tmp_path / "card.json").unlink()
    torch.save({"w": torch.zeros(1)}, tmp_path / "sd.pt")  # a bare state dict (the cache's)
    with pytest.raises(saved.ModelError, match="not a cdlib-model/1 file"):
        saved.load_model(tmp_path / "sd.pt")


def test_distill_refuses_bad_input_before_writing_anything(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CDLIB_CACHE", str(tmp_path / "cache"))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    out = tmp_path / "out"
    assert distill.main([str(empty), "--out", str(out), *QUICK]) == 2
    assert "empty.csv: the file is empty" in capsys.readouterr().err
    assert (
        distill.main([str(SHIPPED), "--out", str(out), "--epochs", "5", "--min-epochs", "9"]) == 2
    )
    assert "below min_epochs=9" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "cache" / "results").exists()
    if not torch.cuda.is_available():
        assert distill.main([str(SHIPPED), "--out", str(out), "--device", "cuda", *QUICK]) == 2
        assert "no CUDA device" in capsys.readouterr().err
        assert not out.exists()


def test_a_file_dataset_is_keyed_by_its_bytes(tmp_path):
    a, b = tmp_path / "a.inter", tmp_path / "b.inter"
    a.write_bytes(SHIPPED.read_bytes())
    b.write_bytes(SHIPPED.read_bytes())
    ka, kb = (train.Config(dataset=str(p), size=8).key() for p in (a, b))
    assert ka == kb  # same bytes, same run
    b.write_text(SHIPPED.read_text().replace("u0001\t", "u9999\t", 1))
    assert train.Config(dataset=str(b), size=8).key() != ka  # other bytes, other run


def _movielens_ratings(path, seed=0):
    """The shipped synthetic table in MovieLens's ratings.csv layout, with seeded ratings 1-5 and one
    repeated (user, item) pair."""
    t = files.read_interactions(SHIPPED)
    rng = np.random.default_rng(seed)
    ml = t.rename(columns={"user": "userId", "item": "movieId"})
    ml.insert(2, "rating", rng.integers(1, 6, len(t)).astype(float))
    ml = ml[["userId", "movieId", "rating", "timestamp"]]
    ml = data.pd.concat([ml, ml.iloc[[0]].assign(rating=5.0)], ignore_index=True)
    ml.to_csv(path, index=False)
    return ml


def test_movielens_ratings_csv_with_its_own_columns_and_a_rating_threshold(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("CDLIB_CACHE", str(tmp_path / "cache"))
    ratings = tmp_path / "ratings.csv"
    ml = _movielens_ratings(ratings)
    assert distill.main([str(ratings), "--out", str(tmp_path / "plain"), *QUICK]) == 2
    assert "missing column(s) ['user', 'item']" in capsys.readouterr().err
    kept = files.read_interactions(
        ratings, user_col="userId", item_col="movieId", rating_col="rating", min_rating=4
    )
    assert len(kept) == int((ml.rating >= 4).sum()) and list(kept.columns) == [
        "user",
        "item",
        "timestamp",
    ]
    assert kept.user.map(type).eq(str).all()
    out = tmp_path / "out"
    args = [
        "--user-col",
        "userId",
        "--item-col",
        "movieId",
        "--rating-col",
        "rating",
        "--min-rating",
        "4",
    ]
    assert (
        distill.main([str(ratings), "--out", str(out), "--student-size", "8", *args, *QUICK]) == 0
    )
    assert "1 repeated (user, item) pairs kept once" in capsys.readouterr().out
    card = json.loads((out / "card.json").read_text())
    src = card["data"]["source"]
    assert (
        src["path"] == str(ratings)
        and src["sha256"] == paths.sha256(ratings)
        and src["min_rating"] == 4
    )
    prepared = data.Path(card["data"]["path"])
    assert prepared.parent == tmp_path / "cache" / "prepared" and files.read_interactions(
        prepared
    ).equals(kept)
    assert card["data"]["duplicates_merged"] == 1
    assert card["models"]["student"]["config"]["data_sha256"] == paths.sha256(prepared)


def test_column_options_name_the_problem(tmp_path):
    ratings = tmp_path / "ratings.csv"
    _movielens_ratings(ratings)
    with pytest.raises(data.DataError, match=r"ratings.csv, line 1: no column\(s\) \['uid'\]"):
        files.read_interactions(ratings, user_col="uid", item_col="movieId")
    with pytest.raises(data.DataError, match="rating_col and min_rating go together"):
        files.read_interactions(ratings, user_col="userId", item_col="movieId", min_rating=4)
    with pytest.raises(data.DataError, match=r"no row has rating >= 6"):
        files.read_interactions(
            ratings, user_col="userId", item_col="movieId", rating_col="rating", min_rating=6
        )
    lines = ratings.read_text().splitlines()
    user, item, _, ts = lines[5].split(",")
    lines[5] = f"{user},{item},x,{ts}"  # line 6: a rating that is not a number
    ratings.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        data.DataError, match=r"ratings.csv, line 6: rating 'x' \(column 'rating'\) is not a number"
    ):
        files.read_interactions(
            ratings, user_col="userId", item_col="movieId", rating_col="rating", min_rating=4
        )
    lines[5] = f"{user},{item},3.0,{ts}"
    _, item, _, ts = lines[7].split(",")
    lines[7] = f",{item},5.0,{ts}"  # line 8: kept (rated 5), no user id
    ratings.write_text("\n".join(lines) + "\n")
    with pytest.raises(data.DataError, match=r"ratings.csv, line 8: empty user id"):
        files.read_interactions(
            ratings, user_col="userId", item_col="movieId", rating_col="rating", min_rating=4
        )


def test_the_python_api_returns_models_and_card_and_writes_files_only_when_asked(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("CDLIB_CACHE", str(tmp_path / "cache"))
    quick = dict(epochs=3, min_epochs=1, patience=2)
    with pytest.raises(TypeError):  # keywords only
        cdlib.distill(str(SHIPPED), "cdae")
    result = cdlib.distill(str(SHIPPED), backbone="cdae", student_size=8, progress=False, **quick)
    assert isinstance(result, distill.Distilled) and not (tmp_path / "out").exists()
    assert result.student.model.n_params() < result.teacher.model.n_params()
    assert result.card["models"]["student"]["config"]["size"] == 8 and result.card["weights"] == {}
    top = result.student.recommend(["u0003"], k=3)
    assert list(top.user) == ["u0003"] * 3 and top.item.map(type).eq(str).all()
    again = cdlib.distill(
        str(SHIPPED), backbone="cdae", student_size=8, progress=False, out=tmp_path / "out", **quick
    )  # recorded: read, not trained again
    assert (
        again.card["models"]["student"]["record_key"]
        == result.card["models"]["student"]["record_key"]
    )
    loaded = cdlib.load_model(tmp_path / "out" / "student.pt")
    assert loaded.recommend(["u0003"], k=3).equals(top)
    assert (
        cdlib.from_run(cdlib.Config(**again.card["models"]["student"]["config"]))
        .recommend(["u0003"], k=3)
        .equals(top)
    )


def test_the_readme_use_the_library_section_runs_as_written(tmp_path, monkeypatch):
    """The README's "Use the library" block, executed as it stands (smoke size, ml-100k), with the run
    records and the cache in a temporary folder."""
    monkeypatch.setenv("CDLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CDLIB_RESULTS", str(tmp_path / "results"))
    readme = (data.Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Use the library", 1)[1]
    block = section.split("```python", 1)[1].split("```", 1)[0]
    namespace = {}
    exec(compile(block, "README.md: Use the library", "exec"), namespace)
    assert isinstance(namespace["result"], distill.Distilled) and len(namespace["top"]) == 10
    assert [len(r["group"]) for r in namespace["seeds"]] == [1, 2, 2]  # seed 0 was recorded already
    assert len(list((tmp_path / "results" / "runs").glob("*.json"))) >= 2


def test_the_sparse_step_distils_and_its_saved_models_load_and_score_as_trained(
    tmp_path, monkeypatch
):
    """--step sparse: both runs carry the step, and the saved CDAE (its encoder item-major) loads
    back into a model that scores as the trained one."""
    monkeypatch.setenv("CDLIB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    args = [str(SHIPPED), "--out", str(out), "--student-size", "8", "--step", "sparse", *QUICK]
    assert distill.main(args) == 0
    card = json.loads((out / "card.json").read_text())
    assert {card["models"][r]["config"]["step"] for r in ("teacher", "student")} == {"sparse"}
    for role in ("teacher", "student"):
        m = cdlib.load_model(out / f"{role}.pt")
        assert m.model.sparse and "encoder_items" in m.model.state_dict()
        cfg = train.Config(**card["models"][role]["config"])
        trained = saved.from_run(cfg).model
        users = torch.arange(20)
        torch.testing.assert_close(m.model.score_all(users), trained.score_all(users))
