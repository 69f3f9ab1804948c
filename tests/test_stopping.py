"""Early stopping's stops (`stopping`): a recorded run trained on past its stop reproduces its
recorded epochs (or says it could not), and the records that stopped at the minimum are found."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
from conftest import TINY

from cdlib import readme_next, runs, stopping, train


def test_past_stop_trains_a_record_on_and_sets_its_best_beside_the_record(results, one_thread):
    cfg = train.Config(backbone="cdae", size=8, **dict(TINY, epochs=3, patience=3))
    with pytest.raises(ValueError, match="not recorded"):
        stopping.past_stop(cfg, 6, results, progress=False)
    rec = train.run(cfg, results, progress=False)
    with pytest.raises(ValueError, match="ran 3 epochs"):
        stopping.past_stop(cfg, 3, results, progress=False)
    out = stopping.past_stop(cfg, 6, results, progress=False)
    assert len(out["curve"]) == 6 and out["reproduced_record_curve"]
    best = max(e["valid_NDCG@10"] for e in out["curve"])
    assert out["valid_sampled"]["NDCG@10"] == best >= rec["valid_sampled"]["NDCG@10"]
    assert out["best_epoch"] == 1 + [e["valid_NDCG@10"] for e in out["curve"]].index(best)
    row = stopping.past_stop_table(results).iloc[0]
    assert (row["key"], row["stopped"], row["epochs"]) == (rec["key"], 3, 6)
    after = max(e["valid_NDCG@10"] for e in out["curve"][3:])
    assert row["after the stop"] == pytest.approx(after / rec["valid_sampled"]["NDCG@10"] - 1)
    assert row["valid NDCG@10 rise"] == pytest.approx(best / rec["valid_sampled"]["NDCG@10"] - 1)
    # a record its retraining does not reproduce on the record's own arithmetic is refused
    bad = dict(rec, curve=[dict(e, loss=e["loss"] + 1) for e in rec["curve"]])
    runs.write_record(bad, results)
    with pytest.raises(RuntimeError, match="did not reproduce its recorded curve"):
        stopping.past_stop(cfg, 6, results, progress=False)
    # on another arithmetic the retraining is another draw, measured against its own first epochs
    cpu = dict(rec["provenance"]["cpu"], vendor="another vendor")
    runs.write_record(dict(bad, provenance=dict(rec["provenance"], cpu=cpu)), results)
    other = stopping.past_stop(cfg, 6, results, progress=False)
    assert not other["reproduced_record_curve"] and other["differences"]
    row = stopping.past_stop_table(results).iloc[0]
    assert not row["reproduced"] and np.isnan(row["test HR@10 full rise"])
    at = max(other["curve"][:3], key=lambda e: e["valid_NDCG@10"])
    assert row["valid NDCG@10 rise"] == pytest.approx(best / at["valid_NDCG@10"] - 1)
    assert row["test NDCG@10 sampled rise"] == pytest.approx(
        other["test_sampled"]["NDCG@10"] / at["test_NDCG@10"] - 1
    )


def test_stopped_early_finds_next_protocol_runs_ended_at_the_minimum_or_by_patience(tmp_path):
    def rec(key, stopped, **config):
        c = dict(dataset="a", backbone="cdae", method="none", size=8, lr=1e-3, seed=0)
        c |= dict(valid_negatives="disjoint", epochs=1000, min_epochs=50, subset_users=None)
        runs.write_record(
            {
                "key": key,
                "config": c | config,
                "epochs_run": stopped,
                "best_epoch": stopped - 30,
                "timing": {"wall_seconds": 2.0 * stopped},
            },
            tmp_path,
        )

    rec("min", 50)
    rec("near", 55)
    rec("later", 56)
    rec("long", 200)
    rec("own", 50, valid_negatives="own")  # another protocol
    rec("capped", 50, epochs=100)
    rec("subset", 50, subset_users=200)
    rec("torch init", 50, backbone="neumf", mlp_init=None)  # voided by NCF's initialisation
    rec("ncf init", 50, backbone="neumf", mlp_init="ncf")
    got = stopping.stopped_early(results=tmp_path)
    assert sorted(got.key) == ["min", "ncf init", "near"] and (got.epoch_s == 2.0).all()
    assert sorted(stopping.stopped_early(control=True, results=tmp_path).key) == ["later"]
    (tmp_path / "next").mkdir()
    (tmp_path / "next" / "03_main_runs.csv").write_text("key,status\nnear,ok\nmin,failed\n")
    assert list(stopping.stopped_early(main=True, results=tmp_path).key) == ["near"]


def _analysis(tail: list[float]) -> dict:
    """A `past_stop` analysis of a run stopped at 4 (best 0.4 at epoch 2), trained on over `tail`."""
    curve = [{"epoch": i + 1, "valid_NDCG@10": v} for i, v in enumerate([0.3, 0.4, 0.35, 0.33])]
    curve += [{"epoch": 5 + i, "valid_NDCG@10": v} for i, v in enumerate(tail)]
    metrics = {"HR@10": 0.5, "NDCG@10": max(e["valid_NDCG@10"] for e in curve)}
    cfg = train.Config(backbone="cdae", size=8, lr=1e-3, **dict(TINY, patience=5, min_epochs=4))
    return {
        "key": "k",
        "config": dataclasses.asdict(cfg),
        "recorded": {"epochs_run": 4, "best_epoch": 2, "test_sampled": metrics},
        "reproduced_record_curve": True,
        "epochs": len(curve),
        "best_epoch": 2,
        "curve": curve,
        "valid_sampled": metrics,
        "test_sampled": metrics,
        "test_full": metrics,
    }


def test_a_probe_that_ends_in_a_climb_says_so():
    climbing = stopping.past_stop_row(_analysis([0.34, 0.35, 0.36, 0.37, 0.38]))
    assert climbing["rising at the end"] and climbing["end rise"] == pytest.approx(0.1)
    assert climbing["valid NDCG@10 rise"] == 0  # not yet past its best: the probe ended a climb
    flat = stopping.past_stop_row(_analysis([0.34, 0.33, 0.35, 0.34, 0.34]))
    assert not flat["rising at the end"] and abs(flat["end rise"]) < 0.02


def test_the_readme_names_a_probe_that_ended_in_a_climb(monkeypatch, tmp_path):
    a = _analysis([0.34, 0.35, 0.36, 0.37, 0.38])
    config = dict(a["config"], valid_negatives="disjoint", epochs=1000, subset_users=None)
    rec = {"key": "k", "config": config, "epochs_run": 4, "best_epoch": 2}
    runs.write_record(dict(rec, timing={"wall_seconds": 1.0}), tmp_path)  # stopped at its minimum
    row = stopping.past_stop_row(a)
    monkeypatch.setattr(readme_next, "past_stop_table", lambda results=None: pd.DataFrame([row]))
    text = "\n".join(readme_next.past_stop_section(tmp_path))
    assert "1 was still rising when the probe ended" in text
    assert f"lr {row['lr']:g} seed {row['seed']}, +10.0% over epochs 5-9, +0.0% over its" in text
    assert text.rstrip().endswith("| -5.0% | +10.0% | +0.0% |  | True |")  # rising at the end
