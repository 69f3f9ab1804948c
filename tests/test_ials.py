"""iALS reference rows: a factor model in the scoring interface, recorded beside the runs, its
budget matched to a backbone's parameters, tuned on validation."""

import dataclasses

import numpy as np
import pytest
import torch

from cdlib import config, ials, models, profiles, runs

SMALL = dict(subset_users=150)


def test_factor_scores_are_inner_products(ml100k):
    f = ials.Factors(np.arange(12.0).reshape(3, 4), np.arange(20.0).reshape(5, 4))
    users, items = torch.tensor([0, 2]), torch.tensor([[1, 4], [0, 3]])
    want = torch.tensor(
        [[np.dot(f.users[u], f.items[i]) for i in row] for u, row in zip(users, items)]
    )
    assert torch.allclose(f.score(users, items), want) and f.n_params() == 32
    assert torch.allclose(f.score_all(users)[:, [1, 4]][0], want[0])
    k = ials.budget(ml100k, "cdae", "student")
    n = models.build("cdae", ml100k.train, 20, 0.5, "cpu").n_params()
    assert k == round(n / (ml100k.n_users + ml100k.n_items))


def test_a_run_is_recorded_beside_the_runs_and_read_back(results, monkeypatch):
    cfg = ials.IALSConfig("ml-100k", 8, 0.1, 1.0, seed=0, **SMALL)
    rec = ials.run(cfg, results)
    assert (results / "ials" / f"{cfg.key()}.json").is_file() and not (results / "runs").exists()
    assert {"valid_sampled", "test_full", "n_params", "provenance"} <= set(rec) and rec[
        "provenance"
    ]["git"]
    assert 0 < rec["test_sampled"]["NDCG@10"] <= 1 and rec["n_params"] == 8 * (
        150 + rec["dataset"]["items"]
    )

    def boom(*a, **k):
        raise AssertionError("fitted again")

    monkeypatch.setattr(ials, "fit", boom)
    assert (
        ials.run(cfg, results)["key"]
        == rec["key"]
        == runs.read_record(cfg.key(), results, "ials")["key"]
    )
    with pytest.raises(LookupError):
        ials.run(
            ials.IALSConfig("ml-100k", 9, 0.1, 1.0, **SMALL), results, config.Execution(train=False)
        )


def test_main_rows_choose_on_validation_and_say_what_is_missing(results):
    grid = {"regularization": [0.01, 1.0], "alpha": [1.0]}
    p = profiles.profile("smoke", backbones=["cdae"], ials_grid=grid)
    off = ials.main_rows(
        p, results, config.Execution(train=False), labels=["iALS (student budget)"]
    )
    assert list(off.status) == ["untuned"]
    rows = ials.main_rows(p, results, labels=["iALS (student budget)"])
    tried = [
        ials.run(c, results)
        for c in ials.configurations("ml-100k", int(rows["size"][0]), 0, 150, grid=grid)
    ]
    best = int(np.argmax([r["valid_sampled"]["NDCG@10"] for r in tried]))
    assert rows.status[0] == "ok" and rows.regularization[0] == [0.01, 1.0][best]
    assert len(list((results / ials.FOLDER).glob("*.json"))) == 2  # the profile's grid, no other
    assert rows["NDCG@10"][0] == tried[best]["test_sampled"]["NDCG@10"]
    disjoint = dataclasses.replace(p, valid_negatives="disjoint")  # validated as the profile's runs
    other = ials.main_rows(disjoint, results, labels=["iALS (student budget)"])
    rec = runs.read_record(other.key[0], results, ials.FOLDER)
    assert rec["config"]["valid_negatives"] == "disjoint" and other.key[0] != rows.key[0]


def test_the_training_modules_import_without_implicit():
    """The lent GPU machine has no `implicit`: the backlog and the notebooks' runners must still
    import there (only fitting an iALS row needs it)."""
    import subprocess
    import sys

    code = "import sys; sys.modules['implicit'] = None; import cdlib.backlog, cdlib.experiments"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
