"""tools/defer_probe.py: its runs of both tables' rules, on a dataset small enough for a test."""

import importlib.util

from conftest import ROOT

from cdlib import rowadam

spec = importlib.util.spec_from_file_location("defer_probe", ROOT / "tools" / "defer_probe.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


def test_the_probe_trains_each_run_both_ways_and_on_two_threads(monkeypatch):
    monkeypatch.setattr(rowadam, "WARMUP", 0.01)  # 10 whole steps: the rows defer in epoch 1
    rows = probe.probe_dataset("ml-100k", epochs=2)
    assert [(r["run"], r["size"]) for r in rows] == [
        ("NeuMF student, none", 8),
        ("NeuMF teacher", 64),
    ]
    for r in rows:
        assert r["size rule s/epoch"] > 0 < r["all s/epoch"]
        for k in ("size rule", "all", "size rule 2 threads"):
            assert len(r[f"{k} valid NDCG@10"]) == 2
        assert r["same bits"] == (r["size rule loss"] == r["all loss"])
