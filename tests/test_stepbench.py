"""The step bench (`bench --steps`, cdlib/stepbench.py): the dense step against the sparse ones."""

import pandas as pd

from cdlib import bench, costs, stepbench


def test_step_table_times_every_step_of_every_kind_and_the_record_says_so(tmp_path, monkeypatch):
    """`bench --steps`: each kind of run with the dense and the sparse steps, side by side (the
    deferred one after its warm-up and during it), written with its provenance and the process's
    peak memory."""
    import json

    from cdlib import data, rowadam

    ds = data.load("ml-100k").subset(100)
    monkeypatch.setattr(data, "load", lambda name, seed=0: ds)
    timed_with = []
    epoch_seconds = stepbench.epoch_seconds

    def spy(cfg, *a, **k):
        timed_with.append((cfg.step, rowadam.WARMUP))
        return epoch_seconds(cfg, *a, **k)

    monkeypatch.setattr(stepbench, "epoch_seconds", spy)
    out = tmp_path / "steps.json"
    bench.main(["--steps", "--dataset", "ml-100k", "--rounds", "1", "--out", str(out)])
    rec = json.loads(out.read_text())
    t = pd.DataFrame(rec["steps"])
    kinds = [costs.kind_name(b, k) for b in ("cdae", "neumf") for k in costs.step_kinds(b)]
    assert list(t.run) == kinds and rec["complete"] and rec["peak_rss_gib"] > 0
    assert timed_with[:4] == [("dense", 1.0), ("sparse", 1.0), ("deferred", 0.0), ("deferred", 1e9)]
    assert rowadam.WARMUP == 1.0 and len(timed_with) == 4 * len(kinds)
    steps = ["dense", "sparse", "deferred", "deferred warm-up"]
    assert (t[[f"{s} s/epoch" for s in steps] + ["dense validation s"]] > 0).all().all()
    for s in steps[1:]:
        assert (t[f"dense / {s}"] == t["dense s/epoch"] / t[f"{s} s/epoch"]).all()
        whole = (t["dense s/epoch"] + t["dense validation s"]) / (
            t[f"{s} s/epoch"] + t["sparse validation s"]
        )
        assert (t[f"dense / {s}, validation included"] == whole).all()
    assert rec["epochs"] == 2
    assert rec["provenance"]["git"]["commit"]
