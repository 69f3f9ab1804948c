"""Training: deterministic on the CPU, resumable from records, atomic, every method runs."""
import json

import pytest
import torch

from cdlib import runs, train

TINY = dict(dataset="ml-100k", subset_users=200, epochs=3, patience=2, device="cpu")


@pytest.fixture()
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("CDLIB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "results"


@pytest.mark.parametrize("backbone", ["cdae", "neumf"])
def test_same_seed_same_numbers(results, backbone):
    cfg = train.Config(backbone=backbone, size=8, **TINY)
    a = train.run(cfg, results, progress=False)
    b = train.run(cfg, results, refresh=True, progress=False)
    assert a["curve"] == [dict(c, seconds=c2["seconds"]) for c, c2 in zip(b["curve"], a["curve"])]
    assert a["test_sampled"] == b["test_sampled"] and a["test_full"] == b["test_full"]
    c = train.run(train.Config(backbone=backbone, size=8, seed=1, **TINY), results, progress=False)
    assert c["curve"][0]["loss"] != a["curve"][0]["loss"]


def test_record_is_reused_and_complete(results, monkeypatch):
    cfg = train.Config(backbone="cdae", size=8, **TINY)
    rec = train.run(cfg, results, progress=False)
    files = list((results / "runs").iterdir())
    assert [p.name for p in files] == [f"{rec['key']}.json"]          # no temporary left behind
    for k in ("config", "test_sampled", "test_full", "valid_sampled", "curve", "n_params", "timing", "dataset",
              "provenance", "best_epoch"):
        assert k in rec
    prov = rec["provenance"]
    assert {"git", "packages", "device", "python"} <= set(prov) and "commit" in prov["git"]
    assert rec["dataset"]["sha256"]["ml-100k.rating"].startswith("06416e59")
    assert json.loads(files[0].read_text())["key"] == rec["key"]

    def boom(*a, **k):
        raise AssertionError("trained again")
    monkeypatch.setattr(train, "fit", boom)
    assert train.run(cfg, results, progress=False)["key"] == rec["key"]
    with pytest.raises(train.NotRecorded):
        train.run(train.Config(backbone="cdae", size=9, **TINY), results, train=False)


def test_canonical_config_ignores_unused_parameters():
    a = train.Config(method="none", mu=3.0, rd_k=7).canonical()
    b = train.Config(method="none").canonical()
    assert runs.config_key(a.__dict__) == runs.config_key(b.__dict__)
    c = train.Config(method="cd", guide="hybrid", epochs=40).canonical()
    assert c.switch_epoch == 10 and c.max_rank == 100 and c.rd_k is None and c.teacher_size == 200
    with pytest.raises(ValueError, match="method"):
        train.Config(method="kd").canonical()


@pytest.mark.parametrize("backbone", ["cdae", "neumf"])
@pytest.mark.parametrize("method,extra", [("rd", {}), ("cd", {"guide": "teacher"}), ("cd", {"guide": "student"}),
                                          ("cd", {"guide": "hybrid", "sampling": "uniform"})])
def test_students_train_with_one_shared_teacher(results, backbone, method, extra):
    cfg = train.Config(backbone=backbone, size=4, method=method, teacher_size=16, **TINY, **extra)
    rec = train.run(cfg, results, progress=False)
    assert rec["teacher_n_params"] > rec["n_params"]
    teacher = runs.read_record(train.Config(backbone=backbone, size=16, **TINY).canonical().__dict__, results)
    assert teacher is not None and rec["teacher_key"] == teacher["key"]
    assert 0.0 <= rec["test_sampled"]["HR@10"] <= 1.0
    assert torch.isfinite(torch.tensor(rec["curve"][-1]["loss"]))
